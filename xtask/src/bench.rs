//! `cargo xtask bench`: builds the C hello world, runs the criterion lifecycle benchmarks for
//! Kiln and Wasmtime in one run, prints them beside the seed article's Lucet figures, writes
//! the JSON report and a plot of instantiation time against initial heap size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The seed article's Lucet figures (mean, ns), where it gave one.
const LUCET: &[(&str, f64)] = &[
    ("load_region_instantiate_hello", 52_000.0),
    ("instantiate_hello", 30_000.0),
    ("teardown_hello", 23_000.0),
    ("call_trivial", 500.0),
    ("first_run_with_signal_install", 4_900.0),
    ("teardown_dirty/1M", 37_500.0),
    ("teardown_dirty/4M", 150_000.0),
    ("teardown_dirty/16M", 600_000.0),
];

const SIZES: &[&str] = &["64K", "512K", "1M", "4M", "16M"];

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    peer: bool,
    /// A criterion filter (a regular expression over `engine/benchmark` names).
    filter: Option<String>,
}

fn parse(args: Vec<String>) -> Result<Options> {
    let mut options = Options { quick: false, json: None, peer: true, filter: None };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => options.json = Some(args.next().context("--json needs a file")?.into()),
            "--no-peer" => options.peer = false,
            other if !other.starts_with('-') && options.filter.is_none() => options.filter = Some(other.to_string()),
            other => bail!("unknown argument `{other}` (expected --quick, --json FILE, --no-peer, FILTER)"),
        }
    }
    Ok(options)
}

/// Builds `benches/programs/hello.c` for wasm32-wasi with Debian's clang-14.
fn build_hello(out: &Path) -> Result<()> {
    build_c(&workspace_root().join("benches/programs/hello.c"), out)
}

/// Builds the C program `source` into `out` for wasm32-wasi with Debian's clang-14.
pub fn build_c(source: &Path, out: &Path) -> Result<()> {
    let status = Command::new("clang-14")
        .args(["--target=wasm32-wasi", "-O2", "-fuse-ld=lld", "-o"])
        .arg(out)
        .arg(source)
        .status()
        .context("cannot run clang-14: install `clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32`")?;
    if !status.success() {
        bail!("clang-14 failed to build {}", source.display());
    }
    Ok(())
}

/// Median estimates (ns) criterion wrote under `target/criterion/<engine>/...`, by benchmark
/// name (the directory path below the engine's).
fn read_estimates(engine: &str) -> BTreeMap<String, f64> {
    let base = workspace_root().join("target/criterion").join(engine);
    walkdir::WalkDir::new(&base)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_name() == "estimates.json")
        .filter_map(|entry| {
            // `<name>/new/estimates.json`; `base` holds a previous run's.
            let run = entry.path().parent()?;
            if run.file_name()? != "new" {
                return None;
            }
            let name = run.parent()?.strip_prefix(&base).ok()?.to_string_lossy().replace('\\', "/");
            Some((name, median_of(&std::fs::read_to_string(entry.path()).ok()?)?))
        })
        .collect()
}

