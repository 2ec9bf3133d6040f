//! `wasmtime-serve MODULE.wasm ADDR WORKERS`: the Wasmtime peer of `kiln serve` for the serving
//! benchmarks (`cargo xtask bench`). The same server (`kiln-serve`: hyper, the worker threads,
//! the queue, WAGI) runs the same guest, with Wasmtime in its best configuration: the pooling
//! allocator with memories and tables kept resident, copy-on-write memory images, the module
//! compiled once and pre-linked (`InstancePre`), WASI preview1 with stdin and stdout in memory,
//! and epoch interruption for the deadline.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use kiln_serve::{Outcome, RequestInfo, StatusCode, Stop};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

/// How often the epoch advances (the deadline's resolution).
const TICK: Duration = Duration::from_millis(10);

struct Peer {
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
}

impl kiln_serve::Engine for Peer {
    /// The deadline is the store's epoch deadline: nothing to make before queueing.
    type Job = ();

    fn prepare(&self) -> ((), Stop) {
        ((), Box::new(|| {}))
    }

    fn run(&self, (): (), request: RequestInfo, body: Vec<u8>, max_response: usize) -> Outcome {
        let stdout = MemoryOutputPipe::new(max_response);
        let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
        builder.arg("guest").stdin(MemoryInputPipe::new(body)).stdout(stdout.clone());
        for (key, value) in kiln_serve::cgi::environment(&request) {
            builder.env(key, value);
        }
        let mut store = Store::new(&self.engine, builder.build_p1());
        store.set_epoch_deadline((kiln_benches::SERVE_DEADLINE.as_millis() / TICK.as_millis()) as u64);
        store.epoch_deadline_trap();
        let ended = self.pre.instantiate(&mut store).and_then(|instance| {
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        let status = match ended {
            Ok(()) => 0,
            Err(err) => match err.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => exit.0,
                None if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) => {
                    return Outcome::failed(StatusCode::GATEWAY_TIMEOUT, "deadline exceeded");
                }
                None => return Outcome::failed(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")),
            },
        };
        if status != 0 {
            return Outcome::failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the guest exited with status {status}"),
            );
        }
        drop(store);
        match stdout.try_into_inner() {
            Some(bytes) => Outcome::Output(bytes.to_vec()),
            None => Outcome::failed(StatusCode::INTERNAL_SERVER_ERROR, "the output is still shared"),
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, module, listen, workers] = args.as_slice() else {
        anyhow::bail!("usage: wasmtime-serve MODULE.wasm ADDR WORKERS");
    };
    let listen: SocketAddr = listen.parse().context("ADDR")?;
    let workers: usize = workers.parse().context("WORKERS")?;
    let mut config = Config::new();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_memories(64).total_tables(64).total_core_instances(64);
    // As much kept resident as `kiln serve` keeps by default (2 MiB per memory).
    pool.linear_memory_keep_resident(2 << 20).table_keep_resident(64 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config.memory_init_cow(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let wasm = std::fs::read(module).with_context(|| format!("cannot read {module}"))?;
    let module_name = module.clone();
    let module = Module::new(&engine, &wasm)?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    let pre = linker.instantiate_pre(&module)?;
    let ticker = engine.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(TICK);
        ticker.increment_epoch();
    });
    let config = kiln_benches::serve_config(listen, workers, module_name);
    kiln_serve::serve(config, Peer { engine, pre })
}
