//! Lifecycle stage 4, run: call a guest function through the context switch.

use kiln_abi::VMFuncRef;

use crate::context;
use crate::func::{Func, FuncKind};
use crate::trap::{take_trap, Trap};
use crate::traps::{signals, Activation};
use crate::values::Val;
use crate::vm::instance::InstanceInner;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No function is exported under that name.
    #[error("no exported function named `{0}`")]
    NoSuchExport(String),
    /// The arguments do not match the function's parameters.
    #[error("argument mismatch: {0}")]
    BadArguments(String),
    /// The instance's store is already running a call (re-entrant or concurrent use).
    #[error("the instance's store is already running a call")]
    Busy,
    /// The guest trapped.
    #[error("{0}")]
    Trap(Trap),
}

impl Func {
    /// Calls the function with `args`, returning its results. Every argument is checked
    /// against the parameter's exact type (and, for a function reference, its store).
    pub fn call(&self, args: &[Val]) -> Result<Vec<Val>, CallError> {
        let ty = self.ty();
        if args.len() != ty.params.len() {
            return Err(CallError::BadArguments(format!("expected {} arguments, got {}", ty.params.len(), args.len())));
        }
        let FuncKind::Wasm(wasm) = &self.kind else {
            return Err(CallError::BadArguments("host functions are called by the guest, not the host".into()));
        };
        let owner = &wasm.owner;
        let store = &*owner.store;
        signals::ensure_installed();
        let _running = store.begin_call(owner.slot.stack_limit()).ok_or(CallError::Busy)?;

        let mut values = vec![0u128; ty.params.len().max(ty.results.len()).max(1)];
        for (i, ((slot, arg), &param)) in values.iter_mut().zip(args).zip(&ty.params).enumerate() {
            *slot = arg.to_wasm(param, store).map_err(|e| CallError::BadArguments(format!("argument {i}: {e}")))?;
        }
        // SAFETY: the store's call guard is held, the trampoline and `funcref` come from the
        // holding module for this function's type, and `values` has room for its parameters
        // and results.
        unsafe { enter_through_trampoline(wasm.funcref, wasm.array_trampoline, owner, values.as_mut_ptr()) }
            .map_err(CallError::Trap)?;
        // SAFETY: the function returned values of its declared result types.
        Ok(ty.results.iter().zip(&values).map(|(&t, &raw)| unsafe { Val::from_wasm(raw, t, store) }).collect())
    }
}

/// Calls `funcref` through the array trampoline on its owner's guest stack, turning a trap
/// into `Err`. The one way host code enters the guest with values in memory (`Func::call`,
/// and `TypedFunc::call` for signatures the direct entry cannot take).
///
/// # Safety
/// The caller holds the owner's store call guard (so the owner's stack is unused), `funcref`
/// points into `owner`'s VM context, `trampoline` is the array trampoline for the function's
/// type, and `values` has room for its parameters and results.
#[inline]
pub(crate) unsafe fn enter_through_trampoline(
    funcref: *const VMFuncRef,
    trampoline: *const u8,
    owner: &InstanceInner,
    values: *mut u128,
) -> Result<(), Trap> {
    // SAFETY: `funcref` points into the owner's VM context, alive through `owner`.
    let funcref: VMFuncRef = unsafe { *funcref };
    let activation = Activation::new(owner.slot.stack_top() as usize);
    let returned = activation.run(|| {
        // SAFETY: forwarded from the caller's contract; the activation outlives the call.
        unsafe {
            context::enter(
                trampoline,
                funcref.vmctx,
                owner.vmctx,
                values,
                funcref.code,
                owner.slot.stack_top(),
                &activation.saved_sp,
            )
        }
    });
    if returned {
        Ok(())
    } else {
        Err(take_trap(&activation, &owner.store))
    }
}
