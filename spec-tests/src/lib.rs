//! Runs `.wast` scripts (the official spec testsuite and Kiln's own) through the whole AOT
//! pipeline: every module is compiled to a shared object, linked, loaded and instantiated in a
//! region slot; every assertion runs against the real instances.
//!
//! Each directive counts once: `passed`, `failed`, or `skipped` (a directive Kiln cannot run
//! yet, for example threads or GC values). Skipped directives are reported, never hidden.

mod legacy;
pub mod spectest;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use kiln_compiler::cache::ObjectCache;
use kiln_compiler::{CompileError, Compiler, WasmFeatures};
use kiln_runtime::{
    AnyRef, CallError, Extern, Instance, InstantiationError, Module, RefHierarchy, Region, RegionConfig, Store,
    StoreLimits, Trap, TrapCode, Val, ValType,
};
use wast::core::{NanPattern, V128Pattern, WastArgCore, WastRetCore};
use wast::parser::{self, ParseBuffer};
use wast::{QuoteWat, Wast, WastArg, WastDirective, WastExecute, WastInvoke, WastRet};

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
    let text = &legacy::unfold_try(text);
    let mut runner = Runner::new(path, text, features)?;
    if let Some(fuel) = options.fuel {
        runner.compiler.set_fuel_metering(true);
        runner.store.set_fuel(fuel);
    }
    if options.no_cache {
        runner.cache = None;
    }
    let mut lexer = wast::lexer::Lexer::new(text);
    // names.wast deliberately uses bidirectional-override characters in export names.
    lexer.allow_confusing_unicode(true);
    let buf = ParseBuffer::new_with_lexer(lexer).map_err(|e| runner.parse_error(e))?;
    let wast: Wast<'_> = parser::parse(&buf).map_err(|e| runner.parse_error(e))?;
    for directive in wast.directives {
        runner.run_directive(directive);
    }
    Ok(runner.report)
}

/// What happened to a directive.
enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Why a module could not be made into an instance.
enum ModuleError {
    Text(String),
    Compile(CompileError),
    Load(String),
    UnknownImport(String),
    Instantiate(InstantiationError),
}

impl std::fmt::Display for ModuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleError::Text(e) => write!(f, "text format: {e}"),
            ModuleError::Compile(e) => write!(f, "compile: {e}"),
            ModuleError::Load(e) => write!(f, "load: {e}"),
            ModuleError::UnknownImport(e) => write!(f, "unknown import: {e}"),
            ModuleError::Instantiate(e) => write!(f, "instantiate: {e}"),
        }
    }
}

struct Runner<'t> {
    path: PathBuf,
    text: &'t str,
    compiler: Compiler,
    store: Store,
    regions: Vec<Region>,
    current: Option<Instance>,
    named: HashMap<String, Instance>,
    /// Modules defined by `(module definition ...)`, by name, and the last one.
    definitions: HashMap<String, Module>,
    last_definition: Option<Module>,
    registered: HashMap<String, Instance>,
    spectest: HashMap<&'static str, Extern>,
    report: Report,
    cache: Option<ObjectCache>,
    next_object: usize,
    // Last: the compiled objects must outlive every module loaded from them.
    objects: tempfile::TempDir,
}

