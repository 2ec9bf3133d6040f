//! The `kiln` command: compile WebAssembly ahead of time and run it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kiln_runtime::{CallError, Instance, InstantiationError, LoadError, Module, Region, RegionConfig, Val, ValType};

/// Exit status when the guest trapped.
const EXIT_TRAP: u8 = 3;
/// Exit status for every other failure (bad input, I/O, linking).
const EXIT_ERROR: u8 = 1;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: an ahead-of-time WebAssembly compiler and slot-based runtime",
    long_about = "Kiln compiles WebAssembly (.wasm or .wat) ahead of time into native x86-64 ELF \
shared objects and runs them in reusable memory slots, isolating every trap to the instance that \
caused it.\n\nExit status: 0 on success, 1 on an error (bad input, I/O, linking), 3 when the \
guest traps (the trap's spec wording is printed on stderr), 2 for usage errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a module into a native shared object.
    ///
    /// Needs the system linker `ld` (binutils); set KILN_LD to use another.
    Compile {
        /// The module: a binary (.wasm) or text (.wat) file.
        input: PathBuf,
        /// Where to write the shared object.
        #[arg(short, long, value_name = "OUT.so")]
        output: PathBuf,
    },
    /// Run a WASI command, or call one exported function with --invoke.
    ///
    /// Without --invoke, MODULE is run as a WASI (wasi_snapshot_preview1) command: its `_start`
    /// runs with ARGS as its arguments (after the program name), stdin, stdout and stderr passed
    /// through, only the directories given with --dir visible, and only the variables given
    /// with --env in its environment; kiln exits with the status the program passes to
    /// `proc_exit` (0 if `_start` returns).
    ///
    /// With --invoke NAME, ARGS are the function's arguments: integers in decimal (negative
    /// allowed), floats in decimal or as `nan`, `inf`, `-inf`. Each result is printed on its own
    /// line; integers in signed decimal, floats in shortest round-trip decimal (`nan`, `inf`,
    /// `-inf`), v128 as hex.
    ///
    /// MODULE may be .wasm, .wat (compiled first, cached) or a .so made by `kiln compile`.
    Run {
        /// The module to run.
        module: PathBuf,
        /// The exported function to call (instead of running `_start` as a WASI command).
        #[arg(long, value_name = "NAME")]
        invoke: Option<String>,
        /// Give the guest the host directory HOST, under the name GUEST (default: HOST as
        /// written). Repeatable. Paths never resolve outside it (`..`, absolute paths and
        /// symlinks are confined).
        #[arg(long = "dir", value_name = "HOST[::GUEST]")]
        dirs: Vec<String>,
        /// Set the guest environment variable K to V (`--env K` copies the host's value).
        /// Repeatable. The guest sees no other variables.
        #[arg(long = "env", value_name = "K=V")]
        envs: Vec<String>,
        /// Stop the guest after DURATION (`500ms`, `10s`, `2m`, `1h`; a bare number is seconds):
        /// it traps with `deadline exceeded` at its next function entry or loop iteration.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Arguments: the program's arguments, or the invoked function's (put them after `--`
        /// if one starts with `-`).
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Describe a compiled shared object: its imports, exports, functions and trap sites.
    Inspect {
        /// A .so made by `kiln compile`.
        module: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Compile { input, output } => compile(&input, &output).map(|()| ExitCode::SUCCESS),
        Command::Run { module, invoke, dirs, envs, timeout, args } => match invoke {
            Some(name) => run(&module, &name, &dirs, &envs, timeout, &args),
            None => run_wasi(&module, &dirs, &envs, timeout, &args),
        },
        Command::Inspect { module } => inspect(&module).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn compile(input: &Path, output: &Path) -> Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let compiler = kiln_compiler::Compiler::new()?;
    compiler
        .compile_to_file(&bytes, output)
        .with_context(|| format!("cannot compile {}", input.display()))
}

fn is_shared_object(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = std::io::Read::read(&mut file, &mut magic)?;
    Ok(n == 4 && magic == *b"\x7fELF")
}

/// Loads MODULE, compiling it first unless it is already a shared object. Compiled objects are
/// cached in the user's cache directory (`$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
/// `~/.cache/kiln`), keyed by the module's bytes and the compiler build, so a second run of the
/// same program skips compilation. Returns the module and, when no cache directory is usable,
/// the temporary directory holding the object (which must outlive the module).
fn load(path: &Path) -> Result<(Module, Option<tempfile::TempDir>)> {
    if is_shared_object(path)? {
        return Ok((Module::load(path)?, None));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let wasm = kiln_compiler::wasm_from_input(&bytes).with_context(|| format!("cannot compile {}", path.display()))?;
    let compiler = kiln_compiler::Compiler::new()?;
    if std::env::var_os("KILN_NO_CACHE").is_none() {
        if let Some(cache) = kiln_compiler::cache::ObjectCache::user_default() {
            match cache.get_or_compile(&compiler, &wasm) {
                Ok((so, hit)) => match Module::load(&so) {
                    // A damaged cache entry (a torn copy, a disk error) is compiled again.
                    Err(LoadError::Corrupt { .. } | LoadError::NotKiln { .. }) if hit => {
                        std::fs::remove_file(&so).with_context(|| format!("cannot evict {}", so.display()))?;
                        let (so, _) = cache.get_or_compile(&compiler, &wasm)?;
                        return Ok((Module::load(&so)?, None));
                    }
                    loaded => return Ok((loaded?, None)),
                },
                // An unusable cache directory is not fatal; compile to a temporary file instead.
                Err(kiln_compiler::CompileError::Io(_)) => {}
                Err(err) => return Err(anyhow::Error::new(err).context(format!("cannot compile {}", path.display()))),
            }
        }
    }
    let dir = tempfile::tempdir()?;
    let so = dir.path().join("module.so");
    let object = compiler.compile_object(&wasm).with_context(|| format!("cannot compile {}", path.display()))?;
    kiln_compiler::link::link_shared_object(&object.object, &so)?;
    Ok((Module::load(&so)?, Some(dir)))
}

/// The WASI context for a program: `argv[0]` is the module path as given, then ARGS.
fn wasi_context(program: &Path, dirs: &[String], envs: &[String], args: &[String]) -> Result<kiln_wasi::WasiCtx> {
    let mut builder = kiln_wasi::WasiCtxBuilder::new().inherit_stdio().arg(program.to_string_lossy()).args(args);
    for env in envs {
        builder = match env.split_once('=') {
            Some((key, value)) => builder.env(key, value),
            None => match std::env::var(env) {
                Ok(value) => builder.env(env, value),
                Err(_) => bail!("--env {env}: no such variable in kiln's environment (write --env {env}=VALUE)"),
            },
        };
    }
    for dir in dirs {
        let (host, guest) = dir.split_once("::").unwrap_or((dir.as_str(), dir.as_str()));
        if host.is_empty() || guest.is_empty() {
            bail!("--dir {dir}: expected HOST or HOST::GUEST");
        }
        builder = builder.preopened_dir(host, guest);
    }
    Ok(builder.build()?)
}

/// Instantiates MODULE with WASI imports (if it has imports at all).
fn instantiate(
    region: &Region,
    module: &Module,
    ctx: impl FnOnce() -> Result<kiln_wasi::WasiCtx>,
) -> Result<std::result::Result<Instance, kiln_runtime::Trap>> {
    let imports = if module.metadata().imports.is_empty() { Vec::new() } else { kiln_wasi::imports(module, ctx()?)? };
    match Instance::new(region, module, &imports) {
        Ok(instance) => Ok(Ok(instance)),
        Err(InstantiationError::Trap(trap)) => Ok(Err(trap)),
        Err(err) => Err(err.into()),
    }
}

/// Parses a --timeout value.
fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}` (use ms, s, m or h)")),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Arms --timeout: once it expires the guest traps with "deadline exceeded".
fn arm_timeout(instance: &Instance, timeout: Option<std::time::Duration>) {
    if let Some(limit) = timeout {
        let handle = instance.interrupt_handle();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            handle.interrupt();
        });
    }
}

/// Runs a WASI command and returns its exit status.
fn run_wasi(
    path: &Path,
    dirs: &[String],
    envs: &[String],
    timeout: Option<std::time::Duration>,
    args: &[String],
) -> Result<ExitCode> {
    let (module, _dir) = load(path)?;
    if !module.metadata().exports.iter().any(|e| e.name == "_start") {
        bail!("{} is not a WASI command: it exports no `_start` (use --invoke NAME to call an export)", path.display());
    }
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
    let outcome = match instantiate(&region, &module, || wasi_context(path, dirs, envs, args))? {
        Ok(instance) => {
            arm_timeout(&instance, timeout);
            instance.call("_start", &[])
        }
        Err(trap) => Err(CallError::Trap(trap)),
    };
    match kiln_wasi::exit_status(outcome) {
        Ok(status) => Ok(ExitCode::from(status as u8)),
        Err(CallError::Trap(trap)) => {
            eprintln!("wasm trap: {trap}");
            Ok(ExitCode::from(EXIT_TRAP))
        }
        Err(err) => Err(err.into()),
    }
}

fn run(
    path: &Path,
    name: &str,
    dirs: &[String],
    envs: &[String],
    timeout: Option<std::time::Duration>,
    args: &[String],
) -> Result<ExitCode> {
    let (module, _dir) = load(path)?;
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
    let instance = match instantiate(&region, &module, || wasi_context(path, dirs, envs, &[]))? {
        Ok(instance) => instance,
        Err(trap) => {
            eprintln!("wasm trap: {trap}");
            return Ok(ExitCode::from(EXIT_TRAP));
        }
    };
    let func = instance
        .get_func(name)
        .with_context(|| format!("the module exports no function named `{name}`"))?;
    let params = func.ty().params.clone();
    if params.len() != args.len() {
        bail!("`{name}` takes {} arguments ({:?}), {} given", params.len(), params, args.len());
    }
    let values = args
        .iter()
        .zip(&params)
        .map(|(arg, &ty)| parse_arg(arg, ty).with_context(|| format!("bad argument `{arg}` for a {ty:?} parameter")))
        .collect::<Result<Vec<_>>>()?;
    arm_timeout(&instance, timeout);
    match func.call(&values) {
        Ok(results) => {
            for result in results {
                println!("{}", format_val(result));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(CallError::Trap(trap)) => {
            eprintln!("wasm trap: {trap}");
            Ok(ExitCode::from(EXIT_TRAP))
        }
        Err(err) => Err(err.into()),
    }
}

fn parse_int(arg: &str, bits: u32) -> Result<i64> {
    let value: i128 = arg.replace('_', "").parse().context("not a decimal integer")?;
    let (min, max) = (-(1i128 << (bits - 1)), (1i128 << bits) - 1);
    if value < min || value > max {
        bail!("out of range for i{bits}");
    }
    Ok(value as i64)
}

fn parse_float(arg: &str) -> Result<f64> {
    match arg {
        "nan" | "+nan" => Ok(f64::NAN),
        "-nan" => Ok(-f64::NAN),
        "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
        "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
        _ => arg.parse().context("not a number"),
    }
}

fn parse_arg(arg: &str, ty: ValType) -> Result<Val> {
    Ok(match ty {
        ValType::I32 => Val::I32(parse_int(arg, 32)? as i32),
        ValType::I64 => Val::I64(parse_int(arg, 64)?),
        ValType::F32 => Val::F32((parse_float(arg)? as f32).to_bits()),
        ValType::F64 => Val::F64(parse_float(arg)?.to_bits()),
        ValType::V128 => {
            let hex = arg.trim_start_matches("0x");
            Val::V128(u128::from_str_radix(hex, 16).context("v128 arguments are hex")?)
        }
        ValType::Ref(_) => bail!("reference arguments cannot be given on the command line"),
    })
}

fn format_float(value: f64, is_nan_canonical: bool, payload: u64, negative: bool) -> String {
    if value.is_nan() {
        let sign = if negative { "-" } else { "" };
        if is_nan_canonical {
            format!("{sign}nan")
        } else {
            format!("{sign}nan:{payload:#x}")
        }
    } else if value.is_infinite() {
        if value > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{value}")
    }
}

fn format_val(val: Val) -> String {
    match val {
        Val::I32(v) => v.to_string(),
        Val::I64(v) => v.to_string(),
        Val::F32(bits) => {
            let payload = (bits & 0x007f_ffff) as u64;
            let v = f32::from_bits(bits);
            if v.is_nan() || v.is_infinite() {
                format_float(v as f64, payload == 0x40_0000, payload, bits >> 31 == 1)
            } else {
                format!("{v}")
            }
        }
        Val::F64(bits) => {
            let payload = bits & 0x000f_ffff_ffff_ffff;
            format_float(f64::from_bits(bits), payload == 0x8_0000_0000_0000, payload, bits >> 63 == 1)
        }
        other => other.to_string(),
    }
}

fn inspect(path: &Path) -> Result<()> {
    let module = Module::load(path)?;
    let meta = module.metadata();
    println!("module {}", path.display());
    println!("compiled by {}", meta.compiler);
    println!("imports: {}", meta.imports.len());
    for import in &meta.imports {
        println!("  {}::{} {:?}", import.module, import.name, import.kind);
    }
    println!("exports: {}", meta.exports.len());
    for export in &meta.exports {
        println!("  {} {:?}", export.name, export.kind);
    }
    println!("memories: {}  tables: {}  globals: {}", meta.memories.len(), meta.tables.len(), meta.globals.len());
    println!("defined functions: {}", meta.functions.len());
    for (i, f) in meta.functions.iter().enumerate() {
        let ty = &meta.types[f.type_index as usize];
        println!(
            "  func {} {:?} -> {:?}: {} bytes, {} trap sites",
            meta.num_imported_funcs as usize + i,
            ty.params,
            ty.results,
            f.code_len,
            f.traps.len()
        );
    }
    println!("data segments: {}  element segments: {}", meta.data.len(), meta.elements.len());
    for (d, image) in meta.heap_images.iter().enumerate() {
        if let Some(image) = image {
            println!("heap image of memory {}: {} bytes", meta.num_imported_memories as usize + d, image.len);
        }
    }
    if let Some(start) = meta.start {
        println!("start function: {start}");
    }
    Ok(())
}
