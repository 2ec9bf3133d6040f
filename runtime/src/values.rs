//! Wasm values as the host sees them, and the one place they cross into and out of wasm's raw
//! 16-byte form ([`kiln_abi::ValRaw`]).
//!
//! A function reference is a [`Func`] handle, never an address: leaving wasm, a raw funcref
//! becomes a handle that keeps its instance alive; entering wasm, a handle is checked against
//! the exact declared type (concrete function types included), the store it must belong to,
//! and is pinned to that store (see [`crate::store`]) so nothing it can be stored in outlives it.

use kiln_abi::{HeapType, VMFuncRef, ValType};

use crate::exceptions::ExnRef;
use crate::externs::Func;
use crate::store::StoreInner;

/// A wasm value.
#[derive(Debug, Clone, PartialEq)]
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
    /// A function reference (`None` is null). The handle keeps the function's instance alive.
    FuncRef(Option<Func>),
    /// An external reference: an opaque host number below `u64::MAX`, or `None` for null.
    ExternRef(Option<u64>),
    /// An exception reference (`None` is null).
    ExnRef(Option<ExnRef>),
}

/// Why a value cannot go where it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value is not of the expected type.
    #[error("expected a value of type {expected}, got {found}")]
    Type {
        /// The declared type.
        expected: String,
        /// What was given.
        found: String,
    },
    /// The function or exception reference belongs to another store.
    #[error("the reference belongs to another store")]
    WrongStore,
    /// A host function given as a reference value (Kiln passes host functions to wasm only as
    /// imports).
    #[error("a host function cannot be passed as a reference value; import it instead")]
    HostFunction,
    /// `u64::MAX` is reserved (it is the null extern reference's encoding).
    #[error("extern reference values must be below u64::MAX")]
    ExternRefOutOfRange,
}

/// A readable name for a value type, for error messages.
pub(crate) fn type_name(ty: ValType) -> String {
    match ty {
        ValType::I32 => "i32".into(),
        ValType::I64 => "i64".into(),
        ValType::F32 => "f32".into(),
        ValType::F64 => "f64".into(),
        ValType::V128 => "v128".into(),
        ValType::Ref(r) => {
            let heap = match r.heap {
                HeapType::Func => "func".to_string(),
                HeapType::Extern => "extern".to_string(),
                HeapType::ConcreteFunc(id) => format!("func type #{id}"),
                HeapType::Exn => "exn".to_string(),
            };
            if r.nullable {
                format!("(ref null {heap})")
            } else {
                format!("(ref {heap})")
            }
        }
    }
}

impl Val {
    /// The zero value of a numeric type, or null for a nullable reference type (`None` for a
    /// non-nullable one, which has no default).
    pub fn default_for(ty: ValType) -> Option<Val> {
        Some(match ty {
            ValType::I32 => Val::I32(0),
            ValType::I64 => Val::I64(0),
            ValType::F32 => Val::F32(0),
            ValType::F64 => Val::F64(0),
            ValType::V128 => Val::V128(0),
            ValType::Ref(r) if !r.nullable => return None,
            ValType::Ref(r) if r.heap == HeapType::Extern => Val::ExternRef(None),
            ValType::Ref(r) if r.heap == HeapType::Exn => Val::ExnRef(None),
            ValType::Ref(_) => Val::FuncRef(None),
        })
    }

