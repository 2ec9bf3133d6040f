//! Translation of the 128-bit SIMD and relaxed-SIMD operators that take their operands from the value stack.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32X4, F64X2, I16, I16X8, I32, I32X4, I64X2, I8, I8X16};
use cranelift_codegen::ir::{self, ConstantData, InstBuilder, Type, Value};
use cranelift_frontend::{FuncInstBuilder, FunctionBuilder};
use wasmparser::Operator;

use super::{bitcast, pop1, pop2, pop3};

/// Translates `op` if it is a SIMD operator of this file's scope, returning whether it did.
///
/// The memory operators (`v128.load*`, `v128.store*` and their lane, splat and zero forms) are not in scope.
pub(super) fn translate(op: &Operator<'_>, builder: &mut FunctionBuilder<'_>, stack: &mut Vec<ir::Value>) -> bool {
    use Operator as O;
    let mut t = Simd { builder, stack };
    match *op {
        // Constants and lane movement.
        O::V128Const { value } => t.constant(value.bytes()),
        O::I8x16Shuffle { lanes } => t.shuffle(lanes),
        // Cranelift's `swizzle` already yields 0 for indices past 15; that is also a permitted relaxed result.
        O::I8x16Swizzle | O::I8x16RelaxedSwizzle => t.binary(I8X16, |i, a, s| i.swizzle(a, s)),
        O::I8x16Splat => t.splat(I8X16),
        O::I16x8Splat => t.splat(I16X8),
        O::I32x4Splat => t.splat(I32X4),
        O::I64x2Splat => t.splat(I64X2),
        O::F32x4Splat => t.splat(F32X4),
        O::F64x2Splat => t.splat(F64X2),
        O::I8x16ExtractLaneS { lane } => t.extract_lane(I8X16, lane, Extend::Signed),
        O::I8x16ExtractLaneU { lane } => t.extract_lane(I8X16, lane, Extend::Unsigned),
        O::I16x8ExtractLaneS { lane } => t.extract_lane(I16X8, lane, Extend::Signed),
        O::I16x8ExtractLaneU { lane } => t.extract_lane(I16X8, lane, Extend::Unsigned),
        O::I32x4ExtractLane { lane } => t.extract_lane(I32X4, lane, Extend::None),
        O::I64x2ExtractLane { lane } => t.extract_lane(I64X2, lane, Extend::None),
        O::F32x4ExtractLane { lane } => t.extract_lane(F32X4, lane, Extend::None),
        O::F64x2ExtractLane { lane } => t.extract_lane(F64X2, lane, Extend::None),
        O::I8x16ReplaceLane { lane } => t.replace_lane(I8X16, lane),
        O::I16x8ReplaceLane { lane } => t.replace_lane(I16X8, lane),
        O::I32x4ReplaceLane { lane } => t.replace_lane(I32X4, lane),
        O::I64x2ReplaceLane { lane } => t.replace_lane(I64X2, lane),
        O::F32x4ReplaceLane { lane } => t.replace_lane(F32X4, lane),
        O::F64x2ReplaceLane { lane } => t.replace_lane(F64X2, lane),

        // Whole-vector bitwise operations and tests.
        O::V128Not => t.unary(I8X16, |i, a| i.bnot(a)),
        O::V128And => t.binary(I8X16, |i, a, b| i.band(a, b)),
        O::V128AndNot => t.binary(I8X16, |i, a, b| i.band_not(a, b)),
        O::V128Or => t.binary(I8X16, |i, a, b| i.bor(a, b)),
        O::V128Xor => t.binary(I8X16, |i, a, b| i.bxor(a, b)),
        // Bitwise selection is a permitted result of every relaxed lane select, whatever its lane width.
        O::V128Bitselect
        | O::I8x16RelaxedLaneselect
        | O::I16x8RelaxedLaneselect
        | O::I32x4RelaxedLaneselect
        | O::I64x2RelaxedLaneselect => t.ternary(I8X16, |i, a, b, mask| i.bitselect(mask, a, b)),
        O::V128AnyTrue => t.reduce(I8X16, |i, a| i.vany_true(a)),

        // Integer comparisons: Cranelift's vector `icmp` gives all-ones or all-zeros lanes, as wasm does.
        O::I8x16Eq => t.icmp(I8X16, IntCC::Equal),
        O::I8x16Ne => t.icmp(I8X16, IntCC::NotEqual),
        O::I8x16LtS => t.icmp(I8X16, IntCC::SignedLessThan),
        O::I8x16LtU => t.icmp(I8X16, IntCC::UnsignedLessThan),
        O::I8x16GtS => t.icmp(I8X16, IntCC::SignedGreaterThan),
        O::I8x16GtU => t.icmp(I8X16, IntCC::UnsignedGreaterThan),
        O::I8x16LeS => t.icmp(I8X16, IntCC::SignedLessThanOrEqual),
        O::I8x16LeU => t.icmp(I8X16, IntCC::UnsignedLessThanOrEqual),
        O::I8x16GeS => t.icmp(I8X16, IntCC::SignedGreaterThanOrEqual),
        O::I8x16GeU => t.icmp(I8X16, IntCC::UnsignedGreaterThanOrEqual),
        O::I16x8Eq => t.icmp(I16X8, IntCC::Equal),
        O::I16x8Ne => t.icmp(I16X8, IntCC::NotEqual),
        O::I16x8LtS => t.icmp(I16X8, IntCC::SignedLessThan),
        O::I16x8LtU => t.icmp(I16X8, IntCC::UnsignedLessThan),
        O::I16x8GtS => t.icmp(I16X8, IntCC::SignedGreaterThan),
        O::I16x8GtU => t.icmp(I16X8, IntCC::UnsignedGreaterThan),
        O::I16x8LeS => t.icmp(I16X8, IntCC::SignedLessThanOrEqual),
        O::I16x8LeU => t.icmp(I16X8, IntCC::UnsignedLessThanOrEqual),
        O::I16x8GeS => t.icmp(I16X8, IntCC::SignedGreaterThanOrEqual),
        O::I16x8GeU => t.icmp(I16X8, IntCC::UnsignedGreaterThanOrEqual),
        O::I32x4Eq => t.icmp(I32X4, IntCC::Equal),
        O::I32x4Ne => t.icmp(I32X4, IntCC::NotEqual),
        O::I32x4LtS => t.icmp(I32X4, IntCC::SignedLessThan),
        O::I32x4LtU => t.icmp(I32X4, IntCC::UnsignedLessThan),
        O::I32x4GtS => t.icmp(I32X4, IntCC::SignedGreaterThan),
        O::I32x4GtU => t.icmp(I32X4, IntCC::UnsignedGreaterThan),
        O::I32x4LeS => t.icmp(I32X4, IntCC::SignedLessThanOrEqual),
        O::I32x4LeU => t.icmp(I32X4, IntCC::UnsignedLessThanOrEqual),
        O::I32x4GeS => t.icmp(I32X4, IntCC::SignedGreaterThanOrEqual),
        O::I32x4GeU => t.icmp(I32X4, IntCC::UnsignedGreaterThanOrEqual),
        O::I64x2Eq => t.icmp(I64X2, IntCC::Equal),
        O::I64x2Ne => t.icmp(I64X2, IntCC::NotEqual),
        O::I64x2LtS => t.icmp(I64X2, IntCC::SignedLessThan),
        O::I64x2GtS => t.icmp(I64X2, IntCC::SignedGreaterThan),
        O::I64x2LeS => t.icmp(I64X2, IntCC::SignedLessThanOrEqual),
        O::I64x2GeS => t.icmp(I64X2, IntCC::SignedGreaterThanOrEqual),

        // Float comparisons: `ne` is the unordered one (true when either side is NaN), the rest are ordered.
        O::F32x4Eq => t.fcmp(F32X4, FloatCC::Equal),
        O::F32x4Ne => t.fcmp(F32X4, FloatCC::NotEqual),
        O::F32x4Lt => t.fcmp(F32X4, FloatCC::LessThan),
        O::F32x4Gt => t.fcmp(F32X4, FloatCC::GreaterThan),
        O::F32x4Le => t.fcmp(F32X4, FloatCC::LessThanOrEqual),
        O::F32x4Ge => t.fcmp(F32X4, FloatCC::GreaterThanOrEqual),
        O::F64x2Eq => t.fcmp(F64X2, FloatCC::Equal),
        O::F64x2Ne => t.fcmp(F64X2, FloatCC::NotEqual),
        O::F64x2Lt => t.fcmp(F64X2, FloatCC::LessThan),
        O::F64x2Gt => t.fcmp(F64X2, FloatCC::GreaterThan),
        O::F64x2Le => t.fcmp(F64X2, FloatCC::LessThanOrEqual),
        O::F64x2Ge => t.fcmp(F64X2, FloatCC::GreaterThanOrEqual),

        // Integer unary operations and lane reductions.
        O::I8x16Abs => t.unary(I8X16, |i, a| i.iabs(a)),
        O::I16x8Abs => t.unary(I16X8, |i, a| i.iabs(a)),
        O::I32x4Abs => t.unary(I32X4, |i, a| i.iabs(a)),
        O::I64x2Abs => t.unary(I64X2, |i, a| i.iabs(a)),
        O::I8x16Neg => t.unary(I8X16, |i, a| i.ineg(a)),
        O::I16x8Neg => t.unary(I16X8, |i, a| i.ineg(a)),
        O::I32x4Neg => t.unary(I32X4, |i, a| i.ineg(a)),
        O::I64x2Neg => t.unary(I64X2, |i, a| i.ineg(a)),
        O::I8x16Popcnt => t.unary(I8X16, |i, a| i.popcnt(a)),
        O::I8x16AllTrue => t.reduce(I8X16, |i, a| i.vall_true(a)),
        O::I16x8AllTrue => t.reduce(I16X8, |i, a| i.vall_true(a)),
        O::I32x4AllTrue => t.reduce(I32X4, |i, a| i.vall_true(a)),
        O::I64x2AllTrue => t.reduce(I64X2, |i, a| i.vall_true(a)),
        O::I8x16Bitmask => t.reduce(I8X16, |i, a| i.vhigh_bits(I32, a)),
        O::I16x8Bitmask => t.reduce(I16X8, |i, a| i.vhigh_bits(I32, a)),
        O::I32x4Bitmask => t.reduce(I32X4, |i, a| i.vhigh_bits(I32, a)),
        O::I64x2Bitmask => t.reduce(I64X2, |i, a| i.vhigh_bits(I32, a)),

        // Shifts: Cranelift masks a vector shift's count to the lane width, as wasm requires.
        O::I8x16Shl => t.shift(I8X16, |i, a, n| i.ishl(a, n)),
        O::I16x8Shl => t.shift(I16X8, |i, a, n| i.ishl(a, n)),
        O::I32x4Shl => t.shift(I32X4, |i, a, n| i.ishl(a, n)),
        O::I64x2Shl => t.shift(I64X2, |i, a, n| i.ishl(a, n)),
        O::I8x16ShrS => t.shift(I8X16, |i, a, n| i.sshr(a, n)),
        O::I16x8ShrS => t.shift(I16X8, |i, a, n| i.sshr(a, n)),
        O::I32x4ShrS => t.shift(I32X4, |i, a, n| i.sshr(a, n)),
        O::I64x2ShrS => t.shift(I64X2, |i, a, n| i.sshr(a, n)),
        O::I8x16ShrU => t.shift(I8X16, |i, a, n| i.ushr(a, n)),
        O::I16x8ShrU => t.shift(I16X8, |i, a, n| i.ushr(a, n)),
        O::I32x4ShrU => t.shift(I32X4, |i, a, n| i.ushr(a, n)),
        O::I64x2ShrU => t.shift(I64X2, |i, a, n| i.ushr(a, n)),

        // Lanewise integer arithmetic.
        O::I8x16Add => t.binary(I8X16, |i, a, b| i.iadd(a, b)),
        O::I16x8Add => t.binary(I16X8, |i, a, b| i.iadd(a, b)),
        O::I32x4Add => t.binary(I32X4, |i, a, b| i.iadd(a, b)),
        O::I64x2Add => t.binary(I64X2, |i, a, b| i.iadd(a, b)),
        O::I8x16Sub => t.binary(I8X16, |i, a, b| i.isub(a, b)),
        O::I16x8Sub => t.binary(I16X8, |i, a, b| i.isub(a, b)),
        O::I32x4Sub => t.binary(I32X4, |i, a, b| i.isub(a, b)),
        O::I64x2Sub => t.binary(I64X2, |i, a, b| i.isub(a, b)),
        O::I16x8Mul => t.binary(I16X8, |i, a, b| i.imul(a, b)),
        O::I32x4Mul => t.binary(I32X4, |i, a, b| i.imul(a, b)),
        O::I64x2Mul => t.binary(I64X2, |i, a, b| i.imul(a, b)),
        O::I8x16AddSatS => t.binary(I8X16, |i, a, b| i.sadd_sat(a, b)),
        O::I16x8AddSatS => t.binary(I16X8, |i, a, b| i.sadd_sat(a, b)),
        O::I8x16AddSatU => t.binary(I8X16, |i, a, b| i.uadd_sat(a, b)),
        O::I16x8AddSatU => t.binary(I16X8, |i, a, b| i.uadd_sat(a, b)),
        O::I8x16SubSatS => t.binary(I8X16, |i, a, b| i.ssub_sat(a, b)),
        O::I16x8SubSatS => t.binary(I16X8, |i, a, b| i.ssub_sat(a, b)),
        O::I8x16SubSatU => t.binary(I8X16, |i, a, b| i.usub_sat(a, b)),
        O::I16x8SubSatU => t.binary(I16X8, |i, a, b| i.usub_sat(a, b)),
        O::I8x16MinS => t.binary(I8X16, |i, a, b| i.smin(a, b)),
        O::I16x8MinS => t.binary(I16X8, |i, a, b| i.smin(a, b)),
        O::I32x4MinS => t.binary(I32X4, |i, a, b| i.smin(a, b)),
        O::I8x16MinU => t.binary(I8X16, |i, a, b| i.umin(a, b)),
        O::I16x8MinU => t.binary(I16X8, |i, a, b| i.umin(a, b)),
        O::I32x4MinU => t.binary(I32X4, |i, a, b| i.umin(a, b)),
        O::I8x16MaxS => t.binary(I8X16, |i, a, b| i.smax(a, b)),
        O::I16x8MaxS => t.binary(I16X8, |i, a, b| i.smax(a, b)),
        O::I32x4MaxS => t.binary(I32X4, |i, a, b| i.smax(a, b)),
        O::I8x16MaxU => t.binary(I8X16, |i, a, b| i.umax(a, b)),
        O::I16x8MaxU => t.binary(I16X8, |i, a, b| i.umax(a, b)),
        O::I32x4MaxU => t.binary(I32X4, |i, a, b| i.umax(a, b)),
        O::I8x16AvgrU => t.binary(I8X16, |i, a, b| i.avg_round(a, b)),
        O::I16x8AvgrU => t.binary(I16X8, |i, a, b| i.avg_round(a, b)),
        // The relaxed form may differ only for -32768 * -32768; saturating is a permitted result.
        O::I16x8Q15MulrSatS | O::I16x8RelaxedQ15mulrS => t.binary(I16X8, |i, a, b| i.sqmul_round_sat(a, b)),

        // Narrowing (signed saturation or unsigned saturation of signed lanes) and widening.
        O::I8x16NarrowI16x8S => t.binary(I16X8, |i, a, b| i.snarrow(a, b)),
        O::I8x16NarrowI16x8U => t.binary(I16X8, |i, a, b| i.unarrow(a, b)),
        O::I16x8NarrowI32x4S => t.binary(I32X4, |i, a, b| i.snarrow(a, b)),
        O::I16x8NarrowI32x4U => t.binary(I32X4, |i, a, b| i.unarrow(a, b)),
        O::I16x8ExtendLowI8x16S => t.unary(I8X16, |i, a| i.swiden_low(a)),
        O::I16x8ExtendHighI8x16S => t.unary(I8X16, |i, a| i.swiden_high(a)),
        O::I16x8ExtendLowI8x16U => t.unary(I8X16, |i, a| i.uwiden_low(a)),
        O::I16x8ExtendHighI8x16U => t.unary(I8X16, |i, a| i.uwiden_high(a)),
        O::I32x4ExtendLowI16x8S => t.unary(I16X8, |i, a| i.swiden_low(a)),
        O::I32x4ExtendHighI16x8S => t.unary(I16X8, |i, a| i.swiden_high(a)),
        O::I32x4ExtendLowI16x8U => t.unary(I16X8, |i, a| i.uwiden_low(a)),
        O::I32x4ExtendHighI16x8U => t.unary(I16X8, |i, a| i.uwiden_high(a)),
        O::I64x2ExtendLowI32x4S => t.unary(I32X4, |i, a| i.swiden_low(a)),
        O::I64x2ExtendHighI32x4S => t.unary(I32X4, |i, a| i.swiden_high(a)),
        O::I64x2ExtendLowI32x4U => t.unary(I32X4, |i, a| i.uwiden_low(a)),
        O::I64x2ExtendHighI32x4U => t.unary(I32X4, |i, a| i.uwiden_high(a)),

        // Widening multiplications, pairwise additions and dot products.
        O::I16x8ExtMulLowI8x16S => t.extmul(I8X16, Half::Low, Sign::Signed),
        O::I16x8ExtMulHighI8x16S => t.extmul(I8X16, Half::High, Sign::Signed),
        O::I16x8ExtMulLowI8x16U => t.extmul(I8X16, Half::Low, Sign::Unsigned),
        O::I16x8ExtMulHighI8x16U => t.extmul(I8X16, Half::High, Sign::Unsigned),
        O::I32x4ExtMulLowI16x8S => t.extmul(I16X8, Half::Low, Sign::Signed),
        O::I32x4ExtMulHighI16x8S => t.extmul(I16X8, Half::High, Sign::Signed),
        O::I32x4ExtMulLowI16x8U => t.extmul(I16X8, Half::Low, Sign::Unsigned),
        O::I32x4ExtMulHighI16x8U => t.extmul(I16X8, Half::High, Sign::Unsigned),
        O::I64x2ExtMulLowI32x4S => t.extmul(I32X4, Half::Low, Sign::Signed),
        O::I64x2ExtMulHighI32x4S => t.extmul(I32X4, Half::High, Sign::Signed),
        O::I64x2ExtMulLowI32x4U => t.extmul(I32X4, Half::Low, Sign::Unsigned),
        O::I64x2ExtMulHighI32x4U => t.extmul(I32X4, Half::High, Sign::Unsigned),
        O::I16x8ExtAddPairwiseI8x16S => t.extadd_pairwise(I8X16, Sign::Signed),
        O::I16x8ExtAddPairwiseI8x16U => t.extadd_pairwise(I8X16, Sign::Unsigned),
        O::I32x4ExtAddPairwiseI16x8S => t.extadd_pairwise(I16X8, Sign::Signed),
        O::I32x4ExtAddPairwiseI16x8U => t.extadd_pairwise(I16X8, Sign::Unsigned),
        O::I32x4DotI16x8S => t.dot(I16X8),
        // Relaxed dot products: the second operand is read as signed and pair sums wrap (both permitted).
        O::I16x8RelaxedDotI8x16I7x16S => t.dot(I8X16),
        O::I32x4RelaxedDotI8x16I7x16AddS => t.relaxed_dot_add(),

        // Float unary operations.
        O::F32x4Ceil => t.unary(F32X4, |i, a| i.ceil(a)),
        O::F64x2Ceil => t.unary(F64X2, |i, a| i.ceil(a)),
        O::F32x4Floor => t.unary(F32X4, |i, a| i.floor(a)),
        O::F64x2Floor => t.unary(F64X2, |i, a| i.floor(a)),
        O::F32x4Trunc => t.unary(F32X4, |i, a| i.trunc(a)),
        O::F64x2Trunc => t.unary(F64X2, |i, a| i.trunc(a)),
        O::F32x4Nearest => t.unary(F32X4, |i, a| i.nearest(a)),
        O::F64x2Nearest => t.unary(F64X2, |i, a| i.nearest(a)),
        O::F32x4Abs => t.unary(F32X4, |i, a| i.fabs(a)),
        O::F64x2Abs => t.unary(F64X2, |i, a| i.fabs(a)),
        O::F32x4Neg => t.unary(F32X4, |i, a| i.fneg(a)),
        O::F64x2Neg => t.unary(F64X2, |i, a| i.fneg(a)),
        O::F32x4Sqrt => t.unary(F32X4, |i, a| i.sqrt(a)),
        O::F64x2Sqrt => t.unary(F64X2, |i, a| i.sqrt(a)),

        // Float binary operations.
        O::F32x4Add => t.binary(F32X4, |i, a, b| i.fadd(a, b)),
        O::F64x2Add => t.binary(F64X2, |i, a, b| i.fadd(a, b)),
        O::F32x4Sub => t.binary(F32X4, |i, a, b| i.fsub(a, b)),
        O::F64x2Sub => t.binary(F64X2, |i, a, b| i.fsub(a, b)),
        O::F32x4Mul => t.binary(F32X4, |i, a, b| i.fmul(a, b)),
        O::F64x2Mul => t.binary(F64X2, |i, a, b| i.fmul(a, b)),
        O::F32x4Div => t.binary(F32X4, |i, a, b| i.fdiv(a, b)),
        O::F64x2Div => t.binary(F64X2, |i, a, b| i.fdiv(a, b)),
        // Cranelift's `fmin`/`fmax` follow wasm: NaN if either side is NaN, and -0 < +0. The relaxed forms
        // take the same (deterministic-profile) result.
        O::F32x4Min | O::F32x4RelaxedMin => t.binary(F32X4, |i, a, b| i.fmin(a, b)),
        O::F64x2Min | O::F64x2RelaxedMin => t.binary(F64X2, |i, a, b| i.fmin(a, b)),
        O::F32x4Max | O::F32x4RelaxedMax => t.binary(F32X4, |i, a, b| i.fmax(a, b)),
        O::F64x2Max | O::F64x2RelaxedMax => t.binary(F64X2, |i, a, b| i.fmax(a, b)),
        O::F32x4PMin => t.pseudo_min_max(F32X4, MinMax::Min),
        O::F64x2PMin => t.pseudo_min_max(F64X2, MinMax::Min),
        O::F32x4PMax => t.pseudo_min_max(F32X4, MinMax::Max),
        O::F64x2PMax => t.pseudo_min_max(F64X2, MinMax::Max),
        O::F32x4RelaxedMadd => t.relaxed_madd(F32X4, Product::AsIs),
        O::F64x2RelaxedMadd => t.relaxed_madd(F64X2, Product::AsIs),
        O::F32x4RelaxedNmadd => t.relaxed_madd(F32X4, Product::Negated),
        O::F64x2RelaxedNmadd => t.relaxed_madd(F64X2, Product::Negated),

        // Conversions. The relaxed truncations take the saturating (deterministic-profile) result.
        O::I32x4TruncSatF32x4S | O::I32x4RelaxedTruncF32x4S => t.unary(F32X4, |i, a| i.fcvt_to_sint_sat(I32X4, a)),
        O::I32x4TruncSatF32x4U | O::I32x4RelaxedTruncF32x4U => t.unary(F32X4, |i, a| i.fcvt_to_uint_sat(I32X4, a)),
        O::I32x4TruncSatF64x2SZero | O::I32x4RelaxedTruncF64x2SZero => t.trunc_sat_f64x2_zero(Sign::Signed),
        O::I32x4TruncSatF64x2UZero | O::I32x4RelaxedTruncF64x2UZero => t.trunc_sat_f64x2_zero(Sign::Unsigned),
        O::F32x4ConvertI32x4S => t.unary(I32X4, |i, a| i.fcvt_from_sint(F32X4, a)),
        O::F32x4ConvertI32x4U => t.unary(I32X4, |i, a| i.fcvt_from_uint(F32X4, a)),
        O::F64x2ConvertLowI32x4S => t.convert_low_i32x4(Sign::Signed),
        O::F64x2ConvertLowI32x4U => t.convert_low_i32x4(Sign::Unsigned),
        // `fvdemote` zeroes the two high lanes, as `demote_f64x2_zero` wants.
        O::F32x4DemoteF64x2Zero => t.unary(F64X2, |i, a| i.fvdemote(a)),
        O::F64x2PromoteLowF32x4 => t.unary(F32X4, |i, a| i.fvpromote_low(a)),

        _ => return false,
    }
    true
}

