//! Linear-memory operators: loads, stores (each marking its page dirty), the SIMD load and
//! store forms, and the threads proposal's atomics. Addresses and their checks come from
//! [`FuncEnv::heap_address`].

use cranelift_codegen::ir::{self, types, AtomicRmwOp, InstBuilder};
use cranelift_frontend::FunctionBuilder;
use wasmparser::{MemArg, Operator};

use super::{pop1, pop2, pop3, to_i8x16};
use crate::func_env::{memory_index, FuncEnv};

/// How a load reads memory.
#[derive(Clone, Copy)]
enum Load {
    /// The whole value, of this type.
    Plain(ir::Type),
    /// `bytes` bytes, zero- (`signed: false`) or sign-extended to `ty`.
    Extend { ty: ir::Type, bytes: u32, signed: bool },
    /// 8 bytes widened lane-wise into a vector of this type (`v128.load8x8_s` and friends).
    Widen { ty: ir::Type, signed: bool },
    /// A `lane`-typed scalar, copied to every lane.
    Splat(ir::Type),
    /// A scalar into lane 0 of an otherwise zero vector.
    Zero(ir::Type),
}

/// Translates `op` if it accesses linear memory, returning whether it did.
pub(super) fn translate(
    op: &Operator<'_>,
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    stack: &mut Vec<ir::Value>,
) -> bool {
    use types::*;
    use Operator as O;
    let extend = |ty, bytes, signed| Load::Extend { ty, bytes, signed };
    let load = match *op {
        O::I32Load { memarg } => Some((memarg, Load::Plain(I32))),
        O::I64Load { memarg } => Some((memarg, Load::Plain(I64))),
        O::F32Load { memarg } => Some((memarg, Load::Plain(F32))),
        O::F64Load { memarg } => Some((memarg, Load::Plain(F64))),
        O::I32Load8S { memarg } => Some((memarg, extend(I32, 1, true))),
        O::I32Load8U { memarg } => Some((memarg, extend(I32, 1, false))),
        O::I32Load16S { memarg } => Some((memarg, extend(I32, 2, true))),
        O::I32Load16U { memarg } => Some((memarg, extend(I32, 2, false))),
        O::I64Load8S { memarg } => Some((memarg, extend(I64, 1, true))),
        O::I64Load8U { memarg } => Some((memarg, extend(I64, 1, false))),
        O::I64Load16S { memarg } => Some((memarg, extend(I64, 2, true))),
        O::I64Load16U { memarg } => Some((memarg, extend(I64, 2, false))),
        O::I64Load32S { memarg } => Some((memarg, extend(I64, 4, true))),
        O::I64Load32U { memarg } => Some((memarg, extend(I64, 4, false))),
        O::V128Load { memarg } => Some((memarg, Load::Plain(I8X16))),
        O::V128Load8x8S { memarg } => Some((memarg, Load::Widen { ty: I16X8, signed: true })),
        O::V128Load8x8U { memarg } => Some((memarg, Load::Widen { ty: I16X8, signed: false })),
        O::V128Load16x4S { memarg } => Some((memarg, Load::Widen { ty: I32X4, signed: true })),
        O::V128Load16x4U { memarg } => Some((memarg, Load::Widen { ty: I32X4, signed: false })),
        O::V128Load32x2S { memarg } => Some((memarg, Load::Widen { ty: I64X2, signed: true })),
        O::V128Load32x2U { memarg } => Some((memarg, Load::Widen { ty: I64X2, signed: false })),
        O::V128Load8Splat { memarg } => Some((memarg, Load::Splat(I8))),
        O::V128Load16Splat { memarg } => Some((memarg, Load::Splat(I16))),
        O::V128Load32Splat { memarg } => Some((memarg, Load::Splat(I32))),
        O::V128Load64Splat { memarg } => Some((memarg, Load::Splat(I64))),
        O::V128Load32Zero { memarg } => Some((memarg, Load::Zero(I32))),
        O::V128Load64Zero { memarg } => Some((memarg, Load::Zero(I64))),
        _ => None,
    };
    if let Some((memarg, kind)) = load {
        let index = pop1(stack);
        let value = emit_load(builder, env, &memarg, index, kind);
        stack.push(value);
        return true;
    }
    let store = match *op {
        O::I32Store { memarg }
        | O::I64Store { memarg }
        | O::F32Store { memarg }
        | O::F64Store { memarg }
        | O::V128Store { memarg } => Some((memarg, None)),
        O::I32Store8 { memarg } | O::I64Store8 { memarg } => Some((memarg, Some(I8))),
        O::I32Store16 { memarg } | O::I64Store16 { memarg } => Some((memarg, Some(I16))),
        O::I64Store32 { memarg } => Some((memarg, Some(I32))),
        _ => None,
    };
    if let Some((memarg, narrow)) = store {
        let (index, value) = pop2(stack);
        let value = match narrow {
            Some(ty) => builder.ins().ireduce(ty, value),
            None => value,
        };
        emit_store(builder, env, &memarg, index, value);
        return true;
    }
    let lane = match *op {
        O::V128Load8Lane { memarg, lane } => Some((memarg, lane, I8X16, false)),
        O::V128Load16Lane { memarg, lane } => Some((memarg, lane, I16X8, false)),
        O::V128Load32Lane { memarg, lane } => Some((memarg, lane, I32X4, false)),
        O::V128Load64Lane { memarg, lane } => Some((memarg, lane, I64X2, false)),
        O::V128Store8Lane { memarg, lane } => Some((memarg, lane, I8X16, true)),
        O::V128Store16Lane { memarg, lane } => Some((memarg, lane, I16X8, true)),
        O::V128Store32Lane { memarg, lane } => Some((memarg, lane, I32X4, true)),
        O::V128Store64Lane { memarg, lane } => Some((memarg, lane, I64X2, true)),
        _ => None,
    };
    if let Some((memarg, lane, vector_ty, is_store)) = lane {
        let (index, vector) = pop2(stack);
        let vector = super::bitcast(builder, vector_ty, vector);
        if is_store {
            let value = builder.ins().extractlane(vector, lane);
            emit_store(builder, env, &memarg, index, value);
        } else {
            let value = emit_load(builder, env, &memarg, index, Load::Plain(vector_ty.lane_type()));
            let vector = builder.ins().insertlane(vector, value, lane);
            stack.push(to_i8x16(builder, vector));
        }
        return true;
    }
    translate_atomic(op, builder, env, stack)
}

