//! What can be imported and exported: functions, memories, tables, globals, exception tags.
//!
//! Each handle keeps its owner (an instance or a host object) alive, and belongs to one store:
//! handles the embedder holds also keep that store's root alive (see [`crate::vm::store`]), while
//! the copies an instance keeps of its imports are *detached* (no root), so an instance never
//! keeps its own store alive.
//!
//! Host access follows Rust's rules even while guests run: sizes are read atomically (only the
//! runtime changes them, atomically), and contents that wasm code writes (table elements,
//! mutable globals, unshared memory bytes) are only touched with the store idle and owned by
//! the calling thread ([`StoreBusy`] otherwise). Shared memories are read and written byte by
//! byte with atomic operations, as other threads' guests may be using them.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kiln_abi::{
    GlobalType, HeapType, MemoryType, TableType, VMGlobalDefinition, VMMemoryDefinition, VMTableDefinition, ValType,
};

use crate::func::{Func, FuncKind};
use crate::store::{Home, Store};
use crate::sys::unix::mmap::{page_align, Mmap};
use crate::tag::Tag;
use crate::values::{Val, ValueError};
use crate::vm::gc::Place;
use crate::vm::storage::{grow_table, load_size_of_memory, load_size_of_table, memory_cap, TableStorage};
use crate::vm::store::{HostPlace, StoreBusy, StoreInner, StoreRoot};

/// Why host code could not create, read or change a memory, table or global.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The store is running a call; see [`StoreBusy`].
    #[error(transparent)]
    Busy(#[from] StoreBusy),
    /// An index or range outside the entity.
    #[error("out of bounds: {0}")]
    OutOfBounds(String),
    /// A value that does not fit.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// `set` on an immutable global.
    #[error("the global is immutable")]
    Immutable,
    /// A size beyond the entity's maximum or the store's limits.
    #[error("{0}")]
    Limit(String),
    /// The memory for it could not be reserved.
    #[error("cannot reserve memory: {0}")]
    Io(#[from] std::io::Error),
}

/// An importable or exported entity.
#[derive(Clone)]
pub enum Extern {
    /// A function.
    Func(Func),
    /// A linear memory.
    Memory(Memory),
    /// A table.
    Table(Table),
    /// A global.
    Global(Global),
    /// An exception tag.
    Tag(Tag),
}

impl Extern {
    /// The kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Extern::Func(_) => "function",
            Extern::Memory(_) => "memory",
            Extern::Table(_) => "table",
            Extern::Global(_) => "global",
            Extern::Tag(_) => "tag",
        }
    }

    /// The store it belongs to (`None` for host functions, which belong to none).
    pub(crate) fn store(&self) -> Option<&Arc<StoreInner>> {
        match self {
            Extern::Func(f) => f.wasm().map(|w| &w.owner.store),
            Extern::Memory(m) => Some(&m.home.store),
            Extern::Table(t) => Some(&t.home.store),
            Extern::Global(g) => Some(&g.home.store),
            Extern::Tag(t) => Some(&t.home.store),
        }
    }

    /// A copy that does not keep the store's root alive (what an instance keeps of its
    /// imports).
    pub(crate) fn detached(&self) -> Extern {
        let mut copy = self.clone();
        match &mut copy {
            Extern::Func(f) => {
                if let FuncKind::Wasm(w) = &mut f.kind {
                    w.root = None;
                }
            }
            Extern::Memory(Memory { home, .. })
            | Extern::Table(Table { home, .. })
            | Extern::Global(Global { home, .. })
            | Extern::Tag(Tag { home, .. }) => {
                home.root = None;
            }
        }
        copy
    }

    /// A detached copy made a handle again (for [`crate::Instance::reset`]).
    pub(crate) fn attached(&self, root: &Arc<StoreRoot>) -> Extern {
        let mut copy = self.clone();
        match &mut copy {
            Extern::Func(f) => {
                if let FuncKind::Wasm(w) = &mut f.kind {
                    w.root = Some(root.clone());
                }
            }
            Extern::Memory(Memory { home, .. })
            | Extern::Table(Table { home, .. })
            | Extern::Global(Global { home, .. })
            | Extern::Tag(Tag { home, .. }) => {
                home.root = Some(root.clone());
            }
        }
        copy
    }
}

