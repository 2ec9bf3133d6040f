//! The `kiln` command's contract (DESIGN.md): compile to ET_DYN, run with `--invoke`, trap
//! wording on stderr with a positive status, clear errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PROGRAM: &str = r#"
(module
  (memory 1)
  (global $counter (mut i32) (i32.const 0))
  (global $seeded (mut i64) (i64.const 0))
  (func $start (global.set $seeded (i64.const 42)))
  (start $start)
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2)) (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func (export "sum_memory") (param $n i32) (result i64)
    (local $i i32) (local $acc i64)
    (loop $fill
      (i32.store (i32.mul (local.get $i) (i32.const 4)) (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (local.get $n))))
    (local.set $i (i32.const 0))
    (loop $sum
      (local.set $acc (i64.add (local.get $acc) (i64.extend_i32_u (i32.load (i32.mul (local.get $i) (i32.const 4))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $sum (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc))
  (func (export "seeded") (result i64) (global.get $seeded))
  (func (export "count") (result i32)
    (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
    (global.get $counter))
  (func (export "divmod") (param i32 i32) (result i32 i32)
    (i32.div_s (local.get 0) (local.get 1)) (i32.rem_s (local.get 0) (local.get 1)))
  (func (export "neg") (param i64) (result i64) (i64.sub (i64.const 0) (local.get 0)))
  (func (export "half") (param f64) (result f64) (f64.mul (local.get 0) (f64.const 0.5)))
  (func (export "to_int") (param f32) (result i32) (i32.trunc_f32_s (local.get 0)))
  (type $unary (func (param i32) (result i32)))
  (table funcref (elem $fib $double))
  (func $double (param i32) (result i32) (i32.shl (local.get 0) (i32.const 1)))
  (func (export "dispatch") (param i32 i32) (result i32) (call_indirect (type $unary) (local.get 0) (local.get 1)))
  (func (export "bad_dispatch") (param i32) (result i64) (call_indirect (result i64) (local.get 0)))
  (func $forever (export "forever") (param i32) (result i32) (call $forever (i32.add (local.get 0) (i32.const 1))))
  (func (export "oob") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "unreachable") (unreachable)))
"#;

struct Compiled {
    _dir: tempfile::TempDir,
    so: PathBuf,
    wat: PathBuf,
}

fn compiled() -> Compiled {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("program.wat");
    std::fs::write(&wat, PROGRAM).unwrap();
    let so = dir.path().join("program.so");
    let out = kiln(&["compile", wat.to_str().unwrap(), "-o", so.to_str().unwrap()]);
    assert!(out.status.success(), "compile failed: {}", stderr(&out));
    Compiled { _dir: dir, so, wat }
}

/// `kiln run --invoke NAME MODULE ARGS...`, allowing a compiled object (these tests made it).
fn run(module: &Path, name: &str, args: &[&str]) -> Output {
    let mut all = vec!["run", "--allow-precompiled", "--invoke", name, module.to_str().unwrap()];
    all.extend_from_slice(args);
    kiln(&all)
}

#[test]
fn compile_writes_an_elf_shared_object() {
    let c = compiled();
    let bytes = std::fs::read(&c.so).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    assert_eq!(e_type, 3, "e_type must be ET_DYN");
}

#[test]
fn run_prints_each_result_on_its_own_line() {
    let c = compiled();
    let cases: &[(&str, &[&str], &str)] = &[
        ("fib", &["20"], "6765\n"),
        ("sum_memory", &["1000"], "499500\n"),
        ("seeded", &[], "42\n"),
        ("count", &[], "1\n"),
        ("divmod", &["-7", "2"], "-3\n-1\n"),
        ("neg", &["9223372036854775807"], "-9223372036854775807\n"),
        ("half", &["3"], "1.5\n"),
        ("half", &["inf"], "inf\n"),
        ("half", &["nan"], "nan\n"),
        ("dispatch", &["21", "1"], "42\n"),
        ("dispatch", &["10", "0"], "55\n"),
    ];
    for (name, args, expected) in cases {
        // Through the .so and straight from the text.
        for module in [&c.so, &c.wat] {
            let out = run(module, name, args);
            assert!(out.status.success(), "{name} {args:?}: {}", stderr(&out));
            assert_eq!(stdout(&out), *expected, "{name} {args:?}");
        }
    }
}

#[test]
fn traps_print_the_spec_wording_and_exit_with_a_positive_status() {
    let c = compiled();
    let cases: &[(&str, &[&str], &str)] = &[
        ("divmod", &["1", "0"], "integer divide by zero"),
        ("divmod", &["-2147483648", "-1"], "integer overflow"),
        ("oob", &["65535"], "out of bounds memory access"),
        ("forever", &["0"], "call stack exhausted"),
        ("bad_dispatch", &["0"], "indirect call type mismatch"),
        ("bad_dispatch", &["5"], "undefined element"),
        ("unreachable", &[], "unreachable"),
        ("to_int", &["nan"], "invalid conversion to integer"),
        ("to_int", &["1e10"], "integer overflow"),
    ];
    for (name, args, message) in cases {
        let out = run(&c.so, name, args);
        assert!(out.status.code().is_some_and(|c| c > 0), "{name}: {:?}", out.status);
        assert!(stderr(&out).contains(message), "{name}: stderr was {:?}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn uninitialized_table_entries_trap() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("t.wat");
    std::fs::write(&wat, r#"(module (table 2 funcref) (func (export "f") (call_indirect (i32.const 1))))"#).unwrap();
    let out = run(&wat, "f", &[]);
    assert!(out.status.code().is_some_and(|c| c > 0));
    assert!(stderr(&out).contains("uninitialized element"), "{}", stderr(&out));
}

#[test]
fn bad_input_is_a_clear_error_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let c = compiled();

    // Malformed binary: the error names the problem and the offset.
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\x01\x05\x01\x60").unwrap();
    let out = kiln(&["compile", bad.to_str().unwrap(), "-o", dir.path().join("x.so").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("offset"), "{}", stderr(&out));

    // Invalid (type error).
    let invalid = dir.path().join("invalid.wat");
    std::fs::write(&invalid, "(module (func (result i32) (i64.const 1)))").unwrap();
    let out = kiln(&["compile", invalid.to_str().unwrap(), "-o", dir.path().join("y.so").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("type mismatch"), "{}", stderr(&out));

    // A truncated shared object.
    let bytes = std::fs::read(&c.so).unwrap();
    let truncated = dir.path().join("truncated.so");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let out = run(&truncated, "fib", &["1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a Kiln module"), "{}", stderr(&out));

    // Wrong arguments.
    let out = run(&c.so, "fib", &["x"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(&c.so, "nope", &[]);
    assert!(stderr(&out).contains("no function named `nope`"), "{}", stderr(&out));
}

#[test]
fn help_documents_every_command() {
    let out = kiln(&["--help"]);
    let text = stdout(&out);
    for word in ["compile", "run", "inspect", "Exit status"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    let out = kiln(&["run", "--help"]);
    assert!(stdout(&out).contains("--invoke"));
}

#[test]
fn inspect_lists_exports() {
    let c = compiled();
    let out = kiln(&["inspect", c.so.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("fib"));
    assert!(stdout(&out).contains("start function"));
}

/// What `wasmtime run` does with exit statuses, and nothing a program can do passes for a
/// trap: `proc_exit(N)` exits N for N in [0, 126), anything else is an error (status 1), a trap
/// exits 134, and a `_start` that is not a command's is refused by name.
#[test]
fn exit_statuses_follow_wasmtime_and_never_pass_for_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let exits = |status: i64| {
        let wat = dir.path().join(format!("exit{status}.wat"));
        std::fs::write(
            &wat,
            format!(
                r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                     (memory (export "memory") 1)
                     (func (export "_start") (call $exit (i32.const {status}))))"#
            ),
        )
        .unwrap();
        kiln(&["run", wat.to_str().unwrap()])
    };
    for status in [0, 3, 125] {
        let out = exits(status);
        assert_eq!(out.status.code(), Some(status as i32), "{}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    }
    for status in [126, 134, 256, -1] {
        let out = exits(status);
        assert_eq!(out.status.code(), Some(1), "proc_exit({status}): {}", stderr(&out));
        assert!(stderr(&out).contains("outside [0, 126)"), "{}", stderr(&out));
    }
    let trap = run(&compiled().so, "unreachable", &[]);
    assert_eq!(trap.status.code(), Some(134), "{}", stderr(&trap));
    let wat = dir.path().join("not_a_command.wat");
    std::fs::write(&wat, r#"(module (func (export "_start") (param i32)))"#).unwrap();
    let out = kiln(&["run", wat.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not_a_command.wat: its `_start` takes 1 parameters"), "{}", stderr(&out));
}

/// `kiln compile` runs no other program (it writes the shared object itself): with an empty
/// PATH it still compiles, the object has no dynamic relocation and runs; a compile that fails
/// leaves nothing at the output path.
#[test]
fn compile_needs_no_external_program() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("alone.wat");
    std::fs::write(&wat, r#"(module (func $f (result i32) (i32.const 5)) (func (export "g") (result i32) (call $f)))"#)
        .unwrap();
    let so = dir.path().join("alone.so");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["compile", wat.to_str().unwrap(), "-o", so.to_str().unwrap()])
        .env("PATH", "")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&so).unwrap();
    let file = object::File::parse(&bytes[..]).unwrap();
    assert!(object::Object::dynamic_relocations(&file).is_none_or(|mut r| r.next().is_none()), "no relocation");
    let run = kiln(&["run", "--allow-precompiled", "--invoke", "g", so.to_str().unwrap()]);
    assert_eq!(stdout(&run), "5\n", "{}", stderr(&run));

    let bad = dir.path().join("bad.wat");
    std::fs::write(&bad, "(module (func (result i32)))").unwrap();
    let target = dir.path().join("bad.so");
    let out = kiln(&["compile", bad.to_str().unwrap(), "-o", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!target.exists() && left.len() == 3, "{left:?}");
}

/// `kiln compile -D` is Wasmtime's debugging group: `-D debug-info` is accepted (a module
/// without DWARF of its own compiles as without it), `-D help` lists it, and an unknown option
/// is refused by name.
#[test]
fn compile_takes_debug_options() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("plain.wat");
    std::fs::write(&wat, r#"(module (func (export "f") (result i32) (i32.const 3)))"#).unwrap();
    let so = dir.path().join("plain.so");
    let out = kiln(&["compile", "-D", "debug-info", wat.to_str().unwrap(), "-o", so.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = kiln(&["run", "--allow-precompiled", "--invoke", "f", so.to_str().unwrap()]);
    assert_eq!(stdout(&run), "3\n");
    let help = kiln(&["compile", "-D", "help", "x.wat"]);
    assert!(help.status.success() && stdout(&help).contains("-D debug-info=y|n"), "{}", stdout(&help));
    let bad = kiln(&["compile", "-D", "bogus", wat.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("unknown option `-D bogus` (known: debug-info"), "{}", stderr(&bad));
}

/// `--profile jitdump` writes jit-PID.dump in the current directory: the jitdump header, then
/// one code-load record per guest function, named as in the object's symbols and carrying the
/// function's machine code (what `perf inject --jit` reads).
#[test]
fn profile_jitdump_describes_every_guest_function() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("prof.wat");
    std::fs::write(
        &wat,
        r#"(module (func $leaf (result i32) (i32.const 7)) (func (export "run") (result i32) (call $leaf)))"#,
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--profile", "jitdump", "--invoke", "run", wat.to_str().unwrap()])
        .current_dir(dir.path())
        .env("KILN_NO_CACHE", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && stdout(&out) == "7\n", "{}", stdout(&out));
    let dump = std::fs::read(dir.path().join(format!("jit-{pid}.dump"))).unwrap();
    let u32_at = |at: usize| u32::from_le_bytes(dump[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(dump[at..at + 8].try_into().unwrap());
    // Header: magic "JiTD", version 1, its size, EM_X86_64, padding, the pid.
    assert_eq!([u32_at(0), u32_at(4), u32_at(8), u32_at(12), u32_at(20)], [0x4A69_5444, 1, 40, 62, pid]);
    let mut records = Vec::new();
    let mut at = 40;
    while at < dump.len() {
        let (id, size) = (u32_at(at), u32_at(at + 4) as usize);
        assert_eq!(id, 0, "only code-load records");
        let (code_addr, code_size) = (u64_at(at + 32), u64_at(at + 40) as usize);
        let name_end = at + 56 + dump[at + 56..].iter().position(|&b| b == 0).unwrap();
        let name = String::from_utf8(dump[at + 56..name_end].to_vec()).unwrap();
        assert_eq!(size, 56 + name.len() + 1 + code_size, "{name}: the record holds its code");
        assert!(code_addr != 0 && code_size > 0, "{name}");
        records.push(name);
        at += size;
    }
    assert_eq!(at, dump.len());
    assert_eq!(records, ["wasm[0]::leaf", "wasm[1]"]);
}

/// A trap prints the guest's frames under its wording, innermost first, each with the module
/// offset of the instruction it is at and named from the name section; KILN_BACKTRACE=0
/// leaves only the wording.
#[test]
fn a_trap_prints_a_guest_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("nested.wat");
    let text =
        r#"(module (func $leaf (unreachable)) (func $caller (call $leaf)) (func (export "run") (call $caller)))"#;
    std::fs::write(&wat, text).unwrap();
    let out = kiln(&["run", "--invoke", "run", wat.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(134));
    let err = stderr(&out);
    let expected = "wasm trap: unreachable\nwasm backtrace:\n     0:     0x22 - leaf (wasm function 0)\n     1:     0x26 - caller (wasm function 1)\n     2:     0x2b - wasm function 2\n";
    assert_eq!(err, expected);
    // Those offsets are the `unreachable` and the two `call`s in the module's bytes.
    let bytes = wat::parse_str(text).unwrap();
    assert_eq!([bytes[0x22], bytes[0x26], bytes[0x2b]], [0x00, 0x10, 0x10]);
    let quiet = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--invoke", "run", wat.to_str().unwrap()])
        .env("KILN_BACKTRACE", "0")
        .output()
        .unwrap();
    assert_eq!(stderr(&quiet), "wasm trap: unreachable\n");
}

/// Output kiln cannot write is never a panic: a reader that went away ends kiln quietly and
/// successfully, a full disk is an error.
#[test]
fn unwritable_output_is_never_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let exports: String = (0..5000).map(|i| format!(r#"(func (export "f{i}"))"#)).collect();
    let wat = dir.path().join("many.wat");
    std::fs::write(&wat, format!("(module {exports})")).unwrap();
    let so = dir.path().join("many.so");
    assert!(kiln(&["compile", wat.to_str().unwrap(), "-o", so.to_str().unwrap()]).status.success());
    // `kiln inspect many.so | head -1`: the listing is far larger than a pipe holds.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["inspect", so.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("module "), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // `kiln run --invoke ... > /dev/full`.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let c = compiled();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "--allow-precompiled", "--invoke", "fib", c.so.to_str().unwrap(), "10"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot write to standard output"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// Every error names the file it is about, once, and never a file the user did not name.
#[test]
fn errors_name_the_users_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.so");
    let out = kiln(&["inspect", missing.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(err.contains("missing.so") && err.matches("No such file or directory").count() == 1, "{err}");
    let broken = dir.path().join("broken.wat");
    std::fs::write(&broken, "(module\n  (func\n   (i32.add))").unwrap();
    for command in ["compile", "run"] {
        let err = stderr(&kiln(&[command, broken.to_str().unwrap()]));
        assert!(err.contains("broken.wat:3:14") && !err.contains("<anon>"), "{command}: {err}");
    }
    let good = dir.path().join("good.wat");
    std::fs::write(&good, "(module)").unwrap();
    let out = kiln(&["compile", good.to_str().unwrap(), "-o", "/nonexistent/dir/x.so"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("/nonexistent/dir/x.so") && !err.contains(".kiln-"), "{err}");
}

#[test]
fn timeout_stops_a_tight_loop_and_a_loop_of_calls_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("runaway.wat");
    std::fs::write(
        &wat,
        r#"(module
             (func $leaf (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
             (func (export "spin") (loop $l (br $l)))
             (func (export "calls") (local i32) (loop $l (local.set 0 (call $leaf (local.get 0))) (br $l))))"#,
    )
    .unwrap();
    let so = dir.path().join("runaway.so");
    let out = kiln(&["compile", wat.to_str().unwrap(), "-o", so.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for export in ["spin", "calls"] {
        let start = std::time::Instant::now();
        let out =
            kiln(&["run", "--allow-precompiled", "-W", "timeout=100ms", "--invoke", export, so.to_str().unwrap()]);
        let elapsed = start.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(1), "{export}: stopped after {elapsed:?}");
        assert_eq!(out.status.code(), Some(134), "{export}: {}", stderr(&out));
        assert!(stderr(&out).contains("deadline exceeded"), "{export}: {}", stderr(&out));
    }
}

#[test]
fn a_damaged_cache_entry_is_compiled_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let module = dir.path().join("answer.wat");
    std::fs::write(&module, r#"(module (func (export "answer") (result i32) (i32.const 42)))"#).unwrap();
    let run_cached = || {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["run", "--invoke", "answer", module.to_str().unwrap()])
            .env("KILN_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    assert_eq!(stdout(&run_cached()), "42\n");
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();

    let out = run_cached();
    assert_eq!(stdout(&out), "42\n", "{}", stderr(&out));
    assert_ne!(std::fs::read(&entries[0]).unwrap(), bytes, "the entry was written again");
}

/// Proposals Kiln runs but leaves off by default are switched on with Wasmtime's `-W` names,
/// for `run` and for `compile`; without the switch the module is refused by name.
#[test]
fn proposals_are_switched_on_with_dash_w() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("wide.wat");
    std::fs::write(
        &wat,
        r#"(module (func (export "hi") (param i64 i64) (result i64)
             (i64.mul_wide_u (local.get 0) (local.get 1)) (return)))"#,
    )
    .unwrap();
    let wat = wat.to_str().unwrap();
    let refused = kiln(&["run", "--invoke", "hi", wat, "4294967296", "4294967296"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("wide arithmetic"), "{}", stderr(&refused));
    let out = kiln(&["run", "-W", "wide-arithmetic", "--invoke", "hi", wat, "4294967296", "4294967296"]);
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("1\n", Some(0)), "{}", stderr(&out));

    let so = dir.path().join("wide.so");
    let so = so.to_str().unwrap();
    assert!(!kiln(&["compile", wat, "-o", so]).status.success());
    let compiled = kiln(&["compile", "-W", "wide-arithmetic=y", wat, "-o", so]);
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    let out = kiln(&["run", "--allow-precompiled", "--invoke", "hi", so, "4294967296", "4294967296"]);
    assert_eq!(stdout(&out), "1\n", "{}", stderr(&out));
}

/// GC is switched on with `-W gc` (refused by name without it), and `-W max-gc-heap-size`
/// bounds the store's heap: a loop that keeps everything it allocates ends with "GC heap
/// exhausted" like any trap.
#[test]
fn gc_runs_with_dash_w_gc_within_its_heap_limit() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("gc.wat");
    std::fs::write(
        &wat,
        r#"(module (type $point (struct (field i32))) (type $bytes (array i8))
             (type $link (struct (field (ref null $link)) (field (ref $bytes))))
             (global $kept (mut (ref null $link)) (ref.null $link))
             (func (export "make") (param i32) (result i32) (struct.get $point 0 (struct.new $point (local.get 0))))
             (func (export "fill") (loop
               (global.set $kept (struct.new $link (global.get $kept) (array.new_default $bytes (i32.const 100000))))
               (br 0))))"#,
    )
    .unwrap();
    let wat = wat.to_str().unwrap();
    let refused = kiln(&["run", "--invoke", "make", wat, "5"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("gc"), "{}", stderr(&refused));
    let out = kiln(&["run", "-W", "gc", "--invoke", "make", wat, "5"]);
    assert_eq!((stdout(&out).as_str(), out.status.code()), ("5\n", Some(0)), "{}", stderr(&out));
    let out = kiln(&["run", "-W", "gc", "-W", "max-gc-heap-size=1M", "--invoke", "fill", wat]);
    assert_eq!(out.status.code(), Some(134), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("wasm trap: GC heap exhausted"), "{}", stderr(&out));
}

/// An exception no guest frame catches ends `kiln run` like a trap (status 134), saying what it
/// carried; `-W exceptions=n` refuses exception handling, `-W legacy-exceptions` accepts the
/// older `try`/`catch` that clang emits.
#[test]
fn an_uncaught_exception_ends_the_run_like_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("throw.wat");
    std::fs::write(
        &wat,
        r#"(module (tag $e (param i32))
             (func (export "throw") (param i32) (throw $e (local.get 0)))
             (func (export "legacy") (result i32)
               try (result i32) i32.const 1 throw $e catch $e end))"#,
    )
    .unwrap();
    let wat = wat.to_str().unwrap();
    let legacy = kiln(&["run", "-W", "legacy-exceptions", "--invoke", "legacy", wat]);
    assert_eq!((stdout(&legacy).as_str(), legacy.status.code()), ("1\n", Some(0)), "{}", stderr(&legacy));
    let out = kiln(&["run", "-W", "legacy-exceptions", "--invoke", "throw", wat, "7"]);
    assert_eq!(out.status.code(), Some(134));
    assert_eq!(stderr(&out), "wasm trap: uncaught wasm exception carrying (7)\n");
    let refused = kiln(&["run", "--invoke", "throw", wat, "7"]);
    assert!(stderr(&refused).contains("legacy_exceptions feature required"), "{}", stderr(&refused));
    let refused = kiln(&["run", "-W", "exceptions=n", "-W", "legacy-exceptions", "--invoke", "throw", wat, "7"]);
    assert!(!refused.status.success() && refused.status.code() != Some(134), "{}", stderr(&refused));
}
