//! Kiln's `FuncEnvironment`: how translated wasm reaches its instance.
//!
//! Every wasm function has the signature `(callee_vmctx, caller_vmctx, wasm params...) -> wasm
//! results` in Cranelift's `tail` convention. Everything instance-specific is reached through
//! `callee_vmctx` at offsets from [`kiln_abi::VMOffsets`]; this file is the only place in the
//! compiler that turns those offsets into loads and stores.

use cranelift_codegen::cursor::FuncCursor;
use cranelift_codegen::ir::{
    self, condcodes::IntCC, types, AbiParam, ArgumentPurpose, InstBuilder, MemFlags, Signature, UserExternalName,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_entity::{EntityRef, PrimaryMap};
use cranelift_frontend::FunctionBuilder;
use cranelift_wasm::{
    wasmparser, FuncEnvironment, FuncIndex, FuncTranslationState, GlobalIndex, GlobalVariable, Heap, HeapData,
    HeapStyle, MemoryIndex, TableIndex, TargetEnvironment, TypeConvert, TypeIndex, WasmError, WasmHeapType, WasmResult,
};
use kiln_abi::{
    AbiType, FuncType, Libcall, ModuleMetadata, VMContextHeader, VMFuncRef, VMMemoryDefinition, VMMemoryImport,
    VMOffsets, VMRuntimeLimits, VMTableDefinition, ValType,
};

use kiln_abi::{HEAP_GUARD, HEAP_RESERVATION};

/// `table.get`/`table.set` out of bounds ("out of bounds table access"), as opposed to
/// `call_indirect`'s "undefined element" (`TrapCode::TableOutOfBounds`).
pub const TABLE_ACCESS_OUT_OF_BOUNDS: ir::TrapCode = ir::TrapCode::User(1);
/// `call_ref` through null ("null function reference"), as opposed to `ref.as_non_null`'s
/// "null reference".
pub const NULL_FUNCTION_REFERENCE: ir::TrapCode = ir::TrapCode::User(2);
/// Fuel metering ran out ("all fuel consumed").
pub const OUT_OF_FUEL: ir::TrapCode = ir::TrapCode::User(3);

/// The Cranelift type a wasm value lives in.
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

/// Flags for loads from the VM context and runtime structures: they never trap.
/// Whether `op` calls a wasm function (directly, through a table or a reference, or as a tail
/// call). Fuel metering ends a block at each; functions without any skip the entry interrupt
/// check (see [`KilnFuncEnv::set_makes_calls`]).
pub fn is_call(op: &wasmparser::Operator<'_>) -> bool {
    use wasmparser::Operator as Op;
    matches!(
        op,
        Op::Call { .. }
            | Op::CallIndirect { .. }
            | Op::CallRef { .. }
            | Op::ReturnCall { .. }
            | Op::ReturnCallIndirect { .. }
            | Op::ReturnCallRef { .. }
    )
}

/// The memory a storing operator writes (`None` for every other operator). Bulk memory
/// operators are libcalls, which mark what they write themselves.
fn stored_memory(op: &wasmparser::Operator<'_>) -> Option<u32> {
    use wasmparser::Operator as Op;
    let memarg = match op {
        Op::I32Store { memarg }
        | Op::I64Store { memarg }
        | Op::F32Store { memarg }
        | Op::F64Store { memarg }
        | Op::I32Store8 { memarg }
        | Op::I32Store16 { memarg }
        | Op::I64Store8 { memarg }
        | Op::I64Store16 { memarg }
        | Op::I64Store32 { memarg }
        | Op::V128Store { memarg }
        | Op::V128Store8Lane { memarg, .. }
        | Op::V128Store16Lane { memarg, .. }
        | Op::V128Store32Lane { memarg, .. }
        | Op::V128Store64Lane { memarg, .. }
        | Op::I32AtomicStore { memarg }
        | Op::I64AtomicStore { memarg }
        | Op::I32AtomicStore8 { memarg }
        | Op::I32AtomicStore16 { memarg }
        | Op::I64AtomicStore8 { memarg }
        | Op::I64AtomicStore16 { memarg }
        | Op::I64AtomicStore32 { memarg }
        | Op::I32AtomicRmwAdd { memarg }
        | Op::I64AtomicRmwAdd { memarg }
        | Op::I32AtomicRmw8AddU { memarg }
        | Op::I32AtomicRmw16AddU { memarg }
        | Op::I64AtomicRmw8AddU { memarg }
        | Op::I64AtomicRmw16AddU { memarg }
        | Op::I64AtomicRmw32AddU { memarg }
        | Op::I32AtomicRmwSub { memarg }
        | Op::I64AtomicRmwSub { memarg }
        | Op::I32AtomicRmw8SubU { memarg }
        | Op::I32AtomicRmw16SubU { memarg }
        | Op::I64AtomicRmw8SubU { memarg }
        | Op::I64AtomicRmw16SubU { memarg }
        | Op::I64AtomicRmw32SubU { memarg }
        | Op::I32AtomicRmwAnd { memarg }
        | Op::I64AtomicRmwAnd { memarg }
        | Op::I32AtomicRmw8AndU { memarg }
        | Op::I32AtomicRmw16AndU { memarg }
        | Op::I64AtomicRmw8AndU { memarg }
        | Op::I64AtomicRmw16AndU { memarg }
        | Op::I64AtomicRmw32AndU { memarg }
        | Op::I32AtomicRmwOr { memarg }
        | Op::I64AtomicRmwOr { memarg }
        | Op::I32AtomicRmw8OrU { memarg }
        | Op::I32AtomicRmw16OrU { memarg }
        | Op::I64AtomicRmw8OrU { memarg }
        | Op::I64AtomicRmw16OrU { memarg }
        | Op::I64AtomicRmw32OrU { memarg }
        | Op::I32AtomicRmwXor { memarg }
        | Op::I64AtomicRmwXor { memarg }
        | Op::I32AtomicRmw8XorU { memarg }
        | Op::I32AtomicRmw16XorU { memarg }
        | Op::I64AtomicRmw8XorU { memarg }
        | Op::I64AtomicRmw16XorU { memarg }
        | Op::I64AtomicRmw32XorU { memarg }
        | Op::I32AtomicRmwXchg { memarg }
        | Op::I64AtomicRmwXchg { memarg }
        | Op::I32AtomicRmw8XchgU { memarg }
        | Op::I32AtomicRmw16XchgU { memarg }
        | Op::I64AtomicRmw8XchgU { memarg }
        | Op::I64AtomicRmw16XchgU { memarg }
        | Op::I64AtomicRmw32XchgU { memarg }
        | Op::I32AtomicRmwCmpxchg { memarg }
        | Op::I64AtomicRmwCmpxchg { memarg }
        | Op::I32AtomicRmw8CmpxchgU { memarg }
        | Op::I32AtomicRmw16CmpxchgU { memarg }
        | Op::I64AtomicRmw8CmpxchgU { memarg }
        | Op::I64AtomicRmw16CmpxchgU { memarg }
        | Op::I64AtomicRmw32CmpxchgU { memarg } => memarg,
        _ => return None,
    };
    Some(memarg.memory)
}

fn vm_flags() -> MemFlags {
    MemFlags::trusted()
}

/// Flags for VM context fields that never change during an instance's life.
fn vm_readonly() -> MemFlags {
    MemFlags::trusted().with_readonly()
}

/// Module-wide facts shared by every function's environment.
pub struct ModuleEnv<'m> {
    pub meta: &'m ModuleMetadata,
    pub offsets: VMOffsets,
    pub frontend: TargetFrontendConfig,
    /// Cranelift user-function index of each defined function (namespace 0 in the object).
    pub defined_func_ids: Vec<u32>,
    /// Whether to emit interrupt checks.
    pub interruptible: bool,
    /// Whether to emit fuel metering.
    pub fuel: bool,
}

