//! `kiln serve`: the `kiln_serve` HTTP server with Kiln running the guests. Each request gets
//! a fresh instance of the module in a slot of one region (a slot per worker), its body as
//! stdin and its stdout captured in host memory, torn down afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_runtime::{
    CallError, Extern, Instance, InstantiationError, Module, Region, RegionConfig, Store, StoreLimits, Trap, TrapCode,
};
use kiln_serve::{Outcome, RequestInfo, StatusCode, Stop};
use kiln_wasi::{OutputCapture, WasiCtxBuilder};

use crate::{modules, options};

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
    /// Slots in the region of guest memories (default: one per worker; at least as many as
    /// workers). A request that wrote more than --keep-resident leaves its slot's other pages
    /// for the kernel to take back; with more slots than workers, those slots wait and are
    /// discarded in batches while the workers go on in clean ones.
    #[arg(long, value_name = "N")]
    slots: Option<usize>,
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
    /// Also serve the counters (requests by status, guest failures, deadline hits, queue waits,
    /// p50/p99 latency) as `GET /metrics` in Prometheus' text format on this ADDRESS:PORT,
    /// apart from the guests' traffic.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Log only the requests that fail (with their reason), not every request.
    #[arg(long)]
    quiet: bool,
    /// How long a client may take to send a request's headers, and then its body (408), before
    /// the connection is closed: a slow or silent client cannot hold one for ever.
    #[arg(long, value_name = "DURATION", value_parser = options::parse_duration, default_value = "10s")]
    read_timeout: Duration,
    /// Bytes of each guest memory that stay resident between requests: the pages a request
    /// wrote are reset in place, with no system call or page fault for the next request, as
    /// long as they fit (see `RegionConfig::keep_resident`); the rest go back to the kernel.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_KEEP_RESIDENT)]
    keep_resident: usize,
    /// The module (.wasm or .wat): a WASI command, run once per request.
    #[arg(value_name = "MODULE")]
    module: Option<PathBuf>,
}

/// Bytes per slot kept resident by default: a server has a slot per worker, so keeping what a
/// typical handler writes costs little and saves every request its page faults.
const DEFAULT_KEEP_RESIDENT: usize = 2 << 20;

/// The deadline of a request without `-W timeout`.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