impl<'t> Runner<'t> {
    fn new(path: &Path, text: &'t str, features: WasmFeatures) -> Result<Runner<'t>> {
        // The scripts test the language, not a server's resource policy: no limits but the
        // language's and Kiln's own.
        let store = Store::with_limits(StoreLimits {
            memory_size: u64::MAX,
            table_elements: u64::MAX,
            instances: usize::MAX,
            tables: u32::MAX,
            memories: u32::MAX,
            exception_memory: u64::MAX,
            gc_heap_size: StoreLimits::DEFAULT.gc_heap_size,
        });
        Ok(Runner {
            path: path.to_path_buf(),
            text,
            compiler: Compiler::with_features(features)?,
            store: store.clone(),
            regions: Vec::new(),
            current: None,
            named: HashMap::new(),
            definitions: HashMap::new(),
            last_definition: None,
            registered: HashMap::new(),
            spectest: spectest::exports(&store)?,
            report: Report::default(),
            cache: cache_dir().map(ObjectCache::new),
            next_object: 0,
            objects: tempfile::tempdir()?,
        })
    }

    fn location(&self, span: wast::token::Span) -> String {
        let (line, col) = span.linecol_in(self.text);
        format!("{}:{}:{}", self.path.display(), line + 1, col + 1)
    }

    fn parse_error(&self, mut err: wast::Error) -> anyhow::Error {
        err.set_path(&self.path);
        err.set_text(self.text);
        anyhow!("{err}")
    }

    fn record(&mut self, span: wast::token::Span, outcome: Outcome) {
        match outcome {
            Outcome::Pass => self.report.counts.passed += 1,
            Outcome::Fail(why) => {
                self.report.counts.failed += 1;
                let line = format!("{}: {why}", self.location(span));
                self.report.failures.push(line);
            }
            Outcome::Skip(why) => {
                self.report.counts.skipped += 1;
                let line = format!("{}: skipped: {why}", self.location(span));
                self.report.skips.push(line);
            }
        }
    }

    fn run_directive(&mut self, directive: WastDirective<'_>) {
        let span = directive.span();
        let outcome = self.directive_outcome(directive);
        self.record(span, outcome);
    }

    fn directive_outcome(&mut self, directive: WastDirective<'_>) -> Outcome {
        match directive {
            WastDirective::Module(mut module) => {
                let name = module_name(&module);
                match self.instantiate_quote(&mut module) {
                    Ok(instance) => self.adopt(name, instance),
                    Err(e) => Outcome::Fail(format!("module failed: {e}")),
                }
            }
            WastDirective::ModuleDefinition(mut module) => {
                let name = module_name(&module);
                match self.compile_quote(&mut module) {
                    Ok(module) => {
                        if let Some(name) = name {
                            self.definitions.insert(name, module.clone());
                        }
                        self.last_definition = Some(module);
                        Outcome::Pass
                    }
                    Err(e) => Outcome::Fail(format!("module definition failed: {e}")),
                }
            }
            WastDirective::ModuleInstance { instance, module, .. } => {
                let definition = match module {
                    Some(id) => self.definitions.get(id.name()),
                    None => self.last_definition.as_ref(),
                };
                let Some(definition) = definition.cloned() else {
                    return Outcome::Fail(format!("no module definition {}", module.map_or("", |m| m.name())));
                };
                match self.instantiate(&definition) {
                    Ok(created) => self.adopt(instance.map(|id| id.name().to_string()), created),
                    Err(e) => Outcome::Fail(format!("module instance failed: {e}")),
                }
            }
            WastDirective::Register { name, module, .. } => match self.instance(module.map(|m| m.name())) {
                Ok(instance) => {
                    let handle = instance.clone();
                    self.registered.insert(name.to_string(), handle);
                    Outcome::Pass
                }
                Err(e) => Outcome::Fail(e),
            },
            WastDirective::Invoke(invoke) => match self.invoke(&invoke) {
                Ok(Ok(_)) => Outcome::Pass,
                Ok(Err(e)) => Outcome::Fail(format!("invoke `{}` failed: {e}", invoke.name)),
                Err(skip) => skip,
            },
            WastDirective::AssertReturn { exec, results, .. } => self.assert_return(exec, &results),
            WastDirective::AssertTrap { exec, message, .. } => self.assert_trap(exec, message),
            WastDirective::AssertExhaustion { call, message, .. } => match self.invoke(&call) {
                Ok(Err(CallError::Trap(Trap::Wasm { code: TrapCode::StackOverflow, .. }))) => Outcome::Pass,
                Ok(other) => Outcome::Fail(format!("expected `{message}`, got {}", describe(&other))),
                Err(skip) => skip,
            },
            WastDirective::AssertInvalid { mut module, message, .. } => match self.compile_quote(&mut module) {
                Err(ModuleError::Compile(CompileError::Invalid { .. })) | Err(ModuleError::Text(_)) => Outcome::Pass,
                Err(e) => Outcome::Fail(format!("expected invalid (`{message}`), got {e}")),
                Ok(_) => Outcome::Fail(format!("expected invalid (`{message}`), but the module compiled")),
            },
            WastDirective::AssertMalformed { mut module, message, .. } => match self.compile_quote(&mut module) {
                Err(ModuleError::Compile(CompileError::Invalid { .. })) | Err(ModuleError::Text(_)) => Outcome::Pass,
                Err(e) => Outcome::Fail(format!("expected malformed (`{message}`), got {e}")),
                Ok(_) => Outcome::Fail(format!("expected malformed (`{message}`), but the module compiled")),
            },
            WastDirective::AssertUnlinkable { module, message, .. } => {
                let mut module = QuoteWat::Wat(module);
                match self.instantiate_quote(&mut module) {
                    Err(ModuleError::UnknownImport(_))
                    | Err(ModuleError::Instantiate(InstantiationError::Unlinkable { .. })) => Outcome::Pass,
                    Err(e) => Outcome::Fail(format!("expected unlinkable (`{message}`), got {e}")),
                    Ok(_) => Outcome::Fail(format!("expected unlinkable (`{message}`), but it instantiated")),
                }
            }
            // A malformed or invalid custom annotation (`@custom`, `@metadata.code.*`) is an
            // error only to an implementation that reads that custom section. Kiln reads none:
            // the text parser may refuse the annotation, but a module whose core is sound must
            // compile.
            WastDirective::AssertMalformedCustom { mut module, message, .. }
            | WastDirective::AssertInvalidCustom { mut module, message, .. } => match self.compile_quote(&mut module) {
                Ok(_) | Err(ModuleError::Text(_)) => Outcome::Pass,
                Err(e) => Outcome::Fail(format!("a custom annotation (`{message}`) made the module fail: {e}")),
            },
            WastDirective::AssertException { exec: WastExecute::Invoke(invoke), .. } => match self.invoke(&invoke) {
                Ok(Err(CallError::Trap(Trap::Exception(_)))) => Outcome::Pass,
                Ok(other) => Outcome::Fail(format!("expected an uncaught exception, got {}", describe(&other))),
                Err(skip) => skip,
            },
            WastDirective::AssertException { .. } => Outcome::Fail("assert_exception of a module or get".into()),
            WastDirective::AssertSuspension { .. } => Outcome::Skip("stack switching".into()),
            WastDirective::Thread(_) | WastDirective::Wait { .. } => Outcome::Skip("threads in scripts".into()),
        }
    }

    /// Makes `instance` the current one, and `name`'s if it has one.
    fn adopt(&mut self, name: Option<String>, instance: Instance) -> Outcome {
        if let Some(name) = name {
            self.named.insert(name, instance.clone());
        }
        self.current = Some(instance);
        Outcome::Pass
    }

    fn instance(&self, name: Option<&str>) -> Result<&Instance, String> {
        match name {
            Some(name) => self.named.get(name).ok_or_else(|| format!("no module named {name}")),
            None => self.current.as_ref().ok_or_else(|| "no current module".to_string()),
        }
    }

    fn compile_quote(&mut self, module: &mut QuoteWat<'_>) -> Result<Module, ModuleError> {
        if let QuoteWat::QuoteComponent(..) = module {
            return Err(ModuleError::Text("components are not supported".into()));
        }
        let wasm = module.encode().map_err(|e| ModuleError::Text(e.to_string()))?;
        self.compile(&wasm)
    }

    fn compile(&mut self, wasm: &[u8]) -> Result<Module, ModuleError> {
        let so = match &self.cache {
            Some(cache) => {
                let (so, hit) = cache.get_or_compile(&self.compiler, wasm).map_err(ModuleError::Compile)?;
                if hit {
                    self.report.cache_hits += 1;
                }
                so
            }
            None => {
                let object = self.compiler.compile_object(wasm).map_err(ModuleError::Compile)?;
                self.next_object += 1;
                let so = self.objects.path().join(format!("module{}.so", self.next_object));
                kiln_compiler::link::write_object_file(&object.object, &so).map_err(ModuleError::Compile)?;
                so
            }
        };
        // SAFETY: the object was compiled by this runner (into its private temporary directory,
        // or its cache of objects it compiled itself) from the script's module.
        unsafe { Module::load(&so) }.map_err(|e| ModuleError::Load(e.to_string()))
    }

    fn resolve_imports(&self, module: &Module) -> Result<Vec<Extern>, ModuleError> {
        let mut imports = Vec::new();
        for import in &module.metadata().imports {
            let found = if import.module == "spectest" && !self.registered.contains_key("spectest") {
                self.spectest.get(import.name.as_str()).cloned()
            } else {
                self.registered.get(&import.module).and_then(|i| i.get_export(&import.name))
            };
            imports
                .push(found.ok_or_else(|| ModuleError::UnknownImport(format!("{}::{}", import.module, import.name)))?);
        }
        Ok(imports)
    }

    fn instantiate_quote(&mut self, module: &mut QuoteWat<'_>) -> Result<Instance, ModuleError> {
        let module = self.compile_quote(module)?;
        self.instantiate(&module)
    }

    fn instantiate(&mut self, module: &Module) -> Result<Instance, ModuleError> {
        let module = module.clone();
        let imports = self.resolve_imports(&module)?;
        for region in &self.regions {
            match Instance::new_in_store(region, &self.store, &module, &imports) {
                Err(InstantiationError::NoFreeSlot) => continue,
                other => return other.map_err(ModuleError::Instantiate),
            }
        }
        let region = Region::new(RegionConfig { slots: 32, ..RegionConfig::default() })
            .map_err(|e| ModuleError::Instantiate(InstantiationError::Unsupported(e.to_string())))?;
        let result = Instance::new_in_store(&region, &self.store, &module, &imports);
        self.regions.push(region);
        result.map_err(ModuleError::Instantiate)
    }

    /// Runs an invoke. The outer `Err` is a skip (arguments Kiln cannot express).
    fn invoke(&mut self, invoke: &WastInvoke<'_>) -> Result<Result<Vec<Val>, CallError>, Outcome> {
        let instance = self.instance(invoke.module.map(|m| m.name())).map_err(Outcome::Fail)?;
        let Some(func) = instance.get_func(invoke.name) else {
            return Err(Outcome::Fail(format!("no exported function `{}`", invoke.name)));
        };
        let params = func.ty().params.clone();
        if params.len() != invoke.args.len() {
            return Err(Outcome::Fail(format!("`{}` takes {} arguments", invoke.name, params.len())));
        }
        let mut args = Vec::with_capacity(params.len());
        for (arg, &ty) in invoke.args.iter().zip(&params) {
            args.push(arg_value(arg, ty).map_err(Outcome::Skip)?);
        }
        Ok(func.call(&args))
    }

    fn assert_return(&mut self, exec: WastExecute<'_>, expected: &[WastRet<'_>]) -> Outcome {
        let actual = match exec {
            WastExecute::Invoke(invoke) => match self.invoke(&invoke) {
                Ok(Ok(values)) => values,
                Ok(Err(e)) => return Outcome::Fail(format!("`{}` failed: {e}", invoke.name)),
                Err(skip) => return skip,
            },
            WastExecute::Get { module, global, .. } => {
                let instance = match self.instance(module.map(|m| m.name())) {
                    Ok(i) => i,
                    Err(e) => return Outcome::Fail(e),
                };
                match instance.get_export(global) {
                    Some(Extern::Global(g)) => match g.get() {
                        Ok(value) => vec![value],
                        Err(e) => return Outcome::Fail(format!("cannot read global `{global}`: {e}")),
                    },
                    _ => return Outcome::Fail(format!("no exported global `{global}`")),
                }
            }
            WastExecute::Wat(module) => {
                let mut module = QuoteWat::Wat(module);
                return match self.instantiate_quote(&mut module) {
                    Ok(_) if expected.is_empty() => Outcome::Pass,
                    Ok(_) => Outcome::Fail("a module has no results".into()),
                    Err(e) => Outcome::Fail(format!("module failed: {e}")),
                };
            }
        };
        if actual.len() != expected.len() {
            return Outcome::Fail(format!("expected {} results, got {}", expected.len(), actual.len()));
        }
        for (i, (value, pattern)) in actual.iter().zip(expected).enumerate() {
            match matches_ret(value, pattern) {
                Ok(true) => {}
                Ok(false) => return Outcome::Fail(format!("result {i}: got {value}, expected {pattern:?}")),
                Err(skip) => return Outcome::Skip(skip),
            }
        }
        Outcome::Pass
    }