/// The environment for translating one function.
pub struct KilnFuncEnv<'a, 'm> {
    module: &'a ModuleEnv<'m>,
    heaps: PrimaryMap<Heap, HeapData>,
    vmctx_gv: Option<ir::GlobalValue>,
    libcall_sigs: Vec<Option<ir::SigRef>>,
    /// Operators translated since fuel was last charged (fuel metering).
    fuel_pending: i64,
    /// Whether the function body contains a call (see [`KilnFuncEnv::set_makes_calls`]).
    makes_calls: bool,
    /// Per memory index: the global value of its dirty-map bias, once used.
    dirty_bias_gvs: Vec<Option<ir::GlobalValue>>,
    /// Instructions in the function before the operator being translated.
    insts_before_operator: usize,
}

impl<'a, 'm> KilnFuncEnv<'a, 'm> {
    pub fn new(module: &'a ModuleEnv<'m>) -> Self {
        KilnFuncEnv {
            module,
            heaps: PrimaryMap::new(),
            vmctx_gv: None,
            libcall_sigs: vec![None; Libcall::ALL.len()],
            fuel_pending: 0,
            makes_calls: true,
            dirty_bias_gvs: vec![None; module.meta.memories.len()],
            insts_before_operator: 0,
        }
    }

    /// Tells the environment whether the body makes calls. A function without calls needs no
    /// interrupt check at its entry: it runs a bounded stretch of code between loop headers,
    /// which check, and then returns. Only functions that call can run unboundedly without a
    /// loop (recursion, tail-call cycles), so only they check at entry.
    pub fn set_makes_calls(&mut self, makes_calls: bool) {
        self.makes_calls = makes_calls;
    }

    fn offsets(&self) -> &VMOffsets {
        &self.module.offsets
    }

    fn vmctx_gv(&mut self, func: &mut ir::Function) -> ir::GlobalValue {
        *self.vmctx_gv.get_or_insert_with(|| func.create_global_value(ir::GlobalValueData::VMContext))
    }

    /// A global value that loads `vmctx + offset`.
    fn vmctx_load_gv(&mut self, func: &mut ir::Function, offset: u32, flags: MemFlags) -> ir::GlobalValue {
        let vmctx = self.vmctx_gv(func);
        func.create_global_value(ir::GlobalValueData::Load {
            base: vmctx,
            offset: (offset as i32).into(),
            global_type: types::I64,
            flags,
        })
    }

