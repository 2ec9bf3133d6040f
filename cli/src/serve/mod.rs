//! `kiln serve`: an HTTP server that runs MODULE, a WASI command, in a fresh instance for every
//! request (the WAGI convention, see [`cgi`]). Connections are served by hyper on a small tokio
//! runtime; guests run on worker threads ([`worker`]) fed through a bounded queue, so a guest
//! never blocks the server: a full queue is a `503`, a request past its deadline a `504`, and a
//! guest that fails is a `500`/`502` with a log line saying why.

mod cgi;
mod worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::http::StatusCode;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kiln_runtime::{Region, RegionConfig, Store, StoreLimits};

use crate::modules;
use crate::options;
use worker::{GuestConfig, Job, Outcome};

/// `kiln serve`'s arguments.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to listen, as ADDRESS:PORT (port 0 picks a free one; the address kiln listens on
    /// is printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Give every request's guest the host directory HOST, under the name GUEST (default: HOST
    /// as written). Repeatable. Paths never resolve outside it.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Set the guest environment variable K to V (`--env K` copies the host's value), after the
    /// request's CGI variables. Repeatable.
    #[arg(long = "env", value_name = "K=V")]
    envs: Vec<String>,
    /// WebAssembly options, as OPT=VALUE (repeatable), per request: timeout (the request's
    /// deadline, default 30s), fuel, max-memory-size and the other limits. `-W help` lists them.
    #[arg(short = 'W', value_name = "OPT=VALUE")]
    wasm: Vec<String>,
    /// WASI options, as OPT=VALUE (repeatable): max-open-files. `-S help` lists them.
    #[arg(short = 'S', value_name = "OPT=VALUE")]
    wasi: Vec<String>,
    /// Threads that run guests, one request at a time each (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Requests that may wait for a worker; past that, requests get `503` at once (default:
    /// 64 per worker).
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// Largest request body in bytes; a larger one gets `413`.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_request_body: usize,
    /// Largest response a guest may write (CGI headers and body), in bytes; a larger one gets
    /// `502`.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    max_response: usize,
    /// The module (.wasm or .wat): a WASI command, run once per request.
    #[arg(value_name = "MODULE")]
    module: PathBuf,
}

/// The deadline of a request without `-W timeout`.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// What the server shares between connections.
struct Server {
    jobs: crossbeam_channel::Sender<Job>,
    limits: StoreLimits,
    deadline: Duration,
    max_request_body: usize,
    /// Requests being answered (for a graceful shutdown).
    in_flight: AtomicUsize,
}

