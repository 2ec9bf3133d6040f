//! The `-W` (wasm) and `-S` (WASI) option groups, spelled as Wasmtime spells them:
//! `-W timeout=10s`, `-W max-memory-size=64M`, `-S max-open-files=64`. `-W help` and
//! `-S help` list them.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use kiln_compiler::WasmFeatures;
use kiln_runtime::StoreLimits;

/// What the `-W` options set.
#[derive(Debug, Clone)]
pub struct WasmOptions {
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Compile with fuel metering and give the store this much fuel.
    pub fuel: Option<u64>,
    /// The store's limits.
    pub limits: StoreLimits,
    /// The proposals the compiler accepts.
    pub features: WasmFeatures,
}

impl Default for WasmOptions {
    fn default() -> Self {
        WasmOptions {
            timeout: None,
            fuel: None,
            limits: StoreLimits::default(),
            features: kiln_compiler::default_features(),
        }
    }
}

/// The `-W` switches for proposals Kiln runs but does not enable by default (as in Wasmtime).
const PROPOSALS: &[(&str, WasmFeatures)] = &[
    ("wide-arithmetic", WasmFeatures::WIDE_ARITHMETIC),
    ("custom-page-sizes", WasmFeatures::CUSTOM_PAGE_SIZES),
    ("exceptions", WasmFeatures::EXCEPTIONS),
    ("legacy-exceptions", WasmFeatures::LEGACY_EXCEPTIONS),
    ("gc", WasmFeatures::GC),
];

/// What the `-S` options set.
#[derive(Debug, Clone)]
pub struct WasiOptions {
    /// Most descriptors the guest may hold open.
    pub max_open_files: usize,
}

impl Default for WasiOptions {
    fn default() -> Self {
        WasiOptions { max_open_files: kiln_wasi::DEFAULT_MAX_OPEN_FILES }
    }
}

/// `(name, value, what it does)` of every `-W` option, for `-W help`.
pub const WASM_HELP: &[(&str, &str, &str)] = &[
    ("timeout", "DURATION", "stop the guest with `deadline exceeded` after DURATION (500ms, 10s, 2m, 1h; a bare number is seconds), even while it waits in memory.atomic.wait or a WASI call"),
    ("fuel", "N", "compile with fuel metering and stop the guest with `all fuel consumed` after N operators"),
    ("max-memory-size", "BYTES", "largest any linear memory may be or grow to (suffixes K, M, G; default 4G)"),
    ("max-table-elements", "N", "most elements any table may hold (default 1000000)"),
    ("max-instances", "N", "most instances alive in the store (default 10000)"),
    ("max-tables", "N", "most tables one module may define (default 16)"),
    ("max-memories", "N", "most memories one module may define (default 8)"),
    ("max-exception-memory", "BYTES", "most memory the guest's live exception objects may take: thrown and not yet caught, or held as exnref values (16 bytes plus 16 per payload value each; suffixes K, M, G; default 64M)"),
    ("max-gc-heap-size", "BYTES", "largest the store's GC heap may be: its structs and arrays, live ones in half of it (suffixes K, M, G; at most 4G; default 64M); an allocation that does not fit after a collection traps"),
    ("wide-arithmetic", "y|n", "accept the wide-arithmetic proposal's 128-bit operators (default n; `-W wide-arithmetic` alone is y)"),
    ("custom-page-sizes", "y|n", "accept memories with 1-byte pages, the custom-page-sizes proposal (default n; alone is y)"),
    ("exceptions", "y|n", "accept exception handling: tags, throw, throw_ref, try_table, exnref (default y)"),
    ("legacy-exceptions", "y|n", "accept the earlier exception-handling instructions try, catch, rethrow and delegate, which clang and emscripten emit for -fwasm-exceptions (default n; alone is y)"),
    ("gc", "y|n", "accept garbage collection: structs, arrays, i31 and casts (default n while it is new; alone is y)"),
];

/// The same for `-S`.
pub const WASI_HELP: &[(&str, &str, &str)] =
    &[("max-open-files", "N", "most descriptors the guest may hold open, stdio and preopens included (default 256)")];

pub const DEBUG_HELP: &[(&str, &str, &str)] = &[(
    "debug-info",
    "y|n",
    "DWARF line information in the object, from the module's own DWARF (built with -g), so that \
     addr2line, objdump -dl and gdb show the guest's source lines (default n)",
)];

/// Parses the `-D` options given, in order: whether to emit debug information.
pub fn parse_debug(options: &[String]) -> Result<bool> {
    let mut debug_info = false;
    for option in options {
        let (_, value) = split('D', option, DEBUG_HELP)?;
        debug_info = parse_switch(value).with_context(|| format!("-D {option}"))?;
    }
    Ok(debug_info)
}

/// Prints an option group's help.
pub fn print_help(flag: char, options: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    crate::out!("Available -{flag} options:");
    for (name, value, what) in options {
        crate::out!("  -{flag} {name}={value}\n        {what}");
    }
    Ok(())
}

fn split<'a>(flag: char, option: &'a str, known: &[(&str, &str, &str)]) -> Result<(&'a str, &'a str)> {
    let (name, value) = option.split_once('=').unwrap_or((option, ""));
    if !known.iter().any(|(k, _, _)| *k == name) {
        let names: Vec<&str> = known.iter().map(|(k, _, _)| *k).collect();
        bail!("unknown option `-{flag} {name}` (known: {}; `-{flag} help` explains them)", names.join(", "));
    }
    let switch = known.iter().any(|&(k, v, _)| k == name && v == "y|n");
    if value.is_empty() && !switch {
        bail!("`-{flag} {name}` needs a value: -{flag} {name}=VALUE");
    }
    Ok((name, value))
}

