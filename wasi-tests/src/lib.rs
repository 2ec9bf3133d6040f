//! Helpers for Kiln's own WASI programs (`programs/*.c`): build them with clang-14 for
//! wasm32-wasi, and run them through the real pipeline (compile → `ld` → load → slot) with a
//! [`kiln_wasi::WasiCtx`], capturing stdout and stderr.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use kiln_runtime::{Instance, Module, Region, RegionConfig};

/// The C compiler the programs are built with (Debian's `clang-14`; `$KILN_WASI_CC` overrides).
pub fn clang() -> String {
    std::env::var("KILN_WASI_CC").unwrap_or_else(|_| "clang-14".into())
}

/// The folder holding the C sources.
pub fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs")
}

/// Builds `programs/NAME.c` into `out_dir/NAME.wasm` with
/// `clang-14 --target=wasm32-wasi -O2 -fuse-ld=lld`.
pub fn build_program(name: &str, out_dir: &Path) -> Result<PathBuf> {
    build_program_with(name, out_dir, &[], name)
}

/// Builds `programs/NAME.c` as [`build_program`] does, with `flags` added, into
/// `out_dir/OUT.wasm`.
pub fn build_program_with(name: &str, out_dir: &Path, flags: &[&str], out: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir)?;
    let source = programs_dir().join(format!("{name}.c"));
    let out = out_dir.join(format!("{out}.wasm"));
    let output = Command::new(clang())
        .args(["--target=wasm32-wasi", "-O2", "-fuse-ld=lld", "-Wall", "-Werror"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .output()
        .with_context(|| format!("cannot run {}", clang()))?;
    if !output.status.success() {
        bail!("{} failed on {}:\n{}", clang(), source.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(out)
}

/// Why the C programs cannot be built here, if they cannot: clang-14, lld-14, wasi-libc and
/// libclang-rt-14-dev-wasm32 are all needed (`None`: they are there).
pub fn toolchain_missing(scratch: &Path) -> Option<String> {
    match build_program("hello", scratch) {
        Ok(_) => None,
        Err(err) => Some(format!(
            "cannot build C programs for wasm32-wasi ({}); install Debian's clang-14 lld-14 wasi-libc \
             libclang-rt-14-dev-wasm32",
            format!("{err:#}").lines().next().unwrap_or_default()
        )),
    }
}

/// What a program did.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status (`proc_exit`'s code, or 0; 134 if it trapped, as `kiln run`).
    pub status: i32,
    /// The trap that ended it, if one did.
    pub trap: Option<kiln_runtime::Trap>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// How to run a program.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Arguments after the program name.
    pub args: &'a [&'a str],
    /// Environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// Preopened directories: (host path, guest name).
    pub dirs: &'a [(&'a Path, &'a str)],
    /// What stdin holds.
    pub stdin: &'a [u8],
}

/// Compiles `wasm` and runs it as a WASI command in a fresh slot.
pub fn run(wasm: &Path, options: &RunOptions<'_>) -> Result<Outcome> {
    let scratch = tempfile::tempdir()?;
    let so = scratch.path().join("program.so");
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    kiln_compiler::Compiler::new()?.compile_to_file(&bytes, &so)?;
    // SAFETY: compiled just above into a private temporary directory.
    let module = unsafe { Module::load(&so) }?;

    let mut stdin = tempfile::tempfile()?;
    stdin.write_all(options.stdin)?;
    stdin.seek(SeekFrom::Start(0))?;
    let mut stdout = tempfile::tempfile()?;
    let mut stderr = tempfile::tempfile()?;
    let name = wasm.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut builder = kiln_wasi::WasiCtxBuilder::new()
        .arg(name)
        .args(options.args)
        .stdio_file(0, stdin)
        .stdio_file(1, stdout.try_clone()?)
        .stdio_file(2, stderr.try_clone()?);
    for (key, value) in options.env {
        builder = builder.env(key, value);
    }
    for (host, guest) in options.dirs {
        builder = builder.preopened_dir(host, guest);
    }
    let imports = kiln_wasi::imports(&module, builder.build()?)?;
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
    let instance = Instance::new(&region, &module, &imports)?;
    let (status, trap) = match kiln_wasi::exit_status(instance.call("_start", &[])) {
        Ok(status) => (status, None),
        Err(kiln_runtime::CallError::Trap(trap @ kiln_runtime::Trap::Wasm { .. })) => (134, Some(trap)),
        Err(err) => return Err(err.into()),
    };

    let read_back = |file: &mut std::fs::File| -> Result<String> {
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_string(&mut text)?;
        Ok(text)
    };
    Ok(Outcome { status, trap, stdout: read_back(&mut stdout)?, stderr: read_back(&mut stderr)? })
}
