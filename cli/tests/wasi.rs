//! `kiln run` as a WASI runner (DESIGN.md contract): `_start` with stdio passed through,
//! `--dir HOST[::GUEST]`, `--env K=V`, program arguments after the module, and the `proc_exit`
//! code as kiln's exit status. The guests are small `.wat` programs, so these tests need no C
//! toolchain (the C programs are in `wasi-tests/`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kiln(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat).unwrap();
    path
}

const HELLO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello, world!\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// Writes its arguments, then its environment, one per line, and exits with status 7.
const ECHO: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  ;; Writes `len` bytes at `buf` to stdout with every NUL turned into a newline.
  (func $print_list (param $buf i32) (param $len i32)
    (local $i i32)
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (local.get $buf) (local.get $i))))
          (then (i32.store8 (i32.add (local.get $buf) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.store (i32.const 0) (local.get $buf))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (call $print_list (i32.const 4096) (i32.load (i32.const 20)))
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 1024) (i32.const 8192)))
    (call $print_list (i32.const 8192) (i32.load (i32.const 20)))
    (call $exit (i32.const 7))))
"#;

/// Prints the name of preopen fd 3, then the content of the file named by argv[1] opened
/// beneath it; exits with the errno of the first call that fails.
const CAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $prestat_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "\n")
  (func $check (param $errno i32)
    (if (local.get $errno) (then (call $exit (local.get $errno)))))
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $end (loop $l
      (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    (local.get $n))
  (func (export "_start")
    (local $path i32) (local $fd i32)
    ;; The preopen's name.
    (call $check (call $prestat (i32.const 3) (i32.const 16)))
    (call $check (call $prestat_name (i32.const 3) (i32.const 256) (i32.load (i32.const 20))))
    (call $write (i32.const 256) (i32.load (i32.const 20)))
    (call $write (i32.const 200) (i32.const 1))
    ;; argv[1], opened for reading beneath fd 3.
    (call $check (call $args_get (i32.const 1024) (i32.const 2048)))
    (local.set $path (i32.load (i32.const 1028)))
    (call $check (call $open (i32.const 3) (i32.const 1) (local.get $path) (call $strlen (local.get $path))
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 24)))
    (local.set $fd (i32.load (i32.const 24)))
    (i32.store (i32.const 32) (i32.const 8192))
    (i32.store (i32.const 36) (i32.const 4096))
    (call $check (call $fd_read (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $write (i32.const 8192) (i32.load (i32.const 40)))))
"#;

/// Copies stdin to stdout.
const STDIN_COPY: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (block $eof (loop $copy
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br_if $eof (i32.eqz (i32.load (i32.const 8))))
      (i32.store (i32.const 4) (i32.load (i32.const 8)))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $copy)))))
"#;

const TRAPS: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") unreachable))
"#;

