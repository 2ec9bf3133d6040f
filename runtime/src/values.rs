//! Wasm values as the host sees them, and the one place they cross into and out of wasm's raw
//! 16-byte form ([`kiln_abi::ValRaw`]).
//!
//! A function reference is a [`Func`] handle, never an address: leaving wasm, a raw funcref
//! becomes a handle that keeps its instance alive; entering wasm, a handle is checked against
//! the exact declared type (concrete function types included), the store it must belong to,
//! and is pinned to that store (see [`crate::vm::store`]) so nothing it can be stored in outlives it.

use kiln_abi::gc::RefKind;
use kiln_abi::{HeapType, RefHierarchy, VMFuncRef, ValType};

use crate::exceptions::ExnRef;
use crate::func::Func;
use crate::gc::AnyRef;
use crate::vm::store::StoreInner;

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
    /// An external reference: an opaque host number of at most
    /// [`kiln_abi::gc::MAX_HOST_VALUE`] (2^62 - 1), or `None` for null. (An `externref` that
    /// wasm made from an `anyref` with `extern.convert_any` reaches the host as the
    /// [`Val::AnyRef`] it holds: the two hierarchies share one encoding.)
    ExternRef(Option<u64>),
    /// A reference of the `any` hierarchy: an i31, a struct or array, or an internalized host
    /// value (`None` is null).
    AnyRef(Option<AnyRef>),
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
    /// Extern reference values use 62 bits (the rest tell them apart from GC references).
    #[error("extern reference values must be below 2^62")]
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
                HeapType::Any => "any".to_string(),
                HeapType::Eq => "eq".to_string(),
                HeapType::I31 => "i31".to_string(),
                HeapType::Struct => "struct".to_string(),
                HeapType::Array => "array".to_string(),
                HeapType::ConcreteStruct(id) => format!("struct type #{id}"),
                HeapType::ConcreteArray(id) => format!("array type #{id}"),
                HeapType::None => "none".to_string(),
                HeapType::NoFunc => "nofunc".to_string(),
                HeapType::NoExtern => "noextern".to_string(),
                HeapType::NoExn => "noexn".to_string(),
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
            ValType::Ref(r) => match r.heap.hierarchy() {
                RefHierarchy::Extern => Val::ExternRef(None),
                RefHierarchy::Exn => Val::ExnRef(None),
                RefHierarchy::Any => Val::AnyRef(None),
                RefHierarchy::Func => Val::FuncRef(None),
            },
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
            Val::AnyRef(None) => "a null anyref".into(),
            Val::AnyRef(Some(AnyRef::I31(_))) => "an i31".into(),
            Val::AnyRef(Some(AnyRef::Host(_))) => "an internalized host value".into(),
            Val::AnyRef(Some(AnyRef::Object(o))) if o.is_array() => "an array".into(),
            Val::AnyRef(Some(AnyRef::Object(_))) => "a struct".into(),
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
            (Val::ExternRef(None) | Val::AnyRef(None), ValType::Ref(r))
                if r.nullable && matches!(r.heap.hierarchy(), RefHierarchy::Extern | RefHierarchy::Any) =>
            {
                0
            }
            (Val::ExternRef(Some(n)), ValType::Ref(r)) if r.heap == HeapType::Extern => {
                kiln_abi::gc::host_ref(*n).ok_or(ValueError::ExternRefOutOfRange)? as u128
            }
            // An anyref may go where an externref is expected (as `extern.convert_any` would
            // make it) or where its own type is.
            (Val::AnyRef(Some(a)), ValType::Ref(r)) if r.heap == HeapType::Extern || a.is_of(r.heap) => {
                any_ref_to_raw(a, store)? as u128
            }
            (Val::ExnRef(e), ValType::Ref(r)) if r.heap.hierarchy() == RefHierarchy::Exn => match e {
                None if r.nullable => 0,
                None => return Err(mismatch()),
                Some(_) if r.heap == HeapType::NoExn => return Err(mismatch()),
                Some(e) if std::ptr::eq(&*e.root.inner, store) => e.exn as usize as u128,
                Some(_) => return Err(ValueError::WrongStore),
            },
            (Val::FuncRef(f), ValType::Ref(r)) if r.heap.hierarchy() == RefHierarchy::Func => match f {
                None if r.nullable => 0,
                None => return Err(mismatch()),
                Some(f) => {
                    let fits = match r.heap {
                        HeapType::ConcreteFunc(id) => crate::types::is_subtype_id(f.type_id, id),
                        HeapType::NoFunc => false,
                        _ => true,
                    };
                    if !fits {
                        return Err(mismatch());
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
            ValType::Ref(r) => match r.heap.hierarchy() {
                RefHierarchy::Extern => match kiln_abi::gc::ref_kind(raw as u64) {
                    None => Val::ExternRef(None),
                    Some(RefKind::Host(n)) => Val::ExternRef(Some(n)),
                    Some(kind) => Val::AnyRef(Some(AnyRef::from_raw(kind, store))),
                },
                RefHierarchy::Any => {
                    Val::AnyRef(kiln_abi::gc::ref_kind(raw as u64).map(|k| AnyRef::from_raw(k, store)))
                }
                RefHierarchy::Exn => match raw as u64 as usize {
                    0 => Val::ExnRef(None),
                    exn => {
                        let root = store.root().expect("a store's values are read while one of its handles is alive");
                        Val::ExnRef(Some(ExnRef { exn: exn as *const _, root }))
                    }
                },
                RefHierarchy::Func => match raw as u64 as usize {
                    0 => Val::FuncRef(None),
                    // SAFETY: forwarded from the caller.
                    p => Val::FuncRef(Some(unsafe { Func::from_vm_funcref(p as *const VMFuncRef, store) })),
                },
            },
        }
    }
}

/// The raw reference for wasm of `store` of a non-null `anyref`.
fn any_ref_to_raw(a: &AnyRef, store: &StoreInner) -> Result<u64, ValueError> {
    match a {
        AnyRef::I31(v) => Ok(((*v as u64) << 1 | kiln_abi::gc::I31_TAG) & 0xffff_ffff),
        AnyRef::Host(n) => kiln_abi::gc::host_ref(*n).ok_or(ValueError::ExternRefOutOfRange),
        AnyRef::Object(o) if std::ptr::eq(o.store(), store) => Ok(o.offset() as u64),
        AnyRef::Object(_) => Err(ValueError::WrongStore),
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
            Val::FuncRef(None) | Val::ExternRef(None) | Val::ExnRef(None) | Val::AnyRef(None) => write!(f, "null"),
            Val::AnyRef(Some(AnyRef::I31(v))) => write!(f, "i31:{v}"),
            Val::AnyRef(Some(AnyRef::Host(n))) => write!(f, "anyref:{n}"),
            Val::AnyRef(Some(AnyRef::Object(o))) if o.is_array() => write!(f, "array"),
            Val::AnyRef(Some(AnyRef::Object(_))) => write!(f, "struct"),
            Val::ExnRef(Some(_)) => write!(f, "exnref"),
            Val::FuncRef(Some(func)) => write!(f, "funcref {:?} -> {:?}", func.ty().params, func.ty().results),
            Val::ExternRef(Some(n)) => write!(f, "externref:{n}"),
        }
    }
}
