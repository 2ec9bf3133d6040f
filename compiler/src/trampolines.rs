//! Trampolines between the host's calling convention and wasm's.
//!
//! - The *array* trampoline of a type lets the runtime call any wasm function of that type with
//!   one System V signature: arguments and results travel through a `ValRaw` array.
//! - The *host* trampoline of a type is what an imported function's funcref points to when the
//!   import is satisfied by the host: it has the wasm signature and forwards to the host
//!   function through a `ValRaw` array on its own stack.

use cranelift_codegen::ir::{
    self, types, AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, UserFuncName,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use kiln_abi::{FuncType, VMHostFuncContext, VAL_RAW_SIZE};

use crate::func_env::{ir_type, wasm_signature};

/// `extern "C" fn(callee_vmctx, caller_vmctx, values: *mut ValRaw, code)`.
pub fn array_trampoline_signature() -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params.extend([AbiParam::new(types::I64); 4]);
    sig
}

/// `extern "C" fn(host_ctx: *mut VMHostFuncContext, caller_vmctx, values: *mut ValRaw)`.
fn host_fn_signature() -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params.extend([AbiParam::new(types::I64); 3]);
    sig
}

fn values_flags() -> MemFlagsData {
    // The values array is 16-byte aligned and always valid.
    MemFlagsData::trusted()
}

/// Builds the array trampoline for `ty`.
pub fn build_array_trampoline(
    ty: &FuncType,
    name: UserFuncName,
    ctx: &mut FunctionBuilderContext,
    frontend: TargetFrontendConfig,
) -> ir::Function {
    let mut func = ir::Function::with_name_signature(name, array_trampoline_signature());
    let mut builder = FunctionBuilder::new(&mut func, ctx);
    let block = builder.create_block();
    builder.append_block_params_for_function_params(block);
    builder.switch_to_block(block);
    builder.seal_block(block);
    let &[callee_vmctx, caller_vmctx, values, code] = builder.block_params(block) else {
        unreachable!("array trampoline signature has four parameters")
    };
    let mut args = vec![callee_vmctx, caller_vmctx];
    for (i, &param) in ty.params.iter().enumerate() {
        let offset = (i as u32 * VAL_RAW_SIZE) as i32;
        args.push(builder.ins().load(ir_type(param), values_flags(), values, offset));
    }
    let sig = builder.import_signature(wasm_signature(ty));
    let call = builder.ins().call_indirect(sig, code, &args);
    let results = builder.inst_results(call).to_vec();
    for (i, result) in results.into_iter().enumerate() {
        let offset = (i as u32 * VAL_RAW_SIZE) as i32;
        builder.ins().store(values_flags(), result, values, offset);
    }
    builder.ins().return_(&[]);
    builder.finalize(frontend);
    func
}

/// Builds the host trampoline for `ty`.
pub fn build_host_trampoline(
    ty: &FuncType,
    name: UserFuncName,
    ctx: &mut FunctionBuilderContext,
    frontend: TargetFrontendConfig,
) -> ir::Function {
    let mut func = ir::Function::with_name_signature(name, wasm_signature(ty));
    let mut builder = FunctionBuilder::new(&mut func, ctx);
    let block = builder.create_block();
    builder.append_block_params_for_function_params(block);
    builder.switch_to_block(block);
    builder.seal_block(block);
    let params = builder.block_params(block).to_vec();
    let (host_ctx, caller_vmctx) = (params[0], params[1]);

    let slots = ty.params.len().max(ty.results.len()).max(1) as u32;
    let slot = builder.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        slots * VAL_RAW_SIZE,
        4, // 16-byte alignment
    ));
    for (i, &value) in params[2..].iter().enumerate() {
        builder.ins().stack_store(types::I64, value, slot, (i as u32 * VAL_RAW_SIZE) as i32);
    }
    let values = builder.ins().stack_addr(types::I64, slot, 0);
    let host_fn = builder.ins().load(
        types::I64,
        MemFlagsData::trusted().with_readonly(),
        host_ctx,
        VMHostFuncContext::HOST_FN_OFFSET as i32,
    );
    let sig = builder.import_signature(host_fn_signature());
    builder.ins().call_indirect(sig, host_fn, &[host_ctx, caller_vmctx, values]);
    let mut results = Vec::with_capacity(ty.results.len());
    for (i, &result) in ty.results.iter().enumerate() {
        results.push(builder.ins().stack_load(types::I64, ir_type(result), slot, (i as u32 * VAL_RAW_SIZE) as i32));
    }
    builder.ins().return_(&results);
    builder.finalize(frontend);
    func
}
