//! [`ExnRef`], an `exnref` outside wasm. An uncaught exception ([`crate::Exception`]) is
//! `trap`; how a host function throws is `host`; the objects and the unwinder are
//! `vm::exceptions`.

use std::sync::Arc;

use kiln_abi::VMException;

use crate::tag::Tag;
use crate::vm::store::StoreRoot;

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
