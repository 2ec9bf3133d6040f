//! [`AnyRef`], the handle through which the host sees a struct, an array or an i31 of a
//! store's GC heap (the heap and its collector are `vm::gc`).

use std::sync::Arc;

use kiln_abi::gc::{RefKind, KIND_ARRAY, OBJECT_KIND_OFFSET, OBJECT_TYPE_ID_OFFSET};
use kiln_abi::HeapType;

use crate::vm::store::{StoreInner, StoreRoot};
/// A non-null reference of the `any` hierarchy as the host sees it: an i31, a host value
/// (`any.convert_extern` of an `externref`), or a struct or array of a store. An object
/// handle keeps its store (and so the object) alive and only goes back into that store's
/// wasm.
#[derive(Clone)]
pub enum AnyRef {
    /// An i31 (its 31-bit payload).
    I31(u32),
    /// A host value that wasm converted from an `externref`.
    Host(u64),
    /// A struct or array.
    Object(GcObject),
}

/// A struct or array of a store (see [`AnyRef::Object`]). Clones share one entry in the
/// store's table of host roots, which a collection updates when it moves the object.
#[derive(Clone)]
pub struct GcObject {
    rooted: Arc<Rooted>,
}

/// An entry in the store's table of host roots, released when the last handle goes.
struct Rooted {
    root: Arc<StoreRoot>,
    index: usize,
}

impl Drop for Rooted {
    fn drop(&mut self) {
        self.root.inner.host_roots().release(self.index);
    }
}

impl GcObject {
    /// Whether it is an array (else a struct).
    pub fn is_array(&self) -> bool {
        self.header().1 == KIND_ARRAY
    }

    /// The object's current offset in its store's heap.
    pub(crate) fn offset(&self) -> u32 {
        self.rooted.root.inner.host_roots().offset(self.rooted.index)
    }

    pub(crate) fn store(&self) -> &StoreInner {
        &self.rooted.root.inner
    }

    /// The object's canonical type id and kind byte.
    fn header(&self) -> (u32, u8) {
        let heap = self.store().gc_heap().expect("a store with objects has a GC heap");
        let object = heap.bytes(self.offset() as u64, 8).expect("a live object");
        // SAFETY: the object's header, written at allocation and never after.
        unsafe {
            (
                object.add(OBJECT_TYPE_ID_OFFSET as usize).cast::<u32>().read_unaligned(),
                *object.add(OBJECT_KIND_OFFSET as usize),
            )
        }
    }

    /// The object's exact type, as a canonical heap type.
    fn heap_type(&self) -> HeapType {
        match self.header() {
            (id, KIND_ARRAY) => HeapType::ConcreteArray(id),
            (id, _) => HeapType::ConcreteStruct(id),
        }
    }
}

impl PartialEq for AnyRef {
    /// `ref.eq`: i31s by value, objects by identity.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (AnyRef::I31(a), AnyRef::I31(b)) => a == b,
            (AnyRef::Host(a), AnyRef::Host(b)) => a == b,
            (AnyRef::Object(a), AnyRef::Object(b)) => {
                Arc::ptr_eq(&a.rooted.root, &b.rooted.root) && a.offset() == b.offset()
            }
            _ => false,
        }
    }
}

impl std::fmt::Debug for AnyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnyRef::I31(v) => write!(f, "i31({v})"),
            AnyRef::Host(n) => write!(f, "host({n})"),
            AnyRef::Object(o) if o.is_array() => write!(f, "array"),
            AnyRef::Object(_) => write!(f, "struct"),
        }
    }
}

impl AnyRef {
    /// Whether the reference is a value of canonical heap type `heap`.
    pub(crate) fn is_of(&self, heap: HeapType) -> bool {
        match self {
            AnyRef::I31(_) => matches!(heap, HeapType::Any | HeapType::Eq | HeapType::I31),
            AnyRef::Host(_) => heap == HeapType::Any,
            AnyRef::Object(o) => crate::types::is_heap_subtype(o.heap_type(), heap),
        }
    }

    /// The handle for raw reference `raw` (non-null) of `store`.
    pub(crate) fn from_raw(kind: RefKind, store: &StoreInner) -> AnyRef {
        match kind {
            RefKind::I31(v) => AnyRef::I31(v),
            RefKind::Host(n) => AnyRef::Host(n),
            RefKind::Object(offset) => {
                let root = store.root().expect("a store's values are read while one of its handles is alive");
                let index = store.host_roots().add(offset);
                AnyRef::Object(GcObject { rooted: Arc::new(Rooted { root, index }) })
            }
        }
    }
}