/// A linear memory.
#[derive(Clone)]
pub struct Memory {
    pub(crate) definition: *mut VMMemoryDefinition,
    pub(crate) ty: MemoryType,
    pub(crate) home: Home,
}

/// A table.
#[derive(Clone)]
pub struct Table {
    pub(crate) definition: *mut VMTableDefinition,
    /// Canonical: concrete type indices replaced by canonical ids.
    pub(crate) ty: TableType,
    pub(crate) home: Home,
}

/// A global.
#[derive(Clone)]
pub struct Global {
    pub(crate) definition: *mut VMGlobalDefinition,
    /// Canonical: concrete type indices replaced by canonical ids.
    pub(crate) ty: GlobalType,
    pub(crate) home: Home,
}

// SAFETY: each points into memory its `home.owner` keeps alive; contents are read and written
// as the module documentation says (atomically, or with the store owned and idle).
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}
// SAFETY: as above.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}
// SAFETY: as above.
unsafe impl Send for Global {}
// SAFETY: as above.
unsafe impl Sync for Global {}

fn range_in(offset: u64, len: usize, size: u64) -> Result<usize, AccessError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(offset as usize),
        _ => Err(AccessError::OutOfBounds(format!("{len} bytes at {offset} in a memory of {size} bytes"))),
    }
}

impl Memory {
    /// A memory owned by the host, in `store` (for example the spec tests' `spectest.memory`).
    /// An unshared memory can only be imported by instances of `store`; a shared one by any.
    pub fn new(store: &Store, ty: MemoryType) -> Result<Memory, AccessError> {
        let host = HostMemory::new(ty, store.root.inner.resource_limits.memory_size)?;
        let definition = &*host.definition as *const VMMemoryDefinition as *mut VMMemoryDefinition;
        Ok(Memory { definition, ty, home: Home::host(store, Arc::new(host)) })
    }

    /// The declared type (minimum as declared, not the current size).
    pub fn ty(&self) -> MemoryType {
        self.ty
    }

    /// Current size in bytes.
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: the definition is kept alive by `home`.
        unsafe { load_size_of_memory(self.definition) }
    }

    /// Current size in pages.
    pub fn size_pages(&self) -> u64 {
        self.size_bytes() >> self.ty.page_size_log2
    }

    fn base(&self) -> *mut u8 {
        // SAFETY: the base never changes after the definition is written.
        unsafe { (*self.definition).base }
    }

    /// Copies `len` bytes at `offset` out of the memory.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, AccessError> {
        let mut out = vec![0u8; len];
        self.with_bytes(offset, len, |base, shared| {
            if shared {
                for (i, byte) in out.iter_mut().enumerate() {
                    // SAFETY: in bounds (checked by `with_bytes`); shared memory bytes are only
                    // accessed atomically from Rust.
                    *byte = unsafe { AtomicU8::from_ptr(base.add(i)) }.load(Ordering::Relaxed);
                }
            } else {
                // SAFETY: in bounds, and the store is idle and ours: nothing else touches it.
                unsafe { std::ptr::copy_nonoverlapping(base, out.as_mut_ptr(), len) };
            }
        })?;
        Ok(out)
    }

    /// Copies `data` into the memory at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        self.with_bytes(offset, data.len(), |base, shared| {
            // SAFETY: the definition is kept alive by `home`; `with_bytes` checked the range.
            unsafe { crate::dirty::mark(self.definition, offset as usize, data.len()) };
            if shared {
                for (i, &byte) in data.iter().enumerate() {
                    // SAFETY: as in `read`.
                    unsafe { AtomicU8::from_ptr(base.add(i)) }.store(byte, Ordering::Relaxed);
                }
            } else {
                // SAFETY: as in `read`.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base, data.len()) };
            }
        })
    }

    /// Runs `f(address of offset, shared)` once `[offset, offset + len)` is checked, holding the
    /// store for an unshared memory.
    fn with_bytes(&self, offset: u64, len: usize, f: impl FnOnce(*mut u8, bool)) -> Result<(), AccessError> {
        if self.ty.shared {
            let start = range_in(offset, len, self.size_bytes())?;
            // SAFETY: inside the accessible memory (it never shrinks).
            f(unsafe { self.base().add(start) }, true);
            return Ok(());
        }
        self.home.store.access(|_| {
            let start = range_in(offset, len, self.size_bytes())?;
            // SAFETY: as above.
            f(unsafe { self.base().add(start) }, false);
            Ok(())
        })?
    }
}