/// Emits a load of `kind` at `index` and returns the value (vectors as `I8X16`).
fn emit_load(
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    memarg: &MemArg,
    index: ir::Value,
    kind: Load,
) -> ir::Value {
    let size = match kind {
        Load::Plain(ty) | Load::Splat(ty) | Load::Zero(ty) => ty.bytes(),
        Load::Extend { bytes, .. } => bytes,
        Load::Widen { .. } => 8,
    };
    let (addr, offset) = env.heap_address(builder, memarg, index, size, false);
    let flags = FuncEnv::heap_flags(builder);
    let ins = builder.ins();
    let value = match kind {
        Load::Plain(ty) => ins.load(ty, flags, addr, offset),
        Load::Extend { ty, bytes: 1, signed: true } => ins.sload8(ty, flags, addr, offset),
        Load::Extend { ty, bytes: 1, signed: false } => ins.uload8(ty, flags, addr, offset),
        Load::Extend { ty, bytes: 2, signed: true } => ins.sload16(ty, flags, addr, offset),
        Load::Extend { ty, bytes: 2, signed: false } => ins.uload16(ty, flags, addr, offset),
        Load::Extend { signed: true, .. } => ins.sload32(flags, addr, offset),
        Load::Extend { signed: false, .. } => ins.uload32(flags, addr, offset),
        Load::Widen { ty, signed } => match (ty, signed) {
            (types::I16X8, true) => ins.sload8x8(flags, addr, offset),
            (types::I16X8, false) => ins.uload8x8(flags, addr, offset),
            (types::I32X4, true) => ins.sload16x4(flags, addr, offset),
            (types::I32X4, false) => ins.uload16x4(flags, addr, offset),
            (_, true) => ins.sload32x2(flags, addr, offset),
            (_, false) => ins.uload32x2(flags, addr, offset),
        },
        Load::Splat(ty) => {
            let scalar = ins.load(ty, flags, addr, offset);
            let vector_ty = ty.by(128 / ty.bits()).expect("a 128-bit vector type");
            builder.ins().splat(vector_ty, scalar)
        }
        Load::Zero(ty) => {
            let scalar = ins.load(ty, flags, addr, offset);
            let vector_ty = ty.by(128 / ty.bits()).expect("a 128-bit vector type");
            builder.ins().scalar_to_vector(vector_ty, scalar)
        }
    };
    if builder.func.dfg.value_type(value).is_vector() {
        to_i8x16(builder, value)
    } else {
        value
    }
}

