//! Which scripts a testsuite has and the proposals each assumes: the two editions of the
//! official suite, the `.wast` walk, the features per path.

use std::path::{Path, PathBuf};

use kiln_compiler::WasmFeatures;

/// Which official testsuite a script comes from: the suite Kiln has passed since the start
/// (WebAssembly 2.0 at its root, proposals in folders), or the newest, whose root is
/// WebAssembly 3.0. They differ in the features their files assume and in their ratchets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    /// WebAssembly/testsuite at `ae5a669` (the commit Wasmtime 25 used).
    Wasm2,
    /// WebAssembly/testsuite at `193e551` (2026-06-17).
    Wasm3,
}

impl Edition {
    /// Both, oldest first.
    pub const ALL: [Edition; 2] = [Edition::Wasm2, Edition::Wasm3];

    /// The version it is named by on the command line (`2.0`, `3.0`).
    pub fn version(self) -> &'static str {
        match self {
            Edition::Wasm2 => "2.0",
            Edition::Wasm3 => "3.0",
        }
    }

    /// The testsuite commit it is pinned to.
    pub fn commit(self) -> &'static str {
        match self {
            Edition::Wasm2 => "ae5a66933070b705dde56c2a71bf3fbc33282864",
            Edition::Wasm3 => "193e551ff22663995b1ac95dc62344133669e14b",
        }
    }

    /// The environment variable that points at a checkout of it.
    pub fn env_var(self) -> &'static str {
        match self {
            Edition::Wasm2 => "WASM_SPEC_TESTSUITE",
            Edition::Wasm3 => "WASM_SPEC_TESTSUITE_3_0",
        }
    }

    /// Its ratchet, in `spec-tests/`.
    pub fn expected_failures_file(self) -> &'static str {
        match self {
            Edition::Wasm2 => "expected-failures.txt",
            Edition::Wasm3 => "expected-failures-3.0.txt",
        }
    }

    /// The files listed in its ratchet (paths relative to the testsuite root): the ones that
    /// do not pass yet. Both the test harness and `cargo xtask spec` enforce it: the list may
    /// only shrink.
    pub fn expected_failures(self) -> std::collections::BTreeSet<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(self.expected_failures_file());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    /// The proposals to enable for the script at `path` of this suite.
    pub fn features_for(self, path: &Path) -> WasmFeatures {
        match self {
            Edition::Wasm2 => features_for(path),
            Edition::Wasm3 => wasm3_features_for(path),
        }
    }
}

/// Every `.wast` file below `dir`, sorted.
pub fn wast_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .map(walkdir::DirEntry::into_path)
        .filter(|path| path.extension().is_some_and(|e| e == "wast") && path.is_file())
        .collect();
    files.sort();
    files
}

/// The proposals to enable for a script, from its path in the 2.0 testsuite (and for Kiln's
/// own scripts).
pub fn features_for(path: &Path) -> WasmFeatures {
    let mut features = kiln_compiler::default_features();
    let in_dir = |name: &str| path.components().any(|c| c.as_os_str() == name);
    if !in_dir("multi-memory") && !in_dir("memory64") {
        // The core files at this testsuite commit are WebAssembly 2.0, which has one memory
        // (`binary.wast` and `memory.wast` check that a second one is rejected); so are the
        // proposals' copies of them, except where multi-memory is part of the proposal.
        features.remove(WasmFeatures::MULTI_MEMORY);
    }
    // GC in its own folder and in memory64's, which is written against Wasm 3.0 (whose
    // constant expressions may read any earlier global, a rule wasmparser files under GC).
    // Exception handling is on everywhere (it is in Kiln's defaults), its legacy instructions
    // in `legacy` folders.
    if in_dir("memory64") || in_dir("gc") {
        features |= WasmFeatures::GC;
    }
    if in_dir("legacy") {
        features |= WasmFeatures::LEGACY_EXCEPTIONS;
    }
    // The threads folder predates reference types (`imports.wast` checks that a second table
    // is rejected).
    if in_dir("threads") {
        features.remove(WasmFeatures::REFERENCE_TYPES | WasmFeatures::FUNCTION_REFERENCES | WasmFeatures::TAIL_CALL);
    }
    features
}

/// The proposals to enable for a script, from its path in the 3.0 testsuite: the root is
/// WebAssembly 3.0 with every feature on; each proposal folder adds its own.
fn wasm3_features_for(path: &Path) -> WasmFeatures {
    let in_dir = |name: &str| path.components().any(|c| c.as_os_str() == name);
    if in_dir("threads") {
        // Written against WebAssembly 2.0 (it checks that a second memory or table is
        // rejected), like the 2.0 suite's copy.
        return features_for(path);
    }
    let mut features = kiln_compiler::default_features() | WasmFeatures::GC | WasmFeatures::EXCEPTIONS;
    if in_dir("legacy") {
        features |= WasmFeatures::LEGACY_EXCEPTIONS;
    }
    if in_dir("custom-page-sizes") {
        features |= WasmFeatures::CUSTOM_PAGE_SIZES;
    }
    if in_dir("wide-arithmetic") {
        features |= WasmFeatures::WIDE_ARITHMETIC;
    }
    features
}
