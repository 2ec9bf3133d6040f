//! What can be imported and exported: functions, memories, tables, globals.
//!
//! Each handle keeps its owner (an instance or a host object) alive, so an instance that imports
//! something can never outlive it.

use std::any::Any;
use std::sync::Arc;

use kiln_abi::{
    FuncType, GlobalType, MemoryType, TableType, VMFuncRef, VMGlobalDefinition, VMMemoryDefinition,
    VMTableDefinition,
};

use crate::host::HostFuncInner;
use crate::instance::InstanceInner;
use crate::sys::unix::mmap::{page_align, Mmap};
use crate::values::Val;

/// Keeps the owner of an exported entity alive.
#[derive(Clone)]
pub(crate) enum Owner {
    Instance(Arc<InstanceInner>),
    Host(#[allow(dead_code, reason = "held only to keep the host object alive")] Arc<dyn Any + Send + Sync>),
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
}

impl Extern {
    /// The kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Extern::Func(_) => "function",
            Extern::Memory(_) => "memory",
            Extern::Table(_) => "table",
            Extern::Global(_) => "global",
        }
    }
}

/// A function: exported by an instance, or defined by the host.
#[derive(Clone)]
pub struct Func {
    /// The type as its defining module (or the host) wrote it.
    pub(crate) ty: Arc<FuncType>,
    /// The canonical type id (see `types::canonical_ids`).
    pub(crate) type_id: u32,
    pub(crate) kind: FuncKind,
}

#[derive(Clone)]
pub(crate) enum FuncKind {
    /// A function reachable through a `VMFuncRef` inside an instance's VM context.
    Wasm {
        funcref: *const VMFuncRef,
        /// The exporting module's array trampoline for this type.
        array_trampoline: *const u8,
        owner: Arc<InstanceInner>,
    },
    /// A host function.
    Host(Arc<HostFuncInner>),
}

// SAFETY: the raw pointers point into the owner's VM context or loaded code, which the `owner`
// handle keeps alive; calls go through the store's running flag.
unsafe impl Send for FuncKind {}
// SAFETY: as above.
unsafe impl Sync for FuncKind {}

impl Func {
    /// The function's type.
    pub fn ty(&self) -> &FuncType {
        &self.ty
    }
}

/// A linear memory.
#[derive(Clone)]
pub struct Memory {
    pub(crate) definition: *mut VMMemoryDefinition,
    pub(crate) ty: MemoryType,
    pub(crate) owner: Owner,
}

/// A table.
#[derive(Clone)]
pub struct Table {
    pub(crate) definition: *mut VMTableDefinition,
    /// Canonical: concrete type indices replaced by canonical ids.
    pub(crate) ty: TableType,
    pub(crate) owner: Owner,
}

/// A global.
#[derive(Clone)]
pub struct Global {
    pub(crate) definition: *mut VMGlobalDefinition,
    /// Canonical: concrete type indices replaced by canonical ids.
    pub(crate) ty: GlobalType,
    pub(crate) owner: Owner,
}

// SAFETY: each points into memory its `owner` keeps alive; mutation happens only while the
// owning store runs a call, or through `&mut`-free host reads of plain data.
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

impl Memory {
    /// The declared type (minimum as declared, not the current size).
    pub fn ty(&self) -> MemoryType {
        self.ty
    }

    /// Current size in bytes.
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: the definition is kept alive by `owner`.
        unsafe { (*self.definition).current_length }
    }

    /// Current size in pages.
    pub fn size_pages(&self) -> u64 {
        self.size_bytes() >> self.ty.page_size_log2
    }

    /// Copies `len` bytes at `offset` out of the memory, if in bounds.
    pub fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let end = offset.checked_add(len as u64)?;
        if end > self.size_bytes() {
            return None;
        }
        // SAFETY: the range is inside the memory's accessible size.
        let base = unsafe { (*self.definition).base };
        // SAFETY: as above.
        Some(unsafe { std::slice::from_raw_parts(base.add(offset as usize), len) }.to_vec())
    }

    /// A memory owned by the host (for example the spec tests' `spectest.memory`).
    pub fn new_host(ty: MemoryType) -> std::io::Result<Memory> {
        let host = HostMemory::new(ty)?;
        let definition = &*host.definition as *const VMMemoryDefinition as *mut VMMemoryDefinition;
        Ok(Memory { definition, ty, owner: Owner::Host(Arc::new(host)) })
    }
}

