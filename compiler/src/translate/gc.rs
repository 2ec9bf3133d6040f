//! GC operators: i31s, structs, arrays, reference tests and casts, and the conversions
//! between `any` and `extern` (the identity: both share one encoding, see [`kiln_abi::gc`]).
//!
//! Objects are reached as the GC heap's base plus the reference's low 32 bits (see
//! [`FuncEnv::object_address`]). Every access checks for null first and every array access
//! checks its index against the length in the object's header; the header is never written by
//! guest code, so the checked access stays inside the object.

use cranelift_codegen::ir::{self, condcodes::IntCC, types, Block, BlockArg, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_abi::gc::{
    storage_size, struct_layout, CompositeType, FieldType, StorageType, ARRAY_DATA_OFFSET, ARRAY_LEN_OFFSET, HOST_TAG,
    I31_TAG, KIND_ARRAY, KIND_STRUCT, OBJECT_KIND_OFFSET, OBJECT_TYPE_ID_OFFSET,
};
use kiln_abi::{HeapType, Libcall, RefType, TrapCode, VMFuncRef};
use wasmparser::Operator;

use super::{pop1, pop2, pop3, pop_n};
use crate::func_env::{ir_type, trap, FuncEnv};

/// Translates `op` if it is a GC operator that does not branch; returns whether it was.
pub(super) fn translate(
    op: &Operator<'_>,
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    stack: &mut Vec<Value>,
) -> bool {
    use Operator as O;
    match *op {
        O::RefI31 => {
            let value = pop1(stack);
            let shifted = builder.ins().ishl_imm_u(value, 1);
            let tagged = builder.ins().bor_imm_u(shifted, I31_TAG as i64);
            stack.push(builder.ins().uextend(types::I64, tagged));
        }
        O::I31GetS | O::I31GetU => {
            let reference = pop1(stack);
            builder.ins().trapz(reference, trap(TrapCode::NullI31Reference));
            let low = builder.ins().ireduce(types::I32, reference);
            stack.push(if matches!(op, O::I31GetS) {
                builder.ins().sshr_imm_u(low, 1)
            } else {
                builder.ins().ushr_imm_u(low, 1)
            });
        }
        O::RefEq => {
            let (a, b) = pop2(stack);
            let equal = builder.ins().icmp(IntCC::Equal, a, b);
            stack.push(builder.ins().uextend(types::I32, equal));
        }
        O::AnyConvertExtern | O::ExternConvertAny => {}
        O::StructNew { struct_type_index } => {
            let fields = struct_fields(env, struct_type_index);
            let values = pop_n(stack, fields.len());
            let layout = struct_layout(fields);
            let size = builder.ins().iconst(types::I64, i64::from(layout.size));
            let reference = env.gc_alloc(builder, struct_type_index, size);
            let object = env.object_address(builder, reference);
            for ((field, offset), value) in fields.iter().zip(layout.fields).zip(values) {
                store_field(builder, *field, object, offset as i32, value);
            }
            stack.push(reference);
        }
        O::StructNewDefault { struct_type_index } => {
            let size = struct_layout(struct_fields(env, struct_type_index)).size;
            let size = builder.ins().iconst(types::I64, i64::from(size));
            stack.push(env.gc_alloc(builder, struct_type_index, size));
        }
        O::StructGet { struct_type_index, field_index }
        | O::StructGetS { struct_type_index, field_index }
        | O::StructGetU { struct_type_index, field_index } => {
            let fields = struct_fields(env, struct_type_index);
            let offset = struct_layout(fields).fields[field_index as usize];
            let reference = pop1(stack);
            builder.ins().trapz(reference, trap(TrapCode::NullStructReference));
            let object = env.object_address(builder, reference);
            let signed = matches!(op, O::StructGetS { .. });
            stack.push(load_field(builder, fields[field_index as usize], object, offset as i32, signed));
        }
        O::StructSet { struct_type_index, field_index } => {
            let fields = struct_fields(env, struct_type_index);
            let offset = struct_layout(fields).fields[field_index as usize];
            let (reference, value) = pop2(stack);
            builder.ins().trapz(reference, trap(TrapCode::NullStructReference));
            let object = env.object_address(builder, reference);
            store_field(builder, fields[field_index as usize], object, offset as i32, value);
        }
        O::ArrayNew { array_type_index } => {
            let (init, len) = pop2(stack);
            let (reference, data, end) = new_array(builder, env, array_type_index, len);
            fill(builder, array_element(env, array_type_index), data, end, init);
            stack.push(reference);
        }
        O::ArrayNewDefault { array_type_index } => {
            let len = pop1(stack);
            stack.push(new_array(builder, env, array_type_index, len).0);
        }
        O::ArrayNewFixed { array_type_index, array_size } => {
            let values = pop_n(stack, array_size as usize);
            let len = builder.ins().iconst(types::I32, i64::from(array_size));
            let (reference, data, _) = new_array(builder, env, array_type_index, len);
            let element = array_element(env, array_type_index);
            let size = storage_size(element.storage) as i32;
            for (i, value) in values.into_iter().enumerate() {
                store_field(builder, element, data, i as i32 * size, value);
            }
            stack.push(reference);
        }
        O::ArrayNewData { array_type_index, array_data_index: segment }
        | O::ArrayNewElem { array_type_index, array_elem_index: segment } => {
            let (offset, len) = pop2(stack);
            let libcall =
                if matches!(op, O::ArrayNewData { .. }) { Libcall::array_new_data } else { Libcall::array_new_elem };
            let ty = builder.ins().iconst(types::I32, i64::from(array_type_index));
            let segment = builder.ins().iconst(types::I32, i64::from(segment));
            let reference = env.gc_libcall(builder, libcall, &[ty, segment, offset, len]).expect("returns the array");
            stack.push(reference);
        }
        O::ArrayGet { array_type_index } | O::ArrayGetS { array_type_index } | O::ArrayGetU { array_type_index } => {
            let (reference, index) = pop2(stack);
            let element = array_element(env, array_type_index);
            let addr = element_address(builder, env, element, reference, index);
            let signed = matches!(op, O::ArrayGetS { .. });
            stack.push(load_field(builder, element, addr, 0, signed));
        }
        O::ArraySet { array_type_index } => {
            let (reference, index, value) = pop3(stack);
            let element = array_element(env, array_type_index);
            let addr = element_address(builder, env, element, reference, index);
            store_field(builder, element, addr, 0, value);
        }
        O::ArrayLen => {
            let reference = pop1(stack);
            builder.ins().trapz(reference, trap(TrapCode::NullArrayReference));
            let object = env.object_address(builder, reference);
            let flags = FuncEnv::gc_flags(builder);
            stack.push(builder.ins().load(types::I32, flags, object, ARRAY_LEN_OFFSET as i32));
        }
        O::ArrayFill { array_type_index } => {
            let [reference, dst, value, len] = pop_n(stack, 4).try_into().expect("four operands");
            let element = array_element(env, array_type_index);
            let (offset, bytes) = checked_range(builder, element, reference, dst, len, env);
            let base = env.gc_heap_base(builder);
            let start = builder.ins().iadd(base, offset);
            let end = builder.ins().iadd(start, bytes);
            fill(builder, element, start, end, value);
        }
        O::ArrayCopy { array_type_index_dst, array_type_index_src } => {
            let [dst_ref, dst, src_ref, src, len] = pop_n(stack, 5).try_into().expect("five operands");
            let element = array_element(env, array_type_index_dst);
            debug_assert_eq!(
                storage_size(element.storage),
                storage_size(array_element(env, array_type_index_src).storage),
                "validated: the element types match"
            );
            let (dst_offset, bytes) = checked_range(builder, element, dst_ref, dst, len, env);
            let (src_offset, _) = checked_range(builder, element, src_ref, src, len, env);
            env.gc_libcall(builder, Libcall::gc_copy, &[dst_offset, src_offset, bytes]);
        }
        O::ArrayInitData { array_type_index, array_data_index: segment }
        | O::ArrayInitElem { array_type_index, array_elem_index: segment } => {
            let [reference, dst, src, len] = pop_n(stack, 4).try_into().expect("four operands");
            builder.ins().trapz(reference, trap(TrapCode::NullArrayReference));
            let libcall =
                if matches!(op, O::ArrayInitData { .. }) { Libcall::array_init_data } else { Libcall::array_init_elem };
            let ty = builder.ins().iconst(types::I32, i64::from(array_type_index));
            let segment = builder.ins().iconst(types::I32, i64::from(segment));
            env.gc_libcall(builder, libcall, &[ty, segment, reference, dst, src, len]);
        }
        O::RefTestNonNull { hty } | O::RefTestNullable { hty } => {
            let nullable = matches!(op, O::RefTestNullable { .. });
            let target = RefType { nullable, heap: env.heap_type(hty) };
            let reference = pop1(stack);
            stack.push(ref_test(builder, env, reference, target));
        }
        O::RefCastNonNull { hty } | O::RefCastNullable { hty } => {
            let nullable = matches!(op, O::RefCastNullable { .. });
            let target = RefType { nullable, heap: env.heap_type(hty) };
            let reference = *stack.last().expect("validated");
            let is = ref_test(builder, env, reference, target);
            builder.ins().trapz(is, trap(TrapCode::CastFailure));
        }
        _ => return false,
    }
    true
}

/// The fields of struct type `index`.
fn struct_fields<'m>(env: &FuncEnv<'_, 'm>, index: u32) -> &'m [FieldType] {
    match &env.subtype(index).composite {
        CompositeType::Struct(fields) => fields,
        _ => unreachable!("validated: a struct type"),
    }
}

/// The element of array type `index`.
fn array_element(env: &FuncEnv<'_, '_>, index: u32) -> FieldType {
    match env.subtype(index).composite {
        CompositeType::Array(element) => element,
        _ => unreachable!("validated: an array type"),
    }
}

/// Loads a field or element at `addr + offset` as its operand-stack type (packed ones
/// extended as `signed` says).
fn load_field(builder: &mut FunctionBuilder<'_>, field: FieldType, addr: Value, offset: i32, signed: bool) -> Value {
    let flags = FuncEnv::gc_flags(builder);
    match (field.storage, signed) {
        (StorageType::I8, false) => builder.ins().uload8(types::I32, flags, addr, offset),
        (StorageType::I8, true) => builder.ins().sload8(types::I32, flags, addr, offset),
        (StorageType::I16, false) => builder.ins().uload16(types::I32, flags, addr, offset),
        (StorageType::I16, true) => builder.ins().sload16(types::I32, flags, addr, offset),
        (StorageType::Val(ty), _) => builder.ins().load(ir_type(ty), flags, addr, offset),
    }
}

/// Stores `value` into a field or element at `addr + offset` (packed ones truncated).
fn store_field(builder: &mut FunctionBuilder<'_>, field: FieldType, addr: Value, offset: i32, value: Value) {
    let flags = FuncEnv::gc_flags(builder);
    match field.storage {
        StorageType::I8 => builder.ins().istore8(flags, value, addr, offset),
        StorageType::I16 => builder.ins().istore16(flags, value, addr, offset),
        StorageType::Val(_) => builder.ins().store(flags, value, addr, offset),
    };
}

/// Allocates an array of type `index` with `len` (an `i32`) zeroed elements. Returns the
/// reference and the native addresses of its first element and of the end of its elements.
fn new_array(
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    index: u32,
    len: Value,
) -> (Value, Value, Value) {
    let element_size = i64::from(storage_size(array_element(env, index).storage));
    // At most 16 + (2^32 - 1) * 16 bytes: no overflow in 64 bits; `gc_alloc` refuses what
    // the heap cannot hold.
    let len64 = builder.ins().uextend(types::I64, len);
    let bytes = builder.ins().imul_imm_s(len64, element_size);
    let size = builder.ins().iadd_imm_s(bytes, i64::from(ARRAY_DATA_OFFSET) + 7);
    let size = builder.ins().band_imm_s(size, !7);
    let reference = env.gc_alloc(builder, index, size);
    let object = env.object_address(builder, reference);
    let flags = FuncEnv::gc_flags(builder);
    builder.ins().store(flags, len, object, ARRAY_LEN_OFFSET as i32);
    let data = builder.ins().iadd_imm_s(object, i64::from(ARRAY_DATA_OFFSET));
    let end = builder.ins().iadd(data, bytes);
    (reference, data, end)
}

/// Stores `value` into every element from native address `start` to `end` (a multiple of the
/// element size apart).
fn fill(builder: &mut FunctionBuilder<'_>, element: FieldType, start: Value, end: Value, value: Value) {
    let size = i64::from(storage_size(element.storage));
    let header = builder.create_block();
    builder.append_block_param(header, types::I64);
    let body = builder.create_block();
    let exit = builder.create_block();
    builder.ins().jump(header, &[BlockArg::Value(start)]);
    builder.switch_to_block(header);
    let at = builder.block_params(header)[0];
    let done = builder.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, at, end);
    builder.ins().brif(done, exit, &[], body, &[]);
    builder.seal_block(body);
    builder.switch_to_block(body);
    store_field(builder, element, at, 0, value);
    let next = builder.ins().iadd_imm_s(at, size);
    builder.ins().jump(header, &[BlockArg::Value(next)]);
    builder.seal_block(header);
    builder.seal_block(exit);
    builder.switch_to_block(exit);
}