#[test]
fn hello_world_prints_exactly_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "hello.wat", HELLO);
    let out = kiln(&["run", module.to_str().unwrap()], b"");
    assert_eq!(stdout(&out), "Hello, world!\n", "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn arguments_environment_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "echo.wat", ECHO);
    let m = module.to_str().unwrap();
    let out = kiln(&["run", "--env", "A=1", "--env", "GREETING=hello there", m, "x", "-y", "two words"], b"");
    assert_eq!(stdout(&out), format!("{m}\nx\n-y\ntwo words\nA=1\nGREETING=hello there\n"), "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(7), "the proc_exit code is kiln's status");

    // `--env K` copies the host's value; nothing else of the host's environment leaks in.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--env", "KILN_TEST_VAR", m])
        .env("KILN_TEST_VAR", "from host")
        .env("KILN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), format!("{m}\nKILN_TEST_VAR=from host\n"), "stderr: {}", stderr(&out));
}

/// Wasmtime's conventions: `kiln MODULE` runs it, options may come without `run`, `--argv0`
/// names the program, `-` reads the module from stdin, and `inspect` reads WebAssembly too.
#[test]
fn the_conventions_of_wasmtime_run_hold() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "echo.wat", ECHO);
    let m = module.to_str().unwrap();
    // `kiln MODULE ARGS` and `kiln --OPTION ... MODULE ARGS` are `kiln run ...`.
    let out = kiln(&[m, "x"], b"");
    assert_eq!((stdout(&out), out.status.code()), (format!("{m}\nx\n"), Some(7)), "{}", stderr(&out));
    let out = kiln(&["--env", "A=1", m], b"");
    assert_eq!(stdout(&out), format!("{m}\nA=1\n"), "{}", stderr(&out));
    // --argv0.
    let out = kiln(&["run", "--argv0", "echo", m, "x"], b"");
    assert_eq!(stdout(&out), "echo\nx\n", "{}", stderr(&out));
    // The module from stdin (text here), its arguments after `-`.
    let out = kiln(&["run", "-", "y"], ECHO.as_bytes());
    assert_eq!((stdout(&out), out.status.code()), ("-\ny\n".to_string(), Some(7)), "{}", stderr(&out));
    let adder = r#"(module (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#;
    let out = kiln(&["run", "--invoke", "add", "-", "2", "3"], adder.as_bytes());
    assert_eq!(stdout(&out), "5\n", "{}", stderr(&out));
    // `inspect` of WebAssembly describes it without compiling (no object appears).
    let out = kiln(&["inspect", m], b"");
    let text = stdout(&out);
    assert!(text.starts_with(&format!("module {m} (WebAssembly, not compiled)\n")), "{text}{}", stderr(&out));
    assert!(text.contains("wasi_snapshot_preview1::proc_exit") && text.contains("_start Func("), "{text}");
    assert!(!dir.path().join("echo.so").exists());
}

/// `kiln cache` shows where compiled modules are kept and how many; `kiln cache clear` empties it.
#[test]
fn the_cache_can_be_seen_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let with_cache = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).env("KILN_CACHE_DIR", &cache).output().unwrap()
    };
    let module = write_module(dir.path(), "hello.wat", HELLO);
    assert!(with_cache(&["run", module.to_str().unwrap()]).status.success());
    let shown = stdout(&with_cache(&["cache"]));
    assert!(shown.starts_with(&format!("cache: {}\ncompiled modules: 1 (", cache.display())), "{shown}");
    // Only the cache's own entries are touched.
    std::fs::write(cache.join("notes.txt"), "mine").unwrap();
    assert_eq!(
        stdout(&with_cache(&["cache", "clear"])),
        format!("removed 1 compiled modules from {}\n", cache.display())
    );
    assert!(stdout(&with_cache(&["cache"])).contains("compiled modules: 0 (0 bytes)"));
    assert!(cache.join("notes.txt").exists());
}

#[test]
fn dir_preopens_a_host_directory_under_its_guest_name() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "cat.wat", CAT);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("note.txt"), "a note\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret\n").unwrap();
    let m = module.to_str().unwrap();
    let host = data.to_str().unwrap();

    let out = kiln(&["run", "--dir", &format!("{host}::/sandbox"), m, "note.txt"], b"");
    assert_eq!(stdout(&out), "/sandbox\na note\n", "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));

    // Without `::GUEST` the guest name is the host path as written.
    let out = kiln(&["run", "--dir", host, m, "note.txt"], b"");
    assert_eq!(stdout(&out), format!("{host}\na note\n"));

    // `..` out of the preopen is refused with errno `perm` (63), which the program exits with.
    let out = kiln(&["run", "--dir", host, m, "../secret.txt"], b"");
    assert_eq!(out.status.code(), Some(63), "stdout: {}", stdout(&out));
    assert!(!stdout(&out).contains("secret"));

    // A missing file is `noent` (44).
    let out = kiln(&["run", "--dir", host, m, "missing.txt"], b"");
    assert_eq!(out.status.code(), Some(44));

    // Without --dir there is no fd 3: `badf` (8).
    let out = kiln(&["run", m, "note.txt"], b"");
    assert_eq!(out.status.code(), Some(8));

    // A --dir that does not exist is a clear error before the program runs.
    let out = kiln(&["run", "--dir", "/no/such/kiln/dir", m], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/kiln/dir"), "{}", stderr(&out));
}

#[test]
fn stdin_is_passed_through() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "copy.wat", STDIN_COPY);
    let input: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let out = kiln(&["run", module.to_str().unwrap()], &input);
    assert_eq!(out.stdout, input);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_trapping_command_reports_the_trap() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "trap.wat", TRAPS);
    let out = kiln(&["run", module.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(134));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
}

