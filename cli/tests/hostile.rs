//! The `kiln` command against hostile input and hostile guests: native code that must not run,
//! signatures, the object cache, resource limits, guests that block or meddle with the stdio
//! they were lent, and arguments that look like kiln's options.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kiln() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.env("KILN_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-hostile-cache"));
    command
}

fn run(args: &[&str]) -> Output {
    kiln().args(args).stdin(Stdio::null()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn compile(wat: &Path, so: &Path, extra: &[&str]) {
    let mut args = vec!["compile", wat.to_str().unwrap(), "-o", so.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "compile: {}", stderr(&out));
}

const ANSWER: &str = r#"(module (func (export "answer") (result i32) (i32.const 42)))"#;

/// A shared library shaped like a Kiln object (a `kiln_module` header with Kiln's magic and ABI
/// version, a valid checksum trailer), whose constructor creates the file named by
/// $KILN_EVIL_MARKER: if the marker exists, the dynamic loader ran its code. (Before the fix,
/// both `kiln inspect` and `kiln run upload.wasm` did.)
fn evil_library(dir: &Path) -> PathBuf {
    let source = write(
        dir,
        "evil.c",
        r#"#include <stdio.h>
#include <stdlib.h>
struct header { char magic[8]; unsigned version; unsigned size; const void *pointers[8]; };
__attribute__((visibility("default"))) const struct header kiln_module = { "KILNMOD", VERSION, 80, {0} };
__attribute__((constructor)) static void evil(void) {
    const char *marker = getenv("KILN_EVIL_MARKER");
    if (marker) { FILE *f = fopen(marker, "w"); if (f) fclose(f); }
}
"#,
    );
    let so = dir.join("evil.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", &format!("-DVERSION={}", kiln_abi::ABI_VERSION), "-o"])
        .arg(&so)
        .arg(&source)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success());
    let mut bytes = std::fs::read(&so).unwrap();
    let trailer = kiln_abi::checksum_trailer(&bytes);
    bytes.extend_from_slice(&trailer);
    std::fs::write(&so, bytes).unwrap();
    so
}

/// Issue 12.2: `kiln run` treats its input as WebAssembly; a compiled object (native code) is
/// refused without --allow-precompiled, whatever its name; and a shared object that would run
/// code at load time is refused before the loader sees it, by `run` and `inspect` alike.
/// Before, any ELF was dlopened, and its constructor ran.
#[test]
fn native_code_runs_only_with_consent_and_never_at_load_time() {
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("answer.so");
    compile(&write(dir.path(), "answer.wat", ANSWER), &so, &[]);
    let disguised = dir.path().join("upload.wasm");
    std::fs::copy(&so, &disguised).unwrap();
    for module in [&so, &disguised] {
        let out = run(&["run", "--invoke", "answer", module.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("--allow-precompiled"), "{}", stderr(&out));
        let out = run(&["run", "--allow-precompiled", "--invoke", "answer", module.to_str().unwrap()]);
        assert_eq!(stdout(&out), "42\n", "{}", stderr(&out));
    }

    let evil = evil_library(dir.path());
    let marker = dir.path().join("constructor-ran");
    for args in [vec!["run", "--allow-precompiled", "--invoke", "answer"], vec!["inspect"]] {
        let mut args = args;
        args.push(evil.to_str().unwrap());
        let out = kiln().args(&args).env("KILN_EVIL_MARKER", &marker).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("not a Kiln module"), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("DT_NEEDED") || stderr(&out).contains("DT_INIT"), "{args:?}: {}", stderr(&out));
        assert!(!marker.exists(), "{args:?}: the library's constructor ran");
    }
}