    fn assert_trap(&mut self, exec: WastExecute<'_>, message: &str) -> Outcome {
        let result = match exec {
            WastExecute::Invoke(invoke) => match self.invoke(&invoke) {
                Ok(Err(CallError::Trap(trap))) => Err(trap),
                Ok(other) => return Outcome::Fail(format!("expected trap `{message}`, got {}", describe(&other))),
                Err(skip) => return skip,
            },
            WastExecute::Wat(module) => {
                let mut module = QuoteWat::Wat(module);
                match self.instantiate_quote(&mut module) {
                    Err(ModuleError::Instantiate(InstantiationError::Trap(trap))) => Err(trap),
                    Err(e) => return Outcome::Fail(format!("expected trap `{message}`, got {e}")),
                    Ok(_) => Ok(()),
                }
            }
            WastExecute::Get { .. } => return Outcome::Fail("assert_trap on a global read".into()),
        };
        match result {
            Err(trap) if trap_matches(&trap, message) => Outcome::Pass,
            Err(trap) => Outcome::Fail(format!("expected trap `{message}`, got trap `{trap}`")),
            Ok(()) => Outcome::Fail(format!("expected trap `{message}`, but instantiation succeeded")),
        }
    }
}

/// The reference interpreter's rule: the expected message is a prefix of the actual one.
///
/// Also accepted: the actual message being a prefix of the expected one, for the few scripts
/// whose expectation adds detail Kiln does not report (`uninitialized element 2`).
fn trap_matches(trap: &Trap, expected: &str) -> bool {
    let actual = trap.to_string();
    actual.starts_with(expected) || expected.starts_with(&actual)
}

