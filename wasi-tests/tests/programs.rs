//! Kiln's own WASI programs (`programs/*.c`), built with clang-14 for wasm32-wasi and run
//! through the whole pipeline. One trial per program; without the toolchain every trial is
//! reported as ignored (kind `needs clang-14`), with the reason printed once.

use std::path::{Path, PathBuf};

use kiln_wasi_tests::{build_program, build_program_with, programs_dir, run, toolchain_missing, Outcome, RunOptions};
use libtest_mimic::{Arguments, Failed, Trial};

type TestResult = Result<(), Failed>;
type Program = (&'static str, fn() -> TestResult);

fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasi-programs")
}

fn build(name: &str) -> Result<PathBuf, Failed> {
    build_program(name, &scratch()).map_err(|e| Failed::from(format!("{e:#}")))
}

fn check(condition: bool, what: &str, outcome: &Outcome) -> TestResult {
    if condition {
        Ok(())
    } else {
        Err(format!("{what}\nstatus: {}\nstdout:\n{}\nstderr:\n{}", outcome.status, outcome.stdout, outcome.stderr)
            .into())
    }
}

fn run_ok(name: &str, options: &RunOptions<'_>) -> Result<Outcome, Failed> {
    let wasm = build(name)?;
    run(&wasm, options).map_err(|e| Failed::from(format!("{e:#}")))
}

fn hello() -> TestResult {
    let out = run_ok("hello", &RunOptions::default())?;
    check(out.status == 0, "hello exits with 0", &out)?;
    check(out.stdout == "Hello, world!\n", "hello prints exactly `Hello, world!`", &out)
}

/// A trap in C code names the C functions on the stack, innermost first, each at an offset
/// in the module.
fn trap_backtrace() -> TestResult {
    let out = run_ok("trap", &RunOptions::default())?;
    let Some(trap) = &out.trap else { return check(false, "trap traps", &out) };
    check(trap.code() == Some(kiln_runtime::TrapCode::IntegerDivisionByZero), "a division by zero", &out)?;
    let names: Vec<&str> = trap.backtrace().frames().iter().filter_map(|f| f.name.as_deref()).collect();
    check(
        names.starts_with(&["divide", "compute", "main"]),
        &format!("the backtrace names the C functions: {names:?}"),
        &out,
    )?;
    let offsets: Vec<Option<u32>> = trap.backtrace().frames().iter().map(|f| f.module_offset).collect();
    check(offsets.iter().take(3).all(Option::is_some), &format!("frames have module offsets: {offsets:?}"), &out)
}

/// With debug information on, the object's DWARF maps the native code of a C function built
/// with `-g` to its line in the C source; without it, the object has no line table.
fn debug_info() -> TestResult {
    let err = |e: &dyn std::fmt::Display| Failed::from(format!("{e}"));
    let wasm = build_program_with("trap", &scratch(), &["-g"], "trap_debug").map_err(|e| err(&e))?;
    let wasm = std::fs::read(wasm).map_err(|e| err(&e))?;
    let source = std::fs::read_to_string(programs_dir().join("trap.c")).map_err(|e| err(&e))?;
    let divide_line = 1 + source.lines().position(|l| l.contains("int divide(")).ok_or("trap.c defines divide")? as u64;
    let mut lines = Vec::new();
    for debug_info in [true, false] {
        let so = scratch().join(format!("trap_debug_{debug_info}.so"));
        let mut compiler = kiln_compiler::Compiler::new().map_err(|e| err(&e))?;
        compiler.set_debug_info(debug_info).compile_to_file(&wasm, &so).map_err(|e| err(&e))?;
        let bytes = std::fs::read(&so).map_err(|e| err(&e))?;
        lines.push(source_lines_of(&bytes, "::divide").map_err(|e| err(&e))?);
    }
    let (with, without) = (&lines[0], &lines[1]);
    if !with.iter().any(|(file, line)| file.ends_with("trap.c") && *line == divide_line) {
        return Err(format!("divide's code maps to trap.c:{divide_line}: {with:?}").into());
    }
    if !with.iter().all(|(file, _)| file.ends_with("trap.c")) || !without.is_empty() {
        return Err(format!("only trap.c, and only with debug info: {with:?} / {without:?}").into());
    }
    Ok(())
}

