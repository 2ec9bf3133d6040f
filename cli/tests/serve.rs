//! `kiln serve` end to end: the WAGI handler `wasi-tests/programs/wagi.c` behind a real
//! server process, driven over loopback by plain HTTP/1.1 clients. Every failure a guest can
//! cause is a response (never a crashed or wedged server), every request gets a fresh
//! instance, and a full queue or a large body is refused at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "support/markdown.rs"]
mod markdown;

const README: &str = include_str!("../../README.md");

/// A running `kiln serve` and the log lines it wrote so far.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(module: &Path, options: &[&str]) -> Server {
        Server::start_in(Path::new("."), module, options)
    }

    /// Starts `kiln serve OPTIONS MODULE` in directory `dir`, listening on a free port.
    fn start_in(dir: &Path, module: &Path, options: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(dir)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(options)
            .arg(module)
            .env("KILN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().expect("kiln serve says where it listens").unwrap();
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .parse()
            .unwrap();
        let log = Arc::new(Mutex::new(vec![first]));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) {
        // SAFETY: kill(2) with the pid of our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "kiln serve exited with {status}; log:\n{}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().unwrap();
        panic!("kiln serve did not stop within 5 s of SIGTERM; log:\n{}", self.log());
    }
}

/// One request on its own connection: the status and the body.
fn request(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn handler() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve");
    kiln_wasi_tests::build_program("wagi", &dir).expect("clang-14 for wasm32-wasi (see the README)")
}

