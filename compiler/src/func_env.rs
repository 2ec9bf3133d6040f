//! Kiln's function environment: where translated wasm meets its instance.
//!
//! Every wasm function has the signature `(callee_vmctx, caller_vmctx, wasm params...) -> wasm
//! results` in Cranelift's `tail` convention. Everything instance-specific is reached through
//! `callee_vmctx` at offsets from [`kiln_abi::VMOffsets`]; this file is the only place in the
//! compiler that turns those offsets into loads and stores. The operator translation in
//! [`crate::translate`] asks [`FuncEnv`] for globals, heap addresses, table elements, calls and
//! libcalls, and knows nothing about slot layout.
//!
//! Every call instruction is made in [`FuncEnv::emit_call`]: inside a handler's reach it is a
//! `try_call` whose exception edge goes to the handler's dispatch block (see
//! [`FuncEnv::set_handler`]). Reference values are plain `i64` words; a collector's stack maps
//! would be declared where [`ir_type`] is chosen.

use std::collections::HashMap;

use cranelift_codegen::ir::{
    self, condcodes::IntCC, types, AbiParam, ArgumentPurpose, InstBuilder, MemFlagsData, Signature, UserExternalName,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use kiln_abi::gc::{CompositeType, SubType};
use kiln_abi::{
    AbiType, FuncType, Libcall, ModuleMetadata, TrapCode, VMContextHeader, VMException, VMFuncRef, VMMemoryDefinition,
    VMMemoryImport, VMOffsets, VMRuntimeLimits, VMTableDefinition, ValType, HEAP_GUARD,
};
use wasmparser::{MemArg, MemArgTarget, Operator};

/// `index` as `(base, c)` if the translator made it as `base + c` (`i32.add`/`i64.add` of a
/// constant), with `c < DIRTY_MARK_REACH` as an unsigned number of the index's width.
fn constant_sum(builder: &FunctionBuilder, index: ir::Value) -> Option<(ir::Value, u64)> {
    let dfg = &builder.func.dfg;
    let ir::ValueDef::Result(inst, 0) = dfg.value_def(dfg.resolve_aliases(index)) else { return None };
    let width_mask = u64::MAX >> (64 - dfg.value_type(index).bits());
    let constant = |v: ir::Value| {
        let ir::ValueDef::Result(def, 0) = dfg.value_def(dfg.resolve_aliases(v)) else { return None };
        match dfg.insts[def] {
            ir::InstructionData::UnaryImm { opcode: ir::Opcode::Iconst, imm } => Some(imm.bits() as u64 & width_mask),
            _ => None,
        }
    };
    let (base, c) = match dfg.insts[inst] {
        ir::InstructionData::Binary { opcode: ir::Opcode::Iadd, args: [a, b] } => match (constant(a), constant(b)) {
            (_, Some(c)) => (a, c),
            (Some(c), None) => (b, c),
            (None, None) => return None,
        },
        _ => return None,
    };
    (c < kiln_abi::DIRTY_MARK_REACH).then_some((base, c))
}

/// The Cranelift trap code for a Kiln trap: Cranelift's own codes for the traps its
/// instructions raise by themselves, a user code equal to Kiln's discriminant for the rest.
pub fn trap(code: TrapCode) -> ir::TrapCode {
    match code {
        TrapCode::StackOverflow => ir::TrapCode::STACK_OVERFLOW,
        TrapCode::HeapOutOfBounds => ir::TrapCode::HEAP_OUT_OF_BOUNDS,
        TrapCode::IntegerOverflow => ir::TrapCode::INTEGER_OVERFLOW,
        TrapCode::IntegerDivisionByZero => ir::TrapCode::INTEGER_DIVISION_BY_ZERO,
        TrapCode::BadConversionToInteger => ir::TrapCode::BAD_CONVERSION_TO_INTEGER,
        other => ir::TrapCode::unwrap_user(other as u8),
    }
}

/// The Kiln trap a Cranelift trap code stands for (the inverse of [`trap`]).
pub fn kiln_trap(code: ir::TrapCode) -> TrapCode {
    match code {
        ir::TrapCode::STACK_OVERFLOW => TrapCode::StackOverflow,
        ir::TrapCode::HEAP_OUT_OF_BOUNDS => TrapCode::HeapOutOfBounds,
        ir::TrapCode::INTEGER_OVERFLOW => TrapCode::IntegerOverflow,
        ir::TrapCode::INTEGER_DIVISION_BY_ZERO => TrapCode::IntegerDivisionByZero,
        ir::TrapCode::BAD_CONVERSION_TO_INTEGER => TrapCode::BadConversionToInteger,
        other => TrapCode::from_u8(other.as_raw().get()).unwrap_or(TrapCode::UnreachableCodeReached),
    }
}

/// The Cranelift type a wasm value lives in. References are `i64` words: a funcref is the
/// address of a `VMFuncRef`, an externref an opaque host word, null is 0.
pub fn ir_type(ty: ValType) -> ir::Type {
    match ty {
        ValType::I32 => types::I32,
        ValType::I64 => types::I64,
        ValType::F32 => types::F32,
        ValType::F64 => types::F64,
        ValType::V128 => types::I8X16,
        ValType::Ref(_) => types::I64,
    }
}

/// The Cranelift signature of a wasm function of type `ty`.
pub fn wasm_signature(ty: &FuncType) -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.push(AbiParam::special(types::I64, ArgumentPurpose::VMContext));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.extend(ty.params.iter().map(|&p| AbiParam::new(ir_type(p))));
    sig.returns.extend(ty.results.iter().map(|&r| AbiParam::new(ir_type(r))));
    sig
}

fn libcall_signature(libcall: Libcall) -> Signature {
    let abi = |t: AbiType| match t {
        AbiType::vmctx | AbiType::ptr | AbiType::i64 => types::I64,
        AbiType::i32 => types::I32,
    };
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params.extend(libcall.params().iter().map(|&t| AbiParam::new(abi(t))));
    sig.returns.extend(libcall.result().map(|t| AbiParam::new(abi(t))));
    sig
}

/// The linear memory a memory operator accesses. (The other kind of target, a GC array's
/// payload, needs the multibyte-array-access proposal, which Kiln never enables, so validated
/// code has none.)
pub fn memory_index(memarg: &MemArg) -> u32 {
    match memarg.target {
        MemArgTarget::Memory(index) => index,
        MemArgTarget::Array(_) => unreachable!("validation rejects array targets without multibyte array access"),
    }
}

/// Whether `op` calls a wasm function (directly, through a table or a reference, or as a tail
/// call). Fuel metering ends a block at each; functions without any skip the entry interrupt
/// check (see [`FuncEnv::new`]).
pub fn is_call(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Call { .. }
            | Operator::CallIndirect { .. }
            | Operator::CallRef { .. }
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. }
    )
}