/// The `(file, line)` rows of the object's line table inside the function whose symbol ends
/// with `suffix`.
fn source_lines_of(object_bytes: &[u8], suffix: &str) -> Result<Vec<(String, u64)>, Box<dyn std::error::Error>> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = object::File::parse(object_bytes)?;
    let symbol = file.symbols().find(|s| s.name().is_ok_and(|n| n.ends_with(suffix))).ok_or("no such function")?;
    let (start, end) = (symbol.address(), symbol.address() + symbol.size());
    let load = |id: gimli::SectionId| -> Result<gimli::EndianSlice<'_, gimli::LittleEndian>, gimli::Error> {
        let data = file.section_by_name(id.name()).and_then(|s| s.data().ok()).unwrap_or(&[]);
        Ok(gimli::EndianSlice::new(data, gimli::LittleEndian))
    };
    let dwarf = gimli::Dwarf::load(load)?;
    let mut found = Vec::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let Some(program) = unit.line_program.clone() else { continue };
        let mut rows = program.rows();
        while let Some((header, row)) = rows.next_row()? {
            let line = row.line().map_or(0, |l| l.get());
            if row.end_sequence() || line == 0 || row.address() < start || row.address() >= end {
                continue;
            }
            let path = match row.file(header) {
                Some(entry) => dwarf.attr_string(&unit, entry.path_name())?.to_string_lossy().into_owned(),
                None => String::new(),
            };
            found.push((path, line));
        }
    }
    Ok(found)
}

/// WASI functions made once (`shared_imports`) serve each store from the context attached to
/// it: two tenants interleaved on one slot each see only their own environment and write only
/// to their own output, and a store with no context traps instead of borrowing another's.
fn shared_imports() -> TestResult {
    use kiln_runtime::{CallError, Instance, Module, Region, RegionConfig, Store};
    let err = |e: &dyn std::fmt::Display| Failed::from(format!("{e}"));
    let wasm = std::fs::read(build("args_env")?).map_err(|e| err(&e))?;
    let so = scratch().join("args_env_shared.so");
    kiln_compiler::Compiler::new().and_then(|c| c.compile_to_file(&wasm, &so)).map_err(|e| err(&e))?;
    // SAFETY: compiled just above into the test's scratch directory.
    let module = unsafe { Module::load(&so) }.map_err(|e| err(&e))?;
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() }).map_err(|e| err(&e))?;
    let imports = kiln_wasi::shared_imports(&module).map_err(|e| err(&e))?;
    for round in 0..3 {
        for tenant in ["alice", "bob"] {
            let store = Store::new();
            let stdout = kiln_wasi::OutputCapture::new(4096);
            let ctx = kiln_wasi::WasiCtxBuilder::new()
                .arg("args_env")
                .env("TENANT", tenant)
                .stdout_capture(&stdout)
                .build()
                .map_err(|e| err(&e))?;
            kiln_wasi::attach(&store, ctx).map_err(|e| err(&e))?;
            let second = kiln_wasi::WasiCtxBuilder::new().build().map_err(|e| err(&e))?;
            if kiln_wasi::attach(&store, second).is_ok() {
                return Err("a store keeps its first context".into());
            }
            let instance = Instance::new_in_store(&region, &store, &module, &imports).map_err(|e| err(&e))?;
            let status = kiln_wasi::exit_status(instance.call("_start", &[])).map_err(|e| err(&e))?;
            let said = String::from_utf8_lossy(&stdout.take()).into_owned();
            if status != 0 || said != format!("argc=1\nenv TENANT={tenant}\n") {
                return Err(format!("round {round}, {tenant}: status {status}, output {said:?}").into());
            }
        }
    }
    let instance = Instance::new_in_store(&region, &Store::new(), &module, &imports).map_err(|e| err(&e))?;
    match instance.call("_start", &[]) {
        Err(CallError::Trap(trap)) if trap.to_string().contains("no WASI context") => Ok(()),
        other => Err(format!("a store without a context traps, not {other:?}").into()),
    }
}

fn args_env() -> TestResult {
    let options = RunOptions {
        args: &["one", "two words", "--flag"],
        env: &[("GREETING", "hi there"), ("EXIT_WITH", "42")],
        ..Default::default()
    };
    let out = run_ok("args_env", &options)?;
    let expected = "argc=4\narg[1]=one\narg[2]=two words\narg[3]=--flag\nenv GREETING=hi there\nenv EXIT_WITH=42\n";
    check(out.stdout == expected, "arguments and exactly the given environment", &out)?;
    check(out.status == 42, "the proc_exit code is the exit status", &out)
}

