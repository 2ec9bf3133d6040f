//! Host functions: Rust closures the guest can import and call.
//!
//! The guest calls the importing module's host trampoline for the function's type, which spills
//! the arguments into a `ValRaw` array and calls [`host_call_shim`] with the function's
//! [`VMHostFuncContext`]. The shim decodes the values, runs the closure, checks every result
//! against the declared type (and store, for references), and either writes the results back or
//! raises the closure's error as a trap. Nothing the closure owns is left on the guest stack
//! when it traps: the shim drops it first.

use std::os::fd::BorrowedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use kiln_abi::{FuncType, TrapCode, VMException, VMHostFuncContext, VMMemoryDefinition, VMMemoryImport};

use crate::func::{Func, FuncKind, HostFunction};
use crate::store::Owner;
use crate::tag::Tag;
use crate::trap::{self, Trap};
use crate::traps::HostError;
use crate::values::Val;
use crate::vm::exceptions::payload_slot;
use crate::vm::instance::InstanceInner;
use crate::vm::store::StoreInner;

/// What a host function sees of its caller.
pub struct Caller<'a> {
    instance: &'a InstanceInner,
}

/// A guest's unshared memory lent to a host function (see [`Caller::memory_bytes`]). Reads see
/// all of it; writes go through [`Self::slice_mut`], which marks the pages it hands out as
/// written, so that teardown resets exactly the pages the guest and the host wrote.
pub struct GuestBytes<'a> {
    bytes: &'a mut [u8],
    /// The memory's definition, for marking; `None` for bytes no instance owns.
    definition: Option<*const VMMemoryDefinition>,
}

impl<'a> GuestBytes<'a> {
    /// Bytes that belong to no instance (for testing code written against guest memory):
    /// nothing is tracked.
    pub fn detached(bytes: &'a mut [u8]) -> GuestBytes<'a> {
        GuestBytes { bytes, definition: None }
    }

    /// The memory's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The whole memory, for reading.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes
    }

    /// The bytes in `range`, writable (`None` if the range is not inside the memory). Their
    /// pages count as written.
    pub fn slice_mut(&mut self, range: std::ops::Range<usize>) -> Option<&mut [u8]> {
        let slice = self.bytes.get_mut(range.clone())?;
        if let Some(definition) = self.definition {
            // SAFETY: the caller's live definition (borrowed for `'a`); the range is inside it.
            unsafe { crate::dirty::mark(definition, range.start, slice.len()) };
        }
        Some(slice)
    }
}

/// Returned by a host function that stopped waiting because its store was interrupted (see
/// [`Waiter`]): the guest traps with "deadline exceeded".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline exceeded")]
pub struct Interrupted;

impl<'a> Caller<'a> {
    /// The memory definition of the caller's memory `index`, if it has one.
    fn memory_definition(&self, index: u32) -> Option<(&VMMemoryDefinition, bool)> {
        let meta = &self.instance.module.inner.meta;
        let ty = meta.memories.get(index as usize)?;
        let offset = self.instance.module.inner.offsets.memory(index);
        // SAFETY: the VM context holds a valid memory import at this offset, written at
        // instantiation; the definition lives as long as the instance (its owner is kept alive).
        let definition = unsafe { &*(*(self.instance.vmctx.add(offset as usize) as *const VMMemoryImport)).definition };
        Some((definition, ty.shared))
    }

    /// The caller's unshared memory `index` as a byte slice (`None` if it has no such memory,
    /// or if it is shared: see [`Self::shared_memory`]). Exclusive for as long as the borrow
    /// lasts: the guest is paused in this call and only its store reaches an unshared memory.
    ///
    /// Since the host may write anywhere in the slice, the whole memory counts as written and
    /// teardown resets all of it; [`Self::memory_bytes`] tracks writes page by page instead.
    pub fn memory(&mut self, index: u32) -> Option<&mut [u8]> {
        let bytes = self.memory_bytes(index)?;
        let len = bytes.bytes.len();
        if let Some(definition) = bytes.definition {
            // SAFETY: the caller's live definition; the range is the whole memory.
            unsafe { crate::dirty::mark(definition, 0, len) };
        }
        Some(bytes.bytes)
    }

