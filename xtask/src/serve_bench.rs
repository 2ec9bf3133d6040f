//! The serving benchmarks of `cargo xtask bench`: `kiln serve` and its Wasmtime peer
//! (`wasmtime-serve`: the same `kiln-serve` server with Wasmtime running the guests) serve the
//! same WAGI handlers on loopback, loaded by `wrk` for a bounded time; each gives requests per
//! second at full load and the p99 latency.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The handlers (`benches/programs/NAME.c`) and their report names.
const HANDLERS: &[(&str, &str)] = &[("serve_hello", "serve_hello"), ("serve_touch_1M", "serve_touch_1M")];
/// Worker threads per server: one per core of the benchmark machine.
const WORKERS: usize = 2;
/// Open connections `wrk` keeps (enough to keep every worker busy).
const CONNECTIONS: usize = 16;

/// The same server with no guest to run (`serve-ceiling`): the most any engine can serve.
pub struct Ceiling {
    /// ns per request at full load.
    pub ns: f64,
    /// p99 latency, ns.
    pub p99: f64,
}

/// Runs the serving benchmarks; adds `NAME` (ns per request at full load) and `NAME_p99`
/// (ns) for each handler to `kiln` and, with `peer`, to `wasmtime`. Returns the ceiling for
/// `serve_hello` (`None` without `wrk`).
pub fn run(
    out_dir: &Path,
    quick: bool,
    peer: bool,
    kiln: &mut BTreeMap<String, f64>,
    wasmtime: &mut BTreeMap<String, f64>,
) -> Result<Option<Ceiling>> {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("bench: no `wrk` on PATH (Debian: apt-get install wrk): serving benchmarks skipped");
        return Ok(None);
    }
    eprintln!(
        "bench: building kiln{} (release) for the serving benchmarks",
        if peer { " and wasmtime-serve" } else { "" }
    );
    cargo(&["build", "--release", "-p", "kiln", "-p", "kiln-benches", "--bin", "kiln", "--bin", "serve-ceiling"])?;
    if peer {
        cargo(&["build", "--release", "-p", "kiln-benches", "--features", "wasmtime", "--bin", "wasmtime-serve"])?;
    }
    let release = workspace_root().join("target/release");
    let seconds = if quick { 2 } else { 10 };
    for (program, name) in HANDLERS {
        let wasm = out_dir.join(format!("{program}.wasm"));
        crate::bench::build_c(&workspace_root().join(format!("benches/programs/{program}.c")), &wasm)?;
        let mut engines = vec![("kiln", kiln_command(&release, &wasm, out_dir), &mut *kiln)];
        if peer {
            let mut command = Command::new(release.join("wasmtime-serve"));
            command.arg(&wasm).arg("127.0.0.1:0").arg(WORKERS.to_string());
            engines.push(("wasmtime", command, &mut *wasmtime));
        }
        for (engine, command, results) in engines {
            let (rps, p99) = load(command, &out_dir.join(format!("{engine}-{program}.log")), seconds)?;
            eprintln!("bench: {engine} {name}: {rps:.0} requests/s, p99 {}", crate::bench::format_ns(p99));
            results.insert(name.to_string(), 1e9 / rps);
            results.insert(format!("{name}_p99"), p99);
        }
    }
    let mut command = Command::new(release.join("serve-ceiling"));
    command.arg("127.0.0.1:0").arg(WORKERS.to_string());
    let (rps, p99) = load(command, &out_dir.join("serve-ceiling.log"), seconds)?;
    eprintln!("bench: the server with no guest: {rps:.0} requests/s, p99 {}", crate::bench::format_ns(p99));
    Ok(Some(Ceiling { ns: 1e9 / rps, p99 }))
}

/// Starts the server `command` (its stderr in `log`), warms it, loads it for `seconds` with
/// `wrk` and stops it: requests per second and the p99 latency in ns.
fn load(command: Command, log: &Path, seconds: u64) -> Result<(f64, f64)> {
    let server = Server::start(command, log)?;
    let url = format!("http://{}/", server.addr);
    // Warm: code paged in, slots and pools filled.
    wrk(&url, 1)?;
    wrk(&url, seconds)
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args(args)
        .status()?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn kiln_command(release: &Path, wasm: &Path, out_dir: &Path) -> Command {
    let mut command = Command::new(release.join("kiln"));
    command
        .args(["serve", "--quiet", "--listen", "127.0.0.1:0", "--workers", &WORKERS.to_string()])
        .arg(wasm)
        .env("KILN_CACHE_DIR", out_dir.join("kiln-cache"));
    command
}

/// A server process, stopped (SIGTERM, then waited for) when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `command` with stderr in `log`, and waits for the line that says where it listens.
    fn start(mut command: Command, log: &Path) -> Result<Server> {
        let file = std::fs::File::create(log)?;
        let child = command.stdout(Stdio::null()).stderr(file).spawn().context("cannot start the server")?;
        let mut server = Server { child, addr: String::new() };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(addr) =
                text.lines().next().and_then(|l| l.split("http://").nth(1)).and_then(|r| r.split('/').next())
            {
                server.addr = addr.to_string();
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the server did not start; its log ({}):\n{text}", log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Loads `url` for `seconds` with `wrk`: requests per second and the p99 latency in ns.
fn wrk(url: &str, seconds: u64) -> Result<(f64, f64)> {
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no requests/s in wrk's output:\n{text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ns(v.trim()))
        .with_context(|| format!("no p99 in wrk's output:\n{text}"))?;
    if text.contains("Non-2xx or 3xx responses") || text.contains("Socket errors") {
        bail!("requests failed during the benchmark:\n{text}");
    }
    Ok((rps, p99))
}

/// `wrk`'s durations (`812.00us`, `1.20ms`, `2.00s`) in ns.
fn duration_ns(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let scale = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_durations_are_read_in_nanoseconds() {
        assert_eq!(duration_ns("812.00us"), Some(812_000.0));
        assert_eq!(duration_ns("1.50ms"), Some(1_500_000.0));
        assert_eq!(duration_ns("2.00s"), Some(2e9));
        assert_eq!(duration_ns("12"), None);
        assert_eq!(duration_ns("3.0h"), None);
    }
}