fn describe(result: &Result<Vec<Val>, CallError>) -> String {
    match result {
        Ok(values) => format!("results {:?}", values.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
        Err(e) => format!("error `{e}`"),
    }
}

fn module_name(module: &QuoteWat<'_>) -> Option<String> {
    module.name().map(|id| id.name().to_string())
}

fn arg_value(arg: &WastArg<'_>, ty: ValType) -> Result<Val, String> {
    let WastArg::Core(core) = arg else { return Err("component-model arguments".into()) };
    Ok(match core {
        WastArgCore::I32(v) => Val::I32(*v),
        WastArgCore::I64(v) => Val::I64(*v),
        WastArgCore::F32(f) => Val::F32(f.bits),
        WastArgCore::F64(f) => Val::F64(f.bits),
        WastArgCore::V128(v) => Val::V128(u128::from_le_bytes(v.to_le_bytes())),
        WastArgCore::RefNull(_) => match ty {
            ValType::Ref(r) => match r.heap.hierarchy() {
                RefHierarchy::Extern => Val::ExternRef(None),
                RefHierarchy::Exn => Val::ExnRef(None),
                RefHierarchy::Any => Val::AnyRef(None),
                RefHierarchy::Func => Val::FuncRef(None),
            },
            _ => return Err("ref.null for a non-reference parameter".into()),
        },
        WastArgCore::RefExtern(n) => Val::ExternRef(Some(*n as u64)),
        WastArgCore::RefHost(n) => Val::AnyRef(Some(AnyRef::Host(*n as u64))),
    })
}

fn f32_matches(bits: u32, pattern: &NanPattern<wast::token::F32>) -> bool {
    match pattern {
        NanPattern::CanonicalNan => bits & 0x7fff_ffff == 0x7fc0_0000,
        NanPattern::ArithmeticNan => bits & 0x7fc0_0000 == 0x7fc0_0000,
        NanPattern::Value(v) => v.bits == bits,
    }
}

fn f64_matches(bits: u64, pattern: &NanPattern<wast::token::F64>) -> bool {
    match pattern {
        NanPattern::CanonicalNan => bits & 0x7fff_ffff_ffff_ffff == 0x7ff8_0000_0000_0000,
        NanPattern::ArithmeticNan => bits & 0x7ff8_0000_0000_0000 == 0x7ff8_0000_0000_0000,
        NanPattern::Value(v) => v.bits == bits,
    }
}

fn v128_matches(v: u128, pattern: &V128Pattern) -> bool {
    let bytes = v.to_le_bytes();
    let lane = |i: usize, size: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&bytes[i * size..(i + 1) * size]);
        u64::from_le_bytes(b)
    };
    match pattern {
        V128Pattern::I8x16(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 1) == x as u8 as u64),
        V128Pattern::I16x8(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 2) == x as u16 as u64),
        V128Pattern::I32x4(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 4) == x as u32 as u64),
        V128Pattern::I64x2(l) => l.iter().enumerate().all(|(i, &x)| lane(i, 8) == x as u64),
        V128Pattern::F32x4(l) => l.iter().enumerate().all(|(i, p)| f32_matches(lane(i, 4) as u32, p)),
        V128Pattern::F64x2(l) => l.iter().enumerate().all(|(i, p)| f64_matches(lane(i, 8), p)),
    }
}