/// Issue 12.2: `kiln compile --sign` / `kiln run --verify`: a signed object runs, a changed one,
/// one signed by another key, or an unsigned one does not.
#[test]
fn signed_objects_run_only_with_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release");
    let out = run(&["keygen", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (secret, public) = (dir.path().join("release.key"), dir.path().join("release.pub"));
    let other = dir.path().join("other");
    assert!(run(&["keygen", other.to_str().unwrap()]).status.success());
    let so = dir.path().join("answer.so");
    compile(&write(dir.path(), "answer.wat", ANSWER), &so, &["--sign", secret.to_str().unwrap()]);
    assert!(dir.path().join("answer.so.minisig").exists());

    let verify = |key: &Path, module: &Path| {
        run(&["run", "--verify", key.to_str().unwrap(), "--invoke", "answer", module.to_str().unwrap()])
    };
    let out = verify(&public, &so);
    assert_eq!(stdout(&out), "42\n", "{}", stderr(&out));
    let out = verify(&dir.path().join("other.pub"), &so);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));

    // One byte changed, even with a fixed-up checksum, breaks the signature.
    let mut bytes = std::fs::read(&so).unwrap();
    bytes[100] ^= 1;
    let changed = dir.path().join("changed.so");
    std::fs::write(&changed, &bytes).unwrap();
    std::fs::copy(dir.path().join("answer.so.minisig"), dir.path().join("changed.so.minisig")).unwrap();
    let out = verify(&public, &changed);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));

    let unsigned = dir.path().join("unsigned.so");
    compile(&dir.path().join("answer.wat"), &unsigned, &[]);
    let out = verify(&public, &unsigned);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not signed"), "{}", stderr(&out));
}

/// Issue 12.8: a cache entry is bound to the wasm it came from, and a cache directory other
/// users can write is not used. Issue 12.3: an empty KILN_CACHE_DIR writes nothing into the
/// current directory.
#[test]
fn the_object_cache_cannot_be_swapped_or_shared() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = write(dir.path(), "a.wat", ANSWER);
    let b = write(dir.path(), "b.wat", r#"(module (func (export "answer") (result i32) (i32.const 7)))"#);
    let cached = |module: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["run", "--invoke", "answer", module.to_str().unwrap()])
            .env("KILN_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    assert_eq!(stdout(&cached(&a)), "42\n");
    let entry_a: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(stdout(&cached(&b)), "7\n");
    let entry_b = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).find(|p| !entry_a.contains(p)).unwrap();
    // Put b's object where a's belongs: a still answers 42 (the entry is compiled again).
    std::fs::copy(&entry_b, &entry_a[0]).unwrap();
    let out = cached(&a);
    assert_eq!(stdout(&out), "42\n", "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);

    // A directory others can write is refused (with a warning), and the module still runs.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = cached(&a);
    assert_eq!(stdout(&out), "42\n");
    assert!(stderr(&out).contains("other users can write"), "{}", stderr(&out));

    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--invoke", "answer", a.to_str().unwrap()])
        .env("KILN_CACHE_DIR", "")
        .env("XDG_CACHE_HOME", dir.path().join("xdg"))
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "42\n", "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "nothing written into the current directory");
}

