//! Scalar numeric operators: constants, integer and float arithmetic, comparisons and conversions.

use cranelift_codegen::ir::{
    self,
    condcodes::{FloatCC, IntCC},
    immediates::{Ieee32, Ieee64},
    types::{F32, F64, I128, I16, I32, I64, I8},
    InstBuilder, Value,
};
use cranelift_frontend::FunctionBuilder;
use wasmparser::Operator;

use super::{pop1, pop2};

/// Translates `op` if it is a scalar numeric operator, returning whether it did.
pub(super) fn translate(op: &Operator<'_>, builder: &mut FunctionBuilder<'_>, stack: &mut Vec<ir::Value>) -> bool {
    match *op {
        // Constants. `iconst` wants a narrow type's immediate zero-extended.
        Operator::I32Const { value } => stack.push(builder.ins().iconst(I32, i64::from(value.cast_unsigned()))),
        Operator::I64Const { value } => stack.push(builder.ins().iconst(I64, value)),
        Operator::F32Const { value } => stack.push(builder.ins().f32const(Ieee32::with_bits(value.bits()))),
        Operator::F64Const { value } => stack.push(builder.ins().f64const(Ieee64::with_bits(value.bits()))),

        // Integer tests and comparisons.
        Operator::I32Eqz | Operator::I64Eqz => unary(builder, stack, |b, x| {
            let is_zero = b.ins().icmp_imm_u(IntCC::Equal, x, 0);
            b.ins().uextend(I32, is_zero)
        }),
        Operator::I32Eq | Operator::I64Eq => icmp(builder, stack, IntCC::Equal),
        Operator::I32Ne | Operator::I64Ne => icmp(builder, stack, IntCC::NotEqual),
        Operator::I32LtS | Operator::I64LtS => icmp(builder, stack, IntCC::SignedLessThan),
        Operator::I32LtU | Operator::I64LtU => icmp(builder, stack, IntCC::UnsignedLessThan),
        Operator::I32GtS | Operator::I64GtS => icmp(builder, stack, IntCC::SignedGreaterThan),
        Operator::I32GtU | Operator::I64GtU => icmp(builder, stack, IntCC::UnsignedGreaterThan),
        Operator::I32LeS | Operator::I64LeS => icmp(builder, stack, IntCC::SignedLessThanOrEqual),
        Operator::I32LeU | Operator::I64LeU => icmp(builder, stack, IntCC::UnsignedLessThanOrEqual),
        Operator::I32GeS | Operator::I64GeS => icmp(builder, stack, IntCC::SignedGreaterThanOrEqual),
        Operator::I32GeU | Operator::I64GeU => icmp(builder, stack, IntCC::UnsignedGreaterThanOrEqual),

        // Float comparisons: all ordered (false on NaN) except `ne`, which is
        // true on NaN.
        Operator::F32Eq | Operator::F64Eq => fcmp(builder, stack, FloatCC::Equal),
        Operator::F32Ne | Operator::F64Ne => fcmp(builder, stack, FloatCC::NotEqual),
        Operator::F32Lt | Operator::F64Lt => fcmp(builder, stack, FloatCC::LessThan),
        Operator::F32Gt | Operator::F64Gt => fcmp(builder, stack, FloatCC::GreaterThan),
        Operator::F32Le | Operator::F64Le => fcmp(builder, stack, FloatCC::LessThanOrEqual),
        Operator::F32Ge | Operator::F64Ge => fcmp(builder, stack, FloatCC::GreaterThanOrEqual),

        // Integer arithmetic. CLIF's `clz`/`ctz` give the bit width for zero,
        // as wasm wants.
        Operator::I32Clz | Operator::I64Clz => unary(builder, stack, |b, x| b.ins().clz(x)),
        Operator::I32Ctz | Operator::I64Ctz => unary(builder, stack, |b, x| b.ins().ctz(x)),
        Operator::I32Popcnt | Operator::I64Popcnt => unary(builder, stack, |b, x| b.ins().popcnt(x)),
        Operator::I32Add | Operator::I64Add => binary(builder, stack, |b, x, y| b.ins().iadd(x, y)),
        Operator::I32Sub | Operator::I64Sub => binary(builder, stack, |b, x, y| b.ins().isub(x, y)),
        Operator::I32Mul | Operator::I64Mul => binary(builder, stack, |b, x, y| b.ins().imul(x, y)),
        // Division traps as wasm requires: all four on a zero divisor
        // (INTEGER_DIVISION_BY_ZERO), `sdiv` also on MIN / -1 (INTEGER_OVERFLOW).
        // `srem` of MIN % -1 is 0 without trapping.
        Operator::I32DivS | Operator::I64DivS => binary(builder, stack, |b, x, y| b.ins().sdiv(x, y)),
        Operator::I32DivU | Operator::I64DivU => binary(builder, stack, |b, x, y| b.ins().udiv(x, y)),
        Operator::I32RemS | Operator::I64RemS => binary(builder, stack, |b, x, y| b.ins().srem(x, y)),
        Operator::I32RemU | Operator::I64RemU => binary(builder, stack, |b, x, y| b.ins().urem(x, y)),
        Operator::I32And | Operator::I64And => binary(builder, stack, |b, x, y| b.ins().band(x, y)),
        Operator::I32Or | Operator::I64Or => binary(builder, stack, |b, x, y| b.ins().bor(x, y)),
        Operator::I32Xor | Operator::I64Xor => binary(builder, stack, |b, x, y| b.ins().bxor(x, y)),
        // CLIF masks shift counts to the operand width, as wasm does, and
        // rotates are modular by nature: no explicit masking.
        Operator::I32Shl | Operator::I64Shl => binary(builder, stack, |b, x, y| b.ins().ishl(x, y)),
        Operator::I32ShrS | Operator::I64ShrS => binary(builder, stack, |b, x, y| b.ins().sshr(x, y)),
        Operator::I32ShrU | Operator::I64ShrU => binary(builder, stack, |b, x, y| b.ins().ushr(x, y)),
        Operator::I32Rotl | Operator::I64Rotl => binary(builder, stack, |b, x, y| b.ins().rotl(x, y)),
        Operator::I32Rotr | Operator::I64Rotr => binary(builder, stack, |b, x, y| b.ins().rotr(x, y)),

        // Float arithmetic. `fabs`, `fneg` and `fcopysign` are bitwise, and
        // `fmin`/`fmax` follow wasm: NaN propagates and -0 < +0.
        Operator::F32Abs | Operator::F64Abs => unary(builder, stack, |b, x| b.ins().fabs(x)),
        Operator::F32Neg | Operator::F64Neg => unary(builder, stack, |b, x| b.ins().fneg(x)),
        Operator::F32Ceil | Operator::F64Ceil => unary(builder, stack, |b, x| b.ins().ceil(x)),
        Operator::F32Floor | Operator::F64Floor => unary(builder, stack, |b, x| b.ins().floor(x)),
        Operator::F32Trunc | Operator::F64Trunc => unary(builder, stack, |b, x| b.ins().trunc(x)),
        Operator::F32Nearest | Operator::F64Nearest => unary(builder, stack, |b, x| b.ins().nearest(x)),
        Operator::F32Sqrt | Operator::F64Sqrt => unary(builder, stack, |b, x| b.ins().sqrt(x)),
        Operator::F32Add | Operator::F64Add => binary(builder, stack, |b, x, y| b.ins().fadd(x, y)),
        Operator::F32Sub | Operator::F64Sub => binary(builder, stack, |b, x, y| b.ins().fsub(x, y)),
        Operator::F32Mul | Operator::F64Mul => binary(builder, stack, |b, x, y| b.ins().fmul(x, y)),
        Operator::F32Div | Operator::F64Div => binary(builder, stack, |b, x, y| b.ins().fdiv(x, y)),
        Operator::F32Min | Operator::F64Min => binary(builder, stack, |b, x, y| b.ins().fmin(x, y)),
        Operator::F32Max | Operator::F64Max => binary(builder, stack, |b, x, y| b.ins().fmax(x, y)),
        Operator::F32Copysign | Operator::F64Copysign => binary(builder, stack, |b, x, y| b.ins().fcopysign(x, y)),

        // Integer width changes.
        Operator::I32WrapI64 => unary(builder, stack, |b, x| b.ins().ireduce(I32, x)),
        Operator::I64ExtendI32S => unary(builder, stack, |b, x| b.ins().sextend(I64, x)),
        Operator::I64ExtendI32U => unary(builder, stack, |b, x| b.ins().uextend(I64, x)),
        Operator::I32Extend8S => sign_extend(builder, stack, I8, I32),
        Operator::I32Extend16S => sign_extend(builder, stack, I16, I32),
        Operator::I64Extend8S => sign_extend(builder, stack, I8, I64),
        Operator::I64Extend16S => sign_extend(builder, stack, I16, I64),
        Operator::I64Extend32S => sign_extend(builder, stack, I32, I64),

        // Float to integer. The trapping forms trap with BAD_CONVERSION_TO_INTEGER
        // on NaN and INTEGER_OVERFLOW when out of range; the `_sat` forms
        // saturate and map NaN to 0.
        Operator::I32TruncF32S | Operator::I32TruncF64S => unary(builder, stack, |b, x| b.ins().fcvt_to_sint(I32, x)),
        Operator::I32TruncF32U | Operator::I32TruncF64U => unary(builder, stack, |b, x| b.ins().fcvt_to_uint(I32, x)),
        Operator::I64TruncF32S | Operator::I64TruncF64S => unary(builder, stack, |b, x| b.ins().fcvt_to_sint(I64, x)),
        Operator::I64TruncF32U | Operator::I64TruncF64U => unary(builder, stack, |b, x| b.ins().fcvt_to_uint(I64, x)),
        Operator::I32TruncSatF32S | Operator::I32TruncSatF64S => {
            unary(builder, stack, |b, x| b.ins().fcvt_to_sint_sat(I32, x));
        }
        Operator::I32TruncSatF32U | Operator::I32TruncSatF64U => {
            unary(builder, stack, |b, x| b.ins().fcvt_to_uint_sat(I32, x));
        }
        Operator::I64TruncSatF32S | Operator::I64TruncSatF64S => {
            unary(builder, stack, |b, x| b.ins().fcvt_to_sint_sat(I64, x));
        }
        Operator::I64TruncSatF32U | Operator::I64TruncSatF64U => {
            unary(builder, stack, |b, x| b.ins().fcvt_to_uint_sat(I64, x));
        }

        // Integer to float, and float width changes.
        Operator::F32ConvertI32S | Operator::F32ConvertI64S => {
            unary(builder, stack, |b, x| b.ins().fcvt_from_sint(F32, x));
        }
        Operator::F32ConvertI32U | Operator::F32ConvertI64U => {
            unary(builder, stack, |b, x| b.ins().fcvt_from_uint(F32, x));
        }
        Operator::F64ConvertI32S | Operator::F64ConvertI64S => {
            unary(builder, stack, |b, x| b.ins().fcvt_from_sint(F64, x));
        }
        Operator::F64ConvertI32U | Operator::F64ConvertI64U => {
            unary(builder, stack, |b, x| b.ins().fcvt_from_uint(F64, x));
        }
        Operator::F32DemoteF64 => unary(builder, stack, |b, x| b.ins().fdemote(F32, x)),
        Operator::F64PromoteF32 => unary(builder, stack, |b, x| b.ins().fpromote(F64, x)),

        // Same-size bit reinterpretation.
        Operator::I32ReinterpretF32 => reinterpret(builder, stack, I32),
        Operator::I64ReinterpretF64 => reinterpret(builder, stack, I64),
        Operator::F32ReinterpretI32 => reinterpret(builder, stack, F32),
        Operator::F64ReinterpretI64 => reinterpret(builder, stack, F64),

        // Wide arithmetic: the halves are joined into an I128, which x86-64
        // lowers to `add`/`adc`, `sub`/`sbb` and a one-operand `mul`/`imul`.
        Operator::I64Add128 => wide_add_sub(builder, stack, |b, x, y| b.ins().iadd(x, y)),
        Operator::I64Sub128 => wide_add_sub(builder, stack, |b, x, y| b.ins().isub(x, y)),
        Operator::I64MulWideS => wide_mul(builder, stack, |b, x| b.ins().sextend(I128, x)),
        Operator::I64MulWideU => wide_mul(builder, stack, |b, x| b.ins().uextend(I128, x)),

        _ => return false,
    }
    true
}

