//! The script runner: each directive through the whole pipeline (compile, cache, load,
//! link, instantiate, call), counted as passed, failed or skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use kiln_compiler::cache::ObjectCache;
use kiln_compiler::{CompileError, Compiler, WasmFeatures};
use kiln_runtime::{
    CallError, Extern, Instance, InstantiationError, Module, Region, RegionConfig, Store, StoreLimits, Trap, TrapCode,
    Val,
};
use wast::parser::{self, ParseBuffer};
use wast::{QuoteWat, Wast, WastDirective, WastExecute, WastInvoke, WastRet};

use crate::matching::{arg_value, describe, matches_ret, module_name, trap_matches};
use crate::{cache_dir, spectest, Report, ScriptOptions};

/// Runs the script `text` (legacy exception syntax already unfolded) with `options`.
pub(crate) fn run(path: &Path, text: &str, features: WasmFeatures, options: &ScriptOptions) -> Result<Report> {
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
