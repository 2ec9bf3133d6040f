//! The guest side of `kiln serve`: worker threads that each run one request at a time in a
//! fresh instance (a slot of the shared region, torn down after the request), fed through a
//! bounded channel. Everything a guest does ends as an [`Outcome`]: a response, or the status
//! and reason of a failure; nothing it does stops the worker.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::http::StatusCode;
use kiln_runtime::{CallError, Instance, InstantiationError, Module, Region, Store, Trap, TrapCode};
use kiln_wasi::{OutputCapture, WasiCtxBuilder};

use super::cgi::{self, RequestInfo};

/// What every request's guest gets besides the request.
pub struct GuestConfig {
    /// `argv[0]`.
    pub argv0: String,
    /// `--env` variables, after the CGI ones (so they win).
    pub envs: Vec<(String, String)>,
    /// `--dir` preopens: (host, guest).
    pub dirs: Vec<(PathBuf, String)>,
    pub max_open_files: usize,
    /// `-W fuel=N`: fuel per request.
    pub fuel: Option<u64>,
    /// Most bytes of response (CGI headers and body) a guest may write.
    pub max_response: usize,
}

/// One request for a worker.
pub struct Job {
    pub request: RequestInfo,
    pub body: Vec<u8>,
    /// The request's store, made by the server so it can interrupt the guest at the deadline.
    pub store: Store,
    pub reply: tokio::sync::oneshot::Sender<Outcome>,
}

/// How a request ended.
pub enum Outcome {
    /// The guest wrote a valid CGI response.
    Response(cgi::Response),
    /// It did not: the status to answer with and why, for the log.
    Failed { status: StatusCode, reason: String },
}

/// Most bytes of a guest's stderr kept for the log.
const MAX_STDERR: usize = 4096;

/// Runs jobs until the channel closes.
pub fn work(jobs: crossbeam_channel::Receiver<Job>, module: Module, region: Region, config: Arc<GuestConfig>) {
    for job in jobs {
        let outcome = run(&module, &region, &config, job.request, job.body, &job.store);
        // The server may have given up on the request (its connection closed): nothing to do.
        let _ = job.reply.send(outcome);
    }
}

fn failed(status: StatusCode, reason: impl Into<String>) -> Outcome {
    Outcome::Failed { status, reason: reason.into() }
}

/// One request in a fresh instance of `module`.
fn run(
    module: &Module,
    region: &Region,
    config: &GuestConfig,
    request: RequestInfo,
    body: Vec<u8>,
    store: &Store,
) -> Outcome {
    let stdout = OutputCapture::new(config.max_response);
    let stderr = OutputCapture::new(MAX_STDERR);
    let mut builder = WasiCtxBuilder::new()
        .max_open_files(config.max_open_files)
        .arg(&config.argv0)
        .stdin_bytes(body)
        .stdout_capture(&stdout)
        .stderr_capture(&stderr);
    for (key, value) in cgi::environment(&request).iter().chain(&config.envs) {
        builder = builder.env(key, value);
    }
    for (host, guest) in &config.dirs {
        builder = builder.preopened_dir(host, guest);
    }
    let imports = match builder.build().and_then(|ctx| kiln_wasi::imports(module, ctx)) {
        Ok(imports) => imports,
        Err(err) => return failed(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot set up WASI: {err}")),
    };
    if let Some(fuel) = config.fuel {
        store.set_fuel(fuel);
    }
    let outcome = match Instance::new_in_store(region, store, module, &imports) {
        Ok(instance) => match instance.get_func("_start") {
            Some(start) => kiln_wasi::exit_status(start.call(&[])),
            None => return failed(StatusCode::INTERNAL_SERVER_ERROR, "the module exports no `_start`"),
        },
        Err(InstantiationError::Trap(trap)) => Err(CallError::Trap(trap)),
        Err(err) => return failed(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot instantiate: {err}")),
    };
    let note = |what: String| {
        let stderr = stderr.contents();
        if stderr.is_empty() {
            what
        } else {
            format!("{what}; its stderr: {:?}", String::from_utf8_lossy(&stderr))
        }
    };
    match outcome {
        Ok(0) => {}
        Ok(status) => {
            return failed(StatusCode::INTERNAL_SERVER_ERROR, note(format!("the guest exited with status {status}")))
        }
        Err(CallError::Trap(trap)) if trap.code() == Some(TrapCode::Interrupt) => {
            return failed(StatusCode::GATEWAY_TIMEOUT, "deadline exceeded");
        }
        Err(CallError::Trap(trap @ Trap::Wasm { .. })) => {
            return failed(StatusCode::INTERNAL_SERVER_ERROR, note(format!("wasm trap: {trap}")));
        }
        Err(err) => return failed(StatusCode::INTERNAL_SERVER_ERROR, note(format!("the guest failed: {err}"))),
    }
    if stdout.overflowed() {
        return failed(StatusCode::BAD_GATEWAY, format!("the response is larger than {} bytes", config.max_response));
    }
    match cgi::parse_output(&stdout.take()) {
        Ok(response) => Outcome::Response(response),
        Err(err) => failed(StatusCode::BAD_GATEWAY, format!("malformed CGI output: {err}")),
    }
}