pub fn serve_command(args: ServeArgs) -> Result<ExitCode> {
    if options::print_help_if_asked(&args.wasm, &args.wasi)? {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(module) = &args.module else {
        bail!("kiln serve needs a MODULE to serve (see `kiln serve --help`)");
    };
    let wasm = options::parse_wasm(&args.wasm)?;
    let wasi = options::parse_wasi(&args.wasi)?;
    let policy =
        modules::Policy { allow_precompiled: false, verify: None, fuel: wasm.fuel.is_some(), features: wasm.features };
    let loaded = modules::load(module, &policy)?;
    if !loaded.module.metadata().exports.iter().any(|e| e.name == "_start") {
        bail!("{} is not a WASI command: it exports no `_start`, which kiln serve runs per request", module.display());
    }
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    // Each worker runs one guest at a time, so it needs one slot; more let discards batch.
    let slots = args.slots.unwrap_or(workers);
    if slots < workers {
        bail!("--slots {slots} is fewer than the {workers} workers: each worker needs a slot");
    }
    let region = Region::new(RegionConfig { slots, keep_resident: args.keep_resident, ..RegionConfig::default() })
        .with_context(|| format!("cannot reserve {slots} slots"))?;
    let engine = Kiln {
        imports: kiln_wasi::shared_imports(&loaded.module)?,
        module: loaded.module.clone(),
        region,
        limits: wasm.limits,
        argv0: module.display().to_string(),
        envs: options::parse_envs(&args.envs)?,
        dirs: options::parse_dirs(&args.dirs)?,
        max_open_files: wasi.max_open_files,
        fuel: wasm.fuel,
    };
    let config = kiln_serve::Config {
        listen: args.listen,
        workers,
        queue: args.queue.unwrap_or(64 * workers),
        deadline: wasm.timeout.unwrap_or(DEFAULT_DEADLINE),
        max_request_body: args.max_request_body,
        max_response: args.max_response,
        name: module.display().to_string(),
        admin: args.admin,
        read_timeout: args.read_timeout,
        log_requests: !args.quiet,
    };
    kiln_serve::serve(config, engine)?;
    drop(loaded);
    Ok(ExitCode::SUCCESS)
}

/// Kiln as `kiln serve`'s engine.
struct Kiln {
    module: Module,
    /// The module's WASI functions, made once: each request's store carries its context.
    imports: Vec<Extern>,
    region: Region,
    limits: StoreLimits,
    argv0: String,
    /// `--env` variables, after the CGI ones (so they win).
    envs: Vec<(String, String)>,
    /// `--dir` preopens: (host, guest).
    dirs: Vec<(PathBuf, String)>,
    max_open_files: usize,
    /// `-W fuel=N`: fuel per request.
    fuel: Option<u64>,
}

/// Most bytes of a guest's stderr kept for the log.
const MAX_STDERR: usize = 4096;

impl kiln_serve::Engine for Kiln {
    /// The request's store: its interrupt handle is the request's deadline.
    type Job = Store;

    fn prepare(&self) -> (Store, Stop) {
        let store = Store::with_limits(self.limits);
        let interrupt = store.interrupt_handle();
        (store, Box::new(move || interrupt.interrupt()))
    }

    fn run(&self, store: Store, request: RequestInfo, body: Vec<u8>, max_response: usize) -> Outcome {
        let stdout = OutputCapture::new(max_response);
        let stderr = OutputCapture::new(MAX_STDERR);
        let mut builder = WasiCtxBuilder::new()
            .max_open_files(self.max_open_files)
            .arg(&self.argv0)
            .stdin_bytes(body)
            .stdout_capture(&stdout)
            .stderr_capture(&stderr);
        for (key, value) in kiln_serve::cgi::environment(&request) {
            builder = builder.env(key, value);
        }
        for (key, value) in &self.envs {
            builder = builder.env(key, value);
        }
        for (host, guest) in &self.dirs {
            builder = builder.preopened_dir(host, guest);
        }
        if let Err(err) = builder.build().and_then(|ctx| kiln_wasi::attach(&store, ctx)) {
            return Outcome::failed(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot set up WASI: {err}"));
        }
        if let Some(fuel) = self.fuel {
            store.set_fuel(fuel);
        }
        let ended = match Instance::new_in_store(&self.region, &store, &self.module, &self.imports) {
            Ok(instance) => match instance.get_func("_start") {
                Some(start) => kiln_wasi::exit_status(start.call(&[])),
                None => return Outcome::failed(StatusCode::INTERNAL_SERVER_ERROR, "the module exports no `_start`"),
            },
            Err(InstantiationError::Trap(trap)) => Err(CallError::Trap(trap)),
            Err(err) => {
                return Outcome::failed(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot instantiate: {err}"))
            }
        };
        // What the guest said on stderr goes with the reason of a failure.
        let with_stderr = |reason: String| {
            let said = stderr.contents();
            if said.is_empty() {
                reason
            } else {
                format!("{reason}; its stderr: {:?}", String::from_utf8_lossy(&said))
            }
        };
        let failure = match ended {
            Ok(0) if stdout.overflowed() => {
                return Outcome::failed(
                    StatusCode::BAD_GATEWAY,
                    format!("the response is larger than {max_response} bytes"),
                );
            }
            Ok(0) => return Outcome::Output(stdout.take()),
            Ok(status) => format!("the guest exited with status {status}"),
            Err(CallError::Trap(trap)) if trap.code() == Some(TrapCode::Interrupt) => {
                return Outcome::failed(StatusCode::GATEWAY_TIMEOUT, "deadline exceeded");
            }
            Err(CallError::Trap(trap @ Trap::Wasm { .. })) => format!("wasm trap: {trap}"),
            Err(err) => format!("the guest failed: {err}"),
        };
        Outcome::failed(StatusCode::INTERNAL_SERVER_ERROR, with_stderr(failure))
    }
}
