//! `cargo xtask wasi`: the official wasi-testsuite through Kiln.
//!
//! Builds `kiln`, copies the suite's test folders into `target/wasi-testsuite-run/` (the tests
//! write into their `fs-tests.dir`, and the corpus may be read-only), runs the official Python
//! runner with `wasi-tests/adapter.py`, prints the runner's report and a per-language table,
//! and ends with `wasi: N passed, M failed`. Fails if any test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The wasi-testsuite commit Kiln is pinned to (prebuilt binaries, `prod/testsuite-base`).
const PINNED_COMMIT: &str = "2fec29ea6de1244c124f7fe3bfe9f2946113f66e";
const TESTSUITE_REPO: &str = "https://github.com/WebAssembly/wasi-testsuite.git";
/// The test folders, one per source language.
const LANGUAGES: [&str; 3] = ["c", "rust", "assemblyscript"];

struct Options {
    testsuite: Option<PathBuf>,
    release: bool,
}

fn parse(args: Vec<String>) -> Result<Options> {
    let mut options = Options { testsuite: None, release: false };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--testsuite" => options.testsuite = Some(args.next().context("--testsuite needs a directory")?.into()),
            "--release" => options.release = true,
            other => bail!("unknown argument `{other}` (usage: cargo xtask wasi [--testsuite DIR] [--release])"),
        }
    }
    Ok(options)
}

fn is_suite(dir: &Path) -> bool {
    dir.join("test-runner/wasi_test_runner.py").is_file() && dir.join("tests").is_dir()
}

/// Finds the suite: the flag, `$WASI_TESTSUITE`, `wasi-tests/testsuite`, `target/wasi-testsuite`,
/// else fetches the pinned commit with git.
fn find_testsuite(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = find_local_testsuite(flag)? {
        return Ok(dir);
    }
    let root = workspace_root();
    let fetched = root.join("target/wasi-testsuite");
    eprintln!(
        "wasi: no testsuite found; fetching WebAssembly/wasi-testsuite at {PINNED_COMMIT} into {}",
        fetched.display()
    );
    if let Err(err) = crate::fetch::pinned_commit(TESTSUITE_REPO, PINNED_COMMIT, &fetched) {
        bail!(
            "could not fetch the wasi-testsuite ({err:#}). Point Kiln at a checkout of WebAssembly/wasi-testsuite \
             commit {PINNED_COMMIT} (branch prod/testsuite-base) with --testsuite DIR or WASI_TESTSUITE=DIR"
        );
    }
    Ok(fetched)
}

/// The suite named by the flag or `$WASI_TESTSUITE` (an error if it is not one), else the one
/// in `wasi-tests/testsuite` or `target/wasi-testsuite`, if there is one.
pub(crate) fn find_local_testsuite(flag: Option<PathBuf>) -> Result<Option<PathBuf>> {
    for (dir, origin) in
        [(flag, "--testsuite"), (std::env::var_os("WASI_TESTSUITE").map(PathBuf::from), "WASI_TESTSUITE")]
    {
        if let Some(dir) = dir {
            if !is_suite(&dir) {
                bail!("{origin} {}: not a wasi-testsuite checkout (no test-runner/wasi_test_runner.py)", dir.display());
            }
            return Ok(Some(dir));
        }
    }
    let root = workspace_root();
    Ok([root.join("wasi-tests/testsuite"), root.join("target/wasi-testsuite")].into_iter().find(|dir| is_suite(dir)))
}

/// Copies the tree at `from` to `to` (symbolic links as links), every copy writable.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let target = to.join(entry.path().strip_prefix(from)?);
        let ty = entry.file_type();
        if ty.is_dir() {
            std::fs::create_dir_all(&target).with_context(|| format!("cannot create {}", target.display()))?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
            continue;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
        // The corpus may have no write bits; the tests write beside their files.
        let mut perms = std::fs::metadata(&target)?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&target, perms)?;
    }
    Ok(())
}

