//! [`Tag`], an exception tag as the host sees it.

use std::sync::Arc;

use kiln_abi::{FuncType, VMTagDefinition, ValType};

use crate::store::{Home, Store};

/// An exception tag: exported by an instance or made by the host ([`Tag::new`]). Tags are
/// compared by identity: an exception matches a `catch` only for the very tag it was thrown
/// with, whichever instance imports it under whatever name.
#[derive(Clone)]
pub struct Tag {
    /// The definition; its address is the tag's identity.
    pub(crate) definition: *const VMTagDefinition,
    /// The canonical id of its function type (parameters = payload, no results).
    pub(crate) type_id: u32,
    /// Its function type.
    pub(crate) ty: Arc<FuncType>,
    pub(crate) home: Home,
}

// SAFETY: the definition is never written after creation and lives as long as `home.owner`.
unsafe impl Send for Tag {}
// SAFETY: as above.
unsafe impl Sync for Tag {}

impl Tag {
    /// A new tag of the host's whose exceptions carry values of `params`' types. Guests that
    /// import it can throw and catch its exceptions, and [`Exception::is`](crate::Exception::is) recognises them.
    pub fn new(store: &Store, params: Vec<ValType>) -> Tag {
        let ty = FuncType { params, results: Vec::new() };
        let type_id = crate::types::canonical_id(&ty);
        let definition: Arc<VMTagDefinition> = Arc::new(VMTagDefinition { type_id, _pad: 0 });
        Tag { definition: Arc::as_ptr(&definition), type_id, ty: Arc::new(ty), home: Home::host(store, definition) }
    }

    /// The types of the values its exceptions carry.
    pub fn params(&self) -> &[ValType] {
        &self.ty.params
    }

    /// Whether `self` and `other` are the same tag.
    pub fn same(&self, other: &Tag) -> bool {
        std::ptr::eq(self.definition, other.definition)
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tag").field("params", &self.ty.params).finish_non_exhaustive()
    }
}
