//! `cargo xtask fuzz --smoke`: a bounded, fixed-seed differential batch (Kiln vs wasmi): per
//! seed, one module and one linked pair (see `kiln_fuzzing::linked`).

use std::time::Instant;

use anyhow::{bail, Context, Result};

pub fn run(args: Vec<String>) -> Result<()> {
    let mut smoke = false;
    let mut count: u64 = 1000;
    let mut seed: u64 = 1;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--count" => count = args.next().context("--count needs a number")?.parse()?,
            "--seed" => seed = args.next().context("--seed needs a number")?.parse()?,
            other => bail!("unknown argument `{other}` (expected --smoke, --count N, --seed S)"),
        }
    }
    if !smoke {
        bail!("only the bounded batch is available: `cargo xtask fuzz --smoke [--count N] [--seed S]`");
    }
    eprintln!("fuzz: {count} wasm-smith modules and {count} linked pairs from seed {seed}, Kiln against wasmi");
    let start = Instant::now();
    let summary = kiln_fuzzing::run_batch(seed, count, |s, summary| {
        let done = s - seed + 1;
        if done.is_multiple_of(100) {
            eprintln!(
                "fuzz: {done}/{count} ({} agree, {} differ, {} inconclusive)",
                summary.passed, summary.failed, summary.inconclusive
            );
        }
    })?;
    for failure in &summary.failures {
        eprintln!("  {failure}");
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz: {:.1}s, {:.0} seeds/s (a module and a linked pair each), {} inconclusive (stack exhaustion depends on frame sizes)",
        secs,
        count as f64 / secs,
        summary.inconclusive
    );
    println!("fuzz: {} passed, {} failed", summary.passed, summary.failed);
    if summary.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