/// One language's counts, read from the runner's console report.
#[derive(Default, Debug, PartialEq)]
struct SuiteCounts {
    name: String,
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// Reads the `Suite: NAME` / `Passed:` / `Failed:` / `Skipped:` blocks of the runner's report.
fn parse_report(report: &str) -> Vec<SuiteCounts> {
    let mut suites: Vec<SuiteCounts> = Vec::new();
    for line in report.lines() {
        let line = line.trim();
        let number = |prefix: &str| line.strip_prefix(prefix).and_then(|n| n.trim().parse::<usize>().ok());
        if let Some(name) = line.strip_prefix("Suite:") {
            suites.push(SuiteCounts { name: name.trim().to_string(), ..Default::default() });
        } else if let Some(suite) = suites.last_mut() {
            if let Some(n) = number("Passed:") {
                suite.passed = n;
            } else if let Some(n) = number("Failed:") {
                suite.failed = n;
            } else if let Some(n) = number("Skipped:") {
                suite.skipped = n;
            }
        }
    }
    suites
}

pub fn run(args: Vec<String>) -> Result<()> {
    let options = parse(args)?;
    let suite = find_testsuite(options.testsuite)?;
    let root = workspace_root();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "-q", "-p", "kiln"]).current_dir(&root);
    if options.release {
        build.arg("--release");
    }
    if !build.status().context("cannot run cargo")?.success() {
        bail!("building kiln failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let kiln = target_dir.join(if options.release { "release" } else { "debug" }).join("kiln");

    let scratch = root.join("target/wasi-testsuite-run");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut dirs = Vec::new();
    for lang in LANGUAGES {
        let from = suite.join("tests").join(lang).join("testsuite");
        if !from.is_dir() {
            bail!("{} is missing: not a wasi-testsuite with prebuilt tests", from.display());
        }
        let to = scratch.join(lang);
        copy_dir(&from, &to)?;
        dirs.push(to);
    }

    println!("wasi: running {} with {}", suite.display(), kiln.display());
    let output = Command::new("python3")
        .arg(suite.join("test-runner/wasi_test_runner.py"))
        .arg("--disable-colors")
        .arg("-t")
        .args(&dirs)
        .arg("-r")
        .arg(root.join("wasi-tests/adapter.py"))
        .env("TEST_RUNTIME_EXE", &kiln)
        .env("KILN", &kiln)
        .output()
        .context("cannot run python3 (the official runner needs python3 with colorama)")?;
    let report = String::from_utf8_lossy(&output.stdout);
    print!("{report}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));

    let suites = parse_report(&report);
    if suites.is_empty() {
        bail!(
            "the runner printed no results (exit status {}); is colorama installed (pip install colorama)?",
            output.status
        );
    }
    println!();
    println!("{:<28} {:>7} {:>7} {:>8}", "suite", "passed", "failed", "skipped");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for s in &suites {
        println!("{:<28} {:>7} {:>7} {:>8}", s.name, s.passed, s.failed, s.skipped);
        passed += s.passed;
        failed += s.failed;
        skipped += s.skipped;
    }
    // A skipped test did not pass: count it as a failure, so the suite must pass whole.
    failed += skipped;
    println!("wasi: {passed} passed, {failed} failed");
    if failed > 0 || !output.status.success() {
        bail!("{failed} WASI tests failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_console_report() {
        let report = "Test a passed\n===== Test results =====\nRuntime: kiln 0.1.0\nSuite: WASI C tests\n  Total: 14\n  Passed:  13\n  Failed:  1\n  Skipped: 0\n\nSuite: WASI Rust tests\n  Total: 46\n  Passed:  46\n  Failed:  0\n  Skipped: 0\n";
        let suites = parse_report(report);
        assert_eq!(suites.len(), 2);
        assert_eq!(suites[0], SuiteCounts { name: "WASI C tests".into(), passed: 13, failed: 1, skipped: 0 });
        assert_eq!(suites[1].passed, 46);
    }
}
