//! The `kiln` command: compile WebAssembly ahead of time and run it.

mod modules;
mod options;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kiln_runtime::{
    CallError, Instance, InstantiationError, Module, ObjectFile, PublicKey, Region, RegionConfig, Store, Val, ValType,
};

use options::{WasiOptions, WasmOptions};

/// Exit status when the guest trapped: 128 + SIGABRT, as `wasmtime run` on Unix, so that no
/// program's own exit status (WASI allows 0 to 125) can be mistaken for a trap.
const EXIT_TRAP: u8 = 134;
/// Exit status for every other failure (bad input, I/O, linking).
const EXIT_ERROR: u8 = 1;

/// Writes a line to standard output, failing with [`StdoutError`] instead of panicking as
/// `println!` does (a closed pipe, a full disk).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::StdoutError)?
    }};
}
pub(crate) use out;

/// Standard output could not be written. A closed pipe (`kiln inspect m.so | head -1`) ends
/// kiln quietly and successfully; anything else is an error.
#[derive(Debug)]
struct StdoutError(std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: an ahead-of-time WebAssembly compiler and slot-based runtime",
    long_about = "Kiln compiles WebAssembly (.wasm or .wat) ahead of time into native x86-64 ELF \
shared objects and runs them in reusable memory slots, isolating every trap to the instance that \
caused it.\n\n`kiln [OPTIONS] MODULE [ARGS]...` is short for `kiln run [OPTIONS] MODULE \
[ARGS]...`, as with wasmtime; MODULE `-` reads WebAssembly from stdin.\n\nExit status: 0 on \
success; a WASI command's own status (0 to 125); 134 when the guest traps (the trap's spec \
wording and the guest's backtrace are printed on stderr), as wasmtime; 1 on an error (bad \
input, I/O, linking, a failing host function, an exit status outside 0 to 125); 2 for usage \
errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a module into a native shared object.
    ///
    /// Runs no other program: Kiln writes the shared object itself. With --sign KEY,
    /// also writes OUT.minisig, a minisign signature that `kiln run --verify PUBKEY` (or
    /// `minisign -V`) checks.
    Compile {
        /// The module: a binary (.wasm) or text (.wat) file.
        input: PathBuf,
        /// Where to write the shared object (default: INPUT with the extension .so).
        #[arg(short, long, value_name = "OUT.so")]
        output: Option<PathBuf>,
        /// Sign the object with this minisign secret key (see `kiln keygen`); an encrypted key's
        /// password comes from $KILN_SIGN_PASSWORD, else a prompt.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// WebAssembly options, as OPT=VALUE (repeatable): those that change the code are the
        /// proposals wide-arithmetic and custom-page-sizes, and fuel (any N compiles with fuel
        /// metering). `-W help` lists them.
        #[arg(short = 'W', value_name = "OPT=VALUE")]
        wasm: Vec<String>,
        /// Debugging options, as OPT[=VALUE] (repeatable): debug-info (DWARF line information
        /// from the module's own DWARF). `-D help` lists them.
        #[arg(short = 'D', value_name = "OPT[=VALUE]")]
        debug: Vec<String>,
    },
    /// Run a WASI command, or call one exported function with --invoke.
    ///
    /// Options come before MODULE; everything after MODULE belongs to the guest (its arguments,
    /// or the invoked function's), `--` and words that look like options included.
    ///
    /// Without --invoke, MODULE is run as a WASI (wasi_snapshot_preview1) command: its `_start`
    /// runs with ARGS as its arguments (after the program name), stdin, stdout and stderr passed
    /// through (as streams: the guest cannot truncate, seek or change the flags of what kiln
    /// was given), only the directories given with --dir visible, and only the variables given
    /// with --env in its environment; kiln exits with the status the program passes to
    /// `proc_exit` (0 if `_start` returns).
    ///
    /// With --invoke NAME, ARGS are the function's arguments: integers in decimal (negative
    /// allowed), floats in decimal or as `nan`, `inf`, `-inf`. Each result is printed on its own
    /// line; integers in signed decimal, floats in shortest round-trip decimal (`nan`, `inf`,
    /// `-inf`), v128 as hex.
    ///
    /// MODULE is WebAssembly (.wasm or .wat), compiled first and cached (in $KILN_CACHE_DIR,
    /// else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln; KILN_NO_CACHE=1 turns it off). A shared
    /// object from `kiln compile` is native code: it runs only with --allow-precompiled or
    /// --verify.
    Run(RunArgs),
    /// Describe a compiled shared object (imports, exports, functions, trap sites, the wasm it
    /// came from) without loading it: nothing in the file runs. Given WebAssembly (.wasm or
    /// .wat), describe what it imports, exports and defines, without compiling it.
    Inspect {
        /// A .so made by `kiln compile`, or a .wasm or .wat module.
        module: PathBuf,
    },
    /// Show where `kiln run` caches compiled modules and what the cache holds, or clear it.
    ///
    /// The cache lives in $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln; kiln
    /// uses it only if the directory belongs to you and nobody else can write to it (it says
    /// so when it cannot), and KILN_NO_CACHE=1 turns it off.
    Cache {
        /// `clear` deletes every cached object.
        #[arg(value_parser = ["clear"])]
        action: Option<String>,
    },
    /// Serve HTTP: run MODULE, a WASI command, in a fresh instance for every request.
    ///
    /// The guest speaks WAGI (CGI for WASI programs): the request line and headers arrive as
    /// environment variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE,
    /// CONTENT_LENGTH, HTTP_<HEADER>, ...), the body on stdin; it writes CGI headers
    /// (Content-Type, Status: 404, Location, ...), a blank line and the body to stdout. Each
    /// request gets its own instance, memory and WASI context, torn down afterwards: nothing a
    /// request does is seen by the next. A request the workers cannot take gets 503, one past
    /// its deadline (-W timeout, default 30s) 504, a guest that traps or exits non-zero 500,
    /// and output that is not CGI or is too large 502; each failure is logged on stderr with
    /// its reason. SIGINT or SIGTERM stops accepting and finishes the requests in flight.
    Serve(serve::ServeArgs),
    /// Make a minisign key pair for signing compiled objects: PREFIX.key (secret, unencrypted,
    /// mode 0600) and PREFIX.pub (public).
    Keygen {
        /// Path prefix of the two files.
        prefix: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_implicit_run(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Compile { input, output, sign, wasm, debug } => {
            compile(&input, output, sign.as_deref(), &wasm, &debug).map(|()| ExitCode::SUCCESS)
        }
        Command::Run(args) => run_command(args),
        Command::Serve(args) => serve::serve_command(args),
        Command::Inspect { module } => inspect(&module).map(|()| ExitCode::SUCCESS),
        Command::Keygen { prefix } => keygen(&prefix).map(|()| ExitCode::SUCCESS),
        Command::Cache { action } => cache(action.is_some()).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<StdoutError>().is_some_and(|e| e.0.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `kiln [OPTIONS] MODULE ARGS...` means `kiln run [OPTIONS] MODULE ARGS...`, as with
/// `wasmtime`: a first argument that is neither a command nor kiln's own `--help`/`--version`
/// starts `run`'s arguments.
fn with_implicit_run(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        let known = command.get_subcommands().any(|c| c.get_name() == first)
            || matches!(first, "help" | "-h" | "--help" | "-V" | "--version");
        if !known {
            args.insert(1, "run".into());
        }
    }
    args
}

fn compile(
    input: &Path,
    output: Option<PathBuf>,
    sign: Option<&Path>,
    wasm: &[String],
    debug: &[String],
) -> Result<()> {
    if wasm.iter().any(|o| o == "help") {
        return options::print_help('W', options::WASM_HELP);
    }
    if debug.iter().any(|o| o == "help") {
        return options::print_help('D', options::DEBUG_HELP);
    }
    let wasm = options::parse_wasm(wasm)?;
    let debug_info = options::parse_debug(debug)?;
    let output = output.unwrap_or_else(|| input.with_extension("so"));
    if output == input {
        bail!("{} would overwrite its input: name the output with -o", output.display());
    }
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let mut compiler = kiln_compiler::Compiler::with_features(wasm.features)?;
    compiler.set_fuel_metering(wasm.fuel.is_some()).set_debug_info(debug_info);
    kiln_compiler::wasm_from_file_contents(&bytes, input)
        .and_then(|wasm| compiler.compile_wasm_to_file(&wasm, &output))
        .with_context(|| format!("cannot compile {}", input.display()))?;
    if let Some(key) = sign {
        sign_object(&output, key)?;
    }
    Ok(())
}

/// Writes OBJECT.minisig, the signature of OBJECT's bytes by the secret key at `key`.
fn sign_object(object: &Path, key: &Path) -> Result<()> {
    let read_key = |password: Option<String>| minisign::SecretKey::from_file(key, password);
    // An unencrypted key opens with an empty password; an encrypted one needs the real one.
    let secret = match read_key(Some(String::new())) {
        Ok(secret) => secret,
        Err(_) => read_key(std::env::var("KILN_SIGN_PASSWORD").ok())
            .with_context(|| format!("cannot read the secret key {}", key.display()))?,
    };
    let bytes = std::fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
    let comment = format!("kiln object {}", object.file_name().unwrap_or_default().to_string_lossy());
    let signature = minisign::sign(None, &secret, &bytes[..], Some(&comment), None)
        .with_context(|| format!("cannot sign {}", object.display()))?;
    let path = kiln_runtime::signature_path(object);
    std::fs::write(&path, signature.into_string()).with_context(|| format!("cannot write {}", path.display()))
}

/// `kiln cache [clear]`.
fn cache(clear: bool) -> Result<()> {
    let Some(cache) = kiln_compiler::cache::ObjectCache::user_default() else {
        bail!("no cache directory: set KILN_CACHE_DIR, XDG_CACHE_HOME or HOME");
    };
    let dir = cache.dir().display();
    if clear {
        let removed = cache.clear().with_context(|| format!("cannot clear the cache in {dir}"))?;
        out!("removed {removed} compiled modules from {dir}");
        return Ok(());
    }
    let objects = cache.objects().with_context(|| format!("cannot read the cache in {dir}"))?;
    out!(
        "cache: {dir}{}",
        if std::env::var_os("KILN_NO_CACHE").is_some() { " (off: KILN_NO_CACHE is set)" } else { "" }
    );
    out!("compiled modules: {} ({} bytes)", objects.len(), objects.iter().map(|o| o.1).sum::<u64>());
    Ok(())
}

fn keygen(prefix: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let with = |ext: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(ext);
        PathBuf::from(name)
    };
    let (secret_path, public_path) = (with(".key"), with(".pub"));
    // An empty password: the key is stored unencrypted (as `minisign -G -W` does).
    let pair = minisign::KeyPair::generate_encrypted_keypair(Some(String::new()))?;
    let mut secret = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    secret.write_all(pair.sk.to_box(None)?.into_string().as_bytes())?;
    std::fs::write(&public_path, pair.pk.to_box()?.into_string())
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    out!("secret key: {} (keep it private)\npublic key: {}", secret_path.display(), public_path.display());
    Ok(())
}

/// `kiln run`'s options.
#[derive(clap::Args)]
struct RunArgs {
    /// The exported function to call (instead of running `_start` as a WASI command).
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Give the guest the host directory HOST, under the name GUEST (default: HOST as
    /// written). Repeatable. Paths never resolve outside it (`..`, absolute paths and
    /// symlinks are confined); /proc, /sys and /dev are refused.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Set the guest environment variable K to V (`--env K` copies the host's value).
    /// Repeatable. The guest sees no other variables.
    #[arg(long = "env", value_name = "K=V")]
    envs: Vec<String>,
    /// Allow MODULE to be a shared object made by `kiln compile`. It is native code that runs
    /// in this process: only for objects whose origin you trust.
    #[arg(long)]
    allow_precompiled: bool,
    /// Run a shared object only if MODULE.minisig is a valid signature of it by this minisign
    /// public key (made with `kiln compile --sign`).
    #[arg(long, value_name = "PUBKEY")]
    verify: Option<PathBuf>,
    /// WebAssembly options, as OPT=VALUE (repeatable): timeout, fuel, max-memory-size,
    /// max-table-elements, max-instances, max-tables, max-memories, and the proposals
    /// wide-arithmetic and custom-page-sizes. `-W help` lists them.
    #[arg(short = 'W', value_name = "OPT=VALUE")]
    wasm: Vec<String>,
    /// WASI options, as OPT=VALUE (repeatable): max-open-files. `-S help` lists them.
    #[arg(short = 'S', value_name = "OPT=VALUE")]
    wasi: Vec<String>,
    /// The program name the guest sees as `argv[0]` (default: MODULE as written).
    #[arg(long, value_name = "NAME")]
    argv0: Option<String>,
    /// Same as `-W timeout=DURATION`.
    #[arg(long, value_name = "DURATION", value_parser = options::parse_duration, hide = true)]
    timeout: Option<std::time::Duration>,
    /// Profile the guest with `perf`: `jitdump` writes jit-PID.dump in the current directory,
    /// describing the guest's compiled functions, for `perf inject --jit` (the README shows
    /// the three perf commands).
    #[arg(long, value_name = "STRATEGY", value_parser = ["jitdump"])]
    profile: Option<String>,
    /// The module (.wasm, .wat, or with --allow-precompiled a .so), then the guest's
    /// arguments: everything after the module.
    #[arg(value_name = "MODULE", trailing_var_arg = true, allow_hyphen_values = true)]
    module_and_args: Vec<String>,
}

fn run_command(args: RunArgs) -> Result<ExitCode> {
    if options::print_help_if_asked(&args.wasm, &args.wasi)? {
        return Ok(ExitCode::SUCCESS);
    }
    let mut wasm = options::parse_wasm(&args.wasm)?;
    wasm.timeout = wasm.timeout.or(args.timeout);
    let wasi = options::parse_wasi(&args.wasi)?;
    let Some((module_arg, guest_args)) = args.module_and_args.split_first() else {
        bail!("kiln run needs a MODULE to run (see `kiln run --help`)");
    };
    let path = Path::new(module_arg);
    let verify = match &args.verify {
        Some(key) => Some(PublicKey::from_file(key)?),
        None => None,
    };
    let policy = modules::Policy {
        allow_precompiled: args.allow_precompiled,
        verify,
        fuel: wasm.fuel.is_some(),
        features: wasm.features,
    };
    if args.profile.is_some() {
        kiln_runtime::enable_jitdump().with_context(|| {
            format!("cannot write the jitdump file jit-{}.dump in the current directory", std::process::id())
        })?;
    }
    let loaded = modules::load(path, &policy)?;
    let argv0 = args.argv0.as_deref().unwrap_or(module_arg);
    let setup = Setup { path, argv0, dirs: &args.dirs, envs: &args.envs, wasm: &wasm, wasi: &wasi };
    match &args.invoke {
        Some(name) => invoke(&loaded.module, &setup, name, guest_args),
        None => run_wasi(&loaded.module, &setup, guest_args),
    }
}

/// What every run needs besides the module.
struct Setup<'a> {
    path: &'a Path,
    /// The guest's `argv[0]`.
    argv0: &'a str,
    dirs: &'a [String],
    envs: &'a [String],
    wasm: &'a WasmOptions,
    wasi: &'a WasiOptions,
}

impl Setup<'_> {
    /// The WASI context for a program: `argv[0]` (the module path as given, or --argv0), then
    /// ARGS.
    fn wasi_context(&self, args: &[String]) -> Result<kiln_wasi::WasiCtx> {
        let mut builder = kiln_wasi::WasiCtxBuilder::new()
            .inherit_stdio()
            .max_open_files(self.wasi.max_open_files)
            .arg(self.argv0)
            .args(args);
        for (key, value) in options::parse_envs(self.envs)? {
            builder = builder.env(key, value);
        }
        for (host, guest) in options::parse_dirs(self.dirs)? {
            builder = builder.preopened_dir(host, guest);
        }
        Ok(builder.build()?)
    }

    /// Instantiates MODULE in a store held to the -W limits, with WASI imports (if it has
    /// imports at all), fuel and the timeout armed. `Ok(Err(trap))` if the start function
    /// trapped.
    fn instantiate(
        &self,
        region: &Region,
        module: &Module,
        args: &[String],
    ) -> Result<std::result::Result<Instance, kiln_runtime::Trap>> {
        // Built even for a module without imports: --dir and --env are checked either way.
        let ctx = self.wasi_context(args)?;
        let imports = if module.metadata().imports.is_empty() { Vec::new() } else { kiln_wasi::imports(module, ctx)? };
        let store = Store::with_limits(self.wasm.limits);
        if let Some(fuel) = self.wasm.fuel {
            store.set_fuel(fuel);
        }
        if let Some(limit) = self.wasm.timeout {
            // Armed before instantiation, so a start function cannot run forever either.
            let handle = store.interrupt_handle();
            std::thread::spawn(move || {
                std::thread::sleep(limit);
                handle.interrupt();
            });
        }
        match Instance::new_in_store(region, &store, module, &imports) {
            Ok(instance) => Ok(Ok(instance)),
            Err(InstantiationError::Trap(trap)) => Ok(Err(trap)),
            Err(err) => Err(err.into()),
        }
    }
}

/// Prints a trap the way the CLI contract says and returns the trap status. A host function's
/// error (WASI's included) is an error, not a trap of the guest.
fn report_trap(trap: &kiln_runtime::Trap) -> ExitCode {
    match trap {
        kiln_runtime::Trap::Wasm { .. } => {
            // The guest's frames, innermost first, unless KILN_BACKTRACE=0.
            let trace = trap.backtrace();
            if trace.frames().is_empty() || std::env::var_os("KILN_BACKTRACE").is_some_and(|v| v == "0") {
                eprintln!("wasm trap: {trap}");
            } else {
                eprint!("wasm trap: {trap}\nwasm backtrace:\n{trace}");
            }
            ExitCode::from(EXIT_TRAP)
        }
        kiln_runtime::Trap::Host(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_ERROR)
        }
        // Like a trap: the guest ended abnormally on its own.
        kiln_runtime::Trap::Exception(exception) => {
            eprintln!("wasm trap: {exception}");
            ExitCode::from(EXIT_TRAP)
        }
    }
}