    /// Marks the page that the store `op` (just translated) wrote in its memory's dirty map, so
    /// teardown resets exactly the pages the tenant touched: `map[address >> 12] = 1`, with the
    /// map reached through the bias in the memory's import (see [`kiln_abi::dirty_map_entry`]).
    /// Emitted after the store, so a store that traps marks nothing (it wrote nothing).
    fn mark_stored_page(
        &mut self,
        op: &wasmparser::Operator,
        builder: &mut FunctionBuilder,
        state: &FuncTranslationState,
    ) -> WasmResult<()> {
        // Every heap store must be marked, or a tenant's data could outlive it in a warm slot:
        // find the ones this operator emitted, and refuse to compile rather than miss one.
        let dfg = &builder.func.dfg;
        let heap_stores: Vec<ir::Inst> = (self.insts_before_operator..dfg.num_insts())
            .map(ir::Inst::new)
            .filter(|&inst| {
                let data = &dfg.insts[inst];
                data.opcode().can_store()
                    && data.memflags().and_then(|f| f.alias_region()) == Some(ir::AliasRegion::Heap)
            })
            .collect();
        // The mark goes at the end of the current block: only if the store is in it, and
        // nothing after the store can trap (a trap there would skip the mark of a completed
        // store), is the store executed exactly when the mark is.
        let marked_when_stored = |store: ir::Inst| {
            let layout = &builder.func.layout;
            layout.inst_block(store) == builder.current_block()
                && std::iter::successors(layout.next_inst(store), |&i| layout.next_inst(i)).all(|i| {
                    let opcode = dfg.insts[i].opcode();
                    !(opcode.can_trap() || opcode.is_call() || opcode.can_store() || opcode.is_branch())
                })
        };
        let memory = match (stored_memory(op), heap_stores.as_slice()) {
            (_, []) if !state.reachable() => return Ok(()), // an unconditional trap writes nothing
            (None, []) => return Ok(()),
            (Some(memory), &[store]) if marked_when_stored(store) => memory,
            _ => {
                return Err(WasmError::User(format!(
                    "internal error: cannot mark the pages `{op:?}` writes ({} heap stores)",
                    heap_stores.len()
                )))
            }
        };
        let store = heap_stores[0];
        let (data, args) = (builder.func.dfg.insts[store], builder.func.dfg.inst_args(store));
        let (address, offset) = match data.opcode() {
            ir::Opcode::Store | ir::Opcode::Istore8 | ir::Opcode::Istore16 | ir::Opcode::Istore32 => {
                (args[1], data.load_store_offset().unwrap_or(0))
            }
            ir::Opcode::AtomicStore => (args[1], 0),
            ir::Opcode::AtomicRmw | ir::Opcode::AtomicCas => (args[0], 0),
            other => return Err(WasmError::User(format!("internal error: unexpected heap store `{other}`"))),
        };
        let gv = match self.dirty_bias_gvs[memory as usize] {
            Some(gv) => gv,
            None => {
                let offset = self.offsets().memory(memory) + VMMemoryImport::DIRTY_BIAS_OFFSET;
                let gv = self.vmctx_load_gv(builder.func, offset, vm_readonly());
                self.dirty_bias_gvs[memory as usize] = Some(gv);
                gv
            }
        };
        let bias = builder.ins().global_value(types::I64, gv);
        let address = if offset == 0 { address } else { builder.ins().iadd_imm(address, i64::from(offset)) };
        let page = builder.ins().ushr_imm(address, i64::from(kiln_abi::DIRTY_PAGE_LOG2));
        let entry = builder.ins().iadd(page, bias);
        let one = builder.ins().iconst(types::I8, 1);
        // The map is disjoint from the heap, tables and everything else compiled code loads;
        // Kiln uses the vmctx alias region for nothing else, so this store does not stop
        // Cranelift from reusing heap loads across it.
        let flags = MemFlags::trusted().with_alias_region(Some(ir::AliasRegion::Vmctx));
        builder.ins().store(flags, one, entry, 0);
        Ok(())
    }

    fn vmctx_value(func: &ir::Function) -> ir::Value {
        func.special_param(ArgumentPurpose::VMContext).expect("every Kiln function has a vmctx parameter")
    }

    fn num_imported_funcs(&self) -> u32 {
        self.module.meta.num_imported_funcs
    }

    fn is_imported_func(&self, index: FuncIndex) -> bool {
        index.as_u32() < self.num_imported_funcs()
    }

    fn memory_type(&self, index: MemoryIndex) -> kiln_abi::MemoryType {
        self.module.meta.memories[index.as_u32() as usize]
    }

    /// Emits a call to a runtime libcall through the VM context's `builtins` table.
    fn call_libcall(&mut self, pos: &mut FuncCursor, libcall: Libcall, args: &[ir::Value]) -> Option<ir::Value> {
        let sig = match self.libcall_sigs[libcall as usize] {
            Some(sig) => sig,
            None => {
                let sig = pos.func.import_signature(libcall_signature(libcall));
                self.libcall_sigs[libcall as usize] = Some(sig);
                sig
            }
        };
        let vmctx = Self::vmctx_value(pos.func);
        let builtins = pos.ins().load(types::I64, vm_readonly(), vmctx, VMContextHeader::BUILTINS_OFFSET as i32);
        let callee = pos.ins().load(types::I64, vm_readonly(), builtins, libcall.table_offset() as i32);
        let mut call_args = vec![vmctx];
        call_args.extend_from_slice(args);
        let call = pos.ins().call_indirect(sig, callee, &call_args);
        pos.func.dfg.inst_results(call).first().copied()
    }

    /// Whether table `index` has 64-bit indices.
    fn is_table64(&self, index: TableIndex) -> bool {
        self.module.meta.tables[index.as_u32() as usize].table64
    }

    /// Widens an index operand to i64 for a libcall (memory and table indices may be i32 or
    /// i64; both are unsigned).
    fn to_i64(pos: &mut FuncCursor, value: ir::Value) -> ir::Value {
        if pos.func.dfg.value_type(value) == types::I64 {
            value
        } else {
            pos.ins().uextend(types::I64, value)
        }
    }

    fn table_definition(&mut self, builder: &mut FunctionBuilder, table: TableIndex) -> ir::Value {
        let vmctx = Self::vmctx_value(builder.func);
        let offset = self.offsets().table(table.as_u32());
        builder.ins().load(types::I64, vm_readonly(), vmctx, offset as i32)
    }