/// Flags for loads and stores of the VM context and runtime structures: they never trap.
fn vm_flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// Flags for VM context fields that never change during an instance's life. They may move
/// anywhere, out of loops included: the structures they read are valid for as long as the
/// code runs, whatever checks come before.
fn vm_readonly() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly().with_can_move()
}

/// Alias regions: memory operations in different regions never alias, so Cranelift may keep
/// a heap load across a global or dirty-map store (the stack pointer global of C and Rust
/// programs is written in almost every function), and a global across heap stores.
#[derive(Clone, Copy)]
enum Region {
    /// Linear memories.
    Heap = 1,
    /// The dirty maps teardown reads.
    DirtyMap = 2,
    /// Wasm globals' values.
    Globals = 3,
    /// Table elements.
    Tables = 4,
    /// GC objects.
    GcHeap = 5,
}

/// Module-wide facts shared by every function's environment.
pub struct ModuleEnv<'m> {
    pub meta: &'m ModuleMetadata,
    pub offsets: VMOffsets,
    /// Cranelift user-function index of each defined function (namespace 0 in the object).
    pub defined_func_ids: Vec<u32>,
    /// Whether to emit interrupt checks.
    pub interruptible: bool,
    /// Whether to emit fuel metering.
    pub fuel: bool,
}

/// How a memory access is checked. Every memory lies at the start of a 4 GiB reservation
/// followed by a 2 GiB guard, all inaccessible beyond the memory's current length, so an
/// access starting at most a guard's size past the length faults by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BoundsCheck {
    /// None: a 32-bit index cannot leave the reservation, and a static offset below the
    /// guard's size cannot leave the guard.
    Guarded,
    /// `index <= length`, the guard catches the rest (64-bit indices, small offsets).
    Index,
    /// `index + offset + size <= length` (large static offsets, and pages smaller than the
    /// OS's, whose memories end inside an accessible page).
    End,
}

/// The environment for translating one function.
pub struct FuncEnv<'a, 'm> {
    module: &'a ModuleEnv<'m>,
    libcall_sigs: Vec<Option<ir::SigRef>>,
    wasm_sigs: HashMap<u32, ir::SigRef>,
    direct_funcs: HashMap<u32, ir::FuncRef>,
    /// Operators translated since fuel was last charged (fuel metering).
    fuel_pending: i64,
    /// Whether the function body contains a call (see [`FuncEnv::new`]).
    makes_calls: bool,
    /// The function's VM context parameter.
    vmctx: Option<ir::Value>,
    /// The dispatch block of the innermost exception handler around the code being
    /// translated, if any (it takes the exnref).
    handler: Option<ir::Block>,
    /// Dirty marks emitted since the last control-flow operator, so they dominate the code
    /// being translated: `(memory, wasm index value, static offset)` of the store each
    /// followed. A later store with the same index value whose bytes the mark reaches needs
    /// none (see [`FuncEnv::mark_store`]).
    marks: Vec<(u32, ir::Value, u64)>,
}

/// Most dominating marks remembered at once (the oldest is forgotten first).
const REMEMBERED_MARKS: usize = 8;

impl<'a, 'm> FuncEnv<'a, 'm> {
    /// The environment for a function whose body calls (`makes_calls`) or not. A function
    /// without calls needs no interrupt check at its entry: it runs a bounded stretch of code
    /// between loop headers, which check, and then returns. Only functions that call can run
    /// unboundedly without a loop (recursion, tail-call cycles), so only they check at entry.
    pub fn new(module: &'a ModuleEnv<'m>, makes_calls: bool) -> Self {
        FuncEnv {
            module,
            libcall_sigs: vec![None; Libcall::ALL.len()],
            wasm_sigs: HashMap::new(),
            direct_funcs: HashMap::new(),
            fuel_pending: 0,
            makes_calls,
            vmctx: None,
            handler: None,
            marks: Vec::new(),
        }
    }