pub fn serve_command(args: ServeArgs) -> Result<ExitCode> {
    if args.wasm.iter().any(|o| o == "help") {
        options::print_help('W', options::WASM_HELP)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.wasi.iter().any(|o| o == "help") {
        options::print_help('S', options::WASI_HELP)?;
        return Ok(ExitCode::SUCCESS);
    }
    let wasm = options::parse_wasm(&args.wasm)?;
    let wasi = options::parse_wasi(&args.wasi)?;
    let policy =
        modules::Policy { allow_precompiled: false, verify: None, fuel: wasm.fuel.is_some(), features: wasm.features };
    let loaded = modules::load(&args.module, &policy)?;
    let module = loaded.module.clone();
    if !module.metadata().exports.iter().any(|e| e.name == "_start") {
        bail!(
            "{} is not a WASI command: it exports no `_start`, which kiln serve runs per request",
            args.module.display()
        );
    }
    let config = Arc::new(GuestConfig {
        argv0: args.module.display().to_string(),
        envs: options::parse_envs(&args.envs)?,
        dirs: options::parse_dirs(&args.dirs)?,
        max_open_files: wasi.max_open_files,
        fuel: wasm.fuel,
        max_response: args.max_response,
    });
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let queue = args.queue.unwrap_or(64 * workers);
    // One slot per worker: each runs one guest at a time.
    let region = Region::new(RegionConfig { slots: workers, ..RegionConfig::default() })
        .context("cannot reserve the slots for the workers")?;
    let (jobs, queued) = crossbeam_channel::bounded(queue);
    let mut threads = Vec::new();
    for i in 0..workers {
        let (queued, module, region, config) = (queued.clone(), module.clone(), region.clone(), config.clone());
        let thread = std::thread::Builder::new()
            .name(format!("kiln-worker-{i}"))
            .spawn(move || worker::work(queued, module, region, config))
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let server = Arc::new(Server {
        jobs,
        limits: wasm.limits,
        deadline: wasm.timeout.unwrap_or(DEFAULT_DEADLINE),
        max_request_body: args.max_request_body,
        in_flight: AtomicUsize::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kiln-serve-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(listen(server.clone(), args.listen, &args.module, workers))?;
    // Stop the workers: the channel closes with the last sender.
    drop(server);
    drop(runtime);
    for thread in threads {
        let _ = thread.join();
    }
    drop(loaded);
    Ok(ExitCode::SUCCESS)
}

/// Accepts connections until SIGINT or SIGTERM, then waits for the requests in flight.
async fn listen(server: Arc<Server>, addr: SocketAddr, module: &Path, workers: usize) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("kiln serve: {} on http://{local}/ ({workers} workers)", module.display());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors, a connection reset before accept: keep serving.
                    Err(err) => {
                        eprintln!("kiln serve: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(handle(&server, request, remote, local).await) }
                    });
                    // A client that goes away mid-request is not the server's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    drop(listener);
    eprintln!("kiln serve: stopping; finishing the requests in flight");
    let give_up = Instant::now() + server.deadline + Duration::from_secs(1);
    while server.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Counts a request in flight while alive.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers one request.
async fn handle(
    server: &Server,
    request: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Full<Bytes>> {
    server.in_flight.fetch_add(1, Ordering::AcqRel);
    let _counted = InFlight(&server.in_flight);
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let line = format!("{} {}", parts.method, parts.uri);
    let response = answer(server, parts, body, remote, local).await;
    let status = response.status();
    match &response {
        Answer::Guest(_) => eprintln!("kiln serve: {line} {} {:?}", status.as_u16(), started.elapsed()),
        Answer::Error(_, reason) => {
            eprintln!("kiln serve: {line} {} {:?}: {reason}", status.as_u16(), started.elapsed())
        }
    }
    response.into_http()
}

/// A response and where it came from.
enum Answer {
    Guest(Response<Full<Bytes>>),
    Error(StatusCode, String),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Guest(r) => r.status(),
            Answer::Error(s, _) => *s,
        }
    }

    fn into_http(self) -> Response<Full<Bytes>> {
        match self {
            Answer::Guest(r) => r,
            Answer::Error(status, _) => {
                let body = format!("{}\n", status.canonical_reason().unwrap_or("error"));
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, hyper::http::HeaderValue::from_static("text/plain"));
                response
            }
        }
    }
}

async fn answer(
    server: &Server,
    parts: hyper::http::request::Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
) -> Answer {
    let too_large =
        || Answer::Error(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} bytes", server.max_request_body));
    let declared = parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > server.max_request_body as u64) {
        return too_large();
    }
    let body = match Limited::new(body, server.max_request_body).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(err) => return Answer::Error(StatusCode::BAD_REQUEST, format!("cannot read the body: {err}")),
    };
    let request = cgi::RequestInfo {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        protocol: format!("{:?}", parts.version),
        headers: parts.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect(),
        body_len: body.len(),
        remote,
        local,
    };
    let store = Store::with_limits(server.limits);
    let interrupt = store.interrupt_handle();
    let (reply, replied) = tokio::sync::oneshot::channel();
    match server.jobs.try_send(Job { request, body, store, reply }) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(_)) => {
            return Answer::Error(StatusCode::SERVICE_UNAVAILABLE, "every worker is busy and the queue is full".into());
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
            return Answer::Error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping".into());
        }
    }
    let mut replied = replied;
    let outcome = match tokio::time::timeout(server.deadline, &mut replied).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // The guest (or the queue) took too long: stop it, and the worker answers at once
            // (a guest still queued stops at its first function entry).
            interrupt.interrupt();
            replied.await
        }
    };
    match outcome {
        Ok(Outcome::Response(r)) => Answer::Guest(to_http(r)),
        Ok(Outcome::Failed { status, reason }) => Answer::Error(status, reason),
        Err(_) => Answer::Error(StatusCode::INTERNAL_SERVER_ERROR, "the worker stopped".into()),
    }
}

/// The HTTP response of a guest's CGI response.
fn to_http(response: cgi::Response) -> Response<Full<Bytes>> {
    let mut http = Response::new(Full::new(Bytes::from(response.body)));
    *http.status_mut() = response.status;
    for (name, value) in response.headers {
        http.headers_mut().append(name, value);
    }
    http
}