    /// Address of element `index` of `table`, trapping with `oob_trap` when out of bounds.
    fn table_element_addr(
        &mut self,
        builder: &mut FunctionBuilder,
        table: TableIndex,
        index: ir::Value,
        oob_trap: ir::TrapCode,
    ) -> ir::Value {
        let def = self.table_definition(builder, table);
        // The base never moves (room for the maximum is reserved up front); only the length does.
        let base = builder.ins().load(types::I64, vm_readonly(), def, VMTableDefinition::BASE_OFFSET as i32);
        let len = builder.ins().load(types::I64, vm_flags(), def, VMTableDefinition::CURRENT_ELEMENTS_OFFSET as i32);
        let index = if builder.func.dfg.value_type(index) == types::I64 {
            index
        } else {
            builder.ins().uextend(types::I64, index)
        };
        let oob = builder.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, index, len);
        builder.ins().trapnz(oob, oob_trap);
        let offset = builder.ins().ishl_imm(index, VMTableDefinition::ELEMENT_SIZE.trailing_zeros() as i64);
        builder.ins().iadd(base, offset)
    }

    /// Loads a funcref from a table for `call_indirect`, checking null and the signature.
    fn checked_funcref(
        &mut self,
        builder: &mut FunctionBuilder,
        table: TableIndex,
        sig_index: TypeIndex,
        callee: ir::Value,
    ) -> ir::Value {
        let addr = self.table_element_addr(builder, table, callee, ir::TrapCode::TableOutOfBounds);
        let funcref = builder.ins().load(types::I64, vm_flags(), addr, 0);
        builder.ins().trapz(funcref, ir::TrapCode::IndirectCallToNull);
        let actual = builder.ins().load(types::I32, vm_flags(), funcref, VMFuncRef::TYPE_ID_OFFSET as i32);
        let vmctx = Self::vmctx_value(builder.func);
        let expected =
            builder.ins().load(types::I32, vm_readonly(), vmctx, self.offsets().type_id(sig_index.as_u32()) as i32);
        let mismatch = builder.ins().icmp(IntCC::NotEqual, actual, expected);
        builder.ins().trapnz(mismatch, ir::TrapCode::BadSignature);
        funcref
    }

    /// Traps with `Interrupt` ("deadline exceeded") if the store's interrupt flag is set. Emitted
    /// at every loop header and at the entry of every function that calls, so runaway code
    /// stops within one iteration or call.
    fn check_interrupt(&mut self, builder: &mut FunctionBuilder) {
        if !self.module.interruptible {
            return;
        }
        let vmctx = Self::vmctx_value(builder.func);
        let limits =
            builder.ins().load(types::I64, vm_readonly(), vmctx, VMContextHeader::RUNTIME_LIMITS_OFFSET as i32);
        // Another thread sets it. An atomic load (a plain `mov` on x86-64) so Cranelift's
        // redundant-load elimination cannot reuse the value read at the function's entry.
        let addr = builder.ins().iadd_imm(limits, VMRuntimeLimits::INTERRUPT_OFFSET as i64);
        let flag = builder.ins().atomic_load(types::I64, vm_flags(), addr);
        builder.ins().trapnz(flag, ir::TrapCode::Interrupt);
    }

    /// Charges the operators counted since the last charge: `fuel -= n`, trapping with
    /// "all fuel consumed" when it goes negative. Emitted before every control operator, so
    /// each basic block pays for itself (and a loop for every iteration).
    fn charge_fuel(&mut self, builder: &mut FunctionBuilder) {
        if self.fuel_pending == 0 {
            return;
        }
        let vmctx = Self::vmctx_value(builder.func);
        let limits =
            builder.ins().load(types::I64, vm_readonly(), vmctx, VMContextHeader::RUNTIME_LIMITS_OFFSET as i32);
        let fuel = builder.ins().load(types::I64, vm_flags(), limits, VMRuntimeLimits::FUEL_OFFSET as i32);
        let left = builder.ins().iadd_imm(fuel, -self.fuel_pending);
        builder.ins().store(vm_flags(), left, limits, VMRuntimeLimits::FUEL_OFFSET as i32);
        let exhausted = builder.ins().icmp_imm(IntCC::SignedLessThan, left, 0);
        builder.ins().trapnz(exhausted, OUT_OF_FUEL);
        self.fuel_pending = 0;
    }

    /// `(code, callee_vmctx, caller_vmctx ++ args)` for a call through a non-null funcref.
    fn funcref_call_args(
        builder: &mut FunctionBuilder,
        funcref: ir::Value,
        args: &[ir::Value],
    ) -> (ir::Value, Vec<ir::Value>) {
        let code = builder.ins().load(types::I64, vm_flags(), funcref, VMFuncRef::CODE_OFFSET as i32);
        let callee_vmctx = builder.ins().load(types::I64, vm_flags(), funcref, VMFuncRef::VMCTX_OFFSET as i32);
        let caller_vmctx = Self::vmctx_value(builder.func);
        let mut call_args = vec![callee_vmctx, caller_vmctx];
        call_args.extend_from_slice(args);
        (code, call_args)
    }

    /// For a direct call: `Some((code, args))` if the callee is imported (call it through its
    /// funcref in the VM context), `None` if it is defined here (call it by symbol).
    fn direct_call_args(
        &mut self,
        builder: &mut FunctionBuilder,
        callee_index: FuncIndex,
        args: &[ir::Value],
    ) -> (Option<ir::Value>, Vec<ir::Value>) {
        let vmctx = Self::vmctx_value(builder.func);
        if self.is_imported_func(callee_index) {
            let base = self.offsets().func_ref(callee_index.as_u32()) as i32;
            let code = builder.ins().load(types::I64, vm_readonly(), vmctx, base + VMFuncRef::CODE_OFFSET as i32);
            let callee_vmctx =
                builder.ins().load(types::I64, vm_readonly(), vmctx, base + VMFuncRef::VMCTX_OFFSET as i32);
            let mut call_args = vec![callee_vmctx, vmctx];
            call_args.extend_from_slice(args);
            (Some(code), call_args)
        } else {
            let mut call_args = vec![vmctx, vmctx];
            call_args.extend_from_slice(args);
            (None, call_args)
        }
    }
}

