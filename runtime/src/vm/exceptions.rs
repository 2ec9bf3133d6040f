//! Exceptions: the objects guests throw, and the unwinder that takes a throw to its handler.
//! The host's view of them is [`crate::Exception`] (in `trap`) and [`crate::ExnRef`].
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
//! throw that finds no handler there ends the call with [`crate::Exception`], the way a trap does, so
//! an exception never unwinds through host frames.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use kiln_abi::{FuncType, VMException, VMRuntimeLimits, VMTagDefinition};

use crate::traps::{current_activation, raise, Raised};

/// Throws exception `exn` of a store from the guest frame (or host trampoline frame) that
/// called into the runtime last, as noted in the store's runtime limits `limits`: resumes at the nearest
/// handler on the current call's guest stack, or ends the call with the exception ([`Uncaught`]).
///
/// # Safety
/// Must be called on the guest stack from a libcall or host function that guest code of the
/// store called through an entry shim (which noted its frame), with no owned resources on
/// any frame in between; `exn` must be a live exception object of the store with its payload
/// written.
pub(crate) unsafe fn throw(limits: *mut VMRuntimeLimits, exn: *const VMException) -> ! {
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
    // SAFETY: called from guest code (caller's contract); the object stays in the store's heap
    // until the layer above has read it (see `Uncaught`).
    unsafe { raise(Raised::Other(Box::new(Uncaught(exn)))) }
}

/// What a call that threw and found no handler raises: the exception object, still in its
/// store's heap. Whoever takes it from the activation reads it for the host, then releases it
/// with [`ExceptionHeap::drop_unescaped`] (unless the guest also holds it as an exnref).
pub(crate) struct Uncaught(pub *const VMException);

/// The slot of payload value `index` of exception object `exn`.
///
/// # Safety
/// `exn` must be a live object whose tag has more than `index` parameters.
pub(crate) unsafe fn payload_slot(exn: *const VMException, index: usize) -> *mut u128 {
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
    pub fn tag_of(&self, exn: *const VMException) -> Option<(Arc<FuncType>, Option<TagOwner>)> {
        self.objects.get(&(exn as usize)).map(|object| (object.ty.clone(), object.tag_owner.clone()))
    }
}