#[test]
fn modules_without_start_or_with_foreign_imports_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let no_start = write_module(dir.path(), "lib.wat", "(module (func (export \"f\")))");
    let out = kiln(&["run", no_start.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("_start"), "{}", stderr(&out));

    let foreign =
        write_module(dir.path(), "foreign.wat", "(module (import \"env\" \"f\" (func)) (func (export \"_start\")))");
    let out = kiln(&["run", foreign.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("env::f"), "{}", stderr(&out));

    let bad_type = write_module(
        dir.path(),
        "badtype.wat",
        "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32))) (func (export \"_start\")))",
    );
    let out = kiln(&["run", bad_type.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("fd_write"), "{}", stderr(&out));
}

#[test]
fn invoke_still_calls_an_export_of_a_wasi_module() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(
        dir.path(),
        "mixed.wat",
        "(module (import \"wasi_snapshot_preview1\" \"sched_yield\" (func $y (result i32)))
           (func (export \"add\") (param i32 i32) (result i32) (drop (call $y)) (i32.add (local.get 0) (local.get 1))))",
    );
    let out = kiln(&["run", "--invoke", "add", module.to_str().unwrap(), "2", "-5"], b"");
    assert_eq!(stdout(&out), "-3\n", "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn timeout_stops_a_runaway_guest_with_deadline_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write_module(
        dir.path(),
        "spin.wat",
        "(module (memory (export \"memory\") 1)
           (func (export \"_start\") (loop $l (br $l)))
           (func (export \"spin\") (result i32) (loop $l (br $l)) (i32.const 0)))",
    );
    let m = spin.to_str().unwrap();
    for args in [vec!["run", "-W", "timeout=200ms", m], vec!["run", "--timeout", "0.2", "--invoke", "spin", m]] {
        let start = std::time::Instant::now();
        let out = kiln(&args, b"");
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{args:?} took {:?}", start.elapsed());
        assert_eq!(out.status.code(), Some(134), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("deadline exceeded"), "{args:?}: {}", stderr(&out));
    }
    // A program that finishes in time is unaffected.
    let hello = write_module(dir.path(), "hello.wat", HELLO);
    let out = kiln(&["run", "--timeout", "1m", hello.to_str().unwrap()], b"");
    assert_eq!(stdout(&out), "Hello, world!\n");
    assert_eq!(out.status.code(), Some(0));
    let out = kiln(&["run", "--timeout", "soon", hello.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2), "a bad duration is a usage error");
}

#[test]
fn the_wasi_testsuite_adapter_drives_kiln() {
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasi-tests/adapter.py");
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path(), "echo.wat", ECHO);
    let python = |args: &[&str]| {
        Command::new("python3")
            .arg(&adapter)
            .args(args)
            .env("KILN", env!("CARGO_BIN_EXE_kiln"))
            .env_remove("TEST_RUNTIME_EXE")
            .env("KILN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"))
            .current_dir(dir.path())
            .output()
            .expect("python3 runs the adapter (the WASI testsuite runner needs python3)")
    };
    // The runner reads "NAME VERSION" from --version.
    let out = python(&["--version"]);
    assert_eq!(stdout(&out).trim(), format!("kiln {}", env!("CARGO_PKG_VERSION")), "{}", stderr(&out));

    // Arguments (even ones that look like flags), variables and directories reach the program;
    // its exit status comes back.
    std::fs::create_dir(dir.path().join("fs-tests.dir")).unwrap();
    let out = python(&[
        "--test-file",
        module.to_str().unwrap(),
        "--arg",
        "fs-tests.dir",
        "--arg",
        "--not-a-flag",
        "--env",
        "A=b=c",
        "--dir",
        "fs-tests.dir",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{}\nfs-tests.dir\n--not-a-flag\nA=b=c\n", module.display()));
}
