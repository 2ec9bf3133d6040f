//! Project automation: `cargo xtask spec` (more subcommands arrive with their issues).

mod bench;
mod deps;
mod fetch;
mod fuzz;
mod serve_bench;
mod spec;
mod wasi;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  spec [--edition 2.0|3.0] [--testsuite DIR] [--json FILE] [--jobs N] [FILTER]
      Run every .wast file under DIR through the whole AOT pipeline and print a table per
      group (core, and each proposal folder). --edition picks the official testsuite: 3.0
      (the default; commit 193e551, WebAssembly 3.0 at its root) or 2.0 (commit ae5a669,
      WebAssembly 2.0 at its root, and the proposal folders the 3.0 suite merged into its
      root). DIR defaults to $WASM_SPEC_TESTSUITE_3_0 (3.0) or $WASM_SPEC_TESTSUITE (2.0),
      else spec-tests/testsuite-3.0 or spec-tests/testsuite, else the pinned commit
      fetched with git into target/. FILTER keeps files whose relative path contains it.
      --json writes per-file counts. Exits non-zero if a file fails that the edition's ratchet
      (spec-tests/expected-failures.txt, expected-failures-3.0.txt) does not list, or passes
      while listed.
  wasi [--testsuite DIR] [--release]
      Run the official wasi-testsuite through wasi-tests/adapter.py (DIR defaults to
      $WASI_TESTSUITE) and end with `wasi: N passed, M failed`.
  fuzz --smoke [--count N] [--seed S]
      Generate N modules with wasm-smith (fixed seeds), run each in Kiln and in the wasmi
      interpreter, compare results, traps, exported globals and memories; end with
      `fuzz: N passed, M failed`.
  deps
      Print the runtime's module graph (which module of runtime/src names which through
      `crate::` paths; the vm layer's modules each on their own) and its levels. Fails on
      any import cycle.
  bench [--quick] [--json FILE] [--no-peer] [FILTER]
      Build hello.c (clang-14), run the lifecycle, compute and compile benchmarks (criterion)
      for Kiln and for Wasmtime in the same run, and print each figure with the Kiln/Wasmtime
      ratio and the seed article's Lucet figure. --quick runs criterion's quick mode;
      --json writes the report ({\"results\":[{name, engine, ns}]}); --no-peer skips
      Wasmtime; FILTER is a regular expression over engine/benchmark names (e.g.
      `teardown_dirty`). The compile benchmarks add the largest Rust program of
      $WASI_TESTSUITE when it is set. The serving benchmarks (when FILTER is unset or
      contains `serve`, and `wrk` is installed) load `kiln serve` and `wasmtime-serve` (the
      same server with Wasmtime's engine) with wrk on loopback: serve_hello, serve_touch_1M
      (ns per request at full load) and their _p99 latencies.

Each command takes --help, which prints this text.
";

/// The workspace's root directory (xtask's parent).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let args: Vec<String> = args.collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let args = args.into_iter();
    match command.as_deref() {
        Some("spec") => spec::run(args.collect()),
        Some("wasi") => wasi::run(args.collect()),
        Some("bench") => bench::run(args.collect()),
        Some("fuzz") => fuzz::run(args.collect()),
        Some("deps") => deps::run(args.collect()),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}
