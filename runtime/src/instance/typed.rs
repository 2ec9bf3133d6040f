//! Typed calls: the fast path for embedders that know a function's signature at compile time.
//! Checks the type once, when the `TypedFunc` is made; each call then stores its arguments in a
//! stack array and switches stacks, with no allocation and no system call.
//!
//! The traits are sealed: the unsafe code below trusts what they say (how many values, which
//! register class), so only Kiln's own implementations exist: the numeric types and tuples of
//! up to [`MAX_TYPED_VALUES`] of them.

use std::marker::PhantomData;

use kiln_abi::{FuncType, VMFuncRef, ValType};

use super::run::{enter_through_trampoline, CallError};
use crate::context;
use crate::func::{Func, FuncKind};
use crate::traps::{signals, Activation};

mod sealed {
    /// Implemented only in this module: outside code cannot add typed-call types.
    pub trait Sealed {}
}

/// A Rust type that is a wasm value type (sealed: `i32`, `u32`, `i64`, `u64`, `f32`, `f64`,
/// `u128` for v128). Code outside Kiln cannot implement it:
///
/// ```compile_fail
/// #[derive(Clone, Copy)]
/// struct Forged;
/// impl kiln_runtime::WasmTy for Forged {
///     const TYPE: kiln_runtime::ValType = kiln_runtime::ValType::I64;
///     fn to_raw(self) -> u128 { 0 }
///     fn from_raw(_: u128) -> Self { Forged }
/// }
/// ```
///
/// nor [`WasmResults`] for more results than a typed call has room for:
///
/// ```compile_fail
/// struct Sixteen;
/// impl kiln_runtime::WasmResults for Sixteen {
///     const TYPES: &'static [kiln_runtime::ValType] = &[kiln_runtime::ValType::I64; 16];
///     fn load(_: &[u128; 4]) -> Self { Sixteen }
/// }
/// ```
pub trait WasmTy: Copy + sealed::Sealed {
    /// Its wasm type.
    #[doc(hidden)]
    const TYPE: ValType;
    /// Encodes into the raw 16-byte form.
    #[doc(hidden)]
    fn to_raw(self) -> u128;
    /// Decodes from the raw form.
    #[doc(hidden)]
    fn from_raw(raw: u128) -> Self;
}

macro_rules! wasm_ty {
    ($ty:ty, $vt:ident, |$v:ident| $to:expr, |$r:ident| $from:expr) => {
        impl sealed::Sealed for $ty {}
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
pub const MAX_TYPED_VALUES: usize = 4;

/// Whether a value of `ty` travels in an integer register.
const fn is_integer(ty: ValType) -> bool {
    matches!(ty, ValType::I32 | ValType::I64)
}

/// A tuple of wasm values passed as parameters (sealed; see [`WasmTy`]).
pub trait WasmParams: Copy + sealed::Sealed {
    /// The wasm types, in order (at most [`MAX_TYPED_VALUES`]).
    #[doc(hidden)]
    const TYPES: &'static [ValType];
    /// Stores the values into `slots`.
    #[doc(hidden)]
    fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]);
}

/// A tuple of wasm values returned as results (sealed; see [`WasmTy`]).
pub trait WasmResults: Sized + sealed::Sealed {
    /// The wasm types, in order (at most [`MAX_TYPED_VALUES`]).
    #[doc(hidden)]
    const TYPES: &'static [ValType];
    /// Loads the values from `slots`.
    #[doc(hidden)]
    fn load(slots: &[u128; MAX_TYPED_VALUES]) -> Self;
}

impl sealed::Sealed for () {}

impl WasmParams for () {
    const TYPES: &'static [ValType] = &[];
    fn store(self, _: &mut [u128; MAX_TYPED_VALUES]) {}
}

impl WasmResults for () {
    const TYPES: &'static [ValType] = &[];
    fn load(_: &[u128; MAX_TYPED_VALUES]) -> Self {}
}

impl<T: WasmTy> WasmParams for T {
    const TYPES: &'static [ValType] = &[T::TYPE];
    fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]) {
        slots[0] = self.to_raw();
    }
}

impl<T: WasmTy> WasmResults for T {
    const TYPES: &'static [ValType] = &[T::TYPE];
    fn load(slots: &[u128; MAX_TYPED_VALUES]) -> Self {
        T::from_raw(slots[0])
    }
}

