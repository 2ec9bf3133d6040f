//! A cache of compiled shared objects, keyed by the module's bytes, the enabled proposals and
//! the compiler build, so unchanged modules are not compiled twice.
//!
//! A cache entry is native code that will be loaded, so the cache only uses a directory that
//! nobody else can write: owned by the current user, not a symbolic link, not writable by its
//! group or others (it is created with mode 0700). Each object also records the SHA-256 of the
//! wasm it was compiled from (`ModuleMetadata::source_sha256`): a user of the cache checks it
//! before loading, so an entry swapped for another module's object is compiled again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{link, CompileError, Compiler, COMPILER_VERSION};

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
    /// `~/.cache/kiln` (an empty variable counts as unset).
    pub fn user_default() -> Option<ObjectCache> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("KILN_CACHE_DIR") {
            return Some(ObjectCache::new(dir));
        }
        let base =
            var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))?;
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
        let options = compiler.options;
        hasher.update([options.interruptible as u8, options.fuel as u8, options.debug_info as u8]);
        // The object depends on the CPU features the ISA was configured with.
        for flag in compiler.isa.isa_flags() {
            hasher.update(flag.to_string().as_bytes());
        }
        hasher.update(wasm);
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Creates the directory (mode 0700) if needed and checks that only this user can write
    /// it.
    fn prepare(&self) -> Result<(), CompileError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let meta = std::fs::symlink_metadata(&self.dir)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let refuse = |why: &str| {
            Err(CompileError::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("not using the cache directory {}: {why}", self.dir.display()),
            )))
        };
        if !meta.is_dir() {
            return refuse("it is not a directory (a symbolic link?)");
        }
        if meta.uid() != me {
            return refuse("it belongs to another user");
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return refuse("other users can write to it");
        }
        Ok(())
    }

    /// The shared object for `wasm` (binary), compiling and storing it on a miss. Returns the
    /// path and whether it was a hit. Entries are written under a temporary name and renamed,
    /// so concurrent users never see a partial file. Fails (with `CompileError::Io`) when the
    /// directory is not one only this user can write.
    pub fn get_or_compile(&self, compiler: &Compiler, wasm: &[u8]) -> Result<(PathBuf, bool), CompileError> {
        self.prepare()?;
        let path = self.dir.join(format!("{}.so", Self::key(compiler, wasm)));
        if path.is_file() {
            return Ok((path, true));
        }
        let object = compiler.compile_object(wasm)?;
        link::write_object_file(&object.object, &path)?;
        Ok((path, false))
    }

    /// The objects the cache holds, with their sizes in bytes (none if the directory does not
    /// exist). Only files named as the cache names its entries count.
    pub fn objects(&self) -> std::io::Result<Vec<(PathBuf, u64)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            entries => entries?,
        };
        let mut objects = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let is_entry = name.to_str().and_then(|n| n.strip_suffix(".so")).is_some_and(|key| {
                key.len() == 64 && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
            if is_entry && entry.file_type()?.is_file() {
                objects.push((entry.path(), entry.metadata()?.len()));
            }
        }
        Ok(objects)
    }

    /// Deletes every object the cache holds (see [`Self::objects`]); returns how many.
    pub fn clear(&self) -> std::io::Result<usize> {
        let objects = self.objects()?;
        for (path, _) in &objects {
            std::fs::remove_file(path)?;
        }
        Ok(objects.len())
    }

    /// Removes the entry for `wasm` (a damaged one), so the next lookup compiles it again.
    pub fn evict(&self, compiler: &Compiler, wasm: &[u8]) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(format!("{}.so", Self::key(compiler, wasm)))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The SHA-256 an object compiled from `wasm` records (`ModuleMetadata::source_sha256`).
pub fn source_sha256(wasm: &[u8]) -> [u8; 32] {
    Sha256::digest(wasm).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_others_can_write_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let compiler = Compiler::new().unwrap();
        let err = ObjectCache::new(&shared).get_or_compile(&compiler, b"\0asm\x01\0\0\0").unwrap_err();
        assert!(err.to_string().contains("other users can write"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        assert!(ObjectCache::new(&link).get_or_compile(&compiler, b"\0asm\x01\0\0\0").is_err());
        let private = ObjectCache::new(dir.path().join("private"));
        let (path, hit) = private.get_or_compile(&compiler, b"\0asm\x01\0\0\0").unwrap();
        assert!(!hit && path.is_file());
        let mode = std::fs::metadata(private.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn an_empty_cache_variable_is_unset() {
        // Only this test touches the variable in this process.
        std::env::set_var("KILN_CACHE_DIR", "");
        let cache = ObjectCache::user_default();
        std::env::remove_var("KILN_CACHE_DIR");
        assert!(cache.is_none_or(|c| !c.dir().as_os_str().is_empty() && c.dir() != Path::new(".")));
    }
}