/// Which half of a vector's lanes an operation widens.
#[derive(Clone, Copy)]
enum Half {
    Low,
    High,
}

/// Signed or unsigned interpretation of integer lanes.
#[derive(Clone, Copy)]
enum Sign {
    Signed,
    Unsigned,
}

/// How an extracted lane becomes a wasm scalar.
#[derive(Clone, Copy)]
enum Extend {
    /// The lane is already an i32, i64, f32 or f64.
    None,
    Signed,
    Unsigned,
}

/// Which of `pmin` and `pmax`.
#[derive(Clone, Copy)]
enum MinMax {
    Min,
    Max,
}

/// Whether `relaxed_madd` adds the product (`madd`) or its negation (`nmadd`).
#[derive(Clone, Copy)]
enum Product {
    AsIs,
    Negated,
}

/// Narrows a wasm i32 operand to a lane narrower than 32 bits; other scalars pass through.
fn to_lane(builder: &mut FunctionBuilder<'_>, lane: Type, x: Value) -> Value {
    if lane == I8 || lane == I16 {
        builder.ins().ireduce(lane, x)
    } else {
        x
    }
}

/// Doubles the width of the chosen half of `v`'s integer lanes.
fn widen(builder: &mut FunctionBuilder<'_>, v: Value, half: Half, sign: Sign) -> Value {
    let ins = builder.ins();
    match (half, sign) {
        (Half::Low, Sign::Signed) => ins.swiden_low(v),
        (Half::High, Sign::Signed) => ins.swiden_high(v),
        (Half::Low, Sign::Unsigned) => ins.uwiden_low(v),
        (Half::High, Sign::Unsigned) => ins.uwiden_high(v),
    }
}

