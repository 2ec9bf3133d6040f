//! The HTTP server behind `kiln serve`: every request runs a fresh guest under the WAGI
//! convention ([`cgi`]). Connections are served by hyper on a small tokio runtime; guests run
//! on worker threads fed through a bounded queue, so a guest never blocks the server: a full
//! queue is a `503`, a request past its deadline a `504`, and a guest that fails is a `500` or
//! `502` with a log line saying why.
//!
//! The server does not know which engine runs the guests ([`Engine`]): the `kiln` command
//! serves with Kiln, and the benchmarks serve the same guest with Wasmtime through this same
//! code, so their ratio measures the engines.

pub mod cgi;
mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub use cgi::RequestInfo;
pub use hyper::http::StatusCode;
use metrics::Metrics;

/// What runs the guests.
pub trait Engine: Send + Sync + 'static {
    /// What the server makes for a request before queueing it (Kiln: the request's store).
    type Job: Send + 'static;

    /// A new request's job, and what stops its guest: called at the deadline, whether the
    /// request still waits in the queue (the guest must then stop as soon as it starts) or
    /// runs.
    fn prepare(&self) -> (Self::Job, Stop);

    /// Runs one request's guest, on a worker thread, to its end: its stdout (at most
    /// `max_response` bytes kept) is the CGI response.
    fn run(&self, job: Self::Job, request: RequestInfo, body: Vec<u8>, max_response: usize) -> Outcome;
}

/// Stops a request's guest (see [`Engine::prepare`]).
pub type Stop = Box<dyn FnOnce() + Send>;

/// How a request ended.
pub enum Outcome {
    /// The guest's stdout, complete.
    Output(Vec<u8>),
    /// It failed: the status to answer with and why, for the log.
    Failed { status: StatusCode, reason: String },
}

impl Outcome {
    pub fn failed(status: StatusCode, reason: impl Into<String>) -> Outcome {
        Outcome::Failed { status, reason: reason.into() }
    }
}

/// How to serve.
pub struct Config {
    pub listen: SocketAddr,
    /// Threads that run guests, one request at a time each.
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    /// From a request's arrival to its answer.
    pub deadline: Duration,
    pub max_request_body: usize,
    pub max_response: usize,
    /// Said in the first log line (what is served).
    pub name: String,
    /// Where to serve `GET /metrics` (the counters, in Prometheus' text format), if anywhere.
    pub admin: Option<SocketAddr>,
    /// How long a client may take to send a request's headers, and then its body: a slow or
    /// silent client must not hold a connection (and its memory) for ever.
    pub read_timeout: Duration,
    /// Log every request (else only the failures).
    pub log_requests: bool,
}

struct Job<J> {
    job: J,
    request: RequestInfo,
    body: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<Outcome>,
    /// When it entered the queue.
    queued_at: Instant,
}