/// Emits a store of `value` (already narrowed to the bytes to store) at `index`, and marks
/// the page it wrote.
fn emit_store(
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    memarg: &MemArg,
    index: ir::Value,
    value: ir::Value,
) {
    let size = builder.func.dfg.value_type(value).bytes();
    let (addr, offset) = env.heap_address(builder, memarg, index, size, false);
    let flags = FuncEnv::heap_flags(builder);
    builder.ins().store(flags, value, addr, offset);
    env.mark_store(builder, memarg, index, size, (addr, offset));
}

/// The address of an atomic access: checked for alignment and bounds, offset folded in
/// (atomic instructions take none).
fn atomic_address(
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    memarg: &MemArg,
    index: ir::Value,
    access: ir::Type,
) -> ir::Value {
    let (addr, offset) = env.heap_address(builder, memarg, index, access.bytes(), true);
    if offset == 0 {
        addr
    } else {
        builder.ins().iadd_imm_s(addr, i64::from(offset))
    }
}

/// The threads proposal's operators.
fn translate_atomic(
    op: &Operator<'_>,
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    stack: &mut Vec<ir::Value>,
) -> bool {
    use types::*;
    use Operator as O;
    // (memarg, value type, bytes accessed)
    let (memarg, ty, access) = match *op {
        O::AtomicFence { .. } => {
            builder.ins().fence();
            return true;
        }
        O::MemoryAtomicNotify { memarg } => {
            let (index, count) = pop2(stack);
            let woken = env.atomic_notify(builder, &memarg, index, count);
            stack.push(woken);
            return true;
        }
        O::MemoryAtomicWait32 { memarg } | O::MemoryAtomicWait64 { memarg } => {
            let (index, expected, timeout) = pop3(stack);
            let result = env.atomic_wait(builder, &memarg, [index, expected, timeout]);
            stack.push(result);
            return true;
        }
        O::I32AtomicLoad { memarg }
        | O::I32AtomicStore { memarg }
        | O::I32AtomicRmwAdd { memarg }
        | O::I32AtomicRmwSub { memarg }
        | O::I32AtomicRmwAnd { memarg }
        | O::I32AtomicRmwOr { memarg }
        | O::I32AtomicRmwXor { memarg }
        | O::I32AtomicRmwXchg { memarg }
        | O::I32AtomicRmwCmpxchg { memarg } => (memarg, I32, I32),
        O::I64AtomicLoad { memarg }
        | O::I64AtomicStore { memarg }
        | O::I64AtomicRmwAdd { memarg }
        | O::I64AtomicRmwSub { memarg }
        | O::I64AtomicRmwAnd { memarg }
        | O::I64AtomicRmwOr { memarg }
        | O::I64AtomicRmwXor { memarg }
        | O::I64AtomicRmwXchg { memarg }
        | O::I64AtomicRmwCmpxchg { memarg } => (memarg, I64, I64),
        O::I32AtomicLoad8U { memarg }
        | O::I32AtomicStore8 { memarg }
        | O::I32AtomicRmw8AddU { memarg }
        | O::I32AtomicRmw8SubU { memarg }
        | O::I32AtomicRmw8AndU { memarg }
        | O::I32AtomicRmw8OrU { memarg }
        | O::I32AtomicRmw8XorU { memarg }
        | O::I32AtomicRmw8XchgU { memarg }
        | O::I32AtomicRmw8CmpxchgU { memarg } => (memarg, I32, I8),
        O::I32AtomicLoad16U { memarg }
        | O::I32AtomicStore16 { memarg }
        | O::I32AtomicRmw16AddU { memarg }
        | O::I32AtomicRmw16SubU { memarg }
        | O::I32AtomicRmw16AndU { memarg }
        | O::I32AtomicRmw16OrU { memarg }
        | O::I32AtomicRmw16XorU { memarg }
        | O::I32AtomicRmw16XchgU { memarg }
        | O::I32AtomicRmw16CmpxchgU { memarg } => (memarg, I32, I16),
        O::I64AtomicLoad8U { memarg }
        | O::I64AtomicStore8 { memarg }
        | O::I64AtomicRmw8AddU { memarg }
        | O::I64AtomicRmw8SubU { memarg }
        | O::I64AtomicRmw8AndU { memarg }
        | O::I64AtomicRmw8OrU { memarg }
        | O::I64AtomicRmw8XorU { memarg }
        | O::I64AtomicRmw8XchgU { memarg }
        | O::I64AtomicRmw8CmpxchgU { memarg } => (memarg, I64, I8),
        O::I64AtomicLoad16U { memarg }
        | O::I64AtomicStore16 { memarg }
        | O::I64AtomicRmw16AddU { memarg }
        | O::I64AtomicRmw16SubU { memarg }
        | O::I64AtomicRmw16AndU { memarg }
        | O::I64AtomicRmw16OrU { memarg }
        | O::I64AtomicRmw16XorU { memarg }
        | O::I64AtomicRmw16XchgU { memarg }
        | O::I64AtomicRmw16CmpxchgU { memarg } => (memarg, I64, I16),
        O::I64AtomicLoad32U { memarg }
        | O::I64AtomicStore32 { memarg }
        | O::I64AtomicRmw32AddU { memarg }
        | O::I64AtomicRmw32SubU { memarg }
        | O::I64AtomicRmw32AndU { memarg }
        | O::I64AtomicRmw32OrU { memarg }
        | O::I64AtomicRmw32XorU { memarg }
        | O::I64AtomicRmw32XchgU { memarg }
        | O::I64AtomicRmw32CmpxchgU { memarg } => (memarg, I64, I32),
        _ => return false,
    };
    let narrow = |builder: &mut FunctionBuilder<'_>, value| {
        if access == ty {
            value
        } else {
            builder.ins().ireduce(access, value)
        }
    };
    let widen = |builder: &mut FunctionBuilder<'_>, value| {
        if access == ty {
            value
        } else {
            builder.ins().uextend(ty, value)
        }
    };
    let flags = FuncEnv::heap_flags(builder);
    let rmw = match op {
        O::I32AtomicLoad { .. }
        | O::I64AtomicLoad { .. }
        | O::I32AtomicLoad8U { .. }
        | O::I32AtomicLoad16U { .. }
        | O::I64AtomicLoad8U { .. }
        | O::I64AtomicLoad16U { .. }
        | O::I64AtomicLoad32U { .. } => {
            let index = pop1(stack);
            let addr = atomic_address(builder, env, &memarg, index, access);
            let value = builder.ins().atomic_load(access, flags, addr);
            stack.push(widen(builder, value));
            return true;
        }
        O::I32AtomicStore { .. }
        | O::I64AtomicStore { .. }
        | O::I32AtomicStore8 { .. }
        | O::I32AtomicStore16 { .. }
        | O::I64AtomicStore8 { .. }
        | O::I64AtomicStore16 { .. }
        | O::I64AtomicStore32 { .. } => {
            let (index, value) = pop2(stack);
            let value = narrow(builder, value);
            let addr = atomic_address(builder, env, &memarg, index, access);
            builder.ins().atomic_store(flags, value, addr);
            env.mark_stored(builder, memory_index(&memarg), addr, 0);
            return true;
        }
        O::I32AtomicRmwCmpxchg { .. }
        | O::I64AtomicRmwCmpxchg { .. }
        | O::I32AtomicRmw8CmpxchgU { .. }
        | O::I32AtomicRmw16CmpxchgU { .. }
        | O::I64AtomicRmw8CmpxchgU { .. }
        | O::I64AtomicRmw16CmpxchgU { .. }
        | O::I64AtomicRmw32CmpxchgU { .. } => {
            let (index, expected, replacement) = pop3(stack);
            let expected = narrow(builder, expected);
            let replacement = narrow(builder, replacement);
            let addr = atomic_address(builder, env, &memarg, index, access);
            let old = builder.ins().atomic_cas(flags, addr, expected, replacement);
            env.mark_stored(builder, memory_index(&memarg), addr, 0);
            stack.push(widen(builder, old));
            return true;
        }
        O::I32AtomicRmwAdd { .. }
        | O::I64AtomicRmwAdd { .. }
        | O::I32AtomicRmw8AddU { .. }
        | O::I32AtomicRmw16AddU { .. }
        | O::I64AtomicRmw8AddU { .. }
        | O::I64AtomicRmw16AddU { .. }
        | O::I64AtomicRmw32AddU { .. } => AtomicRmwOp::Add,
        O::I32AtomicRmwSub { .. }
        | O::I64AtomicRmwSub { .. }
        | O::I32AtomicRmw8SubU { .. }
        | O::I32AtomicRmw16SubU { .. }
        | O::I64AtomicRmw8SubU { .. }
        | O::I64AtomicRmw16SubU { .. }
        | O::I64AtomicRmw32SubU { .. } => AtomicRmwOp::Sub,
        O::I32AtomicRmwAnd { .. }
        | O::I64AtomicRmwAnd { .. }
        | O::I32AtomicRmw8AndU { .. }
        | O::I32AtomicRmw16AndU { .. }
        | O::I64AtomicRmw8AndU { .. }
        | O::I64AtomicRmw16AndU { .. }
        | O::I64AtomicRmw32AndU { .. } => AtomicRmwOp::And,
        O::I32AtomicRmwOr { .. }
        | O::I64AtomicRmwOr { .. }
        | O::I32AtomicRmw8OrU { .. }
        | O::I32AtomicRmw16OrU { .. }
        | O::I64AtomicRmw8OrU { .. }
        | O::I64AtomicRmw16OrU { .. }
        | O::I64AtomicRmw32OrU { .. } => AtomicRmwOp::Or,
        O::I32AtomicRmwXor { .. }
        | O::I64AtomicRmwXor { .. }
        | O::I32AtomicRmw8XorU { .. }
        | O::I32AtomicRmw16XorU { .. }
        | O::I64AtomicRmw8XorU { .. }
        | O::I64AtomicRmw16XorU { .. }
        | O::I64AtomicRmw32XorU { .. } => AtomicRmwOp::Xor,
        _ => AtomicRmwOp::Xchg,
    };
    let (index, operand) = pop2(stack);
    let operand = narrow(builder, operand);
    let addr = atomic_address(builder, env, &memarg, index, access);
    let old = builder.ins().atomic_rmw(access, flags, rmw, addr, operand);
    env.mark_stored(builder, memory_index(&memarg), addr, 0);
    stack.push(widen(builder, old));
    true
}