/// Replaces the top operand `x` with `f(x)`.
fn unary(
    builder: &mut FunctionBuilder<'_>,
    stack: &mut Vec<Value>,
    f: impl FnOnce(&mut FunctionBuilder<'_>, Value) -> Value,
) {
    let x = pop1(stack);
    let result = f(builder, x);
    stack.push(result);
}

/// Replaces the top two operands `x y` with `f(x, y)`.
fn binary(
    builder: &mut FunctionBuilder<'_>,
    stack: &mut Vec<Value>,
    f: impl FnOnce(&mut FunctionBuilder<'_>, Value, Value) -> Value,
) {
    let (x, y) = pop2(stack);
    let result = f(builder, x, y);
    stack.push(result);
}

/// Integer comparison, giving an i32 0 or 1.
fn icmp(builder: &mut FunctionBuilder<'_>, stack: &mut Vec<Value>, cc: IntCC) {
    binary(builder, stack, |b, x, y| {
        let flag = b.ins().icmp(cc, x, y);
        b.ins().uextend(I32, flag)
    });
}

/// Float comparison, giving an i32 0 or 1.
fn fcmp(builder: &mut FunctionBuilder<'_>, stack: &mut Vec<Value>, cc: FloatCC) {
    binary(builder, stack, |b, x, y| {
        let flag = b.ins().fcmp(cc, x, y);
        b.ins().uextend(I32, flag)
    });
}

/// Sign-extends the low `from` bits of the top operand to `to`.
fn sign_extend(builder: &mut FunctionBuilder<'_>, stack: &mut Vec<Value>, from: ir::Type, to: ir::Type) {
    unary(builder, stack, |b, x| {
        let low = b.ins().ireduce(from, x);
        b.ins().sextend(to, low)
    });
}

/// Reinterprets the top operand's bits as the same-size type `to`.
fn reinterpret(builder: &mut FunctionBuilder<'_>, stack: &mut Vec<Value>, to: ir::Type) {
    // The builder interns the (default, native-endian) flags itself; byte
    // order does not matter for a scalar of the same size.
    unary(builder, stack, |b, x| b.ins().bitcast(to, ir::MemFlagsData::new(), x));
}

/// `lo1 hi1 lo2 hi2` to `lo hi` of the 128-bit `f(hi1:lo1, hi2:lo2)`.
fn wide_add_sub(
    builder: &mut FunctionBuilder<'_>,
    stack: &mut Vec<Value>,
    f: impl FnOnce(&mut FunctionBuilder<'_>, Value, Value) -> Value,
) {
    let (lo2, hi2) = pop2(stack);
    let (lo1, hi1) = pop2(stack);
    let x = builder.ins().iconcat(lo1, hi1);
    let y = builder.ins().iconcat(lo2, hi2);
    let result = f(builder, x, y);
    push_halves(builder, stack, result);
}

/// `x y` (i64) to `lo hi` of their full 128-bit product, each operand widened by `widen`.
fn wide_mul(
    builder: &mut FunctionBuilder<'_>,
    stack: &mut Vec<Value>,
    widen: impl Fn(&mut FunctionBuilder<'_>, Value) -> Value,
) {
    let (x, y) = pop2(stack);
    let x = widen(builder, x);
    let y = widen(builder, y);
    let product = builder.ins().imul(x, y);
    push_halves(builder, stack, product);
}

/// Pushes the low then the high i64 half of an I128.
fn push_halves(builder: &mut FunctionBuilder<'_>, stack: &mut Vec<Value>, wide: Value) {
    let (lo, hi) = builder.ins().isplit(wide);
    stack.push(lo);
    stack.push(hi);
}
