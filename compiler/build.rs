//! Fingerprints the compiler's own sources (and the ABI crate's) so compiled-object caches are
//! invalidated by any change to code generation, not only by version bumps.

use std::path::Path;

fn hash_dir(dir: &Path, state: &mut u64) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hash_dir(&path, state);
        } else if let Ok(bytes) = std::fs::read(&path) {
            // FNV-1a: no dependencies needed, and collisions only cost a stale cache entry
            // between two builds of the compiler.
            for byte in path.to_string_lossy().bytes().chain(bytes) {
                *state ^= byte as u64;
                *state = state.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
}

fn main() {
    // Read when the script runs, not baked in when it is compiled: Cargo may reuse a build
    // script compiled in another checkout (a copied target directory).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("Cargo sets CARGO_MANIFEST_DIR");
    let manifest = Path::new(&manifest);
    let mut state = 0xcbf2_9ce4_8422_2325u64;
    let empty = state;
    for dir in [manifest.join("src"), manifest.join("../runtime/abi/src")] {
        println!("cargo:rerun-if-changed={}", dir.display());
        hash_dir(&dir, &mut state);
    }
    // A fingerprint of nothing would let every build share one cache key.
    assert_ne!(state, empty, "no compiler sources found below {}", manifest.display());
    println!("cargo:rustc-env=KILN_COMPILER_FINGERPRINT={state:016x}");
}
