//! `cargo xtask spec`: the official spec testsuite through Kiln, with a per-group table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kiln_spec_tests::{Counts, Edition};

use crate::workspace_root;

const TESTSUITE_REPO: &str = "https://github.com/WebAssembly/testsuite.git";

struct Options {
    edition: Edition,
    testsuite: Option<PathBuf>,
    json: Option<PathBuf>,
    jobs: usize,
    filter: Option<String>,
}

fn parse(args: Vec<String>) -> Result<Options> {
    let mut options = Options {
        edition: Edition::Wasm3,
        testsuite: None,
        json: None,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        filter: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--edition" => {
                let version = args.next().context("--edition needs a version: 2.0 or 3.0")?;
                options.edition = Edition::ALL
                    .into_iter()
                    .find(|e| e.version() == version)
                    .with_context(|| format!("--edition {version}: Kiln has testsuites for 2.0 and 3.0"))?;
            }
            "--testsuite" => options.testsuite = Some(args.next().context("--testsuite needs a directory")?.into()),
            "--json" => options.json = Some(args.next().context("--json needs a file")?.into()),
            "--jobs" => options.jobs = args.next().context("--jobs needs a number")?.parse()?,
            flag if flag.starts_with("--") => bail!("unknown flag `{flag}`"),
            filter => options.filter = Some(filter.to_string()),
        }
    }
    Ok(options)
}

/// Finds `edition`'s testsuite: the flag, its env var, `spec-tests/testsuite` (2.0) or
/// `spec-tests/testsuite-3.0`, else fetch it.
fn find_testsuite(edition: Edition, flag: Option<PathBuf>) -> Result<PathBuf> {
    let var = edition.env_var();
    let commit = edition.commit();
    let suffix = match edition {
        Edition::Wasm2 => "",
        Edition::Wasm3 => "-3.0",
    };
    if let Some(dir) = flag {
        if !dir.is_dir() {
            bail!("--testsuite {}: not a directory", dir.display());
        }
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os(var) {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("{var}={}: not a directory", dir.display());
        }
        return Ok(dir);
    }
    let root = workspace_root();
    let local = root.join(format!("spec-tests/testsuite{suffix}"));
    if local.join("i32.wast").is_file() {
        return Ok(local);
    }
    let fetched = root.join(format!("target/wasm-testsuite{suffix}"));
    if fetched.join("i32.wast").is_file() {
        return Ok(fetched);
    }
    eprintln!("spec: no testsuite found; fetching WebAssembly/testsuite at {commit} into {}", fetched.display());
    if let Err(err) = crate::fetch::pinned_commit(TESTSUITE_REPO, commit, &fetched) {
        bail!(
            "could not fetch the spec testsuite ({err:#}). Point Kiln at a checkout of WebAssembly/testsuite \
             commit {commit} with --testsuite DIR or {var}=DIR"
        );
    }
    Ok(fetched)
}

/// `core` for files at the root, the proposal's folder name otherwise.
fn group_of(relative: &str) -> String {
    match relative.strip_prefix("proposals/") {
        Some(rest) => rest.split('/').next().unwrap_or("proposals").to_string(),
        None => "core".to_string(),
    }
}