    /// The module being compiled.
    pub fn meta(&self) -> &'m ModuleMetadata {
        self.module.meta
    }

    fn offsets(&self) -> &VMOffsets {
        &self.module.offsets
    }

    /// The wasm function type at type index `index`.
    pub fn func_type(&self, index: u32) -> &'m FuncType {
        &self.module.meta.types[index as usize]
    }

    /// The function's own VM context (its first parameter).
    fn vmctx(&self) -> ir::Value {
        self.vmctx.expect("function_entry comes first")
    }

    fn region_flags(builder: &mut FunctionBuilder, flags: MemFlagsData, region: Region) -> MemFlagsData {
        let (user_id, description) = match region {
            Region::Heap => (Region::Heap as u32, "heap"),
            Region::DirtyMap => (Region::DirtyMap as u32, "dirty map"),
            Region::Globals => (Region::Globals as u32, "globals"),
            Region::Tables => (Region::Tables as u32, "tables"),
            Region::GcHeap => (Region::GcHeap as u32, "gc heap"),
        };
        let region =
            builder.func.dfg.alias_regions.insert(ir::AliasRegionData { user_id, description: description.into() });
        flags.with_alias_region(Some(region))
    }

    fn load_vmctx(&self, builder: &mut FunctionBuilder, offset: u32) -> ir::Value {
        let vmctx = self.vmctx();
        builder.ins().load(types::I64, vm_readonly(), vmctx, offset as i32)
    }

    /// Widens an index or length to i64 (memory and table indices may be i32 or i64; both are
    /// unsigned).
    fn to_i64(builder: &mut FunctionBuilder, value: ir::Value) -> ir::Value {
        if builder.func.dfg.value_type(value) == types::I64 {
            value
        } else {
            builder.ins().uextend(types::I64, value)
        }
    }

    // ---- hooks ------------------------------------------------------------------------------

    /// Emitted once at the function's entry, whose VM context parameter is `vmctx`.
    pub fn function_entry(&mut self, builder: &mut FunctionBuilder, vmctx: ir::Value) {
        self.vmctx = Some(vmctx);
        if self.makes_calls {
            self.check_interrupt(builder);
        }
    }

    /// Called before each operator in reachable code (fuel metering; forgetting dirty marks
    /// that may not dominate what follows).
    pub fn before_operator(&mut self, op: &Operator<'_>, builder: &mut FunctionBuilder) {
        let ends_a_block = is_call(op) || is_control(op);
        if ends_a_block {
            self.marks.clear();
        }
        if !self.module.fuel {
            return;
        }
        // Every operator costs one unit, except the structural ones that emit no code.
        if !matches!(
            op,
            Operator::Nop
                | Operator::Drop
                | Operator::Block { .. }
                | Operator::Loop { .. }
                | Operator::End
                | Operator::Else
        ) {
            self.fuel_pending += 1;
        }
        if ends_a_block {
            self.charge_fuel(builder);
        }
    }

    /// Emitted at the top of every loop body.
    pub fn loop_header(&mut self, builder: &mut FunctionBuilder) {
        self.check_interrupt(builder);
    }

    /// Traps with "deadline exceeded" if the store's interrupt flag is set. Emitted at every
    /// loop header and at the entry of every function that calls, so runaway code stops within
    /// one iteration or call.
    fn check_interrupt(&mut self, builder: &mut FunctionBuilder) {
        if !self.module.interruptible {
            return;
        }
        let limits = self.load_vmctx(builder, VMContextHeader::RUNTIME_LIMITS_OFFSET);
        // Another thread sets it. An atomic load (a plain `mov` on x86-64) so Cranelift's
        // redundant-load elimination cannot reuse the value read at the function's entry.
        let addr = builder.ins().iadd_imm_s(limits, VMRuntimeLimits::INTERRUPT_OFFSET as i64);
        let flag = builder.ins().atomic_load(types::I64, vm_flags(), addr);
        builder.ins().trapnz(flag, trap(TrapCode::Interrupt));
    }

    /// Charges the operators counted since the last charge: `fuel -= n`, trapping with
    /// "all fuel consumed" when it goes negative. Emitted before every control operator, so
    /// each basic block pays for itself (and a loop for every iteration).
    fn charge_fuel(&mut self, builder: &mut FunctionBuilder) {
        if self.fuel_pending == 0 {
            return;
        }
        let limits = self.load_vmctx(builder, VMContextHeader::RUNTIME_LIMITS_OFFSET);
        let fuel = builder.ins().load(types::I64, vm_flags(), limits, VMRuntimeLimits::FUEL_OFFSET as i32);
        let left = builder.ins().iadd_imm_s(fuel, -self.fuel_pending);
        builder.ins().store(vm_flags(), left, limits, VMRuntimeLimits::FUEL_OFFSET as i32);
        let exhausted = builder.ins().icmp_imm_s(IntCC::SignedLessThan, left, 0);
        builder.ins().trapnz(exhausted, trap(TrapCode::OutOfFuel));
        self.fuel_pending = 0;
    }

    // ---- globals ----------------------------------------------------------------------------

    /// The address of global `index`'s value and the flags to access it with.
    fn global_addr(&mut self, builder: &mut FunctionBuilder, index: u32) -> (ir::Value, i32, MemFlagsData) {
        let meta = self.module.meta;
        let imported = meta.num_imported_globals;
        // A constant global never changes once instantiation has set it, except one that holds
        // a GC reference: a collection moves the object and rewrites the global, so its loads
        // must not be merged with ones from before a call (as read-only loads may be).
        let global = meta.globals[index as usize];
        let rewritten = global.mutable || global.content.may_refer_to_gc_object();
        let flags = if rewritten { vm_flags() } else { vm_readonly() };
        let flags = Self::region_flags(builder, flags, Region::Globals);
        if index >= imported {
            // Own globals live inside the VM context itself.
            let offset = self.offsets().defined_global(index - imported);
            (self.vmctx(), offset as i32, flags)
        } else {
            (self.load_vmctx(builder, self.offsets().global(index)), 0, flags)
        }
    }

    /// `global.get`.
    pub fn global_get(&mut self, builder: &mut FunctionBuilder, index: u32) -> ir::Value {
        let ty = ir_type(self.module.meta.globals[index as usize].content);
        let (addr, offset, flags) = self.global_addr(builder, index);
        builder.ins().load(ty, flags, addr, offset)
    }

    /// `global.set`.
    pub fn global_set(&mut self, builder: &mut FunctionBuilder, index: u32, value: ir::Value) {
        let (addr, offset, flags) = self.global_addr(builder, index);
        builder.ins().store(flags, value, addr, offset);
    }

    // ---- memories ---------------------------------------------------------------------------

    fn memory_type(&self, index: u32) -> kiln_abi::MemoryType {
        self.module.meta.memories[index as usize]
    }

    /// A size or index the runtime computes in 64 bits, as the wasm value of an index type:
    /// itself for 64-bit memories and tables (`wide`), its low 32 bits for the others.
    fn as_index_type(builder: &mut FunctionBuilder, value: ir::Value, wide: bool) -> ir::Value {
        if wide {
            value
        } else {
            builder.ins().ireduce(types::I32, value)
        }
    }

    fn memory_length(&mut self, builder: &mut FunctionBuilder, index: u32) -> ir::Value {
        let definition = self.load_vmctx(builder, self.offsets().memory(index) + VMMemoryImport::DEFINITION_OFFSET);
        // Not read-only: `memory.grow` changes it.
        builder.ins().load(types::I64, vm_flags(), definition, VMMemoryDefinition::CURRENT_LENGTH_OFFSET as i32)
    }

    /// Flags for an access to linear memory: it may trap (out of bounds), and it touches only
    /// the heap region.
    pub fn heap_flags(builder: &mut FunctionBuilder) -> MemFlagsData {
        Self::region_flags(builder, MemFlagsData::new(), Region::Heap)
    }

    /// The native address of a `size`-byte access to the memory of `memarg` at wasm address `index` +
    /// `memarg.offset`, split into a base value and a constant offset to put in the load or
    /// store. Emits the bounds check the access needs (none when the guard region catches it),
    /// and for atomics (`aligned`) the alignment check.
    pub fn heap_address(
        &mut self,
        builder: &mut FunctionBuilder,
        memarg: &MemArg,
        index: ir::Value,
        size: u32,
        aligned: bool,
    ) -> (ir::Value, i32) {
        let memory = memory_index(memarg);
        let ty = self.memory_type(memory);
        let size = u64::from(size);
        let index = Self::to_i64(builder, index);
        let within_guard = memarg.offset.checked_add(size).is_some_and(|extent| extent <= HEAP_GUARD);
        let check = match (ty.memory64, within_guard) {
            _ if ty.page_size_log2 < 12 => BoundsCheck::End,
            (false, true) => BoundsCheck::Guarded,
            (true, true) => BoundsCheck::Index,
            (_, false) => BoundsCheck::End,
        };
        if aligned && size > 1 {
            // The effective address is aligned iff index + offset is: check it modulo size.
            let low = builder.ins().iadd_imm_s(index, (memarg.offset % size) as i64);
            let misaligned = builder.ins().band_imm_u(low, (size - 1) as i64);
            builder.ins().trapnz(misaligned, trap(TrapCode::HeapMisaligned));
        }
        let base = self.load_vmctx(builder, self.offsets().memory(memory) + VMMemoryImport::BASE_OFFSET);
        let out_of_bounds = trap(TrapCode::HeapOutOfBounds);
        match check {
            BoundsCheck::Guarded => {}
            BoundsCheck::Index => {
                let length = self.memory_length(builder, memory);
                let beyond = builder.ins().icmp(IntCC::UnsignedGreaterThan, index, length);
                builder.ins().trapnz(beyond, out_of_bounds);
            }
            BoundsCheck::End => {
                // With a 64-bit index the sum can wrap: that is out of bounds too.
                let end = match memarg.offset.checked_add(size) {
                    Some(extent) if !ty.memory64 => builder.ins().iadd_imm_s(index, extent as i64),
                    Some(extent) => {
                        let extent = builder.ins().iconst(types::I64, extent as i64);
                        builder.ins().uadd_overflow_trap(index, extent, out_of_bounds)
                    }
                    None => {
                        // Always out of bounds. A conditional trap keeps the block open for the
                        // access the caller still emits (Cranelift folds it into a plain trap).
                        let always = builder.ins().iconst(types::I8, 1);
                        builder.ins().trapnz(always, out_of_bounds);
                        index
                    }
                };
                let length = self.memory_length(builder, memory);
                let beyond = builder.ins().icmp(IntCC::UnsignedGreaterThan, end, length);
                builder.ins().trapnz(beyond, out_of_bounds);
            }
        }
        let addr = builder.ins().iadd(base, index);
        match i32::try_from(memarg.offset) {
            Ok(offset) => (addr, offset),
            Err(_) => (builder.ins().iadd_imm_s(addr, memarg.offset as i64), 0),
        }
    }

    /// Records in memory `memory`'s dirty map that the store just emitted at native address
    /// `addr + offset` wrote its page, so teardown resets exactly the pages the tenant
    /// touched: `map[address >> 12] = 1`, with the map reached through the bias in the memory's
    /// import (see [`kiln_abi::dirty_map_entry`]). Emitted right after the store, so a store
    /// that traps marks nothing (it wrote nothing). Only the first page is marked: teardown
    /// also resets the first bytes of the page after each marked one, where a store may spill.
    pub fn mark_stored(&mut self, builder: &mut FunctionBuilder, memory: u32, addr: ir::Value, offset: i32) {
        let bias = self.load_vmctx(builder, self.offsets().memory(memory) + VMMemoryImport::DIRTY_BIAS_OFFSET);
        let address = if offset == 0 { addr } else { builder.ins().iadd_imm_s(addr, i64::from(offset)) };
        let page = builder.ins().ushr_imm_u(address, i64::from(kiln_abi::DIRTY_PAGE_LOG2));
        let entry = builder.ins().iadd(page, bias);
        let one = builder.ins().iconst(types::I8, 1);
        let flags = Self::region_flags(builder, MemFlagsData::trusted(), Region::DirtyMap);
        builder.ins().store(flags, one, entry, 0);
    }

    /// Marks the page a plain store of `size` bytes at wasm address `index + memarg.offset`
    /// wrote (emitted at `addr + offset`, see [`Self::mark_stored`]), unless a mark emitted
    /// since the last control-flow operator, for the same memory, already reaches all of its
    /// bytes: that mark ran before this store on every path, and teardown resets
    /// `DIRTY_MARK_REACH` bytes from it. A mark reaches the store if it was for the same index
    /// value at an offset at most this one's (a stack frame's stores through one pointer then
    /// share a mark), or for `base` when the index is `base + c`, a small constant `c` (unrolled
    /// loops, such as a C library's `memset`, address their stores so). Only marks of plain
    /// indexes are remembered, never of sums, which may have wrapped.
    pub fn mark_store(
        &mut self,
        builder: &mut FunctionBuilder,
        memarg: &MemArg,
        index: ir::Value,
        size: u32,
        (addr, offset): (ir::Value, i32),
    ) {
        let memory = memory_index(memarg);
        let reaches = |marks: &[(u32, ir::Value, u64)], value: ir::Value, start: u64| {
            let end = start.saturating_add(u64::from(size));
            marks.iter().any(|&(m, marked_value, marked)| {
                m == memory
                    && marked_value == value
                    && marked <= start
                    && end <= marked.saturating_add(kiln_abi::DIRTY_MARK_REACH)
            })
        };
        if reaches(&self.marks, index, memarg.offset) {
            return;
        }
        // `base + c` may have wrapped around a 32-bit index (only in a memory of 4 GiB, since
        // the store at `base` succeeded): the store then wrote the first `c + offset + size`
        // bytes of the memory, which teardown resets in such a memory (`HeapState::reset`).
        if let Some((base, c)) = constant_sum(builder, index) {
            let start = c + memarg.offset;
            if start + u64::from(size) <= kiln_abi::WRAPPED_STORE_REACH && reaches(&self.marks, base, start) {
                return;
            }
        }
        self.mark_stored(builder, memory, addr, offset);
        if self.marks.len() == REMEMBERED_MARKS {
            self.marks.remove(0);
        }
        self.marks.push((memory, index, memarg.offset));
    }

    /// `memory.size`.
    pub fn memory_size(&mut self, builder: &mut FunctionBuilder, index: u32) -> ir::Value {
        let ty = self.memory_type(index);
        let bytes = self.memory_length(builder, index);
        let pages = builder.ins().ushr_imm_u(bytes, i64::from(ty.page_size_log2));
        Self::as_index_type(builder, pages, ty.memory64)
    }

    /// `memory.grow`.
    pub fn memory_grow(&mut self, builder: &mut FunctionBuilder, index: u32, delta: ir::Value) -> ir::Value {
        let memory = builder.ins().iconst(types::I32, i64::from(index));
        let delta = Self::to_i64(builder, delta);
        let old = self.call_libcall(builder, Libcall::memory_grow, &[memory, delta]).expect("memory.grow returns");
        Self::as_index_type(builder, old, self.memory_type(index).memory64)
    }

    /// `memory.copy`.
    pub fn memory_copy(&mut self, builder: &mut FunctionBuilder, dst_mem: u32, src_mem: u32, args: [ir::Value; 3]) {
        let dst_mem = builder.ins().iconst(types::I32, i64::from(dst_mem));
        let src_mem = builder.ins().iconst(types::I32, i64::from(src_mem));
        let [dst, src, len] = args.map(|v| Self::to_i64(builder, v));
        self.call_libcall(builder, Libcall::memory_copy, &[dst_mem, src_mem, dst, src, len]);
    }

    /// `memory.fill`.
    pub fn memory_fill(
        &mut self,
        builder: &mut FunctionBuilder,
        index: u32,
        dst: ir::Value,
        val: ir::Value,
        len: ir::Value,
    ) {
        let memory = builder.ins().iconst(types::I32, i64::from(index));
        let dst = Self::to_i64(builder, dst);
        let len = Self::to_i64(builder, len);
        self.call_libcall(builder, Libcall::memory_fill, &[memory, dst, val, len]);
    }

    /// `memory.init`.
    pub fn memory_init(&mut self, builder: &mut FunctionBuilder, index: u32, segment: u32, args: [ir::Value; 3]) {
        let memory = builder.ins().iconst(types::I32, i64::from(index));
        let segment = builder.ins().iconst(types::I32, i64::from(segment));
        let [dst, src, len] = args;
        let dst = Self::to_i64(builder, dst);
        self.call_libcall(builder, Libcall::memory_init, &[memory, segment, dst, src, len]);
    }

    /// `data.drop`.
    pub fn data_drop(&mut self, builder: &mut FunctionBuilder, segment: u32) {
        let segment = builder.ins().iconst(types::I32, i64::from(segment));
        self.call_libcall(builder, Libcall::data_drop, &[segment]);
    }

    /// The effective address `index + offset` of a wait or notify, as the 64-bit value the
    /// libcall checks against the memory's bounds and alignment.
    fn effective_address(&mut self, builder: &mut FunctionBuilder, memarg: &MemArg, index: ir::Value) -> ir::Value {
        let index = Self::to_i64(builder, index);
        if memarg.offset == 0 {
            return index;
        }
        let offset = builder.ins().iconst(types::I64, memarg.offset as i64);
        builder.ins().uadd_overflow_trap(index, offset, trap(TrapCode::HeapOutOfBounds))
    }

    /// `memory.atomic.wait32` and `wait64` (told apart by `expected`'s type).
    pub fn atomic_wait(
        &mut self,
        builder: &mut FunctionBuilder,
        memarg: &MemArg,
        [index, expected, timeout]: [ir::Value; 3],
    ) -> ir::Value {
        let addr = self.effective_address(builder, memarg, index);
        let memory = builder.ins().iconst(types::I32, i64::from(memory_index(memarg)));
        let libcall = if builder.func.dfg.value_type(expected) == types::I64 {
            Libcall::memory_atomic_wait64
        } else {
            Libcall::memory_atomic_wait32
        };
        self.call_libcall(builder, libcall, &[memory, addr, expected, timeout]).expect("wait returns")
    }

    /// `memory.atomic.notify`.
    pub fn atomic_notify(
        &mut self,
        builder: &mut FunctionBuilder,
        memarg: &MemArg,
        index: ir::Value,
        count: ir::Value,
    ) -> ir::Value {
        let addr = self.effective_address(builder, memarg, index);
        let memory = builder.ins().iconst(types::I32, i64::from(memory_index(memarg)));
        self.call_libcall(builder, Libcall::memory_atomic_notify, &[memory, addr, count]).expect("notify returns")
    }

    // ---- tables -----------------------------------------------------------------------------

    /// Whether table `index` has 64-bit indices.
    fn is_table64(&self, index: u32) -> bool {
        self.module.meta.tables[index as usize].table64
    }

    /// Address of element `index` of `table`, trapping with `oob_trap` when out of bounds.
    fn table_element_addr(
        &mut self,
        builder: &mut FunctionBuilder,
        table: u32,
        index: ir::Value,
        oob_trap: TrapCode,
    ) -> ir::Value {
        let def = self.load_vmctx(builder, self.offsets().table(table));
        // The base never moves (room for the maximum is reserved up front); only the length does.
        let base = builder.ins().load(types::I64, vm_readonly(), def, VMTableDefinition::BASE_OFFSET as i32);
        let len = builder.ins().load(types::I64, vm_flags(), def, VMTableDefinition::CURRENT_ELEMENTS_OFFSET as i32);
        let index = Self::to_i64(builder, index);
        let oob = builder.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, index, len);
        builder.ins().trapnz(oob, trap(oob_trap));
        let offset = builder.ins().ishl_imm_u(index, i64::from(VMTableDefinition::ELEMENT_SIZE.trailing_zeros()));
        builder.ins().iadd(base, offset)
    }

    /// `table.get`.
    pub fn table_get(&mut self, builder: &mut FunctionBuilder, table: u32, index: ir::Value) -> ir::Value {
        let addr = self.table_element_addr(builder, table, index, TrapCode::TableAccessOutOfBounds);
        let flags = Self::region_flags(builder, vm_flags(), Region::Tables);
        builder.ins().load(types::I64, flags, addr, 0)
    }

    /// `table.set`.
    pub fn table_set(&mut self, builder: &mut FunctionBuilder, table: u32, index: ir::Value, value: ir::Value) {
        let addr = self.table_element_addr(builder, table, index, TrapCode::TableAccessOutOfBounds);
        let flags = Self::region_flags(builder, vm_flags(), Region::Tables);
        builder.ins().store(flags, value, addr, 0);
    }

    /// `table.size`.
    pub fn table_size(&mut self, builder: &mut FunctionBuilder, table: u32) -> ir::Value {
        let def = self.load_vmctx(builder, self.offsets().table(table));
        let len = builder.ins().load(types::I64, vm_flags(), def, VMTableDefinition::CURRENT_ELEMENTS_OFFSET as i32);
        Self::as_index_type(builder, len, self.is_table64(table))
    }

    /// `table.grow`.
    pub fn table_grow(
        &mut self,
        builder: &mut FunctionBuilder,
        table: u32,
        init: ir::Value,
        delta: ir::Value,
    ) -> ir::Value {
        let table_index = builder.ins().iconst(types::I32, i64::from(table));
        let delta = Self::to_i64(builder, delta);
        let old =
            self.call_libcall(builder, Libcall::table_grow, &[table_index, delta, init]).expect("table.grow returns");
        Self::as_index_type(builder, old, self.is_table64(table))
    }

    /// `table.fill`.
    pub fn table_fill(&mut self, builder: &mut FunctionBuilder, table: u32, [dst, value, len]: [ir::Value; 3]) {
        let table = builder.ins().iconst(types::I32, i64::from(table));
        let dst = Self::to_i64(builder, dst);
        let len = Self::to_i64(builder, len);
        self.call_libcall(builder, Libcall::table_fill, &[table, dst, value, len]);
    }

    /// `table.copy`.
    pub fn table_copy(&mut self, builder: &mut FunctionBuilder, dst_table: u32, src_table: u32, args: [ir::Value; 3]) {
        let dst_table = builder.ins().iconst(types::I32, i64::from(dst_table));
        let src_table = builder.ins().iconst(types::I32, i64::from(src_table));
        let [dst, src, len] = args.map(|v| Self::to_i64(builder, v));
        self.call_libcall(builder, Libcall::table_copy, &[dst_table, src_table, dst, src, len]);
    }

    /// `table.init`.
    pub fn table_init(&mut self, builder: &mut FunctionBuilder, table: u32, segment: u32, args: [ir::Value; 3]) {
        let table = builder.ins().iconst(types::I32, i64::from(table));
        let segment = builder.ins().iconst(types::I32, i64::from(segment));
        let [dst, src, len] = args.map(|v| Self::to_i64(builder, v));
        self.call_libcall(builder, Libcall::table_init, &[table, segment, dst, src, len]);
    }

    /// `elem.drop`.
    pub fn elem_drop(&mut self, builder: &mut FunctionBuilder, segment: u32) {
        let segment = builder.ins().iconst(types::I32, i64::from(segment));
        self.call_libcall(builder, Libcall::elem_drop, &[segment]);
    }

    /// `ref.func`: the address of the function's `VMFuncRef` in this instance's VM context.
    pub fn ref_func(&mut self, builder: &mut FunctionBuilder, index: u32) -> ir::Value {
        let vmctx = self.vmctx();
        builder.ins().iadd_imm_s(vmctx, i64::from(self.offsets().func_ref(index)))
    }

    // ---- GC objects -------------------------------------------------------------------------

    /// Kiln's form of a heap type in an operator's immediate.
    pub fn heap_type(&self, ty: wasmparser::HeapType) -> kiln_abi::HeapType {
        crate::module::convert_heap_type(ty, |i| match self.subtype(i).composite {
            CompositeType::Func => crate::module::Shape::Func,
            CompositeType::Struct(_) => crate::module::Shape::Struct,
            CompositeType::Array(_) => crate::module::Shape::Array,
        })
    }

    /// The supertype, finality and shape of type index `index`.
    pub fn subtype(&self, index: u32) -> &'m SubType {
        self.module.meta.subtypes.get(index as usize).unwrap_or(&SubType::FUNC)
    }

    /// Flags for an access to a GC object: it never traps (compiled code checks nulls and
    /// array bounds first) and touches only the GC heap region. Not `aligned`: a `v128` field
    /// may sit at a multiple of 8.
    pub fn gc_flags(builder: &mut FunctionBuilder) -> MemFlagsData {
        Self::region_flags(builder, MemFlagsData::new().with_notrap(), Region::GcHeap)
    }

    /// The native address of the object that non-null reference `reference` refers to: the GC
    /// heap's base plus the reference's low 32 bits (an object reference never has more, and
    /// dropping them keeps any `i64` inside the heap's reservation).
    pub fn object_address(&mut self, builder: &mut FunctionBuilder, reference: ir::Value) -> ir::Value {
        let offset = Self::object_offset(builder, reference);
        let base = self.gc_heap_base(builder);
        builder.ins().iadd(base, offset)
    }

    /// The heap offset of the object non-null reference `reference` refers to (its low 32 bits).
    pub fn object_offset(builder: &mut FunctionBuilder, reference: ir::Value) -> ir::Value {
        let offset = builder.ins().ireduce(types::I32, reference);
        builder.ins().uextend(types::I64, offset)
    }

    /// The native address of the store's GC heap. It never changes during a call: the heap is
    /// made at instantiation, which needs the store idle, and lives as long as the store.
    pub fn gc_heap_base(&mut self, builder: &mut FunctionBuilder) -> ir::Value {
        let limits = self.load_vmctx(builder, VMContextHeader::RUNTIME_LIMITS_OFFSET);
        builder.ins().load(types::I64, vm_readonly(), limits, VMRuntimeLimits::GC_HEAP_BASE_OFFSET as i32)
    }

    /// The canonical id of type index `index` (an `i32`).
    pub fn canonical_type_id(&mut self, builder: &mut FunctionBuilder, index: u32) -> ir::Value {
        let vmctx = self.vmctx();
        builder.ins().load(types::I32, vm_readonly(), vmctx, self.offsets().type_id(index) as i32)
    }

    /// Whether canonical type id `sub` is `sup` or a subtype of it (an `i32`, 0 or 1).
    pub fn is_subtype(&mut self, builder: &mut FunctionBuilder, sub: ir::Value, sup: ir::Value) -> ir::Value {
        self.call_libcall(builder, Libcall::is_subtype, &[sub, sup]).expect("is_subtype returns")
    }

    /// Allocates a GC object of `size` bytes (an `i64`, a multiple of 8) of type index
    /// `type_index` and writes its header: bump allocation, or the `gc_alloc` libcall when the
    /// room runs out. Returns the reference; the object's other bytes are zero.
    pub fn gc_alloc(&mut self, builder: &mut FunctionBuilder, type_index: u32, size: ir::Value) -> ir::Value {
        let limits = self.load_vmctx(builder, VMContextHeader::RUNTIME_LIMITS_OFFSET);
        let next = builder.ins().load(types::I64, vm_flags(), limits, VMRuntimeLimits::GC_NEXT_OFFSET as i32);
        let end = builder.ins().load(types::I64, vm_flags(), limits, VMRuntimeLimits::GC_END_OFFSET as i32);
        let new_next = builder.ins().iadd(next, size);
        let fits = builder.ins().icmp(IntCC::UnsignedLessThanOrEqual, new_next, end);
        let bump = builder.create_block();
        let slow = builder.create_block();
        let done = builder.create_block();
        builder.append_block_param(done, types::I64);
        builder.ins().brif(fits, bump, &[], slow, &[]);
        builder.seal_block(bump);
        builder.seal_block(slow);
        builder.switch_to_block(bump);
        builder.ins().store(vm_flags(), new_next, limits, VMRuntimeLimits::GC_NEXT_OFFSET as i32);
        builder.ins().jump(done, &[ir::BlockArg::Value(next)]);
        builder.switch_to_block(slow);
        let allocated = self.call_libcall(builder, Libcall::gc_alloc, &[size]).expect("gc_alloc returns");
        builder.ins().jump(done, &[ir::BlockArg::Value(allocated)]);
        builder.seal_block(done);
        builder.switch_to_block(done);
        let reference = builder.block_params(done)[0];
        let object = self.object_address(builder, reference);
        let type_id = self.canonical_type_id(builder, type_index);
        let flags = Self::gc_flags(builder);
        builder.ins().store(flags, type_id, object, kiln_abi::gc::OBJECT_TYPE_ID_OFFSET as i32);
        let kind = match self.subtype(type_index).composite {
            CompositeType::Array(_) => kiln_abi::gc::KIND_ARRAY,
            _ => kiln_abi::gc::KIND_STRUCT,
        };
        let kind = builder.ins().iconst(types::I8, i64::from(kind));
        builder.ins().store(flags, kind, object, kiln_abi::gc::OBJECT_KIND_OFFSET as i32);
        reference
    }

    /// Calls a libcall that needs no special handling (GC bulk operations).
    pub fn gc_libcall(
        &mut self,
        builder: &mut FunctionBuilder,
        libcall: Libcall,
        args: &[ir::Value],
    ) -> Option<ir::Value> {
        self.call_libcall(builder, libcall, args)
    }

    // ---- exceptions -------------------------------------------------------------------------

    /// Makes calls from now on go to `handler` (a block taking the exnref) when they throw, or
    /// leave the function when `None`.
    pub fn set_handler(&mut self, handler: Option<ir::Block>) {
        self.handler = handler;
    }

    /// The types of tag `tag`'s payload.
    pub fn tag_params(&self, tag: u32) -> Vec<ir::Type> {
        let ty = self.func_type(self.module.meta.tags[tag as usize]);
        ty.params.iter().map(|&p| ir_type(p)).collect()
    }

    /// Whether the exception `exn` (non-null) was thrown with tag `tag` of this instance: the
    /// same tag definition, whichever instance or host made it.
    pub fn exception_has_tag(&mut self, builder: &mut FunctionBuilder, exn: ir::Value, tag: u32) -> ir::Value {
        let thrown = builder.ins().load(types::I64, vm_flags(), exn, VMException::TAG_OFFSET as i32);
        let expected = self.load_vmctx(builder, self.offsets().tag(tag));
        builder.ins().icmp(IntCC::Equal, thrown, expected)
    }

    /// The payload of exception `exn`, thrown with tag `tag`.
    pub fn exception_payload(&mut self, builder: &mut FunctionBuilder, exn: ir::Value, tag: u32) -> Vec<ir::Value> {
        let flags = MemFlagsData::trusted().with_endianness(ir::Endianness::Little);
        let types = self.tag_params(tag);
        types
            .iter()
            .enumerate()
            .map(|(i, &ty)| builder.ins().load(ty, flags, exn, VMException::payload_offset(i as u32) as i32))
            .collect()
    }

    /// Marks exception `exn` as held as a value (see `VMException`): it is never released.
    pub fn exception_escapes(&mut self, builder: &mut FunctionBuilder, exn: ir::Value) {
        let one = builder.ins().iconst(types::I32, 1);
        builder.ins().store(vm_flags(), one, exn, VMException::ESCAPED_OFFSET as i32);
    }

    /// Releases exception `exn` after a clause took its payload, unless it escaped before.
    pub fn drop_exception(&mut self, builder: &mut FunctionBuilder, exn: ir::Value) {
        self.call_libcall(builder, Libcall::exn_drop, &[exn]);
    }

    /// A new exception of tag `tag` carrying `payload`: its exnref.
    pub fn new_exception(&mut self, builder: &mut FunctionBuilder, tag: u32, payload: &[ir::Value]) -> ir::Value {
        let tag_index = builder.ins().iconst(types::I32, i64::from(tag));
        let exn = self.call_libcall(builder, Libcall::exn_new, &[tag_index]).expect("exn_new returns");
        let flags = MemFlagsData::trusted().with_endianness(ir::Endianness::Little);
        for (i, &value) in payload.iter().enumerate() {
            builder.ins().store(flags, value, exn, VMException::payload_offset(i as u32) as i32);
        }
        exn
    }

    /// Throws the non-null exception `exn` out of this function: the runtime unwinds to the
    /// nearest handler of a calling guest frame, or to the host. Ends the block.
    pub fn throw_out(&mut self, builder: &mut FunctionBuilder, exn: ir::Value) {
        self.call_libcall(builder, Libcall::throw_ref, &[exn]);
        // Never reached: the libcall does not return.
        builder.ins().trap(trap(TrapCode::UnreachableCodeReached));
    }

    // ---- calls ------------------------------------------------------------------------------

    fn wasm_sig(&mut self, builder: &mut FunctionBuilder, type_index: u32) -> ir::SigRef {
        if let Some(&sig) = self.wasm_sigs.get(&type_index) {
            return sig;
        }
        let sig = builder.import_signature(wasm_signature(self.func_type(type_index)));
        self.wasm_sigs.insert(type_index, sig);
        sig
    }

    fn is_imported_func(&self, index: u32) -> bool {
        index < self.module.meta.num_imported_funcs
    }

    /// How a call is made: a tail call replaces the caller's frame; a call inside a handler's
    /// reach is a `try_call` whose exception edge takes the exnref to the handler's dispatch
    /// block, and which continues in a new block taking the results.
    fn emit_call(
        &mut self,
        builder: &mut FunctionBuilder,
        callee: Callee,
        args: &[ir::Value],
        tail: bool,
    ) -> Vec<ir::Value> {
        if let (Some(handler), false) = (self.handler, tail) {
            let sig = match callee {
                Callee::Direct(func) => builder.func.dfg.ext_funcs[func].signature,
                Callee::Indirect(sig, _) => sig,
            };
            let returns: Vec<ir::Type> =
                builder.func.dfg.signatures[sig].returns.iter().map(|r| r.value_type).collect();
            let normal = builder.create_block();
            for &ty in &returns {
                builder.append_block_param(normal, ty);
            }
            let pool = &mut builder.func.dfg.value_lists;
            let normal_call = ir::BlockCall::new(normal, (0..returns.len() as u32).map(ir::BlockArg::TryCallRet), pool);
            let exception_call = ir::BlockCall::new(handler, [ir::BlockArg::TryCallExn(0)], pool);
            let table = builder.func.dfg.exception_tables.push(ir::ExceptionTableData::new(
                sig,
                normal_call,
                [ir::ExceptionTableItem::Default(exception_call)],
            ));
            match callee {
                Callee::Direct(func) => builder.ins().try_call(func, args, table),
                Callee::Indirect(_, code) => builder.ins().try_call_indirect(code, args, table),
            };
            builder.seal_block(normal);
            builder.switch_to_block(normal);
            return builder.block_params(normal).to_vec();
        }
        let inst = match (callee, tail) {
            (Callee::Direct(func), false) => builder.ins().call(func, args),
            (Callee::Direct(func), true) => builder.ins().return_call(func, args),
            (Callee::Indirect(sig, code), false) => builder.ins().call_indirect(sig, code, args),
            (Callee::Indirect(sig, code), true) => builder.ins().return_call_indirect(sig, code, args),
        };
        builder.inst_results(inst).to_vec()
    }

    /// `call` (or `return_call` when `tail`): defined functions by symbol, imported ones
    /// through their funcref in the VM context.
    pub fn call(
        &mut self,
        builder: &mut FunctionBuilder,
        index: u32,
        args: &[ir::Value],
        tail: bool,
    ) -> Vec<ir::Value> {
        let meta = self.module.meta;
        let type_index = meta.func_types[index as usize];
        let vmctx = self.vmctx();
        if self.is_imported_func(index) {
            let base = self.offsets().func_ref(index);
            let code = self.load_vmctx(builder, base + VMFuncRef::CODE_OFFSET);
            let callee_vmctx = self.load_vmctx(builder, base + VMFuncRef::VMCTX_OFFSET);
            let sig = self.wasm_sig(builder, type_index);
            let call_args: Vec<ir::Value> = [callee_vmctx, vmctx].into_iter().chain(args.iter().copied()).collect();
            return self.emit_call(builder, Callee::Indirect(sig, code), &call_args, tail);
        }
        let func = match self.direct_funcs.get(&index) {
            Some(&func) => func,
            None => {
                let signature = self.wasm_sig(builder, type_index);
                let user_index = self.module.defined_func_ids[(index - meta.num_imported_funcs) as usize];
                let name = builder.func.declare_imported_user_function(UserExternalName::new(0, user_index));
                let func = builder.import_function(ir::ExtFuncData {
                    name: ir::ExternalName::user(name),
                    signature,
                    colocated: true,
                    patchable: false,
                });
                self.direct_funcs.insert(index, func);
                func
            }
        };
        let call_args: Vec<ir::Value> = [vmctx, vmctx].into_iter().chain(args.iter().copied()).collect();
        self.emit_call(builder, Callee::Direct(func), &call_args, tail)
    }

    /// `call_indirect` (or `return_call_indirect`): the table entry must be non-null and of
    /// exactly the expected type.
    pub fn call_indirect(
        &mut self,
        builder: &mut FunctionBuilder,
        table: u32,
        type_index: u32,
        callee: ir::Value,
        args: &[ir::Value],
        tail: bool,
    ) -> Vec<ir::Value> {
        let addr = self.table_element_addr(builder, table, callee, TrapCode::TableOutOfBounds);
        let flags = Self::region_flags(builder, vm_flags(), Region::Tables);
        let funcref = builder.ins().load(types::I64, flags, addr, 0);
        builder.ins().trapz(funcref, trap(TrapCode::IndirectCallToNull));
        let actual = builder.ins().load(types::I32, vm_flags(), funcref, VMFuncRef::TYPE_ID_OFFSET as i32);
        let vmctx = self.vmctx();
        let expected = builder.ins().load(types::I32, vm_readonly(), vmctx, self.offsets().type_id(type_index) as i32);
        let mismatch = builder.ins().icmp(IntCC::NotEqual, actual, expected);
        if self.subtype(type_index).is_final {
            builder.ins().trapnz(mismatch, trap(TrapCode::BadSignature));
        } else {
            // A function of a declared subtype may be called as its supertype.
            let slow = builder.create_block();
            let call = builder.create_block();
            builder.ins().brif(mismatch, slow, &[], call, &[]);
            builder.seal_block(slow);
            builder.switch_to_block(slow);
            let is_subtype = self.is_subtype(builder, actual, expected);
            builder.ins().trapz(is_subtype, trap(TrapCode::BadSignature));
            builder.ins().jump(call, &[]);
            builder.seal_block(call);
            builder.switch_to_block(call);
        }
        self.call_funcref(builder, type_index, funcref, args, tail)
    }

    /// `call_ref` (or `return_call_ref`): validation guarantees the type; null traps.
    pub fn call_ref(
        &mut self,
        builder: &mut FunctionBuilder,
        type_index: u32,
        callee: ir::Value,
        args: &[ir::Value],
        tail: bool,
    ) -> Vec<ir::Value> {
        builder.ins().trapz(callee, trap(TrapCode::NullFunctionReference));
        self.call_funcref(builder, type_index, callee, args, tail)
    }

    /// Calls through a non-null funcref.
    fn call_funcref(
        &mut self,
        builder: &mut FunctionBuilder,
        type_index: u32,
        funcref: ir::Value,
        args: &[ir::Value],
        tail: bool,
    ) -> Vec<ir::Value> {
        let code = builder.ins().load(types::I64, vm_flags(), funcref, VMFuncRef::CODE_OFFSET as i32);
        let callee_vmctx = builder.ins().load(types::I64, vm_flags(), funcref, VMFuncRef::VMCTX_OFFSET as i32);
        let caller_vmctx = self.vmctx();
        let call_args: Vec<ir::Value> = [callee_vmctx, caller_vmctx].into_iter().chain(args.iter().copied()).collect();
        let sig = self.wasm_sig(builder, type_index);
        self.emit_call(builder, Callee::Indirect(sig, code), &call_args, tail)
    }

    /// Emits a call to a runtime libcall through the VM context's `builtins` table.
    fn call_libcall(
        &mut self,
        builder: &mut FunctionBuilder,
        libcall: Libcall,
        args: &[ir::Value],
    ) -> Option<ir::Value> {
        let sig = match self.libcall_sigs[libcall as usize] {
            Some(sig) => sig,
            None => {
                let sig = builder.import_signature(libcall_signature(libcall));
                self.libcall_sigs[libcall as usize] = Some(sig);
                sig
            }
        };
        let builtins = self.load_vmctx(builder, VMContextHeader::BUILTINS_OFFSET);
        let callee = builder.ins().load(types::I64, vm_readonly(), builtins, libcall.table_offset() as i32);
        let vmctx = self.vmctx();
        let call_args: Vec<ir::Value> = std::iter::once(vmctx).chain(args.iter().copied()).collect();
        let call = builder.ins().call_indirect(sig, callee, &call_args);
        builder.inst_results(call).first().copied()
    }
}

/// What a call goes to.
#[derive(Clone, Copy)]
enum Callee {
    /// A function of this object, by symbol.
    Direct(ir::FuncRef),
    /// A code address, with the signature to call it with.
    Indirect(ir::SigRef, ir::Value),
}

/// Whether `op` begins, ends or leaves a block of code (calls are [`is_call`]).
fn is_control(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::End
            | Operator::Br { .. }
            | Operator::BrIf { .. }
            | Operator::BrTable { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. }
            | Operator::Return
            | Operator::Unreachable
            | Operator::TryTable { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Try { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Rethrow { .. }
            | Operator::Delegate { .. }
    )
}
