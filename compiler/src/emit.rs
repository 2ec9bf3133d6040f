//! Stage 4: compile every function and trampoline with Cranelift and emit one ELF relocatable
//! object holding the code, the serialized metadata and the module header.

use cranelift_codegen::ir::{self, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use kiln_abi::{
    CallSite, ConstOp, DataMode, FunctionInfo, HandlerSite, HeapImage, ModuleMetadata, StackMap, TrapSite,
    VMContextHeader, VMOffsets, VMRuntimeLimits, ARRAY_TRAMPOLINE_PREFIX, HOST_TRAMPOLINE_PREFIX, IMAGE_PAGE_SIZE,
    NO_WASM_OFFSET,
};
use wasmparser::FuncValidatorAllocations;

use crate::func_env::{kiln_trap, wasm_signature, FuncEnv, ModuleEnv};
use crate::module::ParsedModule;
use crate::trampolines;
use crate::translate::FuncTranslator;
use crate::CompileError;

/// What the compiler emitted for one function, for snapshot tests and `kiln inspect`-style
/// listings. Contains no addresses, paths or timestamps.
#[derive(Debug, Clone)]
pub struct FunctionListing {
    /// Function index (imports included).
    pub index: u32,
    /// The Cranelift IR right after translation, before optimisation.
    pub clif: String,
    /// The final x86-64 machine code, disassembled (relocations and traps annotated).
    pub disasm: String,
    /// Trap sites: offset from the function start, and what the trap means.
    pub traps: Vec<TrapSite>,
}

/// The result of compiling one module.
pub struct CompiledObject {
    /// The x86-64 ELF shared object, checksum trailer included, ready for
    /// [`crate::link::write_object_file`].
    pub object: Vec<u8>,
    /// The metadata embedded in it.
    pub metadata: ModuleMetadata,
}

/// The Cranelift ISA for this machine: x86-64 with the host CPU's features, optimised for
/// speed, position-independent (the output is a shared object).
pub fn host_isa() -> Result<OwnedTargetIsa, CompileError> {
    let isa_builder =
        cranelift_native::builder().map_err(|e| CompileError::Codegen(format!("host CPU not supported: {e}")))?;
    if !cfg!(target_arch = "x86_64") {
        return Err(CompileError::Unsupported("Kiln only targets x86-64".to_string()));
    }
    let isa = finish_isa(isa_builder)?;
    // Without SSE4.1 Cranelift lowers rounding and some vector operations to calls into
    // helper functions that Kiln's objects do not carry.
    let has = |flag: &str| isa.isa_flags().iter().any(|f| f.name == flag && f.as_bool() == Some(true));
    if !has("has_sse41") {
        return Err(CompileError::Unsupported(
            "this CPU lacks SSE4.1; Kiln needs x86-64-v2 (SSE4.2 and POPCNT) or newer".to_string(),
        ));
    }
    Ok(isa)
}

/// A fixed x86-64-v2 ISA (SSE4.2 and POPCNT, no AVX), whatever the host: the same output on
/// every machine, for snapshot tests and portable objects.
pub fn baseline_isa() -> Result<OwnedTargetIsa, CompileError> {
    let mut isa_builder = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .map_err(|e| CompileError::Codegen(e.to_string()))?;
    for flag in ["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt"] {
        isa_builder.enable(flag).map_err(|e| CompileError::Codegen(format!("{flag}: {e}")))?;
    }
    finish_isa(isa_builder)
}

fn finish_isa(isa_builder: cranelift_codegen::isa::Builder) -> Result<OwnedTargetIsa, CompileError> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags.set(name, value).map_err(|e| CompileError::Codegen(format!("setting {name}={value}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "true")?;
    set(&mut flags, "enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })?;
    set(&mut flags, "preserve_frame_pointers", "true")?;
    // A wasm function may return more values than there are return registers; the extra ones
    // go through a return area the caller passes. Both sides are always Kiln-compiled code
    // (functions, trampolines), so the non-standard ABI this flag selects is consistent.
    set(&mut flags, "enable_multi_ret_implicit_sret", "true")?;
    set(&mut flags, "unwind_info", "false")?;
    // The prologue's stack-limit check (see `VMContextHeader::stack_limit`) replaces probing.
    set(&mut flags, "enable_probestack", "false")?;
    isa_builder.finish(settings::Flags::new(flags)).map_err(|e| CompileError::Codegen(e.to_string()))
}

/// The GC-reference stack slots of a compiled function's calls (see [`StackMap`]).
fn stack_maps(buffer: &cranelift_codegen::MachBufferFinalized<cranelift_codegen::Final>) -> Vec<StackMap> {
    buffer
        .user_stack_maps()
        .iter()
        .map(|(return_offset, _, map)| {
            let mut slots: Vec<u32> = map
                .entries()
                .map(|(ty, offset)| {
                    debug_assert_eq!(ty, cranelift_codegen::ir::types::I64, "references are i64 words");
                    offset
                })
                .collect();
            slots.sort_unstable();
            StackMap { return_offset: *return_offset, slots }
        })
        .collect()
}

/// The calls of a compiled function that have an exception handler (`try_call`s), sorted by
/// return offset (the order Cranelift emits them in).
fn handler_sites(buffer: &cranelift_codegen::MachBufferFinalized<cranelift_codegen::Final>) -> Vec<HandlerSite> {
    buffer
        .call_sites()
        .filter_map(|site| {
            // Kiln's exception tables have one entry, the catch-all edge to a dispatch block.
            let handler = site.exception_handlers.iter().find_map(|h| match h {
                cranelift_codegen::FinalizedMachExceptionHandler::Default(offset) => Some(*offset),
                _ => None,
            })?;
            Some(HandlerSite {
                return_offset: site.ret_addr,
                handler_offset: handler,
                frame_offset: site.frame_offset.expect("x86-64 call sites record their frame offset"),
            })
        })
        .collect()
}

/// The wasm offset of the instruction whose machine code holds `code_offset`
/// ([`NO_WASM_OFFSET`] if none does). `srclocs` are sorted and do not overlap.
fn wasm_offset_at(srclocs: &[cranelift_codegen::MachSrcLoc<cranelift_codegen::Final>], code_offset: u32) -> u32 {
    let i = srclocs.partition_point(|s| s.start <= code_offset);
    match i.checked_sub(1).map(|i| &srclocs[i]) {
        Some(s) if code_offset < s.end => srcloc_wasm_offset(s),
        _ => NO_WASM_OFFSET,
    }
}

/// The wasm offset a run of machine code came from ([`NO_WASM_OFFSET`] if none).
fn srcloc_wasm_offset(srcloc: &cranelift_codegen::MachSrcLoc<cranelift_codegen::Final>) -> u32 {
    if srcloc.loc.is_default() {
        NO_WASM_OFFSET
    } else {
        srcloc.loc.bits()
    }
}

fn codegen_error(err: impl std::fmt::Display) -> CompileError {
    CompileError::Codegen(err.to_string())
}

/// What code generation emits besides the module's own code.
#[derive(Debug, Clone, Copy)]
pub struct CodegenOptions {
    /// Interrupt checks at loop headers and at the entries of functions that call (on by
    /// default; see `Compiler::set_interruptible`).
    pub interruptible: bool,
    /// Fuel metering (off by default).
    pub fuel: bool,
    /// DWARF line information from the module's own DWARF (off by default).
    pub debug_info: bool,
    /// Compile functions on every core of rayon's current thread pool (on by default); the
    /// object is the same either way.
    pub parallel: bool,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions { interruptible: true, fuel: false, debug_info: false, parallel: true }
    }
}

/// Compiles a parsed module into a shared object.
pub(crate) fn compile(
    isa: &OwnedTargetIsa,
    parsed: ParsedModule<'_>,
    mut listings: Option<&mut Vec<FunctionListing>>,
    options: CodegenOptions,
) -> Result<CompiledObject, CompileError> {
    let CodegenOptions { interruptible, fuel, .. } = options;
    let ParsedModule { mut meta, is_func_type, bodies, func_names, debug_sections, code_section_start } = parsed;
    let source_lines = if options.debug_info { crate::debug::SourceLines::parse(&debug_sections) } else { None };
    meta.interruptible = interruptible;
    meta.fuel_metered = fuel;

    // The defined functions are the object's first pieces of code, in order: a direct call
    // names its callee by that index.
    let num_defined = bodies.len();
    let module_env = ModuleEnv {
        meta: &meta,
        offsets: VMOffsets::new(meta.vm_counts()),
        defined_func_ids: (0..num_defined as u32).collect(),
        interruptible,
        fuel,
    };

    // Functions compile on every core (rayon's current pool), each on whichever worker takes
    // it; they are then placed in the object in index order, so the object is the same byte
    // for byte whatever the number of threads.
    let shared = SharedState {
        isa,
        env: &module_env,
        listings: listings.is_some(),
        func_names: &func_names,
        debug: source_lines.is_some(),
    };
    let compiled: Vec<Result<CompiledFunction, CompileError>> = if options.parallel {
        use rayon::prelude::*;
        bodies
            .into_par_iter()
            .enumerate()
            .map_init(
                || FunctionCompiler::new(&shared),
                |worker, (i, (validate, body))| worker.compile(&shared, i, validate, body),
            )
            .collect()
    } else {
        let mut worker = FunctionCompiler::new(&shared);
        bodies.into_iter().enumerate().map(|(i, (validate, body))| worker.compile(&shared, i, validate, body)).collect()
    };
    let mut code = Vec::with_capacity(num_defined + meta.types.len());
    let mut infos = Vec::with_capacity(num_defined);
    let mut function_lines = Vec::new();
    for function in compiled {
        let function = function?;
        if let (Some(listings), Some(listing)) = (listings.as_deref_mut(), function.listing) {
            listings.push(listing);
        }
        function_lines.extend(function.lines);
        infos.push(function.info);
        code.push(function.code);
    }
    drop(module_env);
    meta.functions = infos;

    // Trampolines: array (host → wasm) for every function type, host (wasm → host) for the
    // types of imported functions.
    let mut ctx = Context::new();
    let frontend = isa.frontend_config();
    let mut builder_ctx = FunctionBuilderContext::new();
    let mut array_trampolines = vec![None; meta.types.len()];
    let mut host_trampolines = vec![None; meta.types.len()];
    let num_imported = meta.num_imported_funcs as usize;
    let imported_types: Vec<u32> = meta.func_types[..num_imported].to_vec();
    for (t, ty) in meta.types.iter().enumerate() {
        if !is_func_type[t] {
            continue;
        }
        let index = code.len();
        ctx.clear();
        ctx.func =
            trampolines::build_array_trampoline(ty, UserFuncName::user(0, index as u32), &mut builder_ctx, frontend);
        code.push(compile_trampoline(isa, &mut ctx, format!("{ARRAY_TRAMPOLINE_PREFIX}{t}"), index)?);
        array_trampolines[t] = Some(index);

        if imported_types.contains(&(t as u32)) {
            let index = code.len();
            ctx.clear();
            ctx.func =
                trampolines::build_host_trampoline(ty, UserFuncName::user(0, index as u32), &mut builder_ctx, frontend);
            code.push(compile_trampoline(isa, &mut ctx, format!("{HOST_TRAMPOLINE_PREFIX}{t}"), index)?);
            host_trampolines[t] = Some(index);
        }
    }

    let (images, heap_image) = heap_images(&meta);
    meta.heap_images = images;
    let metadata = postcard::to_allocvec(&meta).map_err(codegen_error)?;
    let debug = match &source_lines {
        Some(lines) => Some(
            crate::debug::line_info("wasm", lines, code_section_start, &function_lines)
                .map_err(CompileError::Codegen)?,
        ),
        None => None,
    };
    let parts = crate::elf::ObjectParts {
        code,
        functions: (0..num_defined).collect(),
        array_trampolines,
        host_trampolines,
        metadata,
        heap_image,
        debug,
    };
    let object = crate::elf::write_shared_object(&parts)?;
    Ok(CompiledObject { object, metadata: meta })
}

/// Compiles a trampoline built into `ctx`, the object's `index`th piece of code.
fn compile_trampoline(
    isa: &OwnedTargetIsa,
    ctx: &mut Context,
    name: String,
    index: usize,
) -> Result<crate::elf::Code, CompileError> {
    ctx.compile(&**isa, &mut Default::default())
        .map_err(|e| CompileError::Codegen(format!("{name}: {:?}", e.inner)))?;
    machine_code(ctx, name, index)
}

/// The machine code `ctx` just compiled, as the object's `index`th piece of code.
fn machine_code(ctx: &Context, name: String, index: usize) -> Result<crate::elf::Code, CompileError> {
    let compiled = ctx.compiled_code().expect("compiled");
    Ok(crate::elf::Code {
        name,
        bytes: compiled.buffer.data().to_vec(),
        alignment: u64::from(compiled.buffer.alignment),
        relocs: code_relocs(&compiled.buffer, &ctx.func, index)?,
    })
}

/// The references of compiled code to other code, by the index of the code they name
/// (`this`: the index of the code they are in).
fn code_relocs(
    buffer: &cranelift_codegen::MachBufferFinalized<cranelift_codegen::Final>,
    func: &ir::Function,
    this: usize,
) -> Result<Vec<crate::elf::CodeReloc>, CompileError> {
    buffer
        .relocs()
        .iter()
        .map(|reloc| {
            let (target, offset) = match &reloc.target {
                cranelift_codegen::FinalizedRelocTarget::ExternalName(ir::ExternalName::User(name)) => {
                    (func.params.user_named_funcs()[*name].index as usize, 0)
                }
                cranelift_codegen::FinalizedRelocTarget::Func(offset) => (this, i64::from(*offset)),
                other => {
                    return Err(CompileError::Codegen(format!(
                        "internal compiler error: code refers to {other:?}, which Kiln never links"
                    )))
                }
            };
            Ok(crate::elf::CodeReloc { offset: reloc.offset, kind: reloc.kind, target, addend: reloc.addend + offset })
        })
        .collect()
}

/// What every function's compilation reads, shared by the workers.
struct SharedState<'a> {
    isa: &'a OwnedTargetIsa,
    env: &'a ModuleEnv<'a>,
    /// Make a [`FunctionListing`] of each function.
    listings: bool,
    func_names: &'a std::collections::HashMap<u32, String>,
    /// Record each function's runs of code for the DWARF line table.
    debug: bool,
}

/// One defined function, compiled: its machine code and what placing it in the object needs,
/// and its code facts. Owned, so that it can be made on any thread.
struct CompiledFunction {
    code: crate::elf::Code,
    info: FunctionInfo,
    listing: Option<FunctionListing>,
    lines: Option<crate::debug::FunctionLines>,
}

/// A worker's reusable state: one per thread, reused for every function it compiles.
struct FunctionCompiler {
    ctx: Context,
    translator: FuncTranslator,
    allocations: FuncValidatorAllocations,
    capstone: Option<capstone::Capstone>,
}

impl FunctionCompiler {
    fn new(shared: &SharedState<'_>) -> FunctionCompiler {
        FunctionCompiler {
            ctx: Context::new(),
            translator: FuncTranslator::default(),
            allocations: FuncValidatorAllocations::default(),
            // Listings are for tests; a disassembler that cannot be made shows as a panic there.
            capstone: shared.listings.then(|| shared.isa.to_capstone().expect("a disassembler for the ISA")),
        }
    }

    /// Translates, validates and compiles defined function `i`.
    fn compile(
        &mut self,
        shared: &SharedState<'_>,
        i: usize,
        validate: wasmparser::FuncToValidate<wasmparser::ValidatorResources>,
        body: wasmparser::FunctionBody<'_>,
    ) -> Result<CompiledFunction, CompileError> {
        let meta = shared.env.meta;
        let num_imported = meta.num_imported_funcs as usize;
        let index = (num_imported + i) as u32;
        let type_index = meta.func_types[num_imported + i];
        let ctx = &mut self.ctx;
        ctx.clear();
        // Block boundaries let the disassembler skip inline jump tables.
        ctx.set_disasm(shared.listings);
        ctx.func.signature = wasm_signature(&meta.types[type_index as usize]);
        ctx.func.name = UserFuncName::user(0, i as u32);
        let vmctx = ctx.func.create_global_value(ir::GlobalValueData::VMContext);
        let readonly =
            ctx.func.dfg.mem_flags.insert(ir::MemFlagsData::trusted().with_readonly()).expect("room for two flags");
        let limits = ctx.func.create_global_value(ir::GlobalValueData::Load {
            base: vmctx,
            offset: (VMContextHeader::RUNTIME_LIMITS_OFFSET as i32).into(),
            global_type: ir::types::I64,
            flags: readonly,
        });
        // Not read-only: the runtime rewrites it on every entry from the host.
        let flags = ctx.func.dfg.mem_flags.insert(ir::MemFlagsData::trusted()).expect("room for two flags");
        ctx.func.stack_limit = Some(ctx.func.create_global_value(ir::GlobalValueData::Load {
            base: limits,
            offset: (VMRuntimeLimits::STACK_LIMIT_OFFSET as i32).into(),
            global_type: ir::types::I64,
            flags,
        }));
        let mut validator = validate.into_validator(std::mem::take(&mut self.allocations));
        let mut env = FuncEnv::new(shared.env, makes_calls(&body));
        let frontend = shared.isa.frontend_config();
        if let Err(err) = self.translator.translate(&mut validator, &body, &mut ctx.func, &mut env, frontend) {
            // A translation that stopped part-way leaves the translator's state behind; this
            // worker goes on with the other functions (the lowest-indexed error is reported).
            self.translator = FuncTranslator::default();
            return Err(err);
        }
        self.allocations = validator.into_allocations();
        let clif = shared.listings.then(|| ctx.func.display().to_string());
        ctx.compile(&**shared.isa, &mut Default::default())
            .map_err(|e| CompileError::Codegen(format!("function {index}: {:?}", e.inner)))?;
        let compiled = ctx.compiled_code().expect("just compiled");
        let srclocs = compiled.buffer.get_srclocs_sorted();
        let mut traps: Vec<TrapSite> = compiled
            .buffer
            .traps()
            .iter()
            .map(|t| TrapSite {
                offset: t.offset,
                code: kiln_trap(t.code),
                wasm_offset: wasm_offset_at(srclocs, t.offset),
            })
            .collect();
        traps.sort_by_key(|t| t.offset);
        let listing = match (&self.capstone, clif) {
            (Some(capstone), Some(clif)) => {
                let disasm = compiled.disassemble(Some(&ctx.func.params), capstone).map_err(codegen_error)?;
                Some(FunctionListing { index, clif, disasm, traps: traps.clone() })
            }
            _ => None,
        };
        let handlers = handler_sites(&compiled.buffer);
        let calls = compiled
            .buffer
            .call_sites()
            .map(|site| CallSite {
                return_offset: site.ret_addr,
                // The call instruction ends at the return address.
                wasm_offset: wasm_offset_at(srclocs, site.ret_addr - 1),
            })
            .collect();
        let stack_maps = stack_maps(&compiled.buffer);
        let code_len = compiled.code_info().total_size;
        let name = function_symbol(index, shared.func_names.get(&index).map(String::as_str));
        let lines = shared.debug.then(|| crate::debug::FunctionLines {
            name: name.clone(),
            code_len,
            runs: srclocs.iter().map(|s| (s.start, s.end, srcloc_wasm_offset(s))).collect(),
        });
        Ok(CompiledFunction {
            code: machine_code(ctx, name, i)?,
            info: FunctionInfo { type_index, code_len, traps, handlers, calls, stack_maps },
            listing,
            lines,
        })
    }
}

/// Largest total of heap images Kiln bakes into an object; bigger initial contents are copied
/// at instantiation instead.
const MAX_HEAP_IMAGES: u64 = 1 << 30;

/// Images up to this size are always baked in; larger ones only when dense enough (below).
const SMALL_HEAP_IMAGE: u64 = 1 << 20;

/// A larger image must hold at least one byte of data per this many bytes of image. Otherwise
/// a few bytes at a high offset would make a module of a hundred bytes compile into a
/// gigabyte-sized object; such sparse data is cheap to copy at instantiation instead. (A heap
/// with data in one 4 KiB page of every eight is dense enough.)
const MAX_IMAGE_BYTES_PER_DATA_BYTE: u64 = 16;

/// The heap images of the defined memories, and the section holding them one after another.
/// A memory gets an image when it has active data segments, all with constant offsets inside
/// its initial size.
fn heap_images(meta: &ModuleMetadata) -> (Vec<Option<HeapImage>>, Option<Vec<u8>>) {
    let mut section = Vec::new();
    let mut images = Vec::new();
    for memory in meta.num_imported_memories..meta.memories.len() as u32 {
        let image = heap_image(meta, memory).filter(|i| (section.len() + i.len()) as u64 <= MAX_HEAP_IMAGES);
        images.push(image.map(|bytes| {
            let image = HeapImage { offset: section.len() as u64, len: bytes.len() as u64 };
            section.extend_from_slice(&bytes);
            image
        }));
    }
    if section.is_empty() {
        return (Vec::new(), None);
    }
    (images, Some(section))
}

/// The initial contents of memory `memory` with its active data segments applied, if every
/// such segment has a constant offset and fits in the initial size, and the result is small or
/// dense enough. Rounded up to a page.
fn heap_image(meta: &ModuleMetadata, memory: u32) -> Option<Vec<u8>> {
    let ty = meta.memories.get(memory as usize)?;
    let initial = ty.minimum.checked_mul(1u64 << ty.page_size_log2)?;
    let mut segments = Vec::new();
    for segment in &meta.data {
        let DataMode::Active { memory: m, offset } = &segment.mode else { continue };
        if *m != memory {
            continue;
        }
        let start = match offset.as_slice() {
            [ConstOp::I32Const(c)] if !ty.memory64 => *c as u32 as u64,
            [ConstOp::I64Const(c)] if ty.memory64 => *c as u64,
            _ => return None,
        };
        let end = start.checked_add(segment.bytes.len() as u64)?;
        if end > initial {
            // Instantiation must trap part-way; leave that to the copying path.
            return None;
        }
        segments.push((start as usize, &segment.bytes));
    }
    let end = segments.iter().map(|(s, b)| s + b.len()).max()? as u64;
    let len = end.div_ceil(IMAGE_PAGE_SIZE) * IMAGE_PAGE_SIZE;
    let data: u64 = segments.iter().map(|(_, b)| b.len() as u64).sum();
    let dense_enough = len <= SMALL_HEAP_IMAGE || data.saturating_mul(MAX_IMAGE_BYTES_PER_DATA_BYTE) >= len;
    if len == 0 || len > MAX_HEAP_IMAGES || !dense_enough {
        return None;
    }
    let mut image = vec![0u8; len as usize];
    for (start, bytes) in segments {
        image[start..start + bytes.len()].copy_from_slice(bytes);
    }
    Some(image)
}

/// Whether a function body contains a call instruction. A body that does not read cleanly
/// counts as calling; the validator reports its error during translation.
fn makes_calls(body: &wasmparser::FunctionBody<'_>) -> bool {
    let Ok(mut ops) = body.get_operators_reader() else { return true };
    while !ops.eof() {
        match ops.read() {
            Ok(op) if !crate::func_env::is_call(&op) => {}
            _ => return true,
        }
    }
    false
}

/// The symbol of function `index` in the object: `wasm[INDEX]::NAME`, NAME from the module's
/// `name` section, demangled if a Rust or C++ compiler mangled it (control characters and
/// whitespace other than spaces replaced, at most 200 bytes), or `wasm[INDEX]` for an unnamed
/// function. The index keeps symbols unique; the name is what `perf report`, `gdb`,
/// `addr2line` and the runtime's backtraces show for the guest's code.
fn function_symbol(index: u32, name: Option<&str>) -> String {
    let mut symbol = format!("wasm[{index}]");
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        symbol.push_str("::");
        for c in demangle(name).chars() {
            if symbol.len() + c.len_utf8() > 200 {
                break;
            }
            symbol.push(if c.is_control() || (c.is_whitespace() && c != ' ') { '_' } else { c });
        }
    }
    symbol
}

/// `name` demangled if it is a mangled Rust (legacy or v0, without the hash) or Itanium C++
/// name, else unchanged. Names are the guest's: longer ones are left alone, which bounds what
/// the demanglers (recursion- and size-limited themselves) are given.
fn demangle(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() > 1024 {
        return name.into();
    }
    if let Ok(demangled) = rustc_demangle::try_demangle(name) {
        return format!("{demangled:#}").into();
    }
    if name.starts_with("_Z") {
        let options = cpp_demangle::DemangleOptions::new().no_return_type();
        if let Some(demangled) =
            cpp_demangle::Symbol::new(name).ok().and_then(|s| s.demangle_with_options(&options).ok())
        {
            return demangled.into();
        }
    }
    name.into()
}