/// Issue 12.7 from the command line: `-W` limits, named in the error.
#[test]
fn limits_are_set_with_w_options() {
    let dir = tempfile::tempdir().unwrap();
    let big = write(dir.path(), "big.wat", r#"(module (memory 2) (func (export "f")))"#);
    let out = run(&["run", "-W", "max-memory-size=64K", "--invoke", "f", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("max-memory-size"), "{}", stderr(&out));
    assert!(run(&["run", "-W", "max-memory-size=128K", "--invoke", "f", big.to_str().unwrap()]).status.success());
    let out = run(&["run", "-W", "max-memories=0", "--invoke", "f", big.to_str().unwrap()]);
    assert!(stderr(&out).contains("max-memories"), "{}", stderr(&out));
    let out = run(&["run", "-W", "no-such-thing=1", big.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown option"), "{}", stderr(&out));
    let help = run(&["run", "-W", "help"]);
    assert!(help.status.success(), "{}", stderr(&help));
    for name in
        ["timeout", "fuel", "max-memory-size", "max-table-elements", "max-instances", "max-tables", "max-memories"]
    {
        assert!(stdout(&help).contains(name), "-W help lacks {name}");
    }
    // Fuel from the command line: a loop stops with "all fuel consumed".
    let spin = write(dir.path(), "spin.wat", r#"(module (func (export "spin") (loop $l (br $l))))"#);
    let out = run(&["run", "-W", "fuel=10000", "--invoke", "spin", spin.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(134));
    assert!(stderr(&out).contains("all fuel consumed"), "{}", stderr(&out));
}

const SLEEP_AN_HOUR: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

const READ_STDIN: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Issue 12.4: a guest blocked in `poll_oneoff` (an hour's clock) or in a read of a stdin that
/// never delivers is stopped by the deadline. Before, both ignored it.
#[test]
fn a_deadline_stops_a_guest_blocked_in_wasi() {
    let dir = tempfile::tempdir().unwrap();
    for (name, wat) in [("sleep", SLEEP_AN_HOUR), ("read", READ_STDIN)] {
        let module = write(dir.path(), &format!("{name}.wat"), wat);
        let start = Instant::now();
        // stdin is a pipe nobody writes to and this process keeps open.
        let mut child = kiln()
            .args(["run", "-W", "timeout=300ms", module.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        while child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "{name}: still blocked after {:?}", start.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(134), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains("deadline exceeded"), "{name}: {}", stderr(&out));
    }
}

const MEDDLER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $set_flags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $set_size (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $set_flags (i32.const 1) (i32.const 4)))
    (drop (call $set_flags (i32.const 2) (i32.const 4)))
    (call $exit (call $set_size (i32.const 1) (i64.const 0)))))"#;

/// Issue 12.5: a guest cannot change the host's stdio: its non-blocking flag stays off the
/// caller's pipe, and the caller's log file is not truncated. Before, the pipe stayed
/// O_NONBLOCK after kiln exited and `fd_filestat_set_size` emptied the log.
#[test]
fn a_guest_cannot_change_the_stdio_it_was_lent() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "meddler.wat", MEDDLER);
    let log_path = dir.path().join("log");
    std::fs::write(&log_path, "keep me").unwrap();
    let log = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let out = kiln()
        .args(["run", module.to_str().unwrap()])
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(writer.try_clone().unwrap()))
        .output()
        .unwrap();
    const NOTCAPABLE: i32 = 76;
    assert_eq!(out.status.code(), Some(NOTCAPABLE), "set_size on stdout is refused");
    assert_eq!(std::fs::read_to_string(&log_path).unwrap(), "keep me");
    // SAFETY: F_GETFL on a descriptor this test owns.
    let flags = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0, "the caller's pipe is still blocking");
    drop(reader);
}

/// Everything after the module belongs to the guest (`wasmtime run`'s rule): `--dir /` there
/// is the guest's argument, not a preopen of the whole filesystem.
#[test]
fn arguments_after_the_module_are_the_guests() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(
        dir.path(),
        "count.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (drop (call $sizes (i32.const 0) (i32.const 4)))
            ;; argc * 10 + (1 if fd 3 is a preopen)
            (call $exit (i32.add (i32.mul (i32.load (i32.const 0)) (i32.const 10))
                                 (i32.eqz (call $prestat (i32.const 3) (i32.const 8)))))))"#,
    );
    let out = run(&["run", module.to_str().unwrap(), "--dir", "/", "--", "--help"]);
    assert_eq!(out.status.code(), Some(50), "five arguments, no preopen: {}", stderr(&out));
    let out = run(&["run", "--dir", dir.path().to_str().unwrap(), module.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(11), "one argument and a preopen: {}", stderr(&out));
}

/// Issue 12.8: `/proc` (and `/sys`, `/dev`) cannot be given to a guest.
#[test]
fn the_hosts_own_directories_cannot_be_preopened() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "nop.wat", r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    for special in ["/proc", "/sys", "/dev"] {
        let out = run(&["run", "--dir", special, module.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{special}");
        assert!(stderr(&out).contains("refusing to give the guest"), "{special}: {}", stderr(&out));
    }
    assert!(run(&["run", "--dir", dir.path().to_str().unwrap(), module.to_str().unwrap()]).status.success());
}