fn file_io() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = run_ok("file_io", &RunOptions { dirs: &[(dir.path(), "sandbox")], ..Default::default() })?;
    check(out.status == 0 && out.stdout == "file_io ok\n", "file_io's checks pass", &out)?;
    let content = std::fs::read_to_string(dir.path().join("data.txt"))?;
    check(content == "hello, kiln", &format!("data.txt on the host holds {content:?}"), &out)
}

fn directories() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = run_ok("dirs", &RunOptions { dirs: &[(dir.path(), "sandbox")], ..Default::default() })?;
    check(out.status == 0, "dirs' checks pass", &out)?;
    check(out.stdout == "d .\nd ..\nd sub\nf a.txt\n", "the listing of sandbox/tree", &out)?;
    let moved = dir.path().join("tree/sub/b2.txt");
    check(moved.is_file(), "the renamed file is where the guest put it", &out)?;
    check(!dir.path().join("tree/empty").exists(), "the removed directory is gone", &out)
}

fn clocks() -> TestResult {
    let out = run_ok("clocks", &RunOptions::default())?;
    check(out.status == 0, "clocks' checks pass", &out)?;
    let host = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let guest: i64 = out
        .stdout
        .strip_prefix("realtime ")
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Failed::from(format!("no realtime line in {:?}", out.stdout)))?;
    check((host - guest).abs() < 60, &format!("guest realtime {guest} is the host's {host}"), &out)
}

fn poll() -> TestResult {
    let out = run_ok("poll", &RunOptions { stdin: b"ping", ..Default::default() })?;
    check(out.status == 0, "poll's checks pass", &out)?;
    check(out.stdout == "stdin: ping\n", "stdin was readable and echoed", &out)
}

/// The host layout every escape program runs against: `root/secret.txt` outside, the
/// preopen `root/sandbox` with a file, a subdirectory and symlinks that point outside.
struct EscapeLayout {
    root: tempfile::TempDir,
}

const SECRET: &str = "top secret\n";

impl EscapeLayout {
    fn new() -> Result<EscapeLayout, Failed> {
        let root = tempfile::tempdir()?;
        let r = root.path();
        let sandbox = r.join("sandbox");
        std::fs::create_dir_all(sandbox.join("sub"))?;
        std::fs::create_dir(r.join("outside_dir"))?;
        std::fs::write(r.join("secret.txt"), SECRET)?;
        std::fs::write(sandbox.join("inside.txt"), "inside\n")?;
        use std::os::unix::fs::symlink;
        symlink(r.join("secret.txt"), sandbox.join("abs_link"))?;
        symlink("../secret.txt", sandbox.join("rel_link"))?;
        symlink("sub/hop", sandbox.join("chain"))?;
        symlink("../../secret.txt", sandbox.join("sub/hop"))?;
        symlink("..", sandbox.join("dir_link"))?;
        symlink("../created_outside.txt", sandbox.join("create_link"))?;
        symlink("inside.txt", sandbox.join("inside_link"))?;
        Ok(EscapeLayout { root })
    }

    fn sandbox(&self) -> PathBuf {
        self.root.path().join("sandbox")
    }

    fn run(&self, name: &str, args: &[&str]) -> Result<Outcome, Failed> {
        let sandbox = self.sandbox();
        run_ok(name, &RunOptions { dirs: &[(&sandbox, "sandbox")], args, ..Default::default() })
    }

    /// Nothing outside the sandbox changed, and the guest never saw the secret.
    fn check_untouched(&self, out: &Outcome) -> TestResult {
        let r = self.root.path();
        let secret = std::fs::read_to_string(r.join("secret.txt")).unwrap_or_default();
        check(secret == SECRET, "secret.txt is intact", out)?;
        check(!out.stdout.contains("top secret"), "the guest never read the secret", out)?;
        let mut outside: Vec<String> = std::fs::read_dir(r)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        outside.sort();
        check(outside == ["outside_dir", "sandbox", "secret.txt"], &format!("nothing new outside: {outside:?}"), out)?;
        check(std::fs::read_dir(r.join("outside_dir"))?.next().is_none(), "outside_dir is empty", out)?;
        for stray in ["/tmp/kiln-escape.txt", "/tmp/kiln-escape-dir", "/tmp/kiln-moved.txt"] {
            check(!Path::new(stray).exists(), &format!("{stray} was not created"), out)?;
        }
        Ok(())
    }

