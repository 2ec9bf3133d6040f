//! Project automation: `cargo xtask spec` (more subcommands arrive with their issues).

mod bench;
mod fetch;
mod fuzz;
mod spec;
mod wasi;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  spec [--testsuite DIR] [--json FILE] [--jobs N] [FILTER]
      Run every .wast file under DIR through the whole AOT pipeline and print a table per
      group (core, and each proposal folder). DIR defaults to $WASM_SPEC_TESTSUITE, else
      spec-tests/testsuite, else the pinned official testsuite fetched with git into target/.
      FILTER keeps files whose relative path contains it. --json writes per-file counts.
      Exits non-zero if a file fails that spec-tests/expected-failures.txt does not list.
  wasi [--testsuite DIR] [--release]
      Run the official wasi-testsuite through wasi-tests/adapter.py (DIR defaults to
      $WASI_TESTSUITE) and end with `wasi: N passed, M failed`.
  fuzz --smoke [--count N] [--seed S]
      Generate N modules with wasm-smith (fixed seeds), run each in Kiln and in the wasmi
      interpreter, compare results, traps, exported globals and memories; end with
      `fuzz: N passed, M failed`.
  bench [--quick] [--json FILE] [--no-peer]
      Run the lifecycle benchmarks and print them beside the peer's and the seed's figures.
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("spec") => spec::run(args.collect()),
        Some("wasi") => wasi::run(args.collect()),
        Some("bench") => bench::run(args.collect()),
        Some("fuzz") => fuzz::run(args.collect()),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}
