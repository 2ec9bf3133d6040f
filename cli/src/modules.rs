//! How `kiln run` turns its MODULE argument into a loaded module.
//!
//! The input is WebAssembly (binary or text), compiled by Kiln itself (through the user's
//! object cache). A compiled shared object is native code: it is refused unless the user
//! vouches for it (`--allow-precompiled`) or it carries a signature by a trusted key
//! (`--verify KEY`). Nothing in a refused file ever runs: the checks read it, the dynamic
//! loader never sees it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_compiler::cache::{source_sha256, ObjectCache};
use kiln_compiler::{CompileError, Compiler};
use kiln_runtime::{Module, ObjectFile, PublicKey};

/// What the user allows for a precompiled object.
pub struct Policy {
    /// `--allow-precompiled`: run an unsigned object (the user trusts its origin).
    pub allow_precompiled: bool,
    /// `--verify KEY`: run an object only if `OBJECT.minisig` verifies with KEY.
    pub verify: Option<PublicKey>,
    /// `-W fuel=N`: the code must meter fuel.
    pub fuel: bool,
    /// The proposals WebAssembly may use (`-W wide-arithmetic`, ...).
    pub features: kiln_compiler::WasmFeatures,
}

/// A loaded module and, when it was compiled without a usable cache, the temporary directory
/// holding its object (kept until the module is done).
pub struct Loaded {
    pub module: Module,
    _scratch: Option<tempfile::TempDir>,
}

/// Whether `path` starts like an ELF file.
pub fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let n = std::io::Read::read(&mut file, &mut magic).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(n == 4 && magic == *b"\x7fELF")
}

/// Loads MODULE under `policy` (`-`: WebAssembly read from stdin).
pub fn load(path: &Path, policy: &Policy) -> Result<Loaded> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("cannot read the module from stdin")?;
        if bytes.starts_with(b"\x7fELF") {
            bail!("stdin holds a compiled shared object: only WebAssembly is read from stdin (name the .so instead)");
        }
        return compile_source(&bytes, Path::new("<stdin>"), policy);
    }
    if is_elf(path)? {
        return Ok(Loaded { module: load_precompiled(path, policy)?, _scratch: None });
    }
    if policy.verify.is_some() {
        bail!("--verify checks compiled objects, but {} is WebAssembly (it is compiled here, by Kiln)", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    compile_source(&bytes, path, policy)
}

/// Compiles the WebAssembly `bytes` (binary or text, from `path`) and loads the result.
fn compile_source(bytes: &[u8], path: &Path, policy: &Policy) -> Result<Loaded> {
    let wasm = kiln_compiler::wasm_from_file_contents(bytes, path)
        .with_context(|| format!("cannot compile {}", path.display()))?;
    let mut compiler = Compiler::with_features(policy.features)?;
    compiler.set_fuel_metering(policy.fuel);
    compile_and_load(&compiler, &wasm).with_context(|| format!("cannot compile {}", path.display()))
}

fn load_precompiled(path: &Path, policy: &Policy) -> Result<Module> {
    if !policy.allow_precompiled && policy.verify.is_none() {
        bail!(
            "{} is a compiled shared object (native code), not WebAssembly. Running it means trusting whoever \
             wrote it: pass --allow-precompiled if you do (it must come from `kiln compile`), or --verify KEY to \
             require a signature by KEY",
            path.display()
        );
    }
    let module = match &policy.verify {
        // The signature is checked before anything in the file is parsed.
        Some(key) => Module::load_verified(path, key)?,
        // SAFETY: the user vouched for this object's origin with --allow-precompiled (the
        // flag's documentation says what that means).
        None => unsafe { Module::load(path) }?,
    };
    if policy.fuel && !module.metadata().fuel_metered {
        bail!("-W fuel needs code compiled with fuel metering, and {} was compiled without it", path.display());
    }
    Ok(module)
}

/// Compiles `wasm` (through the user's cache when it is usable) and loads the result.
fn compile_and_load(compiler: &Compiler, wasm: &[u8]) -> Result<Loaded> {
    if std::env::var_os("KILN_NO_CACHE").is_none() {
        if let Some(cache) = ObjectCache::user_default() {
            match cached(&cache, compiler, wasm) {
                Ok(module) => return Ok(Loaded { module, _scratch: None }),
                // An unusable cache directory is not fatal: say why, and compile to a
                // temporary file instead.
                Err(Cached::Unusable(why)) => eprintln!("kiln: warning: {why}; compiling without the cache"),
                Err(Cached::Failed(err)) => return Err(err),
            }
        }
    }
    let scratch = tempfile::tempdir()?;
    let so = scratch.path().join("module.so");
    let object = compiler.compile_object(wasm)?;
    kiln_compiler::link::write_object_file(&object.object, &so)?;
    // SAFETY: compiled just above into a private temporary directory.
    let module = unsafe { Module::load(&so) }?;
    Ok(Loaded { module, _scratch: Some(scratch) })
}

enum Cached {
    Unusable(String),
    Failed(anyhow::Error),
}

/// The cached object for `wasm`: a hit is used only if it checks out and records `wasm`'s
/// hash; otherwise (a damaged or swapped entry) it is evicted and compiled again.
fn cached(cache: &ObjectCache, compiler: &Compiler, wasm: &[u8]) -> std::result::Result<Module, Cached> {
    let lookup = |cache: &ObjectCache| match cache.get_or_compile(compiler, wasm) {
        Ok(found) => Ok(found),
        Err(CompileError::Io(err)) => Err(Cached::Unusable(err.to_string())),
        Err(err) => Err(Cached::Failed(err.into())),
    };
    let (so, hit): (PathBuf, bool) = lookup(cache)?;
    let expected = source_sha256(wasm);
    let check = |so: &Path| ObjectFile::read(so).ok().filter(|o| o.metadata().source_sha256 == expected);
    let object = match check(&so) {
        Some(object) => object,
        None if hit => {
            cache.evict(compiler, wasm).map_err(|e| Cached::Unusable(format!("cannot evict a damaged entry: {e}")))?;
            let (so, _) = lookup(cache)?;
            check(&so).ok_or_else(|| {
                Cached::Failed(anyhow::anyhow!("the object just compiled into {} does not check out", so.display()))
            })?
        }
        None => {
            return Err(Cached::Failed(anyhow::anyhow!(
                "the object just compiled into {} does not check out",
                so.display()
            )))
        }
    };
    // SAFETY: Kiln compiled this object (a cache directory only this user can write, the
    // object checked, and it records the hash of exactly this wasm).
    unsafe { object.load() }.map_err(|e| Cached::Failed(e.into()))
}