/// The median's point estimate from criterion's `estimates.json`.
fn median_of(json: &str) -> Option<f64> {
    let estimates: serde_json::Value = serde_json::from_str(json).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

pub fn format_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

pub fn run(args: Vec<String>) -> Result<()> {
    let options = parse(args)?;
    let out_dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let hello = out_dir.join("hello.wasm");
    build_hello(&hello)?;
    // Stale results must not leak into this run's report.
    for engine in ["kiln", "wasmtime"] {
        let _ = std::fs::remove_dir_all(workspace_root().join("target/criterion").join(engine));
    }

    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(workspace_root()).args(["bench", "-p", "kiln-benches", "--bench", "lifecycle"]);
    if options.peer {
        cargo.args(["--features", "wasmtime"]);
    }
    cargo.arg("--");
    if options.quick {
        cargo.arg("--quick");
    }
    if let Some(filter) = &options.filter {
        cargo.arg(filter);
    }
    cargo.env("KILN_BENCH_HELLO", &hello);
    match largest_rust_program()? {
        Some(program) => {
            cargo.env("KILN_BENCH_RUST_PROGRAM", &program);
        }
        None => eprintln!(
            "bench: no wasi-testsuite found ($WASI_TESTSUITE): compile benchmarks use the generated module only"
        ),
    }
    let system_times = out_dir.join("system-time.tsv");
    let _ = std::fs::remove_file(&system_times);
    cargo.env("KILN_BENCH_SYSTIME", &system_times);
    eprintln!("bench: running criterion (Wasmtime {})", if options.peer { "included" } else { "skipped" });
    if !cargo.status()?.success() {
        bail!("the benchmarks failed");
    }

    let mut kiln = read_estimates("kiln");
    let mut peer = read_estimates("wasmtime");
    let ceiling = if options.filter.as_deref().is_none_or(|f| f.contains("serve")) {
        crate::serve_bench::run(&out_dir, options.quick, options.peer, &mut kiln, &mut peer)?
    } else {
        None
    };
    let mut code_bytes: BTreeMap<String, f64> = BTreeMap::new();
    // System CPU time per lifecycle of the throughput benchmarks, as `engine\tname\tns` lines.
    for line in std::fs::read_to_string(&system_times).unwrap_or_default().lines() {
        let mut fields = line.split('\t');
        let (Some(engine), Some(name), Some(Ok(ns))) = (fields.next(), fields.next(), fields.next().map(str::parse))
        else {
            bail!("malformed line in {}: {line:?}", system_times.display());
        };
        match engine {
            "kiln" => kiln.insert(name.to_string(), ns),
            "code_bytes" => code_bytes.insert(name.to_string(), ns),
            _ => peer.insert(name.to_string(), ns),
        };
    }
    let names: std::collections::BTreeSet<&String> = kiln.keys().chain(peer.keys()).collect();
    let lucet: BTreeMap<&str, f64> = LUCET.iter().copied().collect();
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>10} {:>12} {:>10}",
        "benchmark", "kiln", "wasmtime", "kiln/wt", "lucet", "kiln/lucet"
    );
    let mut results = Vec::new();
    for name in names {
        let k = kiln.get(name).copied();
        let w = peer.get(name).copied();
        let l = lucet.get(name.as_str()).copied();
        let ratio = |other: Option<f64>, digits: usize| match (k, other) {
            (Some(k), Some(o)) if o > 0.0 => format!("{:.digits$}x", k / o),
            _ => "-".into(),
        };
        println!(
            "{name:<34} {:>12} {:>12} {:>10} {:>12} {:>10}",
            k.map_or("-".into(), format_ns),
            w.map_or("-".into(), format_ns),
            ratio(w, 2),
            l.map_or("-".into(), format_ns),
            ratio(l, 3),
        );
        for (engine, value) in [("kiln", k), ("wasmtime", w)] {
            if let Some(ns) = value {
                // Three decimals, as criterion's own precision warrants.
                let ns = (ns * 1000.0).round() / 1000.0;
                results.push(serde_json::json!({ "name": name, "engine": engine, "ns": ns }));
            }
        }
    }
    if let Some(path) = &options.json {
        let json = serde_json::json!({ "results": results }).to_string() + "\n";
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print_compile_throughput(&code_bytes, &kiln, &peer);
    if let Some(ceiling) = ceiling {
        print_serving_ceiling(&ceiling, &kiln, &peer);
    }
    let plot = out_dir.join("instantiate-vs-heap.svg");
    std::fs::write(&plot, plot_svg(&kiln, &peer))?;
    println!();
    println!("bench: plot of instantiation time vs initial heap size: {}", plot.display());
    Ok(())
}

/// The serving ceiling beside `serve_hello`: no engine serves faster than the server with no
/// guest, so its time over the peer's is the lowest `kiln/wt` ratio any engine could show.
fn print_serving_ceiling(
    ceiling: &crate::serve_bench::Ceiling,
    kiln: &BTreeMap<String, f64>,
    peer: &BTreeMap<String, f64>,
) {
    println!();
    println!("{:<34} {:>12} {:>12} {:>12}", "serving with no guest (ceiling)", "ceiling", "kiln", "lowest k/wt");
    for (name, ceiling) in [("serve_hello", ceiling.ns), ("serve_hello_p99", ceiling.p99)] {
        let lowest = peer.get(name).map_or("-".to_string(), |wt| format!("{:.2}x", ceiling / wt));
        let k = kiln.get(name).map_or("-".to_string(), |&k| format_ns(k));
        println!("{name:<34} {:>12} {k:>12} {lowest:>12}", format_ns(ceiling));
    }
}

