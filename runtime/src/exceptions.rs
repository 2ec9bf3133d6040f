//! Exceptions: the objects guests throw, and the unwinder that takes a throw to its handler.
//!
//! **Objects.** `throw` asks the runtime for an exception object (the `exn_new` libcall), fills
//! in the payload and hands its address around as the `exnref`. Objects live in the store's
//! [`ExceptionHeap`]. One whose exnref never became a wasm value is released when a catch takes
//! only its payload or it leaves the guest (see `kiln_abi::VMException`); the others live as
//! long as the store, so an exnref kept in a global, a table or a local never dangles. So do
//! what an object refers to: the tag (its identity is its definition's address, which must not
//! be reused while the object can be caught) and funcrefs in its payload. The throwing
//! instance is pinned to the store (everything it can reach lives as long as the store), and a
//! host tag's definition is kept by the object itself. The store's limit
//! (`StoreLimits::exception_memory`) bounds what a tenant can pile up. A store belongs to one
//! tenant: no other tenant can reach, or keep alive, its exceptions.
//!
//! **Unwinding.** A handler is reached through a `try_call` (see `compiler/src/translate/`): its
//! return address is listed in the module's handler table with the handler's address and the
//! calling frame's size. A throw that leaves its function calls the `throw_ref` libcall, which
//! follows the frame-pointer chain of the guest stack, from the throwing frame outwards, to
//! the first return address with a handler, and resumes there with the exnref in `rax`, the
//! frame's own frame pointer and stack pointer, and nothing else (compiled code keeps no value
//! in a register across a `try_call`). The walk never leaves the current call's guest stack: a
//! throw that finds no handler there ends the call with [`Exception`], the way a trap does, so
//! an exception never unwinds through host frames.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use kiln_abi::{FuncType, VMException, VMTagDefinition};

use crate::externs::{Owner, Tag};
use crate::store::{StoreInner, StoreRoot};
use crate::trap::{raise, Trap};
use crate::traps::{current_activation, HostError};
use crate::values::Val;

/// Throws exception `exn` of `store` from the guest frame (or host trampoline frame) that
/// called into the runtime last, as noted in the store's runtime limits: resumes at the nearest
/// handler on the current call's guest stack, or ends the call with [`Trap::Exception`].
///
/// # Safety
/// Must be called on the guest stack from a libcall or host function that guest code of
/// `store` called through an entry shim (which noted its frame), with no owned resources on
/// any frame in between; `exn` must be a live exception object of `store` with its payload
/// written.
pub(crate) unsafe fn throw(store: &StoreInner, exn: *const VMException) -> ! {
    let limits = store.limits_ptr();
    // The noted frame is the store's one call's: a store never runs two calls at once, nor
    // re-enters (see `StoreInner::begin_call`), so no later entry overwrote it.
    // SAFETY: the store's limits, written by the entry shim on the way in (caller's contract);
    // an activation is live while guest code runs.
    let (fp, sp, activation) =
        unsafe { ((*limits).last_libcall_fp, (*limits).last_libcall_sp, &*current_activation()) };
    if let Some((handler, resume_sp, resume_fp)) = activation.find_handler(fp, sp) {
        // SAFETY: a handler of a live frame of this call, found on its guest stack; the frames
        // above it own nothing (caller's contract).
        unsafe { crate::context::resume_at_handler(handler, resume_sp, resume_fp, exn as usize) }
    }
    // SAFETY: a live object of this store, and the call is still running (caller's contract).
    let exception = unsafe { Exception::read(exn, store) };
    // The host has its own copy now; unless the guest holds the exnref as a value, nothing
    // refers to the object any more.
    store.exceptions().drop_unescaped(exn);
    // SAFETY: called from guest code; `exception` moves into the activation.
    unsafe { raise(Trap::Exception(exception)) }
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

/// The slot of payload value `index` of exception object `exn`.
///
/// # Safety
/// `exn` must be a live object whose tag has more than `index` parameters.
unsafe fn payload_slot(exn: *const VMException, index: usize) -> *mut u128 {
    // SAFETY: the slot lies inside the object (caller's contract).
    unsafe { exn.cast::<u8>().add(VMException::payload_offset(index as u32) as usize).cast::<u128>().cast_mut() }
}

/// What keeps a host tag's definition alive (its `Tag`'s owner).
pub(crate) type TagOwner = Arc<dyn Any + Send + Sync>;

/// One exception object.
struct Object {
    /// A `VMException` head in the first 16 bytes, then one 16-byte slot per payload value.
    memory: Box<[u128]>,
    /// The tag's type, for reading the payload on the host side.
    ty: Arc<FuncType>,
    /// The tag's definition, if the host made the tag (an instance's tag lives as long as its
    /// pinned instance).
    tag_owner: Option<TagOwner>,
}

/// The live exception objects of one store, by address.
#[derive(Default)]
pub(crate) struct ExceptionHeap {
    objects: HashMap<usize, Object>,
    /// Bytes the objects take (heads and payloads), against `StoreLimits::exception_memory`.
    bytes: u64,
}

impl ExceptionHeap {
    /// A new object of `tag` (of type `ty`, kept alive by `tag_owner` if the host made it) with
    /// a zeroed payload, or `None` when it would take the objects past `limit` bytes.
    pub fn alloc(
        &mut self,
        tag: *const VMTagDefinition,
        ty: Arc<FuncType>,
        tag_owner: Option<TagOwner>,
        limit: u64,
    ) -> Option<*mut VMException> {
        let slots = 1 + ty.params.len();
        let bytes = 16 * slots as u64;
        if self.bytes.saturating_add(bytes) > limit {
            return None;
        }
        let mut memory = vec![0u128; slots].into_boxed_slice();
        let head = memory.as_mut_ptr().cast::<VMException>();
        // SAFETY: the first slot is 16 bytes, aligned to 16 (u128 on x86-64), as `VMException`.
        unsafe { head.write(VMException { tag, escaped: 0, _pad: 0 }) };
        self.objects.insert(head as usize, Object { memory, ty, tag_owner });
        self.bytes += bytes;
        Some(head)
    }

    /// Calls `visit` with every payload slot of every object that may hold a GC reference.
    pub fn visit_references(&mut self, mut visit: impl FnMut(*mut u64)) {
        for (&head, object) in &self.objects {
            for (i, &param) in object.ty.params.iter().enumerate() {
                if crate::types::traced(param) {
                    // SAFETY: a live object of this heap has a slot per parameter of its type.
                    visit(unsafe { payload_slot(head as *const VMException, i) }.cast());
                }
            }
        }
    }

    /// Releases `exn` unless it escaped (see `kiln_abi::VMException`).
    pub fn drop_unescaped(&mut self, exn: *const VMException) {
        // Only objects of this heap are looked at, so a stray address changes nothing.
        let Some(object) = self.objects.get(&(exn as usize)) else { return };
        // SAFETY: a live object of this heap, whose head is a `VMException`.
        if unsafe { (*object.memory.as_ptr().cast::<VMException>()).escaped } == 0 {
            self.bytes -= 16 * object.memory.len() as u64;
            self.objects.remove(&(exn as usize));
        }
    }

    /// The tag's type and host owner of object `exn`, if it is one of this heap's.
    fn tag_of(&self, exn: *const VMException) -> Option<(Arc<FuncType>, Option<TagOwner>)> {
        self.objects.get(&(exn as usize)).map(|object| (object.ty.clone(), object.tag_owner.clone()))
    }
}

/// An exception no guest caught: how a call that threw ends ([`crate::Trap::Exception`]).
#[derive(Clone)]
pub struct Exception {
    /// The identity of the tag it was thrown with.
    tag: *const VMTagDefinition,
    /// The values it carries.
    payload: Vec<Val>,
    /// Keep the tag's definition alive, so its address is not reused by another tag while
    /// this value can be compared with one: the store's root (which keeps the pinned throwing
    /// instance) or the host tag's owner.
    _root: Option<Arc<StoreRoot>>,
    _tag_owner: Option<TagOwner>,
}

// SAFETY: `tag` is only compared, never dereferenced; the rest is Send and Sync.
unsafe impl Send for Exception {}
// SAFETY: as above.
unsafe impl Sync for Exception {}

impl std::fmt::Debug for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exception").field("payload", &self.payload).finish_non_exhaustive()
    }
}