/// Whether `value` matches `pattern`; `Err` for patterns Kiln cannot check yet.
fn matches_ret(value: &Val, pattern: &WastRet<'_>) -> Result<bool, String> {
    let WastRet::Core(pattern) = pattern else { return Err("component-model results".into()) };
    matches_core(value, pattern)
}

fn matches_core(value: &Val, pattern: &WastRetCore<'_>) -> Result<bool, String> {
    Ok(match (pattern, value) {
        // Relaxed SIMD: any of the permitted results.
        (WastRetCore::Either(options), _) => {
            for option in options {
                if matches_core(value, option)? {
                    return Ok(true);
                }
            }
            false
        }
        (WastRetCore::I32(e), Val::I32(a)) => e == a,
        (WastRetCore::I64(e), Val::I64(a)) => e == a,
        (WastRetCore::F32(p), Val::F32(bits)) => f32_matches(*bits, p),
        (WastRetCore::F64(p), Val::F64(bits)) => f64_matches(*bits, p),
        (WastRetCore::V128(p), Val::V128(v)) => v128_matches(*v, p),
        (WastRetCore::RefNull(_), Val::FuncRef(f)) => f.is_none(),
        (WastRetCore::RefNull(_), Val::ExternRef(v)) => v.is_none(),
        (WastRetCore::RefNull(_), Val::ExnRef(e)) => e.is_none(),
        (WastRetCore::RefNull(_), Val::AnyRef(a)) => a.is_none(),
        (WastRetCore::RefExtern(None), Val::ExternRef(v)) => v.is_some(),
        // An externref made from an anyref reaches the host as that anyref.
        (WastRetCore::RefExtern(None), Val::AnyRef(a)) => a.is_some(),
        (WastRetCore::RefExtern(Some(n)), Val::ExternRef(v)) => *v == Some(*n as u64),
        (WastRetCore::RefFunc(_), Val::FuncRef(f)) => f.is_some(),
        (WastRetCore::RefHost(n), Val::AnyRef(Some(AnyRef::Host(m)))) => *n as u64 == *m,
        (WastRetCore::RefAny, Val::AnyRef(a)) => a.is_some(),
        (WastRetCore::RefEq, Val::AnyRef(a)) => matches!(a, Some(AnyRef::I31(_) | AnyRef::Object(_))),
        (WastRetCore::RefI31, Val::AnyRef(a)) => matches!(a, Some(AnyRef::I31(_))),
        (WastRetCore::RefStruct, Val::AnyRef(Some(AnyRef::Object(o)))) => !o.is_array(),
        (WastRetCore::RefArray, Val::AnyRef(Some(AnyRef::Object(o)))) => o.is_array(),
        _ => false,
    })
}