/// Runs a WASI command and returns its exit status.
fn run_wasi(module: &Module, setup: &Setup<'_>, args: &[String]) -> Result<ExitCode> {
    if !module.metadata().exports.iter().any(|e| e.name == "_start") {
        bail!(
            "{} is not a WASI command: it exports no `_start` (use --invoke NAME to call an export)",
            setup.path.display()
        );
    }
    let meta = module.metadata();
    let start_type = meta.exports.iter().find(|e| e.name == "_start").and_then(|e| match e.kind {
        kiln_runtime::ExportKind::Func(f) => meta.func_types.get(f as usize).and_then(|&t| meta.types.get(t as usize)),
        _ => None,
    });
    if let Some(ty) = start_type.filter(|ty| !ty.params.is_empty() || !ty.results.is_empty()) {
        bail!(
            "{}: its `_start` takes {} parameters and returns {} results, but a WASI command's `_start` takes \
             and returns nothing (--invoke _start ARGS... calls it as a function)",
            setup.path.display(),
            ty.params.len(),
            ty.results.len()
        );
    }
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
    let outcome = match setup.instantiate(&region, module, args)? {
        Ok(instance) => instance.call("_start", &[]),
        Err(trap) => Err(CallError::Trap(trap)),
    };
    match kiln_wasi::exit_status(outcome) {
        Ok(status) => Ok(ExitCode::from(status as u8)),
        Err(CallError::Trap(trap)) => Ok(report_trap(&trap)),
        Err(err) => Err(err.into()),
    }
}

