//! Typed calls: the fast path for embedders that know a function's signature at compile time.
//! Checks the type once, when the `TypedFunc` is made; each call then stores its arguments in a
//! stack array and switches stacks, with no allocation and no system call.

use std::marker::PhantomData;

use kiln_abi::{FuncType, ValType, VMFuncRef};

use super::run::{enter_through_trampoline, CallError};
use crate::context;
use crate::externs::{Func, FuncKind};
use crate::traps::{signals, Activation};

/// A Rust type that is a wasm value type.
pub trait WasmTy: Copy {
    /// Its wasm type.
    const TYPE: ValType;
    /// Whether it travels in an integer register (i32/i64), so calls can skip the trampoline.
    const INTEGER: bool = matches!(Self::TYPE, ValType::I32 | ValType::I64);
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
    /// Whether every parameter is an integer and there are at most four (the direct path).
    const DIRECT: bool;
    /// The wasm types, in order.
    fn types() -> Vec<ValType>;
    /// Stores the values into `slots`.
    fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]);
}

/// A tuple of wasm values returned as results.
pub trait WasmResults: Sized {
    /// Whether there is at most one result and it is an integer (the direct path).
    const DIRECT: bool;
    /// The wasm types, in order.
    fn types() -> Vec<ValType>;
    /// Loads the values from `slots`.
    fn load(slots: &[u128; MAX_TYPED_VALUES]) -> Self;
}

impl WasmParams for () {
    const DIRECT: bool = true;
    fn types() -> Vec<ValType> {
        Vec::new()
    }
    fn store(self, _: &mut [u128; MAX_TYPED_VALUES]) {}
}

impl WasmResults for () {
    const DIRECT: bool = true;
    fn types() -> Vec<ValType> {
        Vec::new()
    }
    fn load(_: &[u128; MAX_TYPED_VALUES]) -> Self {}
}

impl<T: WasmTy> WasmParams for T {
    const DIRECT: bool = T::INTEGER;
    fn types() -> Vec<ValType> {
        vec![T::TYPE]
    }
    fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]) {
        slots[0] = self.to_raw();
    }
}

impl<T: WasmTy> WasmResults for T {
    const DIRECT: bool = T::INTEGER;
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
            const DIRECT: bool = $($t::INTEGER &&)+ true;
            fn types() -> Vec<ValType> {
                vec![$($t::TYPE),+]
            }
            fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]) {
                $(slots[$i] = self.$i.to_raw();)+
            }
        }
        impl<$($t: WasmTy),+> WasmResults for ($($t,)+) {
            const DIRECT: bool = false;
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
        if expected != *self.ty {
            return Err(CallError::BadArguments(format!("the function has type {:?}, not {expected:?}", self.ty)));
        }
        let FuncKind::Wasm { owner, .. } = &self.kind else {
            return Err(CallError::BadArguments("host functions are called by the guest, not the host".into()));
        };
        if !owner.store.bind() {
            return Err(CallError::Busy);
        }
        // The typed function stays on this thread, so its calls can skip this check.
        signals::ensure_installed();
        Ok(TypedFunc { func: self.clone(), _types: PhantomData })
    }
}

impl<P: WasmParams, R: WasmResults> TypedFunc<P, R> {
    /// Calls the function.
    #[inline]
    pub fn call(&self, params: P) -> Result<R, CallError> {
        let FuncKind::Wasm { funcref, array_trampoline, owner } = &self.func.kind else {
            unreachable!("checked in Func::typed")
        };
        // This thread holds a binding (made with the TypedFunc, which cannot leave the thread),
        // so it owns the store and its signal handling is installed.
        let _running = owner.store.begin_bound_call(owner.slot.stack_limit()).ok_or(CallError::Busy)?;
        let mut slots = [0u128; MAX_TYPED_VALUES];
        params.store(&mut slots);
        if P::DIRECT && R::DIRECT {
            // Integers only: call the function itself, arguments in registers.
            // SAFETY: `funcref` points into the owner's VM context, alive through `owner`.
            let funcref: VMFuncRef = unsafe { **funcref };
            let args = [slots[0] as u64, slots[1] as u64, slots[2] as u64, slots[3] as u64];
            let activation = Activation::new();
            let result = activation.run(|| {
                // SAFETY: the signature was checked to be at most four integer parameters and
                // at most one integer result; the bound call guard is held, so the owner's stack
                // is unused, and the activation outlives the call.
                unsafe {
                    context::enter_direct(funcref.code, funcref.vmctx, owner.vmctx, args, owner.slot.stack_top(), &activation.saved_sp)
                }
            });
            return match result {
                Some(value) => {
                    slots[0] = value as u128;
                    Ok(R::load(&slots))
                }
                None => Err(CallError::Trap(activation.take_trap())),
            };
        }
        // SAFETY: the bound call guard is held, the trampoline matches the checked type, and the
        // slots array holds every parameter and result.
        unsafe { enter_through_trampoline(*funcref, *array_trampoline, owner, slots.as_mut_ptr()) }
            .map_err(CallError::Trap)?;
        Ok(R::load(&slots))
    }
}