pub fn run(args: Vec<String>) -> Result<()> {
    let options = parse(args)?;
    let edition = options.edition;
    let suite = find_testsuite(edition, options.testsuite)?;
    let files: Vec<(PathBuf, String)> = kiln_spec_tests::wast_files(&suite)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&suite).unwrap().to_string_lossy().replace('\\', "/");
            (p, rel)
        })
        .filter(|(_, rel)| options.filter.as_ref().is_none_or(|f| rel.contains(f.as_str())))
        .collect();
    if files.is_empty() {
        bail!("no .wast files under {} match", suite.display());
    }
    let expected_failures = edition.expected_failures();
    let ratchet = format!("spec-tests/{}", edition.expected_failures_file());

    eprintln!(
        "spec: running {} files of the {} testsuite from {} on {} threads",
        files.len(),
        edition.version(),
        suite.display(),
        options.jobs
    );
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, Counts, Vec<String>)>> = Mutex::new(Vec::new());
    let cache_hits = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, rel)) = files.get(i) else { break };
                // Each file on a thread with a generous stack: the harness itself recurses little,
                // but the parser does on deeply nested scripts.
                let report = std::thread::scope(|s| {
                    std::thread::Builder::new()
                        .stack_size(16 << 20)
                        .spawn_scoped(s, || kiln_spec_tests::run_suite_file(edition, path))
                        .expect("spawn")
                        .join()
                });
                let (counts, failures) = match report {
                    Ok(Ok(report)) => {
                        cache_hits.fetch_add(report.cache_hits, Ordering::Relaxed);
                        let mut lines = report.failures;
                        lines.extend(report.skips);
                        (report.counts, lines)
                    }
                    Ok(Err(err)) => (Counts { passed: 0, failed: 1, skipped: 0 }, vec![format!("{rel}: {err:#}")]),
                    Err(_) => {
                        (Counts { passed: 0, failed: 1, skipped: 0 }, vec![format!("{rel}: the harness panicked")])
                    }
                };
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                eprintln!(
                    "[{n:>3}/{}] {rel}: {} passed, {} failed, {} skipped",
                    files.len(),
                    counts.passed,
                    counts.failed,
                    counts.skipped
                );
                results.lock().unwrap().push((rel.clone(), counts, failures));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let mut groups: BTreeMap<String, (usize, Counts)> = BTreeMap::new();
    let mut total = Counts::default();
    let mut unexpected = Vec::new();
    for (rel, counts, _) in &results {
        let entry = groups.entry(group_of(rel)).or_default();
        entry.0 += 1;
        entry.1.add(*counts);
        total.add(*counts);
        let clean = counts.failed == 0 && counts.skipped == 0;
        let listed = expected_failures.contains(rel);
        if clean == listed {
            unexpected.push((rel.clone(), clean));
        }
    }

    println!();
    println!("{:<24} {:>6} {:>9} {:>8} {:>8} {:>8}", "group", "files", "passed", "failed", "skipped", "rate");
    for (group, (nfiles, c)) in &groups {
        let rate = 100.0 * c.passed as f64 / c.total().max(1) as f64;
        println!("{group:<24} {nfiles:>6} {:>9} {:>8} {:>8} {rate:>7.2}%", c.passed, c.failed, c.skipped);
    }
    let verbose = std::env::var_os("KILN_SPEC_VERBOSE").is_some();
    for (rel, counts, failures) in &results {
        if (counts.failed > 0 || counts.skipped > 0) && (verbose || failures.len() <= 3) {
            for line in failures.iter().take(if verbose { usize::MAX } else { 3 }) {
                eprintln!("  {line}");
            }
        } else if counts.failed > 0 || counts.skipped > 0 {
            eprintln!("  {rel}: {} failed, {} skipped (KILN_SPEC_VERBOSE=1 lists them)", counts.failed, counts.skipped);
        }
    }
    if let Some(json) = &options.json {
        let files: Vec<_> = results
            .iter()
            .map(|(rel, c, _)| {
                serde_json::json!({ "path": rel, "passed": c.passed, "failed": c.failed, "skipped": c.skipped })
            })
            .collect();
        let out = serde_json::json!({ "files": files }).to_string() + "\n";
        std::fs::write(json, out).with_context(|| format!("cannot write {}", json.display()))?;
    }
    eprintln!(
        "spec: {:.1}s ({} modules from the cache in {})",
        start.elapsed().as_secs_f64(),
        cache_hits.load(Ordering::Relaxed),
        kiln_spec_tests::cache_dir().map_or("(disabled)".into(), |d| d.display().to_string())
    );
    for (rel, now_clean) in &unexpected {
        if *now_clean {
            eprintln!("spec: {rel} now passes but is listed in {ratchet}: remove it");
        } else {
            eprintln!("spec: {rel} fails but is not listed in {ratchet}");
        }
    }
    println!("spec: {} passed, {} failed, {} skipped", total.passed, total.failed, total.skipped);
    if options.filter.is_none() && !unexpected.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
