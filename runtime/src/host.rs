//! Host functions: Rust closures the guest can import and call.
//!
//! The guest calls the importing module's host trampoline for the function's type, which spills
//! the arguments into a `ValRaw` array and calls [`host_call_shim`] with the function's
//! [`VMHostFuncContext`]. The shim decodes the values, runs the closure, and either writes the
//! results back or raises the closure's error as a trap.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use kiln_abi::{FuncType, VMContextHeader, VMHostFuncContext, VMMemoryDefinition, VMMemoryImport};

use crate::externs::{Func, FuncKind};
use crate::instance::InstanceInner;
use crate::traps::{self, HostError, Trap};
use crate::values::Val;

/// What a host function sees of its caller.
pub struct Caller<'a> {
    instance: &'a InstanceInner,
}

impl Caller<'_> {
    /// The caller's memory `index` as a byte slice, if it has one.
    pub fn memory(&mut self, index: u32) -> Option<&mut [u8]> {
        let meta = &self.instance.module.inner.meta;
        if index as usize >= meta.memories.len() {
            return None;
        }
        let offset = self.instance.module.inner.offsets.memory(index);
        // SAFETY: the VM context holds a valid memory import at this offset; the memory is
        // accessible up to its current length and the store runs only this call.
        unsafe {
            let import = &*(self.instance.vmctx.add(offset as usize) as *const VMMemoryImport);
            let definition: &VMMemoryDefinition = &*import.definition;
            Some(std::slice::from_raw_parts_mut(definition.base, definition.current_length as usize))
        }
    }
}

type Callback = dyn Fn(&mut Caller<'_>, &[Val], &mut [Val]) -> Result<(), HostError> + Send + Sync;

/// A host function's state. `#[repr(C)]` with the VM-visible context first, so the context's
/// address is the state's address.
#[repr(C)]
pub(crate) struct HostFuncInner {
    pub vm: VMHostFuncContext,
    pub ty: FuncType,
    pub type_id: u32,
    callback: Box<Callback>,
}

// SAFETY: the raw pointers in `vm` are a code address and a pointer to this very value.
unsafe impl Send for HostFuncInner {}
// SAFETY: as above; the callback is Send + Sync.
unsafe impl Sync for HostFuncInner {}

impl HostFuncInner {
    pub fn vmctx(&self) -> *mut u8 {
        &self.vm as *const VMHostFuncContext as *mut u8
    }
}

impl Func {
    /// A host function of type `ty` running `callback(caller, params, results)`; `results`
    /// arrives filled with zero values of the result types.
    pub fn new_host(
        ty: FuncType,
        callback: impl Fn(&mut Caller<'_>, &[Val], &mut [Val]) -> Result<(), HostError> + Send + Sync + 'static,
    ) -> Func {
        let type_id = crate::types::canonical_id(&ty);
        let mut inner = Arc::new(HostFuncInner {
            vm: VMHostFuncContext { host_fn: host_call_shim as *const u8, data: std::ptr::null_mut() },
            ty: ty.clone(),
            type_id,
            callback: Box::new(callback),
        });
        let self_ptr = Arc::as_ptr(&inner) as *mut u8;
        Arc::get_mut(&mut inner).expect("just created").vm.data = self_ptr;
        Func { ty: Arc::new(ty), type_id, kind: FuncKind::Host(inner) }
    }
}

/// Called by host trampolines (System V).
unsafe extern "C" fn host_call_shim(ctx: *mut VMHostFuncContext, caller_vmctx: *mut u8, values: *mut u128) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the trampoline passes the context we built in `Func::new_host`, kept alive by
        // the importing instance, and its caller's VM context.
        unsafe { call_host(ctx, caller_vmctx, values) }
    }));
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(_) => HostError("host function panicked".into()),
    };
    // SAFETY: we were called by guest code, and this frame owns nothing but `error`, which
    // `raise` moves into the activation.
    unsafe { traps::raise(Trap::Host(error)) }
}

/// # Safety
/// See [`host_call_shim`].
unsafe fn call_host(ctx: *mut VMHostFuncContext, caller_vmctx: *mut u8, values: *mut u128) -> Result<(), HostError> {
    // SAFETY: `data` points at the HostFuncInner that contains `ctx`.
    let func = unsafe { &*((*ctx).data as *const HostFuncInner) };
    // SAFETY: every guest VM context's header points at its instance.
    let instance = unsafe { &*(*(caller_vmctx as *const VMContextHeader)).instance.cast::<InstanceInner>() };
    let slots = func.ty.params.len().max(func.ty.results.len());
    // SAFETY: the trampoline's array has max(params, results, 1) slots.
    let raw = unsafe { std::slice::from_raw_parts_mut(values, slots) };
    let params: Vec<Val> = func.ty.params.iter().zip(raw.iter()).map(|(&t, &r)| Val::from_raw(r, t)).collect();
    let mut results: Vec<Val> = func.ty.results.iter().map(|&t| Val::default_for(t)).collect();
    (func.callback)(&mut Caller { instance }, &params, &mut results)?;
    for ((slot, value), &ty) in raw.iter_mut().zip(&results).zip(&func.ty.results) {
        if !value.matches(ty) {
            return Err(HostError(format!("host function returned {value} for a result of type {ty:?}").into()));
        }
        *slot = value.to_raw();
    }
    Ok(())
}
