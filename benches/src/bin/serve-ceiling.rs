//! `serve-ceiling ADDR WORKERS`: the ceiling of the serving benchmarks (`cargo xtask bench`).
//! The same server as `kiln serve` and `wasmtime-serve` (`kiln-serve`: hyper, the worker
//! threads, the queue, WAGI), with an engine that runs no guest and answers what the
//! `serve_hello` handler prints. No engine can serve faster on the same machine, so the ratio
//! of this server's rate to the Wasmtime peer's bounds what any engine's ratio can be.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use kiln_serve::{Outcome, RequestInfo, Stop};

/// Answers every request as `benches/programs/serve_hello.c` does, at once.
struct NoGuest;

impl kiln_serve::Engine for NoGuest {
    type Job = ();

    fn prepare(&self) -> ((), Stop) {
        ((), Box::new(|| {}))
    }

    fn run(&self, (): (), _: RequestInfo, _: Vec<u8>, _: usize) -> Outcome {
        Outcome::Output(b"Content-Type: text/plain\n\nHello, world!\n".to_vec())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, workers] = args.as_slice() else {
        anyhow::bail!("usage: serve-ceiling ADDR WORKERS");
    };
    let listen: SocketAddr = listen.parse().context("ADDR")?;
    let workers: usize = workers.parse().context("WORKERS")?;
    let config = kiln_benches::serve_config(listen, workers, "no guest (the serving ceiling)".into());
    kiln_serve::serve(config, NoGuest)
}