    /// The caller's unshared memory `index`, for reading whole and writing where needed (see
    /// [`GuestBytes`]); `None` as for [`Self::memory`].
    pub fn memory_bytes(&mut self, index: u32) -> Option<GuestBytes<'_>> {
        let (definition, shared) = self.memory_definition(index)?;
        if shared {
            return None;
        }
        // SAFETY: the memory is accessible up to its current length; the store runs only this
        // call and no other store can reach an unshared memory, and `&mut self` keeps the
        // slice unique on the host side.
        let bytes = unsafe { std::slice::from_raw_parts_mut(definition.base, definition.current_length as usize) };
        Some(GuestBytes { bytes, definition: Some(definition) })
    }

    /// The caller's shared memory `index`, as atomic bytes (other threads may be using it).
    /// The host may store anywhere in it, so the whole memory counts as written.
    pub fn shared_memory(&self, index: u32) -> Option<&[AtomicU8]> {
        let (definition, shared) = self.memory_definition(index)?;
        if !shared {
            return None;
        }
        // SAFETY: the caller's live definition; the range is the memory's current size.
        unsafe { crate::dirty::mark(definition, 0, definition.current_length as usize) };
        // SAFETY: accessible up to the current length, which only grows; `AtomicU8` has the
        // layout of `u8`, and every Rust access through this slice is atomic.
        Some(unsafe {
            std::slice::from_raw_parts(definition.base.cast::<AtomicU8>(), definition.current_length as usize)
        })
    }

    /// Whether the caller's store has been interrupted: a host function that waits should stop
    /// and return `Err(HostError(Box::new(Interrupted)))`.
    pub fn interrupted(&self) -> bool {
        self.instance.store.interrupted()
    }

    /// The data attached to the caller's store with [`Store::set_data`](crate::Store::set_data),
    /// if it is a `T`. Borrowed from the store, not from the caller, so the caller's memory can
    /// be borrowed at the same time.
    pub fn data<T: std::any::Any>(&self) -> Option<&'a T> {
        let instance: &'a InstanceInner = self.instance;
        instance.store.data.get()?.as_ref().downcast_ref()
    }

    /// What a host function that blocks needs to stop when the store is interrupted (see
    /// [`Waiter`]); owned, so it can be used while the caller's memory is borrowed.
    pub fn waiter(&self) -> Waiter {
        Waiter { store: self.instance.store.clone() }
    }
}

/// Lets a host function wait in `poll(2)` and still wake when its store is interrupted:
/// put [`Waiter::fd`] in the poll set beside the descriptors waited for, and check
/// [`Waiter::interrupted`] after getting it and whenever it is readable (it may also be
/// readable spuriously, after an interrupt that was cleared).
pub struct Waiter {
    store: Arc<StoreInner>,
}

impl Waiter {
    /// Whether the store has been interrupted.
    pub fn interrupted(&self) -> bool {
        self.store.interrupted()
    }

    /// A descriptor that becomes readable when the store is interrupted (created on first
    /// use, one per store).
    pub fn fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        self.store.waker()
    }

    /// Called when [`Self::fd`] is readable: whether the store is interrupted; if not (a
    /// stale wake-up from an interrupt already cleared), empties the descriptor so the next
    /// wait sleeps again.
    pub fn acknowledge(&self) -> bool {
        if self.interrupted() {
            return true;
        }
        if let Ok(fd) = self.store.waker() {
            crate::sys::unix::drain_eventfd(std::os::fd::AsRawFd::as_raw_fd(&fd));
        }
        self.interrupted()
    }
}

