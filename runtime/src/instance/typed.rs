//! Typed calls: the fast path for embedders that know a function's signature at compile time.
//! Checks the type once, when the `TypedFunc` is made; each call then stores its arguments in a
//! stack array and switches stacks, with no allocation and no system call.

use std::marker::PhantomData;

use kiln_abi::{FuncType, ValType, VMFuncRef};

use super::run::CallError;
use crate::context;
use crate::externs::{Func, FuncKind};
use crate::traps::{signals, Activation};

/// A Rust type that is a wasm value type.
pub trait WasmTy: Copy {
    /// Its wasm type.
    const TYPE: ValType;
    /// Encodes into the raw 16-byte form.
    fn to_raw(self) -> u128;
    /// Decodes from the raw form.
    fn from_raw(raw: u128) -> Self;
}

macro_rules! wasm_ty {
    ($ty:ty, $vt:ident, |$v:ident| $to:expr, |$r:ident| $from:expr) => {
        impl WasmTy for $ty {
            const TYPE: ValType = ValType::$vt;
            fn to_raw(self) -> u128 {
                let $v = self;
                $to
            }
            fn from_raw($r: u128) -> Self {
                $from
            }
        }
    };
}

wasm_ty!(i32, I32, |v| v as u32 as u128, |r| r as u32 as i32);
wasm_ty!(u32, I32, |v| v as u128, |r| r as u32);
wasm_ty!(i64, I64, |v| v as u64 as u128, |r| r as u64 as i64);
wasm_ty!(u64, I64, |v| v as u128, |r| r as u64);
wasm_ty!(f32, F32, |v| v.to_bits() as u128, |r| f32::from_bits(r as u32));
wasm_ty!(f64, F64, |v| v.to_bits() as u128, |r| f64::from_bits(r as u64));
wasm_ty!(u128, V128, |v| v, |r| r);

/// Most parameters or results a typed call carries (more: use [`Func::call`]).
pub const MAX_TYPED_VALUES: usize = 8;

/// A tuple of wasm values passed as parameters.
pub trait WasmParams: Copy {
    /// The wasm types, in order.
    fn types() -> Vec<ValType>;
    /// Stores the values into `slots`.
    fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]);
}

/// A tuple of wasm values returned as results.
pub trait WasmResults: Sized {
    /// The wasm types, in order.
    fn types() -> Vec<ValType>;
    /// Loads the values from `slots`.
    fn load(slots: &[u128; MAX_TYPED_VALUES]) -> Self;
}

impl WasmParams for () {
    fn types() -> Vec<ValType> {
        Vec::new()
    }
    fn store(self, _: &mut [u128; MAX_TYPED_VALUES]) {}
}

impl WasmResults for () {
    fn types() -> Vec<ValType> {
        Vec::new()
    }
    fn load(_: &[u128; MAX_TYPED_VALUES]) -> Self {}
}

impl<T: WasmTy> WasmParams for T {
    fn types() -> Vec<ValType> {
        vec![T::TYPE]
    }
    fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]) {
        slots[0] = self.to_raw();
    }
}

impl<T: WasmTy> WasmResults for T {
    fn types() -> Vec<ValType> {
        vec![T::TYPE]
    }
    fn load(slots: &[u128; MAX_TYPED_VALUES]) -> Self {
        T::from_raw(slots[0])
    }
}

macro_rules! tuples {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: WasmTy),+> WasmParams for ($($t,)+) {
            fn types() -> Vec<ValType> {
                vec![$($t::TYPE),+]
            }
            fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]) {
                $(slots[$i] = self.$i.to_raw();)+
            }
        }
        impl<$($t: WasmTy),+> WasmResults for ($($t,)+) {
            fn types() -> Vec<ValType> {
                vec![$($t::TYPE),+]
            }
            fn load(slots: &[u128; MAX_TYPED_VALUES]) -> Self {
                ($($t::from_raw(slots[$i]),)+)
            }
        }
    )*};
}

tuples! {
    (A 0, B 1)
    (A 0, B 1, C 2)
    (A 0, B 1, C 2, D 3)
}

/// A function whose signature was checked against `P -> R`.
///
/// While one lives, its store stays bound to the thread that made it (calls from other threads
/// get [`CallError::Busy`]), which lets each call skip any locked instruction. It cannot be
/// sent to another thread; make one there instead.
pub struct TypedFunc<P, R> {
    func: Func,
    /// `!Send` and `!Sync`: the store binding belongs to this thread.
    _types: PhantomData<(fn(P) -> R, *const ())>,
}

impl<P, R> Clone for TypedFunc<P, R> {
    fn clone(&self) -> Self {
        if let FuncKind::Wasm { owner, .. } = &self.func.kind {
            let bound = owner.store.bind();
            debug_assert!(bound, "this thread already owns the store");
        }
        TypedFunc { func: self.func.clone(), _types: PhantomData }
    }
}

impl<P, R> Drop for TypedFunc<P, R> {
    fn drop(&mut self) {
        if let FuncKind::Wasm { owner, .. } = &self.func.kind {
            owner.store.unbind();
        }
    }
}

impl Func {
    /// This function as a [`TypedFunc`], if its type is `P -> R`.
    pub fn typed<P: WasmParams, R: WasmResults>(&self) -> Result<TypedFunc<P, R>, CallError> {
        let expected = FuncType { params: P::types(), results: R::types() };
        if expected != self.ty {
            return Err(CallError::BadArguments(format!("the function has type {:?}, not {expected:?}", self.ty)));
        }
        let FuncKind::Wasm { owner, .. } = &self.kind else {
            return Err(CallError::BadArguments("host functions are called by the guest, not the host".into()));
        };
        if !owner.store.bind() {
            return Err(CallError::Busy);
        }
        Ok(TypedFunc { func: self.clone(), _types: PhantomData })
    }
}

impl<P: WasmParams, R: WasmResults> TypedFunc<P, R> {
    /// Calls the function.
    pub fn call(&self, params: P) -> Result<R, CallError> {
        let FuncKind::Wasm { funcref, array_trampoline, owner } = &self.func.kind else {
            unreachable!("checked in Func::typed")
        };
        signals::ensure_installed();
        let _running = owner.store.begin_call(owner.slot.stack_limit()).ok_or(CallError::Busy)?;
        let mut slots = [0u128; MAX_TYPED_VALUES];
        params.store(&mut slots);
        // SAFETY: `funcref` points into the owner's VM context, alive through `owner`.
        let funcref: VMFuncRef = unsafe { **funcref };
        let activation = Activation::new();
        let returned = activation.run(|| {
            // SAFETY: as in `Func::call`: the trampoline matches the checked type, the slots
            // array holds every parameter and result, the owner's stack is unused while its
            // store runs this call, and the activation outlives it.
            unsafe {
                context::enter(
                    *array_trampoline,
                    funcref.vmctx,
                    owner.vmctx,
                    slots.as_mut_ptr(),
                    funcref.code,
                    owner.slot.stack_top(),
                    &activation.saved_sp,
                )
            }
        });
        if !returned {
            return Err(CallError::Trap(activation.take_trap()));
        }
        Ok(R::load(&slots))
    }
}
