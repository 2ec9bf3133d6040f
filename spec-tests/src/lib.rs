//! Runs `.wast` scripts (the official spec testsuite and Kiln's own) through the whole AOT
//! pipeline: every module is compiled to a shared object, linked, loaded and instantiated in a
//! region slot; every assertion runs against the real instances.
//!
//! Each directive counts once: `passed`, `failed`, or `skipped` (a directive Kiln cannot run
//! yet, for example threads or GC values). Skipped directives are reported, never hidden.

mod discovery;
mod legacy;
mod matching;
mod runner;
pub mod spectest;

pub use discovery::{features_for, wast_files, Edition};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_compiler::WasmFeatures;

/// Directive counts for one script.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Directives that ran and held.
    pub passed: usize,
    /// Directives that ran and did not hold.
    pub failed: usize,
    /// Directives Kiln cannot run yet.
    pub skipped: usize,
}

impl Counts {
    /// Adds another script's counts.
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    /// Total directives.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }
}

/// The outcome of one script.
#[derive(Debug, Default)]
pub struct Report {
    /// The counts.
    pub counts: Counts,
    /// One line per failed directive: `file:line:col: what happened`.
    pub failures: Vec<String>,
    /// One line per skipped directive, with the reason.
    pub skips: Vec<String>,
    /// Modules found in the compiled-object cache.
    pub cache_hits: usize,
}

/// Where compiled modules are cached: `$KILN_SPEC_CACHE` if set (`off` disables caching), else
/// `target/kiln-spec-cache` in the workspace.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("KILN_SPEC_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kiln-spec-cache")),
    }
}

/// Runs one `.wast` file of Kiln's own, or of the 2.0 testsuite.
pub fn run_file(path: &Path) -> Result<Report> {
    run_suite_file(Edition::Wasm2, path)
}

/// Runs one `.wast` file of `edition`'s testsuite.
pub fn run_suite_file(edition: Edition, path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    run_script(path, &text, edition.features_for(path))
}

/// Runs the script `text` (from `path`, used in messages).
pub fn run_script(path: &Path, text: &str, features: WasmFeatures) -> Result<Report> {
    run_script_with(path, text, features, &ScriptOptions::default())
}

/// How [`run_script_with`] runs a script; the default is how the spec suite runs.
#[derive(Debug, Clone, Default)]
pub struct ScriptOptions {
    /// Compile with fuel metering and let all the script's guest code share this much fuel, so
    /// a script that loops forever ends (the wast fuzz target runs arbitrary scripts).
    pub fuel: Option<u64>,
    /// Leave the compiled-object cache alone (arbitrary scripts would fill it).
    pub no_cache: bool,
}

/// Runs the script `text` with `options`.
pub fn run_script_with(path: &Path, text: &str, features: WasmFeatures, options: &ScriptOptions) -> Result<Report> {
    runner::run(path, &legacy::unfold_try(text), features, options)
}