/// Backing store of a host-owned memory: its own reservation, laid out like a slot's heap.
struct HostMemory {
    _mmap: Mmap,
    _map: Mmap,
    definition: Box<VMMemoryDefinition>,
}

// SAFETY: plain memory; see `Memory`.
unsafe impl Send for HostMemory {}
// SAFETY: as above.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    fn new(ty: MemoryType, limit: u64) -> Result<HostMemory, AccessError> {
        let page = 1u64.checked_shl(ty.page_size_log2.into()).unwrap_or(0);
        let length = ty.minimum.saturating_mul(page);
        let cap = memory_cap(&ty, limit);
        if page == 0 || length > cap {
            return Err(AccessError::Limit(format!(
                "a memory of {} pages is larger than the limit of {cap} bytes",
                ty.minimum
            )));
        }
        let mmap = Mmap::reserve((kiln_abi::HEAP_RESERVATION + kiln_abi::HEAP_GUARD) as usize)?;
        mmap.make_accessible(0, page_align(length as usize))?;
        let maximum = ty.maximum.map_or(cap, |m| m.saturating_mul(page).min(cap));
        // Never reset (it is unmapped when dropped), but compiled code marks every memory.
        let map = crate::dirty::reserve_map()?;
        let definition = Box::new(VMMemoryDefinition {
            base: mmap.as_ptr(),
            current_length: length,
            maximum_length: maximum,
            dirty_bias: crate::dirty::bias(map.as_ptr(), mmap.as_ptr()),
        });
        Ok(HostMemory { _mmap: mmap, _map: map, definition })
    }
}

impl Table {
    /// A table owned by the host, in `store` (for example `spectest.table`), every element
    /// `init`. Only instances of `store` can import it.
    pub fn new(store: &Store, ty: TableType, init: Val) -> Result<Table, AccessError> {
        let inner = &store.root.inner;
        let limit = inner.resource_limits.table_elements;
        if ty.minimum > limit {
            return Err(AccessError::Limit(format!("{} elements is more than the limit of {limit}", ty.minimum)));
        }
        let raw = init.to_wasm(ValType::Ref(ty.element), inner)? as usize;
        let maximum = ty.maximum.unwrap_or(u64::MAX).min(limit);
        let storage = Arc::new(TableStorage::new(&ty, maximum, raw)?);
        let definition = storage.definition_ptr();
        if crate::types::traced(ValType::Ref(ty.element)) {
            // A collection must find (and may update) the GC references it holds.
            let place = Place::Table(definition);
            inner.host_places().push(HostPlace { place, _owner: storage.clone() });
        }
        Ok(Table { definition, ty, home: Home::host(store, storage) })
    }

    /// The declared type.
    pub fn ty(&self) -> TableType {
        self.ty
    }

    /// Current number of elements.
    pub fn size(&self) -> u64 {
        // SAFETY: the definition is kept alive by `home`.
        unsafe { load_size_of_table(self.definition) }
    }

    fn element_type(&self) -> ValType {
        ValType::Ref(self.ty.element)
    }

