//! An instance's internals: what it owns, and the VM context that compiled code, libcalls and
//! host functions reach it through (the context header points back at it). Teardown is
//! `teardown.rs`; the public handle is `crate::Instance`.

mod teardown;

use std::any::Any;
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::load::Module;
use crate::region::Slot;
use crate::vm::storage::TableStorage;
use crate::vm::store::{Pinned, StoreInner};

/// Everything an instance owns. Its address is stored in the VM context header, so libcalls
/// and host functions can find it.
pub(crate) struct InstanceInner {
    /// Given back to the slot at teardown (hence not dropped with the rest).
    pub module: ManuallyDrop<Module>,
    pub store: Arc<StoreInner>,
    /// Its slot (which keeps the region alive).
    pub slot: Slot,
    pub vmctx: *mut u8,
    /// Storage of the module's own tables that did not fit in the slot's table area.
    pub tables: Vec<TableStorage>,
    /// Where each of the module's own tables lives.
    pub table_placements: Vec<TablePlacement>,
    /// Per data segment: dropped yet?
    pub dropped_data: RefCell<Vec<bool>>,
    /// Per element segment: its evaluated elements, `None` once dropped.
    pub elements: RefCell<Vec<Option<Vec<usize>>>>,
    /// What it was instantiated with (the embedder's handles, detached from the store's
    /// root), kept alive as long as it is: its VM context points into them; `Instance::reset`
    /// links them again. `None` without imports (no allocation on the lifecycle of a module
    /// that imports nothing).
    pub imports: Option<Box<dyn Any + Send + Sync>>,
    /// Whether the store's root keeps it alive (see [`crate::vm::store`]).
    pub pinned: AtomicBool,
}

// SAFETY: the raw VM context pointer points into the slot this value owns. The RefCells are
// touched only by libcalls running inside a call, which the store serialises.
unsafe impl Send for InstanceInner {}
// SAFETY: as above.
unsafe impl Sync for InstanceInner {}

impl InstanceInner {
    /// Calls `visit` with every place of the instance's own that may hold a GC reference: its
    /// defined globals and tables of reference types of the `any` and `extern` hierarchies, and
    /// the elements of its passive element segments of such types.
    ///
    /// # Safety
    /// The instance's store must be idle but for the caller (a collection), on its owning
    /// thread.
    pub(crate) unsafe fn visit_references(&self, mut visit: impl FnMut(*mut u64)) {
        let meta = &self.module.inner.meta;
        let offsets = &self.module.inner.offsets;
        for (d, def) in meta.defined_globals.iter().enumerate() {
            if crate::types::traced(def.ty.content) {
                visit(self.vm_field::<kiln_abi::VMGlobalDefinition>(offsets.defined_global(d as u32)).cast());
            }
        }
        for (d, def) in meta.defined_tables.iter().enumerate() {
            if crate::types::traced(kiln_abi::ValType::Ref(def.ty.element)) {
                let index = meta.num_imported_tables + d as u32;
                // SAFETY: written at instantiation; the table lives as long as the instance, and
                // the store is idle but for the caller.
                unsafe {
                    let table = *self.vm_field::<*mut kiln_abi::VMTableDefinition>(offsets.table(index));
                    crate::vm::storage::visit_table(table, &mut visit);
                }
            }
        }
        let mut elements = self.elements.borrow_mut();
        for (segment, items) in meta.elements.iter().zip(elements.iter_mut()) {
            if let (true, Some(items)) = (crate::types::traced(kiln_abi::ValType::Ref(segment.ty)), items) {
                for item in items.iter_mut() {
                    visit((item as *mut usize).cast());
                }
            }
        }
    }

    /// The instance whose VM context is `vmctx`.
    ///
    /// # Safety
    /// `vmctx` must be the VM context of a live instance (compiled code passes its own, and a
    /// `VMFuncRef`'s `home` is one) that outlives `'a`.
    pub(crate) unsafe fn from_vmctx<'a>(vmctx: *const u8) -> &'a InstanceInner {
        // SAFETY: every VM context header points at its instance (caller's contract).
        unsafe { &*(*(vmctx as *const kiln_abi::VMContextHeader)).instance.cast::<InstanceInner>() }
    }

    /// A new reference to the instance whose VM context is `vmctx`.
    ///
    /// # Safety
    /// As for [`Self::from_vmctx`]; the header points at the contents of the instance's `Arc`.
    pub(crate) unsafe fn arc_from_vmctx(vmctx: *const u8) -> Arc<InstanceInner> {
        // SAFETY: forwarded from the caller; the instance is alive, so its count is non-zero.
        unsafe {
            let instance: *const InstanceInner = Self::from_vmctx(vmctx);
            Arc::increment_strong_count(instance);
            Arc::from_raw(instance)
        }
    }

    /// Pointer to a VM context field.
    pub(crate) fn vm_field<T>(&self, offset: u32) -> *mut T {
        // SAFETY: offsets come from the module's VMOffsets, all inside the VM context.
        unsafe { self.vmctx.add(offset as usize).cast() }
    }

    /// Current size of own memory `d` in bytes. Only for `d` below the number of own memories.
    pub(crate) fn own_memory_len(&self, d: u32) -> usize {
        let def = self.vm_field::<kiln_abi::VMMemoryDefinition>(self.module.inner.offsets.defined_memory(d));
        // SAFETY: the definitions of own memories are written at instantiation, before anything
        // that can fail; their length is written atomically.
        unsafe { crate::vm::storage::load_size_of_memory(def) as usize }
    }

    /// Number of memories the module defines (not imports).
    pub(crate) fn own_memory_count(&self) -> u32 {
        let meta = &self.module.inner.meta;
        meta.memories.len() as u32 - meta.num_imported_memories
    }

    /// Current size of own memory 0 in bytes (0 if it has none).
    pub(crate) fn own_heap_len(&self) -> usize {
        if self.own_memory_count() > 0 {
            self.own_memory_len(0)
        } else {
            0
        }
    }
}

/// Where a defined table's elements live.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TablePlacement {
    /// In the slot's table area, from element `start`, with room for `capacity` elements.
    Slot { start: usize, capacity: usize },
    /// In `InstanceInner::tables[i]`.
    Own(usize),
}

impl Pinned for InstanceInner {
    fn pinned_flag(&self) -> &AtomicBool {
        &self.pinned
    }

    unsafe fn visit_references(&self, visit: &mut dyn FnMut(*mut u64)) {
        // SAFETY: forwarded from the caller.
        unsafe { InstanceInner::visit_references(self, visit) }
    }
}