/// What the connections share.
struct Server<E: Engine> {
    engine: Arc<E>,
    jobs: crossbeam_channel::Sender<Job<E::Job>>,
    config: Config,
    /// Requests being answered (for a graceful stop).
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Serves until SIGINT or SIGTERM, then finishes the requests in flight and returns. Prints
/// `kiln serve: NAME on http://ADDR/ (N workers)` on stderr once it listens, and a line per
/// request.
pub fn serve<E: Engine>(config: Config, engine: E) -> Result<()> {
    let engine = Arc::new(engine);
    let metrics = Arc::new(Metrics::default());
    let (jobs, queued) = crossbeam_channel::bounded::<Job<E::Job>>(config.queue.max(1));
    let mut threads = Vec::new();
    for i in 0..config.workers.max(1) {
        let (queued, engine, max_response) = (queued.clone(), engine.clone(), config.max_response);
        let metrics = metrics.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kiln-worker-{i}"))
            .spawn(move || {
                for job in queued {
                    metrics.queued(job.queued_at.elapsed());
                    let outcome = engine.run(job.job, job.request, job.body, max_response);
                    // The connection may be gone: nobody to answer.
                    let _ = job.reply.send(outcome);
                }
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let server = Arc::new(Server { engine, jobs, config, in_flight: AtomicUsize::new(0), metrics });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("kiln-serve-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let result = runtime.block_on(listen(server.clone()));
    // The workers stop when the queue's last sender goes.
    drop(server);
    drop(runtime);
    for thread in threads {
        let _ = thread.join();
    }
    result
}

/// Accepts connections until SIGINT or SIGTERM, then waits for the requests in flight.
async fn listen<E: Engine>(server: Arc<Server<E>>) -> Result<()> {
    let config = &server.config;
    let addr = config.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("kiln serve: {} on http://{local}/ ({} workers)", config.name, config.workers.max(1));
    if let Some(admin) = config.admin {
        let admin = tokio::net::TcpListener::bind(admin).await.with_context(|| format!("cannot listen on {admin}"))?;
        eprintln!("kiln serve: metrics on http://{}/metrics", admin.local_addr()?);
        tokio::spawn(serve_metrics(admin, server.metrics.clone()));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors, or a connection reset before accept: keep serving.
                    Err(err) => {
                        eprintln!("kiln serve: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let read_timeout = server.config.read_timeout;
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(handle(&server, request, remote, local).await) }
                    });
                    // A client that goes away mid-request is not the server's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(read_timeout)
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
    let give_up = Instant::now() + server.config.deadline + Duration::from_secs(1);
    while server.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Serves `GET /metrics` on the admin listener.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    while let Ok((stream, _)) = listener.accept().await {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = if request.uri().path() == "/metrics" {
                    let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
                    response.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    response
                } else {
                    error_response(StatusCode::NOT_FOUND)
                };
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Counts a request in flight while alive.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers one request, and logs it.
async fn handle<E: Engine>(
    server: &Server<E>,
    request: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Full<Bytes>> {
    server.in_flight.fetch_add(1, Ordering::AcqRel);
    let _counted = InFlight(&server.in_flight);
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (method, target) = (parts.method.clone(), parts.uri.clone());
    let (response, reason) = match answer(server, parts, body, remote, local).await {
        Ok(response) => (response, None),
        Err((status, reason)) => (error_response(status), Some(reason)),
    };
    let took = started.elapsed();
    server.metrics.answered(response.status(), took);
    let (status, ms) = (response.status().as_u16(), took.as_secs_f64() * 1e3);
    let line = || format!("method={method} target={:?} status={status} ms={ms:.3}", target.to_string());
    match reason {
        Some(reason) => eprintln!("kiln serve: {} reason={reason:?}", line()),
        None if server.config.log_requests => eprintln!("kiln serve: {}", line()),
        None => {}
    }
    response
}

/// A failure's response: its status and reason phrase, as text.
fn error_response(status: StatusCode) -> Response<Full<Bytes>> {
    let body = format!("{}\n", status.canonical_reason().unwrap_or("error"));
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::http::HeaderValue::from_static("text/plain"));
    response
}

async fn answer<E: Engine>(
    server: &Server<E>,
    parts: hyper::http::request::Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
    let config = &server.config;
    let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, format!("body over {} bytes", config.max_request_body));
    let declared = parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_request_body as u64) {
        return Err(too_large());
    }
    let body = if hyper::body::Body::is_end_stream(&body) {
        // No body (a GET, say): nothing to wait for.
        Vec::new()
    } else {
        match tokio::time::timeout(config.read_timeout, Limited::new(body, config.max_request_body).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes().to_vec(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Ok(Err(err)) => return Err((StatusCode::BAD_REQUEST, format!("cannot read the body: {err}"))),
            Err(_) => {
                let reason = format!("the body did not arrive within {:?}", config.read_timeout);
                return Err((StatusCode::REQUEST_TIMEOUT, reason));
            }
        }
    };
    let request = RequestInfo {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        protocol: format!("{:?}", parts.version),
        headers: parts.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect(),
        body_len: body.len(),
        remote,
        local,
    };
    let (job, stop) = server.engine.prepare();
    let (reply, mut replied) = tokio::sync::oneshot::channel();
    match server.jobs.try_send(Job { job, request, body, reply, queued_at: Instant::now() }) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(_)) => {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "every worker is busy and the queue is full".into()));
        }
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "the server is stopping".into()));
        }
    }
    let outcome = match tokio::time::timeout(config.deadline, &mut replied).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Too long (in the queue or running): stop the guest, and the worker answers at once.
            stop();
            replied.await
        }
    };
    match outcome {
        Ok(Outcome::Output(output)) => match cgi::parse_output(&output) {
            Ok(response) => Ok(response.into_http()),
            Err(err) => Err((StatusCode::BAD_GATEWAY, format!("malformed CGI output: {err}"))),
        },
        Ok(Outcome::Failed { status, reason }) => Err((status, reason)),
        Err(_) => Err((StatusCode::INTERNAL_SERVER_ERROR, "the worker stopped".into())),
    }
}
