//! A cache of compiled shared objects, keyed by the module's bytes, the enabled proposals and
//! the compiler build, so unchanged modules are not compiled twice.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{link, Compiler, CompileError, COMPILER_VERSION};

/// A directory of `<key>.so` files.
#[derive(Debug, Clone)]
pub struct ObjectCache {
    dir: PathBuf,
}

impl ObjectCache {
    /// A cache in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> ObjectCache {
        ObjectCache { dir: dir.into() }
    }

    /// The user's cache directory for Kiln: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
    /// `~/.cache/kiln`.
    pub fn user_default() -> Option<ObjectCache> {
        if let Some(dir) = std::env::var_os("KILN_CACHE_DIR") {
            return Some(ObjectCache::new(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(ObjectCache::new(base.join("kiln")))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(compiler: &Compiler, wasm: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(COMPILER_VERSION.as_bytes());
        hasher.update(kiln_abi::ABI_VERSION.to_le_bytes());
        hasher.update(compiler.features.bits().to_le_bytes());
        hasher.update([compiler.interruptible as u8, compiler.fuel as u8]);
        // The object depends on the CPU features the ISA was configured with.
        for flag in compiler.isa.isa_flags() {
            hasher.update(flag.to_string().as_bytes());
        }
        hasher.update(wasm);
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The shared object for `wasm` (binary), compiling and storing it on a miss. Returns the
    /// path and whether it was a hit. Entries are written under a temporary name and renamed,
    /// so concurrent users never see a partial file.
    pub fn get_or_compile(&self, compiler: &Compiler, wasm: &[u8]) -> Result<(PathBuf, bool), CompileError> {
        let path = self.dir.join(format!("{}.so", Self::key(compiler, wasm)));
        if path.is_file() {
            return Ok((path, true));
        }
        std::fs::create_dir_all(&self.dir)?;
        let object = compiler.compile_object(wasm)?;
        link::link_shared_object(&object.object, &path)?;
        Ok((path, false))
    }
}
