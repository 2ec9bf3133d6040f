//! README.md is tested: every ```` ```console ```` block runs, command by command, with
//! [trycmd](https://docs.rs/trycmd), and the output must match (`[..]` and `...` lines stand
//! for what differs between runs or machines). The files those commands use are the README's
//! own blocks whose info string names a file (```` ```wat file=fib.wat ````), written to a
//! scratch directory that the commands run in, one after another. A `kiln` command outside a
//! `console` block would escape the test, so that fails it too, except in the `sh serve` blocks
//! (`kiln serve` and `curl`), which `cli/tests/serve.rs` runs.
//!
//! The commands build C programs with clang-14 for wasm32-wasi; without that toolchain the
//! trial is reported as ignored (as the WASI program trials are). The README's `cargo`
//! commands are CI's own steps (`.ci/run`), and its `perf` commands need a profiler that CI
//! does not have; neither runs here.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};

#[path = "support/markdown.rs"]
mod markdown;
use markdown::blocks;

const README: &str = include_str!("../../README.md");

/// The README as trycmd reads transcripts: it drops the newline at the end of each command's
/// expected output (so that output without one can be written), and a console prints one, so
/// a blank line goes after every output that has lines, leaving the README itself clean.
fn with_final_newlines(markdown: &str) -> String {
    let mut out = String::new();
    let (mut in_console, mut after_output) = (false, false);
    for line in markdown.lines() {
        let command_or_end = line.starts_with("$ ") || line.starts_with("? ") || line.starts_with("```");
        if in_console && after_output && command_or_end && !line.starts_with("? ") {
            out.push('\n');
        }
        if line.starts_with("```") {
            in_console = !in_console && line == "```console";
            after_output = false;
        } else if in_console {
            after_output = !command_or_end;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A program's path, if it is on `PATH`., if it is on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

fn readme_commands(scratch: &Path) -> Result<(), Failed> {
    let blocks = blocks(README);
    let stray: Vec<&str> = blocks
        .iter()
        // `sh serve` blocks start servers: `cli/tests/serve.rs` runs them.
        .filter(|b| b.info != "console" && b.info != "sh serve")
        .flat_map(|b| b.text.lines())
        .filter(|line| line.starts_with("kiln ") || line.starts_with("$ kiln "))
        .collect();
    if !stray.is_empty() {
        return Err(format!("kiln commands outside a console block are not tested: {stray:?}").into());
    }
    if !blocks.iter().any(|b| b.info == "console") {
        return Err("README.md has no console block".into());
    }

    // The case: a copy of the README beside its files (trycmd runs the commands in `NAME.in`).
    let _ = std::fs::remove_dir_all(scratch);
    let files = scratch.join("readme.in");
    std::fs::create_dir_all(&files)?;
    markdown::write_files(&blocks, &files)?;
    std::fs::write(scratch.join("readme.md"), with_final_newlines(README))?;

    let clang = on_path("clang-14").ok_or("clang-14 is not on PATH")?;
    let cases = trycmd::TestCases::new();
    cases
        .register_bin("kiln", trycmd::schema::Bin::Path(env!("CARGO_BIN_EXE_kiln").into()))
        .register_bin("clang-14", trycmd::schema::Bin::Path(clang))
        .env("KILN_CACHE_DIR", scratch.join("cache").display().to_string())
        .case(scratch.join("readme.md"));
    // trycmd reports a mismatch by panicking, after printing what differs.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cases.run()))
        .map_err(|_| Failed::from("a README command's output differs from the README (see above)"))
}

fn main() {
    let args = Arguments::from_args();
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme");
    let missing = kiln_wasi_tests::toolchain_missing(&scratch.join("toolchain-check"));
    if let Some(reason) = &missing {
        eprintln!("note: the README trial is ignored: {reason}");
    }
    let trial = Trial::test("readme_commands", move || readme_commands(&scratch));
    let trial = match missing {
        Some(_) => trial.with_kind("needs clang-14").with_ignored_flag(true),
        None => trial,
    };
    libtest_mimic::run(&args, vec![trial]).exit();
}