/// The native address of element `index` (an `i32`) of array `reference`, trapping on null
/// and out of bounds.
fn element_address(
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    element: FieldType,
    reference: Value,
    index: Value,
) -> Value {
    builder.ins().trapz(reference, trap(TrapCode::NullArrayReference));
    let object = env.object_address(builder, reference);
    let flags = FuncEnv::gc_flags(builder);
    let len = builder.ins().load(types::I32, flags, object, ARRAY_LEN_OFFSET as i32);
    let out = builder.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, index, len);
    builder.ins().trapnz(out, trap(TrapCode::ArrayOutOfBounds));
    let index = builder.ins().uextend(types::I64, index);
    let offset = builder.ins().imul_imm_s(index, i64::from(storage_size(element.storage)));
    let data = builder.ins().iadd_imm_s(object, i64::from(ARRAY_DATA_OFFSET));
    builder.ins().iadd(data, offset)
}

/// For a bulk access to elements `[start, start + len)` (both `i32`) of array `reference`:
/// traps on null and when the range leaves the array; returns the heap offset of the range's
/// first element and its length in bytes (`i64`s).
fn checked_range(
    builder: &mut FunctionBuilder<'_>,
    element: FieldType,
    reference: Value,
    start: Value,
    len: Value,
    env: &mut FuncEnv<'_, '_>,
) -> (Value, Value) {
    builder.ins().trapz(reference, trap(TrapCode::NullArrayReference));
    let object = env.object_address(builder, reference);
    let flags = FuncEnv::gc_flags(builder);
    let array_len = builder.ins().uload32(flags, object, ARRAY_LEN_OFFSET as i32);
    let start = builder.ins().uextend(types::I64, start);
    let len = builder.ins().uextend(types::I64, len);
    let end = builder.ins().iadd(start, len);
    let out = builder.ins().icmp(IntCC::UnsignedGreaterThan, end, array_len);
    builder.ins().trapnz(out, trap(TrapCode::ArrayOutOfBounds));
    let size = i64::from(storage_size(element.storage));
    let object_offset = FuncEnv::object_offset(builder, reference);
    let first = builder.ins().imul_imm_s(start, size);
    let first = builder.ins().iadd_imm_s(first, i64::from(ARRAY_DATA_OFFSET));
    let offset = builder.ins().iadd(object_offset, first);
    let bytes = builder.ins().imul_imm_s(len, size);
    (offset, bytes)
}