impl TypeConvert for KilnFuncEnv<'_, '_> {
    fn lookup_heap_type(&self, index: wasmparser::UnpackedIndex) -> WasmHeapType {
        WasmHeapType::ConcreteFunc(self.lookup_type_index(index))
    }

    fn lookup_type_index(&self, index: wasmparser::UnpackedIndex) -> cranelift_wasm::EngineOrModuleTypeIndex {
        let index = match index {
            wasmparser::UnpackedIndex::Module(i) => i,
            // Rec-group-relative indices only occur with GC types, which Kiln rejects earlier.
            _ => 0,
        };
        cranelift_wasm::EngineOrModuleTypeIndex::Module(cranelift_wasm::ModuleInternedTypeIndex::from_u32(index))
    }
}

impl TargetEnvironment for KilnFuncEnv<'_, '_> {
    fn target_config(&self) -> TargetFrontendConfig {
        self.module.frontend
    }

    fn heap_access_spectre_mitigation(&self) -> bool {
        false
    }

    fn proof_carrying_code(&self) -> bool {
        false
    }

    fn reference_type(&self, _ty: WasmHeapType) -> (ir::Type, bool) {
        // References are raw pointers (funcref) or opaque host words (externref); Kiln has no
        // GC, so nothing needs a stack map.
        (types::I64, false)
    }
}

impl FuncEnvironment for KilnFuncEnv<'_, '_> {
    fn is_wasm_parameter(&self, _signature: &Signature, index: usize) -> bool {
        // Parameters 0 and 1 are the callee's and the caller's VM contexts.
        index >= 2
    }

    fn param_needs_stack_map(&self, _signature: &Signature, _index: usize) -> bool {
        false
    }

    fn sig_ref_result_needs_stack_map(&self, _sig_ref: ir::SigRef, _index: usize) -> bool {
        false
    }

    fn func_ref_result_needs_stack_map(&self, _func: &ir::Function, _func_ref: ir::FuncRef, _index: usize) -> bool {
        false
    }

    fn make_global(&mut self, func: &mut ir::Function, index: GlobalIndex) -> WasmResult<GlobalVariable> {
        let meta = self.module.meta;
        let ty = ir_type(meta.globals[index.as_u32() as usize].content);
        let imported = meta.num_imported_globals;
        if index.as_u32() >= imported {
            // Own globals live inside the VM context itself.
            let gv = self.vmctx_gv(func);
            let offset = self.offsets().defined_global(index.as_u32() - imported);
            Ok(GlobalVariable::Memory { gv, offset: (offset as i32).into(), ty })
        } else {
            let offset = self.offsets().global(index.as_u32());
            let gv = self.vmctx_load_gv(func, offset, vm_readonly());
            Ok(GlobalVariable::Memory { gv, offset: 0.into(), ty })
        }
    }

    fn heaps(&self) -> &PrimaryMap<Heap, HeapData> {
        &self.heaps
    }

    fn make_heap(&mut self, func: &mut ir::Function, index: MemoryIndex) -> WasmResult<Heap> {
        let ty = self.memory_type(index);
        let import = self.offsets().memory(index.as_u32());
        // The base never moves: every memory owns its whole reservation from the start.
        let base = self.vmctx_load_gv(func, import + VMMemoryImport::BASE_OFFSET, vm_readonly());
        let page_size = 1u64 << ty.page_size_log2;
        let (style, index_type) = if ty.memory64 {
            let definition = self.vmctx_load_gv(func, import + VMMemoryImport::DEFINITION_OFFSET, vm_readonly());
            let bound_gv = func.create_global_value(ir::GlobalValueData::Load {
                base: definition,
                offset: (VMMemoryDefinition::CURRENT_LENGTH_OFFSET as i32).into(),
                global_type: types::I64,
                flags: vm_flags(),
            });
            (HeapStyle::Dynamic { bound_gv }, types::I64)
        } else {
            (HeapStyle::Static { bound: HEAP_RESERVATION }, types::I32)
        };
        Ok(self.heaps.push(HeapData {
            base,
            min_size: ty.minimum.saturating_mul(page_size),
            max_size: ty.maximum.map(|m| m.saturating_mul(page_size)),
            offset_guard_size: HEAP_GUARD,
            style,
            index_type,
            memory_type: None,
            page_size_log2: ty.page_size_log2,
        }))
    }

    fn make_indirect_sig(&mut self, func: &mut ir::Function, index: TypeIndex) -> WasmResult<ir::SigRef> {
        let ty = &self.module.meta.types[index.as_u32() as usize];
        Ok(func.import_signature(wasm_signature(ty)))
    }