impl Exception {
    /// Whether it was thrown with `tag`.
    pub fn is(&self, tag: &Tag) -> bool {
        std::ptr::eq(self.tag, tag.definition)
    }

    /// The values it carries (its tag's parameters).
    pub fn payload(&self) -> &[Val] {
        &self.payload
    }

    /// Reads exception object `exn` of `store` for the host.
    ///
    /// # Safety
    /// `exn` must be a live exception object of `store` whose payload the guest has written,
    /// and the call that threw it must still be running (its references are then alive).
    pub(crate) unsafe fn read(exn: *const VMException, store: &StoreInner) -> Exception {
        let (ty, tag_owner) = store.exceptions().tag_of(exn).unzip();
        let payload = ty
            .map(|ty| {
                ty.params
                    .iter()
                    .enumerate()
                    .map(|(i, &param)| {
                        // SAFETY: the object has one 16-byte slot per parameter after its head
                        // (caller's contract), holding a value of that type.
                        unsafe { Val::from_wasm(payload_slot(exn, i).read(), param, store) }
                    })
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: a live object (caller's contract).
        let tag = unsafe { (*exn).tag };
        Exception { tag, payload, _root: store.root(), _tag_owner: tag_owner.flatten() }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uncaught wasm exception")?;
        if !self.payload.is_empty() {
            let values: Vec<String> = self.payload.iter().map(Val::to_string).collect();
            write!(f, " carrying ({})", values.join(", "))?;
        }
        Ok(())
    }
}

/// A reference to an exception object (an `exnref` value outside wasm). Like every handle it
/// holds its store's root, which keeps the object (an escaped one lives as long as its store)
/// and its tag alive, and it can only go back into wasm of the same store.
#[derive(Clone)]
pub struct ExnRef {
    pub(crate) exn: *const VMException,
    pub(crate) root: Arc<StoreRoot>,
}

// SAFETY: the object lives as long as the store `root` keeps; the host only reads its tag,
// which is never written after the object was made.
unsafe impl Send for ExnRef {}
// SAFETY: as above.
unsafe impl Sync for ExnRef {}

impl ExnRef {
    /// Whether the exception was thrown with `tag`.
    pub fn is(&self, tag: &Tag) -> bool {
        // SAFETY: the object lives as long as its store, which `self` keeps.
        std::ptr::eq(unsafe { (*self.exn).tag }, tag.definition)
    }
}

impl PartialEq for ExnRef {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.exn, other.exn)
    }
}

impl std::fmt::Debug for ExnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExnRef").finish_non_exhaustive()
    }
}