/// Whether `reference` is a value of `target` (an `i32`, 0 or 1): `ref.test`, and the check of
/// `ref.cast` and `br_on_cast`.
pub(super) fn ref_test(
    builder: &mut FunctionBuilder<'_>,
    env: &mut FuncEnv<'_, '_>,
    reference: Value,
    target: RefType,
) -> Value {
    let done = builder.create_block();
    builder.append_block_param(done, types::I32);
    let non_null = builder.create_block();
    let if_null = builder.ins().iconst(types::I32, i64::from(target.nullable));
    builder.ins().brif(reference, non_null, &[], done, &[BlockArg::Value(if_null)]);
    builder.seal_block(non_null);
    builder.switch_to_block(non_null);
    let answer = |builder: &mut FunctionBuilder<'_>, value: Value| {
        builder.ins().jump(done, &[BlockArg::Value(value)]);
    };
    match target.heap {
        HeapType::Any | HeapType::Extern | HeapType::Func | HeapType::Exn => {
            let yes = builder.ins().iconst(types::I32, 1);
            answer(builder, yes);
        }
        HeapType::None | HeapType::NoExtern | HeapType::NoFunc | HeapType::NoExn => {
            let no = builder.ins().iconst(types::I32, 0);
            answer(builder, no);
        }
        HeapType::Eq => {
            let tag = builder.ins().band_imm_u(reference, 0b11);
            let is_eq = builder.ins().icmp_imm_s(IntCC::NotEqual, tag, HOST_TAG as i64);
            let is_eq = builder.ins().uextend(types::I32, is_eq);
            answer(builder, is_eq);
        }
        HeapType::I31 => {
            let tag = builder.ins().band_imm_u(reference, I31_TAG as i64);
            let is_i31 = builder.ins().ireduce(types::I32, tag);
            answer(builder, is_i31);
        }
        HeapType::Struct | HeapType::Array => {
            let object_block = object_test(builder, reference, done);
            let object = env.object_address(builder, object_block);
            let flags = FuncEnv::gc_flags(builder);
            let kind = builder.ins().uload8(types::I32, flags, object, OBJECT_KIND_OFFSET as i32);
            let wanted = if target.heap == HeapType::Struct { KIND_STRUCT } else { KIND_ARRAY };
            let is = builder.ins().icmp_imm_s(IntCC::Equal, kind, i64::from(wanted));
            let is = builder.ins().uextend(types::I32, is);
            answer(builder, is);
        }
        HeapType::ConcreteStruct(index) | HeapType::ConcreteArray(index) => {
            let object_block = object_test(builder, reference, done);
            let object = env.object_address(builder, object_block);
            let flags = FuncEnv::gc_flags(builder);
            let actual = builder.ins().load(types::I32, flags, object, OBJECT_TYPE_ID_OFFSET as i32);
            concrete_test(builder, env, actual, index, done);
        }
        HeapType::ConcreteFunc(index) => {
            let actual = builder.ins().load(
                types::I32,
                ir::MemFlagsData::trusted(),
                reference,
                VMFuncRef::TYPE_ID_OFFSET as i32,
            );
            concrete_test(builder, env, actual, index, done);
        }
    }
    builder.seal_block(done);
    builder.switch_to_block(done);
    builder.block_params(done)[0]
}