    fn make_direct_func(&mut self, func: &mut ir::Function, index: FuncIndex) -> WasmResult<ir::FuncRef> {
        let meta = self.module.meta;
        let ty = &meta.types[meta.func_types[index.as_u32() as usize] as usize];
        let signature = func.import_signature(wasm_signature(ty));
        // Imported functions are called through their funcref (see `translate_call`); the name
        // only matters for defined ones, which are symbols in the same object.
        let user_index = if self.is_imported_func(index) {
            u32::MAX
        } else {
            self.module.defined_func_ids[(index.as_u32() - self.num_imported_funcs()) as usize]
        };
        let name = func.declare_imported_user_function(UserExternalName::new(0, user_index));
        Ok(func.import_function(ir::ExtFuncData { name: ir::ExternalName::user(name), signature, colocated: true }))
    }

    fn translate_call(
        &mut self,
        builder: &mut FunctionBuilder,
        callee_index: FuncIndex,
        callee: ir::FuncRef,
        call_args: &[ir::Value],
    ) -> WasmResult<ir::Inst> {
        let (code, args) = self.direct_call_args(builder, callee_index, call_args);
        Ok(match code {
            Some(code) => {
                let sig = builder.func.dfg.ext_funcs[callee].signature;
                builder.ins().call_indirect(sig, code, &args)
            }
            None => builder.ins().call(callee, &args),
        })
    }

    fn translate_call_indirect(
        &mut self,
        builder: &mut FunctionBuilder,
        table_index: TableIndex,
        sig_index: TypeIndex,
        sig_ref: ir::SigRef,
        callee: ir::Value,
        call_args: &[ir::Value],
    ) -> WasmResult<Option<ir::Inst>> {
        let funcref = self.checked_funcref(builder, table_index, sig_index, callee);
        let (code, args) = Self::funcref_call_args(builder, funcref, call_args);
        Ok(Some(builder.ins().call_indirect(sig_ref, code, &args)))
    }

    fn translate_return_call(
        &mut self,
        builder: &mut FunctionBuilder,
        callee_index: FuncIndex,
        callee: ir::FuncRef,
        call_args: &[ir::Value],
    ) -> WasmResult<()> {
        let (code, args) = self.direct_call_args(builder, callee_index, call_args);
        match code {
            Some(code) => {
                let sig = builder.func.dfg.ext_funcs[callee].signature;
                builder.ins().return_call_indirect(sig, code, &args);
            }
            None => {
                builder.ins().return_call(callee, &args);
            }
        }
        Ok(())
    }

    fn translate_return_call_indirect(
        &mut self,
        builder: &mut FunctionBuilder,
        table_index: TableIndex,
        sig_index: TypeIndex,
        sig_ref: ir::SigRef,
        callee: ir::Value,
        call_args: &[ir::Value],
    ) -> WasmResult<()> {
        let funcref = self.checked_funcref(builder, table_index, sig_index, callee);
        let (code, args) = Self::funcref_call_args(builder, funcref, call_args);
        builder.ins().return_call_indirect(sig_ref, code, &args);
        Ok(())
    }

    fn translate_return_call_ref(
        &mut self,
        builder: &mut FunctionBuilder,
        sig_ref: ir::SigRef,
        callee: ir::Value,
        call_args: &[ir::Value],
    ) -> WasmResult<()> {
        builder.ins().trapz(callee, NULL_FUNCTION_REFERENCE);
        let (code, args) = Self::funcref_call_args(builder, callee, call_args);
        builder.ins().return_call_indirect(sig_ref, code, &args);
        Ok(())
    }

    fn translate_call_ref(
        &mut self,
        builder: &mut FunctionBuilder,
        sig_ref: ir::SigRef,
        callee: ir::Value,
        call_args: &[ir::Value],
    ) -> WasmResult<ir::Inst> {
        builder.ins().trapz(callee, NULL_FUNCTION_REFERENCE);
        let (code, args) = Self::funcref_call_args(builder, callee, call_args);
        Ok(builder.ins().call_indirect(sig_ref, code, &args))
    }

    fn translate_memory_grow(
        &mut self,
        mut pos: FuncCursor,
        index: MemoryIndex,
        _heap: Heap,
        val: ir::Value,
    ) -> WasmResult<ir::Value> {
        let memory = pos.ins().iconst(types::I32, index.as_u32() as i64);
        let delta = Self::to_i64(&mut pos, val);
        let old = self.call_libcall(&mut pos, Libcall::memory_grow, &[memory, delta]).unwrap();
        Ok(if self.memory_type(index).memory64 { old } else { pos.ins().ireduce(types::I32, old) })
    }

    fn translate_memory_size(&mut self, mut pos: FuncCursor, index: MemoryIndex, _heap: Heap) -> WasmResult<ir::Value> {
        let ty = self.memory_type(index);
        let vmctx = Self::vmctx_value(pos.func);
        let offset = self.offsets().memory(index.as_u32()) + VMMemoryImport::DEFINITION_OFFSET;
        let definition = pos.ins().load(types::I64, vm_readonly(), vmctx, offset as i32);
        let bytes =
            pos.ins().load(types::I64, vm_flags(), definition, VMMemoryDefinition::CURRENT_LENGTH_OFFSET as i32);
        let pages = pos.ins().ushr_imm(bytes, ty.page_size_log2 as i64);
        Ok(if ty.memory64 { pages } else { pos.ins().ireduce(types::I32, pages) })
    }

    fn translate_memory_copy(
        &mut self,
        mut pos: FuncCursor,
        src_index: MemoryIndex,
        _src_heap: Heap,
        dst_index: MemoryIndex,
        _dst_heap: Heap,
        dst: ir::Value,
        src: ir::Value,
        len: ir::Value,
    ) -> WasmResult<()> {
        let dst_mem = pos.ins().iconst(types::I32, dst_index.as_u32() as i64);
        let src_mem = pos.ins().iconst(types::I32, src_index.as_u32() as i64);
        let dst = Self::to_i64(&mut pos, dst);
        let src = Self::to_i64(&mut pos, src);
        let len = Self::to_i64(&mut pos, len);
        self.call_libcall(&mut pos, Libcall::memory_copy, &[dst_mem, src_mem, dst, src, len]);
        Ok(())
    }