/// Parses the `-W` options given, in order.
pub fn parse_wasm(options: &[String]) -> Result<WasmOptions> {
    let mut parsed = WasmOptions::default();
    for option in options {
        let (name, value) = split('W', option, WASM_HELP)?;
        let context = || format!("-W {option}");
        let limits = &mut parsed.limits;
        match name {
            "timeout" => {
                parsed.timeout = Some(parse_duration(value).map_err(anyhow::Error::msg).with_context(context)?)
            }
            "fuel" => parsed.fuel = Some(value.parse().with_context(context)?),
            "max-memory-size" => limits.memory_size = parse_size(value).with_context(context)?,
            "max-table-elements" => limits.table_elements = value.parse().with_context(context)?,
            "max-instances" => limits.instances = value.parse().with_context(context)?,
            "max-tables" => limits.tables = value.parse().with_context(context)?,
            "max-memories" => limits.memories = value.parse().with_context(context)?,
            "max-exception-memory" => limits.exception_memory = parse_size(value).with_context(context)?,
            "max-gc-heap-size" => limits.gc_heap_size = parse_size(value).with_context(context)?,
            _ => {
                let (_, feature) = PROPOSALS.iter().find(|(n, _)| *n == name).expect("checked by `split`");
                parsed.features.set(*feature, parse_switch(value).with_context(context)?);
            }
        }
    }
    Ok(parsed)
}

/// Parses the `-S` options given, in order.
pub fn parse_wasi(options: &[String]) -> Result<WasiOptions> {
    let mut parsed = WasiOptions::default();
    for option in options {
        let (name, value) = split('S', option, WASI_HELP)?;
        match name {
            "max-open-files" => parsed.max_open_files = value.parse().with_context(|| format!("-S {option}"))?,
            _ => unreachable!("checked by `split`"),
        }
    }
    Ok(parsed)
}

/// A `y|n` switch's value; empty (the switch alone) is yes, as in Wasmtime.
fn parse_switch(text: &str) -> Result<bool> {
    match text {
        "" | "y" | "yes" | "true" => Ok(true),
        "n" | "no" | "false" => Ok(false),
        _ => bail!("`{text}` is not y or n"),
    }
}

/// A byte count, optionally with a binary suffix (`64K`, `16M`, `1G`).
fn parse_size(text: &str) -> Result<u64> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().with_context(|| format!("`{text}` is not a size (e.g. 65536, 64K, 16M, 1G)"))?;
    n.checked_mul(1 << shift).with_context(|| format!("`{text}` is too large"))
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
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
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Prints the `-W` or `-S` option list if `help` is among `wasm` or `wasi`; whether it did.
pub fn print_help_if_asked(wasm: &[String], wasi: &[String]) -> Result<bool> {
    if wasm.iter().any(|o| o == "help") {
        print_help('W', WASM_HELP)?;
        return Ok(true);
    }
    if wasi.iter().any(|o| o == "help") {
        print_help('S', WASI_HELP)?;
        return Ok(true);
    }
    Ok(false)
}

/// `--env K=V` (or `--env K`, the host's value) arguments as pairs.
pub fn parse_envs(envs: &[String]) -> Result<Vec<(String, String)>> {
    envs.iter()
        .map(|env| match env.split_once('=') {
            Some((key, value)) => Ok((key.to_string(), value.to_string())),
            None => match std::env::var(env) {
                Ok(value) => Ok((env.clone(), value)),
                Err(_) => bail!("--env {env}: no such variable in kiln's environment (write --env {env}=VALUE)"),
            },
        })
        .collect()
}

/// `--dir HOST[::GUEST]` arguments as (host, guest) pairs.
pub fn parse_dirs(dirs: &[String]) -> Result<Vec<(std::path::PathBuf, String)>> {
    dirs.iter()
        .map(|dir| {
            let (host, guest) = dir.split_once("::").unwrap_or((dir.as_str(), dir.as_str()));
            if host.is_empty() || guest.is_empty() {
                bail!("--dir {dir}: expected HOST or HOST::GUEST");
            }
            Ok((host.into(), guest.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_clear_errors() {
        let parsed = parse_wasm(&["max-memory-size=64K".into(), "timeout=250ms".into(), "fuel=100".into()]).unwrap();
        assert_eq!(parsed.limits.memory_size, 65536);
        assert_eq!(parsed.timeout, Some(Duration::from_millis(250)));
        assert_eq!(parsed.fuel, Some(100));
        let err = parse_wasm(&["max-memory=1".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown option `-W max-memory`") && err.contains("max-memory-size"), "{err}");
        assert!(parse_wasm(&["max-tables".into()]).unwrap_err().to_string().contains("needs a value"));
        assert!(parse_wasm(&["max-memory-size=lots".into()]).is_err());
        let features = parse_wasm(&["wide-arithmetic".into(), "custom-page-sizes=y".into()]).unwrap().features;
        assert!(features.wide_arithmetic() && features.custom_page_sizes());
        assert!(!parse_wasm(&[]).unwrap().features.wide_arithmetic(), "off by default");
        let off = parse_wasm(&["wide-arithmetic=y".into(), "wide-arithmetic=n".into()]).unwrap().features;
        assert!(!off.wide_arithmetic(), "the last one wins");
        assert!(parse_wasm(&["custom-page-sizes=maybe".into()]).is_err());
        assert_eq!(parse_wasi(&["max-open-files=3".into()]).unwrap().max_open_files, 3);
    }
}