/// The largest Rust program of the wasi-testsuite, if a local copy of the suite is there.
fn largest_rust_program() -> Result<Option<std::path::PathBuf>> {
    let Some(suite) = crate::wasi::find_local_testsuite(None)? else { return Ok(None) };
    let dir = suite.join("tests/rust/testsuite");
    let mut programs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|path| Some((path.metadata().ok()?.len(), path)))
        .collect();
    programs.sort();
    Ok(programs.pop().map(|(_, path)| path))
}

/// Compile throughput: MB of wasm code (the code section) per second of wall-clock and of CPU
/// time, per engine, from the `compile_wall/*` and `compile_cpu/*` figures.
fn print_compile_throughput(
    code_bytes: &BTreeMap<String, f64>,
    kiln: &BTreeMap<String, f64>,
    peer: &BTreeMap<String, f64>,
) {
    if code_bytes.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>12}",
        "compile throughput (MB/s)", "kiln wall", "kiln cpu", "wt wall", "wt cpu"
    );
    for (name, &bytes) in code_bytes {
        let cpu_name = name.replacen("compile_wall/", "compile_cpu/", 1);
        let rate = |figures: &BTreeMap<String, f64>, key: &str| {
            figures.get(key).map_or("-".to_string(), |ns| format!("{:.2}", bytes / 1e6 / (ns / 1e9)))
        };
        println!(
            "{:<44} {:>10} {:>10} {:>10} {:>10}",
            format!("{name} ({:.2} MB)", bytes / 1e6),
            rate(kiln, name),
            rate(kiln, &cpu_name),
            rate(peer, name),
            rate(peer, &cpu_name)
        );
    }
}

/// The seed's graphs 3 and 4 (instantiation vs dense/sparse heap size), both engines, as SVG.
fn plot_svg(kiln: &BTreeMap<String, f64>, peer: &BTreeMap<String, f64>) -> String {
    let series: Vec<(String, &str, Vec<Option<f64>>)> = [
        ("kiln dense", "#d62728", kiln, "instantiate_dense"),
        ("kiln sparse", "#ff9896", kiln, "instantiate_sparse"),
        ("wasmtime dense", "#1f77b4", peer, "instantiate_dense"),
        ("wasmtime sparse", "#aec7e8", peer, "instantiate_sparse"),
    ]
    .into_iter()
    .map(|(label, color, data, kind)| {
        (label.to_string(), color, SIZES.iter().map(|s| data.get(&format!("{kind}/{s}")).copied()).collect())
    })
    .collect();
    let max = series.iter().flat_map(|s| s.2.iter().flatten()).fold(1.0f64, |a, &b| a.max(b)) * 1.1;
    let (w, h, left, bottom, top, right) = (720.0, 440.0, 80.0, 60.0, 40.0, 180.0);
    let x = |i: usize| left + i as f64 * (w - left - right) / (SIZES.len() - 1) as f64;
    let y = |ns: f64| h - bottom - ns / max * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" font-size=\"15\">Instantiation time vs initial heap size (median)</text>\n",
        left
    );
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom
    ));
    svg.push_str(&format!("<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n", h - bottom));
    for (i, size) in SIZES.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{size}</text>\n",
            x(i),
            h - bottom + 18.0
        ));
    }
    for k in 0..=4 {
        let ns = max * k as f64 / 4.0;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            y(ns) + 4.0,
            format_ns(ns)
        ));
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#eee\"/>\n",
            y(ns),
            w - right
        ));
    }
    svg.push_str(&format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">initial heap size (dense: all pages hold data; sparse: one page in eight)</text>\n", (left + w - right) / 2.0, h - 16.0));
    for (n, (label, color, points)) in series.iter().enumerate() {
        let path: Vec<String> =
            points.iter().enumerate().filter_map(|(i, p)| p.map(|ns| format!("{:.1},{:.1}", x(i), y(ns)))).collect();
        if path.len() > 1 {
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                path.join(" ")
            ));
        }
        let ly = top + 20.0 * n as f64;
        svg.push_str(&format!("<line x1=\"{0}\" y1=\"{ly}\" x2=\"{1}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{2}\" y=\"{3}\">{label}</text>\n", w - right + 10.0, w - right + 30.0, w - right + 36.0, ly + 4.0));
    }
    svg.push_str("</svg>\n");
    svg
}