fn invoke(module: &Module, setup: &Setup<'_>, name: &str, args: &[String]) -> Result<ExitCode> {
    let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() })?;
    let instance = match setup.instantiate(&region, module, &[])? {
        Ok(instance) => instance,
        Err(trap) => return Ok(report_trap(&trap)),
    };
    let func = instance.get_func(name).with_context(|| format!("the module exports no function named `{name}`"))?;
    let params = func.ty().params.clone();
    if params.len() != args.len() {
        bail!("`{name}` takes {} arguments ({:?}), {} given", params.len(), params, args.len());
    }
    let values = args
        .iter()
        .zip(&params)
        .map(|(arg, &ty)| parse_arg(arg, ty).with_context(|| format!("bad argument `{arg}` for a {ty:?} parameter")))
        .collect::<Result<Vec<_>>>()?;
    match func.call(&values) {
        Ok(results) => {
            for result in results {
                out!("{}", format_val(result));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(CallError::Trap(trap)) => Ok(report_trap(&trap)),
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
        if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
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
    if !modules::is_elf(path)? {
        return inspect_wasm(path);
    }
    let object = ObjectFile::read(path)?;
    let meta = object.metadata();
    out!("module {}", path.display());
    out!("compiled by {}", meta.compiler);
    let hash: String = meta.source_sha256.iter().map(|b| format!("{b:02x}")).collect();
    out!("from wasm with sha256 {hash}");
    out!("interrupt checks: {}  fuel metering: {}", yes_no(meta.interruptible), yes_no(meta.fuel_metered));
    print_interface(meta)?;
    out!("defined functions: {}", meta.functions.len());
    for (i, f) in meta.functions.iter().enumerate() {
        let ty = &meta.types[f.type_index as usize];
        out!(
            "  func {} {:?} -> {:?}: {} bytes, {} trap sites",
            meta.num_imported_funcs as usize + i,
            ty.params,
            ty.results,
            f.code_len,
            f.traps.len()
        );
    }
    out!("data segments: {}  element segments: {}", meta.data.len(), meta.elements.len());
    for (d, image) in meta.heap_images.iter().enumerate() {
        if let Some(image) = image {
            out!("heap image of memory {}: {} bytes", meta.num_imported_memories as usize + d, image.len);
        }
    }
    if let Some(start) = meta.start {
        out!("start function: {start}");
    }
    Ok(())
}

/// `kiln inspect` of WebAssembly: what it imports, exports and defines, before compiling it.
fn inspect_wasm(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = kiln_compiler::wasm_from_file_contents(&bytes, path)
        .and_then(|wasm| kiln_compiler::describe(&wasm))
        .with_context(|| format!("cannot read {}", path.display()))?;
    out!("module {} (WebAssembly, not compiled)", path.display());
    print_interface(&meta)?;
    let defined = &meta.func_types[meta.num_imported_funcs as usize..];
    out!("defined functions: {}", defined.len());
    for (i, &t) in defined.iter().enumerate() {
        let ty = &meta.types[t as usize];
        out!("  func {} {:?} -> {:?}", meta.num_imported_funcs as usize + i, ty.params, ty.results);
    }
    out!("data segments: {}  element segments: {}", meta.data.len(), meta.elements.len());
    if let Some(start) = meta.start {
        out!("start function: {start}");
    }
    Ok(())
}

/// The imports, exports, memories, tables and globals of a module.
fn print_interface(meta: &kiln_abi::ModuleMetadata) -> Result<()> {
    out!("imports: {}", meta.imports.len());
    for import in &meta.imports {
        out!("  {}::{} {:?}", import.module, import.name, import.kind);
    }
    out!("exports: {}", meta.exports.len());
    for export in &meta.exports {
        out!("  {} {:?}", export.name, export.kind);
    }
    out!("memories: {}  tables: {}  globals: {}", meta.memories.len(), meta.tables.len(), meta.globals.len());
    Ok(())
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}