    fn translate_memory_fill(
        &mut self,
        mut pos: FuncCursor,
        index: MemoryIndex,
        _heap: Heap,
        dst: ir::Value,
        val: ir::Value,
        len: ir::Value,
    ) -> WasmResult<()> {
        let memory = pos.ins().iconst(types::I32, index.as_u32() as i64);
        let dst = Self::to_i64(&mut pos, dst);
        let len = Self::to_i64(&mut pos, len);
        self.call_libcall(&mut pos, Libcall::memory_fill, &[memory, dst, val, len]);
        Ok(())
    }

    fn translate_memory_init(
        &mut self,
        mut pos: FuncCursor,
        index: MemoryIndex,
        _heap: Heap,
        seg_index: u32,
        dst: ir::Value,
        src: ir::Value,
        len: ir::Value,
    ) -> WasmResult<()> {
        let memory = pos.ins().iconst(types::I32, index.as_u32() as i64);
        let segment = pos.ins().iconst(types::I32, seg_index as i64);
        let dst = Self::to_i64(&mut pos, dst);
        self.call_libcall(&mut pos, Libcall::memory_init, &[memory, segment, dst, src, len]);
        Ok(())
    }

    fn translate_data_drop(&mut self, mut pos: FuncCursor, seg_index: u32) -> WasmResult<()> {
        let segment = pos.ins().iconst(types::I32, seg_index as i64);
        self.call_libcall(&mut pos, Libcall::data_drop, &[segment]);
        Ok(())
    }

    fn translate_table_size(&mut self, mut pos: FuncCursor, index: TableIndex) -> WasmResult<ir::Value> {
        let vmctx = Self::vmctx_value(pos.func);
        let def = pos.ins().load(types::I64, vm_readonly(), vmctx, self.offsets().table(index.as_u32()) as i32);
        let len = pos.ins().load(types::I64, vm_flags(), def, VMTableDefinition::CURRENT_ELEMENTS_OFFSET as i32);
        Ok(if self.is_table64(index) { len } else { pos.ins().ireduce(types::I32, len) })
    }

    fn translate_table_grow(
        &mut self,
        mut pos: FuncCursor,
        table_index: TableIndex,
        delta: ir::Value,
        init_value: ir::Value,
    ) -> WasmResult<ir::Value> {
        let table = pos.ins().iconst(types::I32, table_index.as_u32() as i64);
        let delta = Self::to_i64(&mut pos, delta);
        let old = self.call_libcall(&mut pos, Libcall::table_grow, &[table, delta, init_value]).unwrap();
        Ok(if self.is_table64(table_index) { old } else { pos.ins().ireduce(types::I32, old) })
    }

    fn translate_table_get(
        &mut self,
        builder: &mut FunctionBuilder,
        table_index: TableIndex,
        index: ir::Value,
    ) -> WasmResult<ir::Value> {
        let addr = self.table_element_addr(builder, table_index, index, TABLE_ACCESS_OUT_OF_BOUNDS);
        Ok(builder.ins().load(types::I64, vm_flags(), addr, 0))
    }

    fn translate_table_set(
        &mut self,
        builder: &mut FunctionBuilder,
        table_index: TableIndex,
        value: ir::Value,
        index: ir::Value,
    ) -> WasmResult<()> {
        let addr = self.table_element_addr(builder, table_index, index, TABLE_ACCESS_OUT_OF_BOUNDS);
        builder.ins().store(vm_flags(), value, addr, 0);
        Ok(())
    }

    fn translate_table_copy(
        &mut self,
        mut pos: FuncCursor,
        dst_table_index: TableIndex,
        src_table_index: TableIndex,
        dst: ir::Value,
        src: ir::Value,
        len: ir::Value,
    ) -> WasmResult<()> {
        let dst_table = pos.ins().iconst(types::I32, dst_table_index.as_u32() as i64);
        let src_table = pos.ins().iconst(types::I32, src_table_index.as_u32() as i64);
        let [dst, src, len] = [dst, src, len].map(|v| Self::to_i64(&mut pos, v));
        self.call_libcall(&mut pos, Libcall::table_copy, &[dst_table, src_table, dst, src, len]);
        Ok(())
    }

    fn translate_table_fill(
        &mut self,
        mut pos: FuncCursor,
        table_index: TableIndex,
        dst: ir::Value,
        val: ir::Value,
        len: ir::Value,
    ) -> WasmResult<()> {
        let table = pos.ins().iconst(types::I32, table_index.as_u32() as i64);
        let [dst, len] = [dst, len].map(|v| Self::to_i64(&mut pos, v));
        self.call_libcall(&mut pos, Libcall::table_fill, &[table, dst, val, len]);
        Ok(())
    }

    fn translate_table_init(
        &mut self,
        mut pos: FuncCursor,
        seg_index: u32,
        table_index: TableIndex,
        dst: ir::Value,
        src: ir::Value,
        len: ir::Value,
    ) -> WasmResult<()> {
        let table = pos.ins().iconst(types::I32, table_index.as_u32() as i64);
        let segment = pos.ins().iconst(types::I32, seg_index as i64);
        let [dst, src, len] = [dst, src, len].map(|v| Self::to_i64(&mut pos, v));
        self.call_libcall(&mut pos, Libcall::table_init, &[table, segment, dst, src, len]);
        Ok(())
    }

