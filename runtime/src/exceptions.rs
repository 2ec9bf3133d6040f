//! The host's view of exceptions: [`Exception`] (how a call that threw ends), [`ExnRef`] (an
//! `exnref` outside wasm). How a host function throws is `host`; the objects and the unwinder
//! are `vm::exceptions`.

use std::sync::Arc;

use kiln_abi::{VMException, VMTagDefinition};

use crate::externs::Tag;
use crate::values::Val;
use crate::vm::exceptions::{payload_slot, TagOwner};
use crate::vm::store::{StoreInner, StoreRoot};

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
    /// and what its payload refers to must be alive: it is while the call that threw it runs,
    /// and after it, until anything else runs in the store.
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
