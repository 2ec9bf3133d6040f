//! Wasm values as the host sees them, and their raw 16-byte form ([`kiln_abi::ValRaw`]).

use kiln_abi::{HeapType, ValType};

/// A wasm value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    /// i32.
    I32(i32),
    /// i64.
    I64(i64),
    /// f32, as its bits (so NaN payloads survive).
    F32(u32),
    /// f64, as its bits.
    F64(u64),
    /// v128.
    V128(u128),
    /// A function reference: the address of a `VMFuncRef`, or 0 for null.
    FuncRef(usize),
    /// An external reference: an opaque host number, or `None` for null.
    ExternRef(Option<u64>),
}

impl Val {
    /// The zero value of `ty` (null for references).
    pub fn default_for(ty: ValType) -> Val {
        Val::from_raw(0, ty)
    }

    /// Encodes into the raw form.
    pub fn to_raw(self) -> u128 {
        match self {
            Val::I32(v) => v as u32 as u128,
            Val::I64(v) => v as u64 as u128,
            Val::F32(bits) => bits as u128,
            Val::F64(bits) => bits as u128,
            Val::V128(v) => v,
            Val::FuncRef(ptr) => ptr as u128,
            // Null is 0, so host value n is stored as n + 1.
            Val::ExternRef(None) => 0,
            Val::ExternRef(Some(n)) => n.wrapping_add(1) as u128,
        }
    }

    /// Decodes the raw form of a value of type `ty`.
    pub fn from_raw(raw: u128, ty: ValType) -> Val {
        match ty {
            ValType::I32 => Val::I32(raw as u32 as i32),
            ValType::I64 => Val::I64(raw as u64 as i64),
            ValType::F32 => Val::F32(raw as u32),
            ValType::F64 => Val::F64(raw as u64),
            ValType::V128 => Val::V128(raw),
            ValType::Ref(r) => match r.heap {
                HeapType::Extern => match raw as u64 {
                    0 => Val::ExternRef(None),
                    n => Val::ExternRef(Some(n.wrapping_sub(1))),
                },
                HeapType::Func | HeapType::ConcreteFunc(_) => Val::FuncRef(raw as u64 as usize),
            },
        }
    }

    /// Whether this value belongs to type `ty`.
    pub fn matches(&self, ty: ValType) -> bool {
        match (self, ty) {
            (Val::I32(_), ValType::I32)
            | (Val::I64(_), ValType::I64)
            | (Val::F32(_), ValType::F32)
            | (Val::F64(_), ValType::F64)
            | (Val::V128(_), ValType::V128) => true,
            (Val::FuncRef(p), ValType::Ref(r)) => {
                r.heap != HeapType::Extern && (r.nullable || *p != 0)
            }
            (Val::ExternRef(v), ValType::Ref(r)) => r.heap == HeapType::Extern && (r.nullable || v.is_some()),
            _ => false,
        }
    }
}

impl std::fmt::Display for Val {
    /// Integers in signed decimal, floats in Rust's shortest round-trip form (`NaN`s shown with
    /// their bits), vectors in hex, references as `null` or their value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Val::I32(v) => write!(f, "{v}"),
            Val::I64(v) => write!(f, "{v}"),
            Val::F32(bits) => {
                let v = f32::from_bits(bits);
                if v.is_nan() { write!(f, "nan:{bits:#010x}") } else { write!(f, "{v}") }
            }
            Val::F64(bits) => {
                let v = f64::from_bits(bits);
                if v.is_nan() { write!(f, "nan:{bits:#018x}") } else { write!(f, "{v}") }
            }
            Val::V128(v) => write!(f, "{v:#034x}"),
            Val::FuncRef(0) | Val::ExternRef(None) => write!(f, "null"),
            Val::FuncRef(p) => write!(f, "funcref:{p:#x}"),
            Val::ExternRef(Some(n)) => write!(f, "externref:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_abi::RefType;

    #[test]
    fn raw_round_trip_keeps_bits() {
        let cases = [
            (Val::I32(-1), ValType::I32),
            (Val::I64(i64::MIN), ValType::I64),
            (Val::F32(0x7fc0_0001), ValType::F32),
            (Val::F64(0xfff8_0000_0000_0001), ValType::F64),
            (Val::V128(u128::MAX - 5), ValType::V128),
            (Val::ExternRef(Some(0)), ValType::Ref(RefType::EXTERNREF)),
            (Val::ExternRef(None), ValType::Ref(RefType::EXTERNREF)),
            (Val::FuncRef(0), ValType::Ref(RefType::FUNCREF)),
        ];
        for (val, ty) in cases {
            assert_eq!(Val::from_raw(val.to_raw(), ty), val);
            assert!(val.matches(ty));
        }
        assert_eq!(Val::I32(-1).to_raw(), 0xffff_ffff);
    }
}