    fn translate_elem_drop(&mut self, mut pos: FuncCursor, seg_index: u32) -> WasmResult<()> {
        let segment = pos.ins().iconst(types::I32, seg_index as i64);
        self.call_libcall(&mut pos, Libcall::elem_drop, &[segment]);
        Ok(())
    }

    fn translate_ref_null(&mut self, mut pos: FuncCursor, _ty: WasmHeapType) -> WasmResult<ir::Value> {
        Ok(pos.ins().iconst(types::I64, 0))
    }

    fn translate_ref_is_null(&mut self, mut pos: FuncCursor, value: ir::Value) -> WasmResult<ir::Value> {
        let is_null = pos.ins().icmp_imm(IntCC::Equal, value, 0);
        Ok(pos.ins().uextend(types::I32, is_null))
    }

    fn translate_ref_func(&mut self, mut pos: FuncCursor, func_index: FuncIndex) -> WasmResult<ir::Value> {
        let vmctx = Self::vmctx_value(pos.func);
        Ok(pos.ins().iadd_imm(vmctx, self.offsets().func_ref(func_index.as_u32()) as i64))
    }

    fn translate_custom_global_get(
        &mut self,
        _builder: &mut FunctionBuilder,
        _global_index: GlobalIndex,
    ) -> WasmResult<ir::Value> {
        Err(WasmError::Unsupported("custom globals".to_string()))
    }

    fn translate_custom_global_set(
        &mut self,
        _builder: &mut FunctionBuilder,
        _global_index: GlobalIndex,
        _val: ir::Value,
    ) -> WasmResult<()> {
        Err(WasmError::Unsupported("custom globals".to_string()))
    }

    fn translate_atomic_wait(
        &mut self,
        mut pos: FuncCursor,
        index: MemoryIndex,
        _heap: Heap,
        addr: ir::Value,
        expected: ir::Value,
        timeout: ir::Value,
    ) -> WasmResult<ir::Value> {
        let memory = pos.ins().iconst(types::I32, index.as_u32() as i64);
        let addr = Self::to_i64(&mut pos, addr);
        let libcall = if pos.func.dfg.value_type(expected) == types::I64 {
            Libcall::memory_atomic_wait64
        } else {
            Libcall::memory_atomic_wait32
        };
        Ok(self.call_libcall(&mut pos, libcall, &[memory, addr, expected, timeout]).unwrap())
    }

    fn translate_atomic_notify(
        &mut self,
        mut pos: FuncCursor,
        index: MemoryIndex,
        _heap: Heap,
        addr: ir::Value,
        count: ir::Value,
    ) -> WasmResult<ir::Value> {
        let memory = pos.ins().iconst(types::I32, index.as_u32() as i64);
        let addr = Self::to_i64(&mut pos, addr);
        Ok(self.call_libcall(&mut pos, Libcall::memory_atomic_notify, &[memory, addr, count]).unwrap())
    }

    fn translate_ref_i31(&mut self, _pos: FuncCursor, _val: ir::Value) -> WasmResult<ir::Value> {
        Err(WasmError::Unsupported("i31 references (GC)".to_string()))
    }

    fn translate_i31_get_s(&mut self, _pos: FuncCursor, _i31ref: ir::Value) -> WasmResult<ir::Value> {
        Err(WasmError::Unsupported("i31 references (GC)".to_string()))
    }

    fn translate_i31_get_u(&mut self, _pos: FuncCursor, _i31ref: ir::Value) -> WasmResult<ir::Value> {
        Err(WasmError::Unsupported("i31 references (GC)".to_string()))
    }

    fn is_x86(&self) -> bool {
        true
    }

    fn before_translate_function(
        &mut self,
        builder: &mut FunctionBuilder,
        _state: &FuncTranslationState,
    ) -> WasmResult<()> {
        if self.makes_calls {
            self.check_interrupt(builder);
        }
        Ok(())
    }

    fn before_translate_operator(
        &mut self,
        op: &wasmparser::Operator,
        builder: &mut FunctionBuilder,
        state: &FuncTranslationState,
    ) -> WasmResult<()> {
        use wasmparser::Operator as Op;
        self.insts_before_operator = builder.func.dfg.num_insts();
        if !self.module.fuel || !state.reachable() {
            return Ok(());
        }
        // Every operator costs one unit, except the structural ones that emit no code.
        if !matches!(op, Op::Nop | Op::Drop | Op::Block { .. } | Op::Loop { .. } | Op::End | Op::Else) {
            self.fuel_pending += 1;
        }
        let ends_a_block = is_call(op)
            || matches!(
                op,
                Op::Block { .. }
                    | Op::Loop { .. }
                    | Op::If { .. }
                    | Op::Else
                    | Op::End
                    | Op::Br { .. }
                    | Op::BrIf { .. }
                    | Op::BrTable { .. }
                    | Op::BrOnNull { .. }
                    | Op::BrOnNonNull { .. }
                    | Op::Return
                    | Op::Unreachable
            );
        if ends_a_block {
            self.charge_fuel(builder);
        }
        Ok(())
    }

    fn after_translate_operator(
        &mut self,
        op: &wasmparser::Operator,
        builder: &mut FunctionBuilder,
        state: &FuncTranslationState,
    ) -> WasmResult<()> {
        self.mark_stored_page(op, builder, state)
    }

    fn translate_loop_header(&mut self, builder: &mut FunctionBuilder) -> WasmResult<()> {
        self.check_interrupt(builder);
        Ok(())
    }
}
