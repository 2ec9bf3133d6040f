//! Stage 6: put a compiled shared object in its file, all at once.

use std::path::Path;

use crate::CompileError;

/// Writes the shared object `object` (from [`crate::Compiler::compile_object`]) to `out`: into
/// a temporary file beside it, renamed over `out` once complete, so that a reader never sees a
/// half-written object and a failed write leaves nothing at `out`.
pub fn write_object_file(object: &[u8], out: &Path) -> Result<(), CompileError> {
    use std::io::Write;
    let out_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Errors name `out`, not the staging file the user never asked for.
    let named = |e: std::io::Error, reason: String| {
        CompileError::Io(std::io::Error::new(e.kind(), format!("cannot create {}: {reason}", out.display())))
    };
    let mut staged =
        tempfile::Builder::new().prefix(".kiln-object").suffix(".so").tempfile_in(out_dir).map_err(|e| {
            let reason =
                if out_dir.is_dir() { e.kind().to_string() } else { format!("no directory {}", out_dir.display()) };
            named(e, reason)
        })?;
    staged.write_all(object).map_err(|e| named(e, "cannot write it".into()))?;
    // The object is native code the loader maps: readable and executable by its owner.
    use std::os::unix::fs::PermissionsExt;
    staged.as_file().set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(|e| {
        let reason = e.to_string();
        named(e, reason)
    })?;
    staged.persist(out).map_err(|e| {
        let reason = e.error.to_string();
        named(e.error, reason)
    })?;
    Ok(())
}