    /// The element at `index`.
    pub fn get(&self, index: u64) -> Result<Val, AccessError> {
        self.home.store.access(|store| {
            let size = self.size();
            if index >= size {
                return Err(AccessError::OutOfBounds(format!("element {index} of a table of {size}")));
            }
            // SAFETY: in bounds; the store is idle and ours; elements are raw values of the
            // element type that only this store's code and `set` wrote.
            Ok(unsafe {
                Val::from_wasm(*(*self.definition).base.add(index as usize) as u128, self.element_type(), store)
            })
        })?
    }

    /// Sets the element at `index` to `value` (checked against the element type and store).
    pub fn set(&self, index: u64, value: Val) -> Result<(), AccessError> {
        self.home.store.access(|store| {
            let size = self.size();
            if index >= size {
                return Err(AccessError::OutOfBounds(format!("element {index} of a table of {size}")));
            }
            let raw = value.to_wasm(self.element_type(), store)? as usize;
            // SAFETY: in bounds; the store is idle and ours.
            unsafe { *(*self.definition).base.add(index as usize) = raw };
            Ok(())
        })?
    }

    /// Adds `delta` elements set to `init`; returns the previous size.
    pub fn grow(&self, delta: u64, init: Val) -> Result<u64, AccessError> {
        self.home.store.access(|store| {
            let raw = init.to_wasm(self.element_type(), store)? as usize;
            // SAFETY: the store is idle and ours; `grow_table` checks against the maximum.
            unsafe { grow_table(self.definition, delta, raw) }
                .ok_or_else(|| AccessError::Limit(format!("the table cannot grow by {delta} elements")))
        })?
    }
}

impl Global {
    /// A global owned by the host, in `store` (for example `spectest.global_i32`), holding
    /// `value`, which must be of `ty.content`.
    pub fn new(store: &Store, ty: GlobalType, value: Val) -> Result<Global, AccessError> {
        let raw = value.to_wasm(ty.content, &store.root.inner)?;
        let storage = Box::new(VMGlobalDefinition { storage: raw.to_le_bytes() });
        let definition = Box::into_raw(storage);
        let owner = Arc::new(HostGlobal(definition));
        if crate::types::traced(ty.content) {
            // A collection must find (and may update) the GC reference it holds.
            let place = Place::Global(definition);
            store.root.inner.host_places().push(HostPlace { place, _owner: owner.clone() });
        }
        Ok(Global { definition, ty, home: Home::host(store, owner) })
    }

    /// The global's type.
    pub fn ty(&self) -> GlobalType {
        self.ty
    }

    /// The current value.
    pub fn get(&self) -> Result<Val, AccessError> {
        let read = |store: &StoreInner| {
            // SAFETY: the definition is kept alive by `home`; an immutable global is never
            // written after instantiation, a mutable one only by this store's code, which is
            // idle (see below). The raw value was written by `to_wasm` or wasm code.
            unsafe { Val::from_wasm(u128::from_le_bytes((*self.definition).storage), self.ty.content, store) }
        };
        if !self.ty.mutable {
            return Ok(read(&self.home.store));
        }
        Ok(self.home.store.access(read)?)
    }

    /// Sets a mutable global to `value` (checked against its type and store).
    pub fn set(&self, value: Val) -> Result<(), AccessError> {
        if !self.ty.mutable {
            return Err(AccessError::Immutable);
        }
        self.home.store.access(|store| {
            let raw = value.to_wasm(self.ty.content, store)?;
            // SAFETY: the store is idle and ours.
            unsafe { (*self.definition).storage = raw.to_le_bytes() };
            Ok(())
        })?
    }
}

/// Owns a host global's storage.
struct HostGlobal(*mut VMGlobalDefinition);

// SAFETY: owns a plain heap allocation.
unsafe impl Send for HostGlobal {}
// SAFETY: as above.
unsafe impl Sync for HostGlobal {}

impl Drop for HostGlobal {
    fn drop(&mut self) {
        // SAFETY: allocated by Box::into_raw in `Global::new` and freed only here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// Whether a reference type can hold function references (for pinning decisions).
pub(crate) fn holds_references(ty: ValType) -> bool {
    matches!(ty, ValType::Ref(r) if r.heap != HeapType::Extern)
}