type Callback = dyn Fn(&mut Caller<'_>, &[Val], &mut [Val]) -> Result<(), HostError> + Send + Sync;

/// A host function's state. `#[repr(C)]` with the VM-visible context first, so the context's
/// address is the state's address.
#[repr(C)]
pub(crate) struct HostFuncInner {
    pub vm: VMHostFuncContext,
    pub ty: FuncType,
    callback: Box<Callback>,
}

// SAFETY: the raw pointers in `vm` are a code address and a pointer to this very value.
unsafe impl Send for HostFuncInner {}
// SAFETY: as above; the callback is Send + Sync.
unsafe impl Sync for HostFuncInner {}

impl HostFunction for HostFuncInner {
    fn ty(&self) -> &FuncType {
        &self.ty
    }

    fn vmctx(&self) -> *mut u8 {
        &self.vm as *const VMHostFuncContext as *mut u8
    }
}

impl Func {
    /// A host function of type `ty` running `callback(caller, params, results)`; `results`
    /// arrives filled with zero values (null for references) of the result types, and each
    /// result the callback leaves must be of its declared type (a mismatch traps). Concrete
    /// reference types in `ty` are canonical type ids (as in [`Func::ty`]).
    pub fn new_host(
        ty: FuncType,
        callback: impl Fn(&mut Caller<'_>, &[Val], &mut [Val]) -> Result<(), HostError> + Send + Sync + 'static,
    ) -> Func {
        let type_id = crate::types::canonical_id(&ty);
        let mut inner = Arc::new(HostFuncInner {
            vm: VMHostFuncContext { host_fn: host_call_entry as *const u8, data: std::ptr::null_mut() },
            ty,
            callback: Box::new(callback),
        });
        let self_ptr = Arc::as_ptr(&inner) as *mut u8;
        Arc::get_mut(&mut inner).expect("just created").vm.data = self_ptr;
        Func { type_id, kind: FuncKind::Host(inner) }
    }
}

/// Called by host trampolines (System V): notes the trampoline's frame in the caller's store's
/// runtime limits, as the libcall shims do, so that an exception the host function throws
/// starts its unwinding there, then jumps to [`host_call_shim`].
///
/// # Safety
/// Only host trampolines call it, with the arguments of [`host_call_shim`].
#[unsafe(naked)]
unsafe extern "C" fn host_call_entry() {
    // SAFETY: the body is the whole function: it reads the runtime-limits pointer from the
    // caller's VM context (rsi, the second argument), writes two fields of that store-owned
    // struct, and tail-jumps with the stack and every argument register as it found them.
    crate::context::note_guest_frame_then_jump!("rsi", host_call_shim)
}

/// Runs the host function (see [`host_call_entry`]).
unsafe extern "C" fn host_call_shim(ctx: *mut VMHostFuncContext, caller_vmctx: *mut u8, values: *mut u128) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the trampoline passes the context we built in `Func::new_host`, kept alive by
        // the importing instance, and its caller's VM context.
        unsafe { call_host(ctx, caller_vmctx, values) }
    }));
    let trap = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) if error.0.is::<Interrupted>() => Trap::wasm(TrapCode::Interrupt),
        Ok(Err(error)) if error.0.is::<Thrown>() => {
            let thrown = *error.0.downcast::<Thrown>().expect("checked above");
            // SAFETY: the caller's instance is alive during the call.
            let store = unsafe { &InstanceInner::from_vmctx(caller_vmctx).store };
            match thrown.into_exception(store) {
                // SAFETY: called by guest code through `host_call_entry`, which noted the
                // trampoline's frame; a new object of the caller's store; this frame owns
                // nothing else (`thrown` was consumed).
                Ok(exn) => unsafe { crate::vm::exceptions::throw(store.limits_ptr(), exn) },
                Err(trap) => trap,
            }
        }
        Ok(Err(error)) => Trap::Host(error),
        Err(payload) => {
            // `raise` never returns, so anything still owned here would leak: drop the panic
            // payload now (its destructor may itself panic; then it is leaked, not unwound).
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Trap::Host(HostError("host function panicked".into()))
        }
    };
    // SAFETY: we were called by guest code, and this frame owns nothing but `trap`, which
    // `raise` moves into the activation.
    unsafe { trap::raise(trap) }
}

