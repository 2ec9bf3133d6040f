//! Constant expressions: global initialisers, table initialisers, element items and segment
//! offsets, evaluated at instantiation, including the GC operators that allocate.

use kiln_abi::gc::{storage_size, struct_layout, StorageType, ARRAY_DATA_OFFSET};
use kiln_abi::{ConstOp, TrapCode, VMFuncRef, VMGlobalDefinition, ValType};

use crate::vm::instance::InstanceInner;

/// Evaluates a constant expression to its raw value; the trap code if it allocates more than
/// the store's GC heap holds. The loader checked the expression (`load::check_metadata`): it
/// never pops an empty stack, leaves one value, and names only what exists.
pub(crate) fn eval_const(inner: &InstanceInner, expr: &[ConstOp], _ty: ValType) -> Result<u128, TrapCode> {
    let o = &inner.module.inner.offsets;
    // Almost every expression is one operation; extended constant expressions use a stack.
    let mut stack: smallstack::Stack = smallstack::Stack::default();
    for op in expr {
        let value = match *op {
            ConstOp::I32Const(v) => v as u32 as u128,
            ConstOp::I64Const(v) => v as u64 as u128,
            ConstOp::F32Const(bits) => bits as u128,
            ConstOp::F64Const(bits) => bits as u128,
            ConstOp::V128Const(v) => v,
            ConstOp::RefNull => 0,
            ConstOp::RefFunc(f) => inner.vm_field::<VMFuncRef>(o.func_ref(f)) as usize as u128,
            ConstOp::GlobalGet(g) => {
                // SAFETY: globals referenced by constant expressions precede the expression's
                // global (validation), so the pointer was written already.
                unsafe { u128::from_le_bytes((**inner.vm_field::<*mut VMGlobalDefinition>(o.global(g))).storage) }
            }
            ConstOp::I32Add | ConstOp::I32Sub | ConstOp::I32Mul => {
                let b = stack.pop() as u32;
                let a = stack.pop() as u32;
                (match *op {
                    ConstOp::I32Add => a.wrapping_add(b),
                    ConstOp::I32Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                }) as u128
            }
            ConstOp::I64Add | ConstOp::I64Sub | ConstOp::I64Mul => {
                let b = stack.pop() as u64;
                let a = stack.pop() as u64;
                (match *op {
                    ConstOp::I64Add => a.wrapping_add(b),
                    ConstOp::I64Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                }) as u128
            }
            ConstOp::RefI31 => ((stack.pop() as u32) << 1 | 1) as u128,
            ConstOp::AnyConvertExtern | ConstOp::ExternConvertAny => stack.pop(),
            ConstOp::StructNew(t) | ConstOp::StructNewDefault(t) => {
                let fields = inner.module.inner.struct_fields(t);
                let layout = struct_layout(fields);
                let values = match *op {
                    ConstOp::StructNew(_) => stack.pop_n(fields.len()),
                    _ => vec![0; fields.len()],
                };
                let type_id = inner.module.inner.type_ids[t as usize];
                let object =
                    inner.store.gc_alloc(layout.size as u64, type_id, false).ok_or(TrapCode::GcHeapExhausted)?;
                for ((field, offset), value) in fields.iter().zip(&layout.fields).zip(values) {
                    write_field(inner, object as u64 + *offset as u64, field.storage, value);
                }
                object as u128
            }
            ConstOp::ArrayNew(t) | ConstOp::ArrayNewDefault(t) | ConstOp::ArrayNewFixed(t, _) => {
                // The length is the guest's: the array is allocated (and its size checked
                // against the heap) before anything of that length exists on the host.
                let (len, fill, fixed) = match *op {
                    ConstOp::ArrayNewFixed(_, n) => (n, 0, stack.pop_n(n as usize)),
                    ConstOp::ArrayNew(_) => {
                        let len = stack.pop() as u32;
                        (len, stack.pop(), Vec::new())
                    }
                    _ => (stack.pop() as u32, 0, Vec::new()),
                };
                let element = inner.module.inner.array_element(t);
                let element_size = storage_size(element.storage);
                let type_id = inner.module.inner.type_ids[t as usize];
                let object = inner.store.gc_alloc_array(type_id, element_size, len).ok_or(TrapCode::GcHeapExhausted)?;
                let data = u64::from(object) + ARRAY_DATA_OFFSET as u64;
                // A new object's bytes are zero: only non-zero elements need writing.
                for i in 0..len as u64 {
                    let value = fixed.get(i as usize).copied().unwrap_or(fill);
                    if value != 0 {
                        write_field(inner, data + i * element_size as u64, element.storage, value);
                    }
                }
                object as u128
            }
        };
        stack.push(value);
    }
    Ok(stack.pop())
}

/// Writes raw value `value` as a field or element of `storage` at heap offset `offset` of an
/// object just allocated.
fn write_field(inner: &InstanceInner, offset: u64, storage: StorageType, value: u128) {
    let size = storage_size(storage) as usize;
    let heap = inner.store.gc_heap().expect("allocation made the heap");
    let at = heap.bytes(offset, size as u64).expect("a field of an object in the heap");
    // SAFETY: `size` bytes inside the heap (checked), of an object no one else sees yet.
    unsafe { std::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), at, size) };
}

/// The operand stack of constant expressions: no allocation for the first 16 values (almost
/// every expression is one operation), a vector beyond.
mod smallstack {
    #[derive(Default)]
    pub struct Stack {
        values: [u128; 16],
        len: usize,
        spill: Vec<u128>,
    }

    impl Stack {
        pub fn push(&mut self, value: u128) {
            if self.len < self.values.len() {
                self.values[self.len] = value;
                self.len += 1;
            } else {
                self.spill.push(value);
            }
        }

        /// The top `n` values, the deepest first.
        pub fn pop_n(&mut self, n: usize) -> Vec<u128> {
            let mut values: Vec<u128> = (0..n).map(|_| self.pop()).collect();
            values.reverse();
            values
        }

        /// The top value. Panics on an empty stack, which a checked expression never pops.
        pub fn pop(&mut self) -> u128 {
            if let Some(value) = self.spill.pop() {
                return value;
            }
            self.len = self.len.checked_sub(1).expect("constant expressions are checked at load");
            self.values[self.len]
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn deep_expressions_keep_every_operand() {
            let mut stack = super::Stack::default();
            for v in 0..40u128 {
                stack.push(v);
            }
            for v in (0..40u128).rev() {
                assert_eq!(stack.pop(), v);
            }
        }

        #[test]
        #[should_panic(expected = "checked at load")]
        fn an_empty_stack_is_never_read_as_zero() {
            let mut stack = super::Stack::default();
            stack.push(1);
            stack.pop_n(2);
        }
    }
}