/// Sums adjacent lane pairs of `v` into lanes twice as wide.
fn extadd_pairwise(builder: &mut FunctionBuilder<'_>, v: Value, sign: Sign) -> Value {
    let low = widen(builder, v, Half::Low, sign);
    let high = widen(builder, v, Half::High, sign);
    builder.ins().iadd_pairwise(low, high)
}

/// Multiplies the signed lanes of `a` and `b` into lanes twice as wide and sums adjacent products, wrapping.
fn signed_dot(builder: &mut FunctionBuilder<'_>, a: Value, b: Value) -> Value {
    let [low, high] = [Half::Low, Half::High].map(|half| {
        let a = widen(builder, a, half, Sign::Signed);
        let b = widen(builder, b, half, Sign::Signed);
        builder.ins().imul(a, b)
    });
    builder.ins().iadd_pairwise(low, high)
}

/// The operand stack and function being translated into, with stack shapes shared by many operators.
///
/// Vectors are popped as `I8X16` and bitcast to the lane type an operator works on; vector results are bitcast
/// back to `I8X16` before they are pushed.
struct Simd<'a, 'f> {
    builder: &'a mut FunctionBuilder<'f>,
    stack: &'a mut Vec<Value>,
}

impl<'f> Simd<'_, 'f> {
    fn pop_vector(&mut self, ty: Type) -> Value {
        let v = pop1(self.stack);
        bitcast(self.builder, ty, v)
    }

    fn pop_vector_pair(&mut self, ty: Type) -> (Value, Value) {
        let (a, b) = pop2(self.stack);
        (bitcast(self.builder, ty, a), bitcast(self.builder, ty, b))
    }

    fn push_vector(&mut self, v: Value) {
        let v = bitcast(self.builder, I8X16, v);
        self.stack.push(v);
    }

    fn unary(&mut self, ty: Type, f: impl FnOnce(FuncInstBuilder<'_, 'f>, Value) -> Value) {
        let a = self.pop_vector(ty);
        let r = f(self.builder.ins(), a);
        self.push_vector(r);
    }

    fn binary(&mut self, ty: Type, f: impl FnOnce(FuncInstBuilder<'_, 'f>, Value, Value) -> Value) {
        let (a, b) = self.pop_vector_pair(ty);
        let r = f(self.builder.ins(), a, b);
        self.push_vector(r);
    }

    fn ternary(&mut self, ty: Type, f: impl FnOnce(FuncInstBuilder<'_, 'f>, Value, Value, Value) -> Value) {
        let (a, b, c) = pop3(self.stack);
        let [a, b, c] = [a, b, c].map(|v| bitcast(self.builder, ty, v));
        let r = f(self.builder.ins(), a, b, c);
        self.push_vector(r);
    }

    /// A vector shifted by an i32 count.
    fn shift(&mut self, ty: Type, f: impl FnOnce(FuncInstBuilder<'_, 'f>, Value, Value) -> Value) {
        let (a, count) = pop2(self.stack);
        let a = bitcast(self.builder, ty, a);
        let r = f(self.builder.ins(), a, count);
        self.push_vector(r);
    }

    /// A vector reduced to an i32 (`any_true`, `all_true`, `bitmask`).
    fn reduce(&mut self, ty: Type, f: impl FnOnce(FuncInstBuilder<'_, 'f>, Value) -> Value) {
        let a = self.pop_vector(ty);
        let r = f(self.builder.ins(), a);
        // `vany_true` and `vall_true` give an i8.
        let r = if self.builder.func.dfg.value_type(r) == I32 { r } else { self.builder.ins().uextend(I32, r) };
        self.stack.push(r);
    }

    fn icmp(&mut self, ty: Type, cc: IntCC) {
        self.binary(ty, |i, a, b| i.icmp(cc, a, b));
    }

    fn fcmp(&mut self, ty: Type, cc: FloatCC) {
        self.binary(ty, |i, a, b| i.fcmp(cc, a, b));
    }

    fn constant(&mut self, bytes: &[u8; 16]) {
        let constant = self.builder.func.dfg.constants.insert(ConstantData::from(&bytes[..]));
        let v = self.builder.ins().vconst(I8X16, constant);
        self.stack.push(v);
    }

    fn shuffle(&mut self, lanes: [u8; 16]) {
        let (a, b) = pop2(self.stack);
        let mask = self.builder.func.dfg.immediates.push(ConstantData::from(&lanes[..]));
        let r = self.builder.ins().shuffle(a, b, mask);
        self.stack.push(r);
    }

    fn splat(&mut self, ty: Type) {
        let x = pop1(self.stack);
        let x = to_lane(self.builder, ty.lane_type(), x);
        let r = self.builder.ins().splat(ty, x);
        self.push_vector(r);
    }

    fn extract_lane(&mut self, ty: Type, lane: u8, extend: Extend) {
        let v = self.pop_vector(ty);
        let x = self.builder.ins().extractlane(v, lane);
        let x = match extend {
            Extend::None => x,
            Extend::Signed => self.builder.ins().sextend(I32, x),
            Extend::Unsigned => self.builder.ins().uextend(I32, x),
        };
        self.stack.push(x);
    }

    fn replace_lane(&mut self, ty: Type, lane: u8) {
        let (v, x) = pop2(self.stack);
        let v = bitcast(self.builder, ty, v);
        let x = to_lane(self.builder, ty.lane_type(), x);
        let r = self.builder.ins().insertlane(v, x, lane);
        self.push_vector(r);
    }

    /// `extmul_{low,high}`: widens the chosen half of both operands (lanes of type `ty`), then multiplies.
    fn extmul(&mut self, ty: Type, half: Half, sign: Sign) {
        let (a, b) = self.pop_vector_pair(ty);
        let a = widen(self.builder, a, half, sign);
        let b = widen(self.builder, b, half, sign);
        let r = self.builder.ins().imul(a, b);
        self.push_vector(r);
    }

    fn extadd_pairwise(&mut self, ty: Type, sign: Sign) {
        let a = self.pop_vector(ty);
        let r = extadd_pairwise(self.builder, a, sign);
        self.push_vector(r);
    }

    /// `i32x4.dot_i16x8_s` (`ty` = I16X8) and `i16x8.relaxed_dot_i8x16_i7x16_s` (`ty` = I8X16).
    fn dot(&mut self, ty: Type) {
        let (a, b) = self.pop_vector_pair(ty);
        let r = signed_dot(self.builder, a, b);
        self.push_vector(r);
    }

    /// `i32x4.relaxed_dot_i8x16_i7x16_add_s`: the i16x8 relaxed dot product, its adjacent pairs summed into i32
    /// lanes, plus the i32x4 accumulator.
    fn relaxed_dot_add(&mut self) {
        let (a, b, acc) = pop3(self.stack);
        let a = bitcast(self.builder, I8X16, a);
        let b = bitcast(self.builder, I8X16, b);
        let acc = bitcast(self.builder, I32X4, acc);
        let dot = signed_dot(self.builder, a, b);
        let sums = extadd_pairwise(self.builder, dot, Sign::Signed);
        let r = self.builder.ins().iadd(sums, acc);
        self.push_vector(r);
    }

    /// `pmin(a, b)` is `b < a ? b : a` and `pmax(a, b)` is `a < b ? b : a`, lanewise.
    fn pseudo_min_max(&mut self, ty: Type, which: MinMax) {
        let (a, b) = self.pop_vector_pair(ty);
        let (lhs, rhs) = match which {
            MinMax::Min => (b, a),
            MinMax::Max => (a, b),
        };
        let mask = self.builder.ins().fcmp(FloatCC::LessThan, lhs, rhs);
        // `bitselect` wants its mask in the type of the values selected.
        let mask = bitcast(self.builder, ty, mask);
        let r = self.builder.ins().bitselect(mask, b, a);
        self.push_vector(r);
    }

    /// `relaxed_madd(a, b, c)` = `a * b + c` and `relaxed_nmadd(a, b, c)` = `-a * b + c`, rounded twice (the
    /// deterministic-profile result): Cranelift's `fma` needs the FMA CPU feature or else a libcall.
    fn relaxed_madd(&mut self, ty: Type, product: Product) {
        let (a, b, c) = pop3(self.stack);
        let [a, b, c] = [a, b, c].map(|v| bitcast(self.builder, ty, v));
        let a = match product {
            Product::AsIs => a,
            Product::Negated => self.builder.ins().fneg(a),
        };
        let ab = self.builder.ins().fmul(a, b);
        let r = self.builder.ins().fadd(ab, c);
        self.push_vector(r);
    }

    /// `i32x4.trunc_sat_f64x2_{s,u}_zero`: converts to saturated i64 lanes, then narrows (saturating again)
    /// alongside a zero vector into the high lanes. The x64 backend lowers only this exact pattern.
    fn trunc_sat_f64x2_zero(&mut self, sign: Sign) {
        let a = self.pop_vector(F64X2);
        let zero = self.builder.func.dfg.constants.insert(ConstantData::from(&[0u8; 16][..]));
        let zero = self.builder.ins().vconst(I64X2, zero);
        let r = match sign {
            Sign::Signed => {
                let wide = self.builder.ins().fcvt_to_sint_sat(I64X2, a);
                self.builder.ins().snarrow(wide, zero)
            }
            Sign::Unsigned => {
                let wide = self.builder.ins().fcvt_to_uint_sat(I64X2, a);
                self.builder.ins().uunarrow(wide, zero)
            }
        };
        self.push_vector(r);
    }

    /// `f64x2.convert_low_i32x4_{s,u}`: extends the two low i32 lanes to i64, then converts them.
    fn convert_low_i32x4(&mut self, sign: Sign) {
        let a = self.pop_vector(I32X4);
        let wide = widen(self.builder, a, Half::Low, sign);
        let r = match sign {
            Sign::Signed => self.builder.ins().fcvt_from_sint(F64X2, wide),
            Sign::Unsigned => self.builder.ins().fcvt_from_uint(F64X2, wide),
        };
        self.push_vector(r);
    }
}