macro_rules! tuples {
    ($(($($t:ident $i:tt),+))*) => {$(
        impl<$($t: WasmTy),+> sealed::Sealed for ($($t,)+) {}
        impl<$($t: WasmTy),+> WasmParams for ($($t,)+) {
            const TYPES: &'static [ValType] = &[$($t::TYPE),+];
            fn store(self, slots: &mut [u128; MAX_TYPED_VALUES]) {
                $(slots[$i] = self.$i.to_raw();)+
            }
        }
        impl<$($t: WasmTy),+> WasmResults for ($($t,)+) {
            const TYPES: &'static [ValType] = &[$($t::TYPE),+];
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

/// Whether `P -> R` can be called directly, arguments and result in integer registers (no
/// array trampoline): at most four integer parameters and at most one integer result. Derived
/// here from the types, never taken from an implementation.
const fn direct<P: WasmParams, R: WasmResults>() -> bool {
    let (params, results) = (P::TYPES, R::TYPES);
    if params.len() > 4 || results.len() > 1 || (results.len() == 1 && !is_integer(results[0])) {
        return false;
    }
    let mut i = 0;
    while i < params.len() {
        if !is_integer(params[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// A function whose signature was checked against `P -> R`.
///
/// Each call takes the store for its thread with one compare-and-swap, unless the thread holds
/// a [`StoreBinding`](crate::StoreBinding) (see [`Store::bind_to_thread`](crate::Store::bind_to_thread)),
/// which makes calls skip it.
pub struct TypedFunc<P, R> {
    func: Func,
    _types: PhantomData<fn(P) -> R>,
}

impl<P, R> Clone for TypedFunc<P, R> {
    fn clone(&self) -> Self {
        TypedFunc { func: self.func.clone(), _types: PhantomData }
    }
}

impl Func {
    /// This function as a [`TypedFunc`], if its type is `P -> R`.
    pub fn typed<P: WasmParams, R: WasmResults>(&self) -> Result<TypedFunc<P, R>, CallError> {
        let expected = FuncType { params: P::TYPES.to_vec(), results: R::TYPES.to_vec() };
        // The traits are sealed, but the unsafe calls below rely on this bound: check it anyway.
        assert!(P::TYPES.len() <= MAX_TYPED_VALUES && R::TYPES.len() <= MAX_TYPED_VALUES);
        if expected != *self.ty() {
            return Err(CallError::BadArguments(format!("the function has type {:?}, not {expected:?}", self.ty())));
        }
        if self.wasm().is_none() {
            return Err(CallError::BadArguments("host functions are called by the guest, not the host".into()));
        }
        Ok(TypedFunc { func: self.clone(), _types: PhantomData })
    }
}

impl<P: WasmParams, R: WasmResults> TypedFunc<P, R> {
    /// The untyped function.
    pub fn func(&self) -> &Func {
        &self.func
    }

    /// Calls the function.
    #[inline]
    pub fn call(&self, params: P) -> Result<R, CallError> {
        let FuncKind::Wasm(wasm) = &self.func.kind else { unreachable!("checked in Func::typed") };
        let owner = &wasm.owner;
        signals::ensure_installed();
        let _running = owner.store.begin_call(owner.slot.stack_limit()).ok_or(CallError::Busy)?;
        let mut slots = [0u128; MAX_TYPED_VALUES];
        params.store(&mut slots);
        if const { direct::<P, R>() } {
            // Integers only: call the function itself, arguments in registers.
            // SAFETY: `funcref` points into the owner's VM context, alive through `owner`.
            let funcref: VMFuncRef = unsafe { *wasm.funcref };
            let args = [slots[0] as u64, slots[1] as u64, slots[2] as u64, slots[3] as u64];
            let activation = Activation::new(owner.slot.stack_top() as usize);
            let result = activation.run(|| {
                // SAFETY: the signature was checked to be at most four integer parameters and
                // at most one integer result; the call guard is held, so the owner's stack is
                // unused, and the activation outlives the call.
                unsafe {
                    context::enter_direct(
                        funcref.code,
                        funcref.vmctx,
                        owner.vmctx,
                        args,
                        owner.slot.stack_top(),
                        &activation.saved_sp,
                    )
                }
            });
            return match result {
                Some(value) => {
                    slots[0] = value as u128;
                    Ok(R::load(&slots))
                }
                None => Err(CallError::Trap(crate::trap::take_trap(&activation, &owner.store))),
            };
        }
        // SAFETY: the call guard is held, the trampoline matches the checked type, and the
        // slots array holds every parameter and result (at most MAX_TYPED_VALUES of each).
        unsafe { enter_through_trampoline(wasm.funcref, wasm.array_trampoline, owner, slots.as_mut_ptr()) }
            .map_err(CallError::Trap)?;
        Ok(R::load(&slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_path_is_derived_from_the_types() {
        assert!(direct::<(), ()>());
        assert!(direct::<(i32, i64, u32, u64), i32>());
        assert!(!direct::<f64, i32>(), "a float parameter travels in an xmm register");
        assert!(!direct::<i32, f32>());
        assert!(!direct::<i32, (i32, i32)>());
        assert!(!direct::<u128, ()>());
    }
}