/// # Safety
/// See [`host_call_shim`].
unsafe fn call_host(ctx: *mut VMHostFuncContext, caller_vmctx: *mut u8, values: *mut u128) -> Result<(), HostError> {
    // SAFETY: `data` points at the HostFuncInner that contains `ctx`.
    let func = unsafe { &*((*ctx).data as *const HostFuncInner) };
    // SAFETY: the caller's instance is alive during the call.
    let instance = unsafe { InstanceInner::from_vmctx(caller_vmctx) };
    let store = &*instance.store;
    let slots = func.ty.params.len().max(func.ty.results.len());
    // SAFETY: the trampoline's array has max(params, results, 1) slots.
    let raw = unsafe { std::slice::from_raw_parts_mut(values, slots) };
    let params: Vec<Val> = func
        .ty
        .params
        .iter()
        .zip(raw.iter())
        // SAFETY: the guest passed values of the function's declared parameter types.
        .map(|(&t, &r)| unsafe { Val::from_wasm(r, t, store) })
        .collect();
    let mut results: Vec<Val> =
        func.ty.results.iter().map(|&t| Val::default_for(t).unwrap_or(Val::FuncRef(None))).collect();
    (func.callback)(&mut Caller { instance }, &params, &mut results)?;
    // Check every result before writing any: the guest sees all of them or a trap.
    let encoded = results
        .iter()
        .zip(&func.ty.results)
        .map(|(value, &ty)| value.to_wasm(ty, store))
        .collect::<Result<Vec<u128>, _>>()
        .map_err(|e| HostError(format!("host function result: {e}").into()))?;
    for (slot, value) in raw.iter_mut().zip(encoded) {
        *slot = value;
    }
    Ok(())
}

/// What a host function returns to throw a guest-visible exception (see [`HostError::throw`]).
#[derive(Debug)]
pub(crate) struct Thrown {
    pub tag: Tag,
    pub payload: Vec<Val>,
}

impl std::fmt::Display for Thrown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exception thrown by a host function")
    }
}

impl std::error::Error for Thrown {}

impl HostError {
    /// The error a host function returns to throw an exception of `tag` carrying `payload`
    /// into the guest that called it: the calling guest frames may catch it like one they
    /// threw. The tag must belong to the caller's store and the payload match its parameters;
    /// otherwise the guest traps with a host error saying why.
    pub fn throw(tag: &Tag, payload: Vec<Val>) -> HostError {
        HostError(Box::new(Thrown { tag: tag.clone(), payload }))
    }
}

impl Thrown {
    /// A new exception object of `store` for this throw, or the trap that replaces it.
    pub fn into_exception(self, store: &StoreInner) -> Result<*const VMException, Trap> {
        let host_error = |message: String| Trap::Host(HostError(message.into()));
        if !std::ptr::eq(&*self.tag.home.store, store) {
            return Err(host_error("a host function threw an exception of another store's tag".into()));
        }
        let ty = self.tag.ty.clone();
        if self.payload.len() != ty.params.len() {
            let (given, expected) = (self.payload.len(), ty.params.len());
            return Err(host_error(format!("a host function threw {given} values with a tag of {expected}")));
        }
        let values = self
            .payload
            .iter()
            .zip(&ty.params)
            .map(|(value, &param)| value.to_wasm(param, store))
            .collect::<Result<Vec<u128>, _>>()
            .map_err(|e| host_error(format!("a host function's exception payload: {e}")))?;
        // Keep the tag alive as long as the object can be caught: a host tag's definition in
        // the object, an instance's tag by pinning the instance.
        let tag_owner = match &self.tag.home.owner {
            Owner::Host(owner) => Some(owner.clone()),
            Owner::Instance(instance) => {
                store.pin(instance);
                None
            }
        };
        let exn = store
            .exceptions()
            .alloc(self.tag.definition, ty, tag_owner, store.resource_limits.exception_memory)
            .ok_or(Trap::wasm(kiln_abi::TrapCode::TooManyExceptions))?;
        for (i, value) in values.into_iter().enumerate() {
            // SAFETY: the new object has a slot per parameter after its head.
            unsafe { payload_slot(exn, i).write(value) };
        }
        Ok(exn)
    }
}
