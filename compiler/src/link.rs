//! Stage 5: turn the relocatable object into a shared object with the system linker.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use crate::CompileError;

/// The linker to run: `$KILN_LD` if set, else `ld` from binutils.
fn linker() -> String {
    std::env::var("KILN_LD").unwrap_or_else(|_| "ld".to_string())
}

/// Links `object` (ELF relocatable bytes) into the shared object `out`.
pub fn link_shared_object(object: &[u8], out: &Path) -> Result<(), CompileError> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("module.o");
    std::fs::write(&input, object)?;
    // Link next to the destination, then rename, so a reader never sees a half-written file.
    let out_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Named after `out`, not after the staging file the user never asked for.
    let staged = tempfile::Builder::new().prefix(".kiln-link").suffix(".so").tempfile_in(out_dir).map_err(|e| {
        let reason =
            if out_dir.is_dir() { e.kind().to_string() } else { format!("no directory {}", out_dir.display()) };
        CompileError::Io(std::io::Error::new(e.kind(), format!("cannot create {}: {reason}", out.display())))
    })?;
    let ld = linker();
    let output = Command::new(&ld)
        // A non-executable stack, and every relocation resolved at load time.
        .args(["-shared", "-z", "noexecstack", "-z", "now", "--hash-style=both", "-o"])
        .arg(staged.path())
        .arg(&input)
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => CompileError::LinkerNotFound(ld.clone()),
            _ => CompileError::Link(format!("could not run `{ld}`: {e}")),
        })?;
    if !output.status.success() {
        return Err(CompileError::Link(format!(
            "`{ld}` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    append_checksum_trailer(staged.path())?;
    staged.persist(out).map_err(|e| {
        CompileError::Io(std::io::Error::new(e.error.kind(), format!("cannot create {}: {}", out.display(), e.error)))
    })?;
    Ok(())
}

/// Appends the checksum trailer the runtime verifies before loading (see `kiln_abi::checksum`).
fn append_checksum_trailer(path: &Path) -> Result<(), CompileError> {
    use std::io::Write;
    let contents = std::fs::read(path)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(&kiln_abi::checksum_trailer(&contents))?;
    Ok(())
}