/// Backing store of a host-owned memory: its own reservation, laid out like a slot's heap.
struct HostMemory {
    _mmap: Mmap,
    definition: Box<VMMemoryDefinition>,
}

// SAFETY: plain memory; see `Memory`.
unsafe impl Send for HostMemory {}
// SAFETY: as above.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    fn new(ty: MemoryType) -> std::io::Result<HostMemory> {
        let reservation = (kiln_abi::HEAP_RESERVATION + kiln_abi::HEAP_GUARD) as usize;
        let mmap = Mmap::reserve(reservation)?;
        let page = 1u64 << ty.page_size_log2;
        let length = ty.minimum.saturating_mul(page);
        if length > kiln_abi::HEAP_RESERVATION {
            return Err(std::io::Error::other("memory larger than 4 GiB"));
        }
        mmap.make_accessible(0, page_align(length as usize))?;
        let maximum = ty.maximum.map_or(kiln_abi::HEAP_RESERVATION, |m| m.saturating_mul(page).min(kiln_abi::HEAP_RESERVATION));
        let definition = Box::new(VMMemoryDefinition { base: mmap.as_ptr(), current_length: length, maximum_length: maximum });
        Ok(HostMemory { _mmap: mmap, definition })
    }
}

/// Most elements any table may have; address space for this many is reserved per table.
pub(crate) const MAX_TABLE_ELEMENTS: u64 = 1 << 24;

/// Backing store of a table: address space for its maximum size, reserved up front so the
/// elements never move.
pub(crate) struct TableStorage {
    mmap: Mmap,
    pub definition: Box<VMTableDefinition>,
}

// SAFETY: plain memory; see `Table`.
unsafe impl Send for TableStorage {}
// SAFETY: as above.
unsafe impl Sync for TableStorage {}

impl TableStorage {
    /// A table of `ty.minimum` elements, each `init`.
    pub fn new(ty: &TableType, init: usize) -> std::io::Result<TableStorage> {
        let maximum = ty.maximum.unwrap_or(u64::MAX).min(MAX_TABLE_ELEMENTS);
        if ty.minimum > maximum {
            return Err(std::io::Error::other("table larger than Kiln's limit"));
        }
        let bytes = page_align((maximum as usize).max(1) * 8);
        let mmap = Mmap::reserve(bytes)?;
        mmap.make_accessible(0, bytes)?;
        let base = mmap.as_ptr().cast::<usize>();
        if init != 0 {
            // SAFETY: the first `minimum` elements are inside the accessible reservation.
            unsafe { std::slice::from_raw_parts_mut(base, ty.minimum as usize) }.fill(init);
        }
        let definition = Box::new(VMTableDefinition { base, current_elements: ty.minimum, maximum_elements: maximum });
        Ok(TableStorage { mmap, definition })
    }

    pub fn definition_ptr(&self) -> *mut VMTableDefinition {
        &*self.definition as *const VMTableDefinition as *mut VMTableDefinition
    }

    #[allow(dead_code, reason = "kept for symmetry with memories")]
    pub fn reservation(&self) -> &Mmap {
        &self.mmap
    }
}

impl Table {
    /// The declared type.
    pub fn ty(&self) -> TableType {
        self.ty
    }

    /// Current number of elements.
    pub fn size(&self) -> u64 {
        // SAFETY: the definition is kept alive by `owner`.
        unsafe { (*self.definition).current_elements }
    }

    /// A table owned by the host (for example `spectest.table`), every element null.
    pub fn new_host(ty: TableType) -> std::io::Result<Table> {
        let storage = TableStorage::new(&ty, 0)?;
        let definition = storage.definition_ptr();
        Ok(Table { definition, ty, owner: Owner::Host(Arc::new(storage)) })
    }
}

impl Global {
    /// The global's type.
    pub fn ty(&self) -> GlobalType {
        self.ty
    }

    /// The current value.
    pub fn get(&self) -> Val {
        // SAFETY: the definition is kept alive by `owner`.
        let raw = unsafe { u128::from_le_bytes((*self.definition).storage) };
        Val::from_raw(raw, self.ty.content)
    }

    /// A global owned by the host (for example `spectest.global_i32`).
    pub fn new_host(ty: GlobalType, value: Val) -> Global {
        let storage = Box::new(VMGlobalDefinition { storage: value.to_raw().to_le_bytes() });
        let definition = Box::into_raw(storage);
        Global { definition, ty, owner: Owner::Host(Arc::new(HostGlobal(definition))) }
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
        // SAFETY: allocated by Box::into_raw in `Global::new_host` and freed only here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}