    /// Each attempt in `attempts` was refused with `perm` (63) or `notcapable` (76).
    fn check_blocked(&self, out: &Outcome, attempts: &[&str]) -> TestResult {
        check(out.status == 0, "the program saw no escape", out)?;
        for attempt in attempts {
            let refused = [63, 76].iter().any(|e| out.stdout.contains(&format!("blocked {attempt} errno={e}\n")));
            check(refused, &format!("`{attempt}` is refused as a capability error"), out)?;
        }
        check(!out.stdout.contains("ESCAPED") && !out.stdout.contains("WRONGLY"), "no escape, no false refusal", out)?;
        self.check_untouched(out)
    }
}

fn escape_dotdot() -> TestResult {
    let layout = EscapeLayout::new()?;
    let out = layout.run("escape_dotdot", &[])?;
    layout.check_blocked(
        &out,
        &[
            "open ../secret.txt",
            "open sub/../../secret.txt",
            "open ./../secret.txt",
            "open .. as a directory",
            "create ../created.txt",
            "stat ../secret.txt",
            "mkdir ../made_by_guest",
            "rename inside.txt -> ../moved.txt",
            "rename ../secret.txt -> stolen.txt",
            "link ../secret.txt -> hard.txt",
            "link inside.txt -> ../linked.txt",
            "unlink ../secret.txt",
            "rmdir ../outside_dir",
            "set times ../secret.txt",
        ],
    )?;
    check(out.stdout.contains("allowed open sub/../inside.txt"), "`..` that stays inside works", &out)?;
    check(layout.sandbox().join("inside.txt").is_file(), "inside.txt stayed", &out)
}

fn escape_absolute() -> TestResult {
    let layout = EscapeLayout::new()?;
    let secret = layout.root.path().join("secret.txt");
    let out = layout.run("escape_absolute", &[secret.to_str().ok_or("non-UTF-8 temp path")?])?;
    layout.check_blocked(
        &out,
        &[
            "open /etc/passwd",
            "open host path of the secret",
            "open / as a directory",
            "stat host path of the secret",
            "create /tmp/kiln-escape.txt",
            "mkdir /tmp/kiln-escape-dir",
            "unlink host path of the secret",
            "rename inside.txt -> /tmp/kiln-moved.txt",
        ],
    )?;
    check(out.stdout.contains("blocked libc open"), "wasi-libc refuses a path under no preopen", &out)
}

fn escape_symlink() -> TestResult {
    let layout = EscapeLayout::new()?;
    let out = layout.run("escape_symlink", &[])?;
    layout.check_blocked(
        &out,
        &[
            "open abs_link",
            "open rel_link",
            "open chain",
            "open dir_link/secret.txt",
            "open sub/hop",
            "stat rel_link (follow)",
            "stat dir_link/secret.txt",
            "create through create_link",
            "mkdir dir_link/made",
            "set times through rel_link",
            "symlink guest_link -> ../secret.txt",
            "symlink guest_link2 -> dir_link/../../secret.txt",
        ],
    )?;
    check(out.stdout.contains("allowed open inside_link"), "a symlink that stays inside works", &out)?;
    check(out.stdout.contains("allowed open own_link"), "a symlink the guest makes inside works", &out)?;
    check(out.stdout.contains("blocked open guest_link errno=44"), "the refused link does not exist", &out)?;
    check(!layout.root.path().join("created_outside.txt").exists(), "no file created through the dangling link", &out)
}

fn main() {
    let args = Arguments::from_args();
    let tests: [Program; 12] = [
        ("hello", hello),
        ("trap", trap_backtrace),
        ("debug_info", debug_info),
        ("args_env", args_env),
        ("shared_imports", shared_imports),
        ("file_io", file_io),
        ("dirs", directories),
        ("clocks", clocks),
        ("poll", poll),
        ("escape_dotdot", escape_dotdot),
        ("escape_absolute", escape_absolute),
        ("escape_symlink", escape_symlink),
    ];
    let missing = toolchain_missing(&scratch());
    if let Some(reason) = &missing {
        eprintln!("note: the WASI C program trials are ignored: {reason}");
    }
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let trial = Trial::test(format!("programs::{name}"), test);
            match &missing {
                Some(_) => trial.with_kind("needs clang-14").with_ignored_flag(true),
                None => trial,
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