/// Continues a test in a new block only for object references (low two bits clear); other
/// non-null references answer 0 at `done`. Returns the reference, for the caller to go on.
fn object_test(builder: &mut FunctionBuilder<'_>, reference: Value, done: Block) -> Value {
    let tag = builder.ins().band_imm_u(reference, 0b11);
    let object = builder.create_block();
    let no = builder.ins().iconst(types::I32, 0);
    builder.ins().brif(tag, done, &[BlockArg::Value(no)], object, &[]);
    builder.seal_block(object);
    builder.switch_to_block(object);
    reference
}

/// Answers at `done` whether canonical type id `actual` is type index `index` or (when that
/// type is not final) one of its subtypes.
fn concrete_test(builder: &mut FunctionBuilder<'_>, env: &mut FuncEnv<'_, '_>, actual: Value, index: u32, done: Block) {
    let expected = env.canonical_type_id(builder, index);
    let same = builder.ins().icmp(IntCC::Equal, actual, expected);
    let same32 = builder.ins().uextend(types::I32, same);
    if env.subtype(index).is_final {
        builder.ins().jump(done, &[BlockArg::Value(same32)]);
        return;
    }
    let slow = builder.create_block();
    builder.ins().brif(same, done, &[BlockArg::Value(same32)], slow, &[]);
    builder.seal_block(slow);
    builder.switch_to_block(slow);
    let is = env.is_subtype(builder, actual, expected);
    builder.ins().jump(done, &[BlockArg::Value(is)]);
}
