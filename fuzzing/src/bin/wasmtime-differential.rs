//! `cargo run --release -p kiln-fuzzing --features wasmtime --bin wasmtime-differential --
//! [--seconds N | --count N] [--seed S] [--gc]`: wasm-smith modules with exception handling
//! and the other proposals wasmi does not run (see `kiln_fuzzing::generate_wasm3`), GC with
//! `--gc`, on Kiln and on Wasmtime, seed after seed until the time is up or `count` seeds ran (default: 60 seconds).
//! Exits non-zero on the first mismatch, printing both observations and the seed.

use anyhow::{bail, Context, Result};
use kiln_fuzzing::{wasmtime_peer, Verdict};

const USAGE: &str = "\
usage: wasmtime-differential [--seconds N | --count N] [--seed S] [--gc]

Runs wasm-smith modules (exception handling and the other proposals wasmi does not run; with
--gc, structs, arrays, i31 and casts too) on Kiln and on Wasmtime, seed after seed from S (default 1), for N seconds (default 60) or N
seeds, and compares results, traps, globals and memories. Exits non-zero on the first
mismatch, printing both observations and the seed.
";

fn main() -> Result<()> {
    let (mut seconds, mut count, mut seed, mut gc) = (60u64, u64::MAX, 1u64, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => seconds = value()?.parse()?,
            "--count" => (count, seconds) = (value()?.parse()?, u64::MAX),
            "--seed" => seed = value()?.parse()?,
            "--gc" => gc = true,
            "--help" | "-h" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let engine = wasmtime_peer::engine()?;
    let dir = tempfile::tempdir()?;
    let region = kiln_runtime::Region::new(kiln_runtime::RegionConfig { slots: 1, ..Default::default() })?;
    let start = std::time::Instant::now();
    let (first, mut agree, mut inconclusive, mut last_report) = (seed, 0u64, 0u64, 0u64);
    while start.elapsed().as_secs() < seconds && seed - first < count {
        match wasmtime_peer::check(seed, gc, &engine, dir.path(), &region)? {
            Verdict::Agree => agree += 1,
            Verdict::Inconclusive => inconclusive += 1,
            Verdict::Mismatch { seed, kiln, reference } => {
                bail!("seed {seed}: the engines differ\n  kiln     {kiln}\n  wasmtime {reference}")
            }
        }
        seed += 1;
        let elapsed = start.elapsed().as_secs();
        if elapsed >= last_report + 60 {
            last_report = elapsed;
            eprintln!(
                "wasmtime-differential: {elapsed}s, seeds {first}..{seed}: {agree} agree, {inconclusive} inconclusive"
            );
        }
    }
    println!(
        "wasmtime-differential: {}s, seeds {first}..{seed}: {agree} agree, 0 differ, {inconclusive} inconclusive",
        start.elapsed().as_secs()
    );
    Ok(())
}