    /// A short description of the value's kind, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Val::I32(_) => "i32".into(),
            Val::I64(_) => "i64".into(),
            Val::F32(_) => "f32".into(),
            Val::F64(_) => "f64".into(),
            Val::V128(_) => "v128".into(),
            Val::FuncRef(None) => "a null funcref".into(),
            Val::FuncRef(Some(f)) => format!(
                "a function of {}",
                type_name(ValType::Ref(kiln_abi::RefType { nullable: false, heap: HeapType::ConcreteFunc(f.type_id) }))
            ),
            Val::ExternRef(None) => "a null externref".into(),
            Val::ExternRef(Some(_)) => "an externref".into(),
            Val::ExnRef(None) => "a null exnref".into(),
            Val::ExnRef(Some(_)) => "an exnref".into(),
        }
    }

    /// Encodes the value for a place of (canonical) type `ty` in `store`, checking that it
    /// belongs there, and pins a function reference's instance to the store: the one way a
    /// value enters wasm (call arguments, host function results, globals, tables).
    pub(crate) fn to_wasm(&self, ty: ValType, store: &StoreInner) -> Result<u128, ValueError> {
        let mismatch = || ValueError::Type { expected: type_name(ty), found: self.describe() };
        Ok(match (self, ty) {
            (Val::I32(v), ValType::I32) => *v as u32 as u128,
            (Val::I64(v), ValType::I64) => *v as u64 as u128,
            (Val::F32(bits), ValType::F32) => *bits as u128,
            (Val::F64(bits), ValType::F64) => *bits as u128,
            (Val::V128(v), ValType::V128) => *v,
            (Val::ExternRef(v), ValType::Ref(r)) if r.heap == HeapType::Extern => match v {
                None if r.nullable => 0,
                None => return Err(mismatch()),
                // Null is 0, so host value n is stored as n + 1.
                Some(n) => n.checked_add(1).ok_or(ValueError::ExternRefOutOfRange)? as u128,
            },
            (Val::ExnRef(e), ValType::Ref(r)) if r.heap == HeapType::Exn => match e {
                None if r.nullable => 0,
                None => return Err(mismatch()),
                Some(e) if std::ptr::eq(&*e.root.inner, store) => e.exn as usize as u128,
                Some(_) => return Err(ValueError::WrongStore),
            },
            (Val::FuncRef(f), ValType::Ref(r)) if r.heap != HeapType::Extern && r.heap != HeapType::Exn => match f {
                None if r.nullable => 0,
                None => return Err(mismatch()),
                Some(f) => {
                    if let HeapType::ConcreteFunc(id) = r.heap {
                        if f.type_id != id {
                            return Err(mismatch());
                        }
                    }
                    let (funcref, owner) = f.wasm_parts().ok_or(ValueError::HostFunction)?;
                    if !std::ptr::eq(&*owner.store, store) {
                        return Err(ValueError::WrongStore);
                    }
                    store.pin(owner);
                    funcref as usize as u128
                }
            },
            _ => return Err(mismatch()),
        })
    }

    /// Decodes a value of (canonical) type `ty` that wasm code of `store` produced.
    ///
    /// # Safety
    /// `raw` must be a value of type `ty` produced by wasm code or written by [`Self::to_wasm`]
    /// in this store, so a non-null funcref points to a live `VMFuncRef` of one of its
    /// instances (every place that can hold one keeps its instance alive).
    pub(crate) unsafe fn from_wasm(raw: u128, ty: ValType, store: &StoreInner) -> Val {
        match ty {
            ValType::I32 => Val::I32(raw as u32 as i32),
            ValType::I64 => Val::I64(raw as u64 as i64),
            ValType::F32 => Val::F32(raw as u32),
            ValType::F64 => Val::F64(raw as u64),
            ValType::V128 => Val::V128(raw),
            ValType::Ref(r) => match r.heap {
                HeapType::Extern => match raw as u64 {
                    0 => Val::ExternRef(None),
                    n => Val::ExternRef(Some(n - 1)),
                },
                HeapType::Exn => match raw as u64 as usize {
                    0 => Val::ExnRef(None),
                    exn => {
                        let root = store.root().expect("a store's values are read while one of its handles is alive");
                        Val::ExnRef(Some(ExnRef { exn: exn as *const _, root }))
                    }
                },
                HeapType::Func | HeapType::ConcreteFunc(_) => match raw as u64 as usize {
                    0 => Val::FuncRef(None),
                    // SAFETY: forwarded from the caller.
                    p => Val::FuncRef(Some(unsafe { Func::from_vm_funcref(p as *const VMFuncRef, store) })),
                },
            },
        }
    }
}

impl std::fmt::Display for Val {
    /// Integers in signed decimal, floats in Rust's shortest round-trip form (`NaN`s shown with
    /// their bits), vectors in hex, references as `null` or their kind (never an address).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::I32(v) => write!(f, "{v}"),
            Val::I64(v) => write!(f, "{v}"),
            Val::F32(bits) => {
                let v = f32::from_bits(*bits);
                if v.is_nan() {
                    write!(f, "nan:{bits:#010x}")
                } else {
                    write!(f, "{v}")
                }
            }
            Val::F64(bits) => {
                let v = f64::from_bits(*bits);
                if v.is_nan() {
                    write!(f, "nan:{bits:#018x}")
                } else {
                    write!(f, "{v}")
                }
            }
            Val::V128(v) => write!(f, "{v:#034x}"),
            Val::FuncRef(None) | Val::ExternRef(None) | Val::ExnRef(None) => write!(f, "null"),
            Val::ExnRef(Some(_)) => write!(f, "exnref"),
            Val::FuncRef(Some(func)) => write!(f, "funcref {:?} -> {:?}", func.ty().params, func.ty().results),
            Val::ExternRef(Some(n)) => write!(f, "externref:{n}"),
        }
    }
}