#[test]
fn a_mixed_stream_of_requests_gets_the_right_answer_every_time() {
    let server = Server::start(
        &handler(),
        &["--workers", "2", "--slots", "4", "-W", "timeout=2s", "--max-response", "1000000", "--admin", "127.0.0.1:0"],
    );
    let addr = server.addr;
    // Six clients send every kind of request but the endless one, over and over; a seventh
    // sends two endless ones, one after the other, so one worker is always free for the rest.
    let mut clients = Vec::new();
    for client in 0..6 {
        clients.push(std::thread::spawn(move || {
            let mut failures = Vec::new();
            for round in 0..15 {
                let body = format!("client {client} round {round}");
                let expected: [(&str, u16, Option<String>); 8] = [
                    ("/hello", 200, Some("Hello, world!\n".into())),
                    ("/echo?n=1", 200, Some(format!("query=n=1\n{body}"))),
                    // A fresh instance per request: the counter starts from zero every time.
                    ("/count", 200, Some("1\n".into())),
                    ("/trap", 500, None),
                    ("/exit", 500, None),
                    ("/huge", 502, None),
                    ("/malformed", 502, None),
                    ("/nothing-here", 404, None),
                ];
                for (target, status, want) in expected {
                    let (got, text) = request(addr, "POST", target, body.as_bytes());
                    if got != status || want.as_ref().is_some_and(|w| *w != text) {
                        failures.push(format!("{target}: {got} {text:?}, expected {status} {want:?}"));
                    }
                }
            }
            failures
        }));
    }
    let looping = std::thread::spawn(move || (0..2).map(|_| request(addr, "GET", "/loop", b"").0).collect::<Vec<_>>());
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(
        failures.is_empty(),
        "{} wrong answers, first: {:?}\nlog:\n{}",
        failures.len(),
        &failures[..1],
        server.log()
    );
    assert_eq!(looping.join().unwrap(), [504, 504]);
    // Still serving, and every failure was logged with its reason.
    assert_eq!(request(addr, "GET", "/hello", b""), (200, "Hello, world!\n".to_string()));
    let log = server.log();
    // The admin listener counted every kind of answer: 6 clients x 15 rounds x 8 requests, the
    // two endless ones and the /hello just above.
    let metrics_addr: SocketAddr = log
        .lines()
        .find_map(|l| l.strip_prefix("kiln serve: metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("the admin listener's address in the log")
        .parse()
        .unwrap();
    let (status, metrics) = request(metrics_addr, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    for line in [
        "kiln_serve_requests_total 723",
        "kiln_serve_guest_failures_total 180",
        "kiln_serve_deadline_exceeded_total 2",
        "kiln_serve_rejected_total 0",
        "kiln_serve_responses_total{class=\"4xx\"} 90",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    for reason in [
        "wasm trap: unreachable",
        "exited with status 3",
        "deadline exceeded",
        "larger than 1000000 bytes",
        "malformed CGI output",
    ] {
        assert!(log.contains(reason), "no {reason:?} in the log:\n{log}");
    }
    server.stop();
}

#[test]
fn a_full_queue_and_a_large_body_are_refused_at_once() {
    let server = Server::start(
        &handler(),
        &["--workers", "1", "--queue", "1", "-W", "timeout=1s", "--max-request-body", "1000"],
    );
    let addr = server.addr;
    assert_eq!(request(addr, "POST", "/echo", &[b'a'; 1001]).0, 413);
    assert_eq!(request(addr, "POST", "/echo", &[b'a'; 1000]).0, 200);
    // The one worker runs an endless request; one more request waits in the queue; the next
    // finds the queue full.
    let busy = std::thread::spawn(move || request(addr, "GET", "/loop", b"").0);
    std::thread::sleep(Duration::from_millis(300));
    let queued = std::thread::spawn(move || request(addr, "GET", "/hello", b"").0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(request(addr, "GET", "/hello", b"").0, 503);
    assert_eq!(busy.join().unwrap(), 504);
    // The queued one ran once the worker was free, or reached its own deadline first.
    assert!(matches!(queued.join().unwrap(), 200 | 504));
    assert_eq!(request(addr, "GET", "/hello", b"").0, 200);
    server.stop();
}

/// The README's `sh serve` blocks, run: each `$ kiln serve OPTIONS MODULE` starts the server
/// (on a free port instead of its `--listen`) in a directory holding the README's files, with
/// its C programs built; each `$ curl -s URL` after it must print the lines the README shows.
#[test]
fn the_readme_handlers_answer_as_the_readme_says() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-readme");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let blocks = markdown::blocks(README);
    markdown::write_files(&blocks, &dir).unwrap();
    let mut served = 0;
    for block in blocks.iter().filter(|b| b.info == "sh serve") {
        let mut server: Option<(Server, String)> = None;
        let mut commands = block.text.lines().peekable();
        while let Some(command) = commands.next() {
            let expected: Vec<&str> = std::iter::from_fn(|| commands.next_if(|l| !l.starts_with("$ "))).collect();
            let words: Vec<&str> = command.split_whitespace().collect();
            match words.as_slice() {
                ["$", "kiln", "serve", options @ .., module] => {
                    let listen = options.iter().position(|&o| o == "--listen").expect("a --listen to replace");
                    let readme_addr = options[listen + 1].to_string();
                    let options: Vec<&str> = options
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != listen && *i != listen + 1)
                        .map(|(_, o)| *o)
                        .collect();
                    let module = Path::new(module);
                    if module.extension().is_some_and(|e| e == "wasm") {
                        let source = module.with_extension("c");
                        let status = Command::new(kiln_wasi_tests::clang())
                            .current_dir(&dir)
                            .args(["--target=wasm32-wasi", "-O2", "-fuse-ld=lld", "-o"])
                            .arg(module)
                            .arg(&source)
                            .status()
                            .unwrap();
                        assert!(status.success(), "cannot build {}", source.display());
                    }
                    let started = Server::start_in(&dir, module, &options);
                    let greeting = started.log();
                    let prefix = format!("kiln serve: {} on http://", module.display());
                    assert!(expected[0].starts_with(&prefix) && greeting.starts_with(&prefix), "{greeting:?}");
                    server = Some((started, readme_addr));
                }
                ["$", "curl", "-s", url] => {
                    let (running, readme_addr) = server.as_ref().expect("a server started before curl");
                    let url = url.trim_matches('\'');
                    let target = url.strip_prefix(&format!("http://{readme_addr}")).expect("the server's address");
                    let (status, body) = request(running.addr, "GET", target, b"");
                    assert_eq!((status, body), (200, expected.join("\n") + "\n"), "{command}");
                    served += 1;
                }
                _ => panic!("not a command this test runs: {command}"),
            }
        }
        if let Some((running, _)) = server {
            running.stop();
        }
    }
    assert!(served >= 2, "the README serves at least its C and its wat handler");
}

#[test]
fn slow_clients_cannot_hold_a_connection() {
    let server = Server::start(&handler(), &["--workers", "1", "--read-timeout", "500ms"]);
    let addr = server.addr;
    let closed_within = |stream: &mut TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).unwrap();
        let mut rest = Vec::new();
        // The server closes the connection (with or without a response): the read ends.
        stream.read_to_end(&mut rest).map(|_| String::from_utf8_lossy(&rest).into_owned())
    };
    // Headers that never end.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\n").unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).is_ok(),
        "a connection with unfinished headers stayed open"
    );
    // A body that never arrives.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\nConnection: close\r\n\r\nabc")
        .unwrap();
    let answer =
        closed_within(&mut slow, Duration::from_secs(5)).expect("a connection with a missing body stayed open");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    // The server is not worse for it.
    assert_eq!(request(addr, "GET", "/hello", b""), (200, "Hello, world!\n".to_string()));
    server.stop();
}

#[test]
fn serve_explains_its_options_and_what_is_missing() {
    let kiln = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().unwrap();
    let help = kiln(&["serve", "-W", "help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("timeout=DURATION"));
    let missing = kiln(&["serve"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("kiln serve needs a MODULE"));
    let usage = kiln(&["serve", "--help"]);
    for flag in ["--listen", "--workers", "--slots", "--queue", "--admin", "--read-timeout", "--max-response"] {
        assert!(String::from_utf8_lossy(&usage.stdout).contains(flag), "--help does not mention {flag}");
    }
    let handler = handler();
    let too_few = kiln(&["serve", "--workers", "2", "--slots", "1", handler.to_str().unwrap()]);
    assert_eq!(too_few.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_few.stderr).contains("--slots 1 is fewer than the 2 workers"));
}
