//! Instances: a module instantiated in a region slot.
//!
//! The lifecycle stages each have a file: [`instantiate`] (stage 3), [`run`] (stage 4, calls
//! through the context switch) and [`teardown`] (stage 5, reset the slot for the next tenant).

mod const_expr;
mod instantiate;
mod run;
mod teardown;
mod typed;

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use kiln_abi::{ExportKind, VMGlobalDefinition, VMMemoryImport, VMTableDefinition, VMTagDefinition};

pub use instantiate::InstantiationError;
pub use run::CallError;
pub use typed::{TypedFunc, WasmParams, WasmResults, WasmTy};

use crate::externs::{Extern, Func, FuncKind, Global, Home, Memory, Table, TableStorage, Tag, WasmFunc};
use crate::load::Module;
use crate::region::{Region, Slot};
use crate::store::{Store, StoreInner, StoreRoot};
use crate::values::Val;

/// A live instance: a reference-counted handle. The instance is torn down, and its slot
/// returned to the region, when nothing needs it any more: no handle to it or to anything it
/// exports, no instance importing from it, and, if it is pinned to its store (see
/// [`crate::Store`]), no handle of the store.
#[derive(Clone)]
pub struct Instance {
    pub(crate) inner: Arc<InstanceInner>,
    pub(crate) root: Arc<StoreRoot>,
}

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
    pub table_placements: Vec<instantiate::TablePlacement>,
    /// Per data segment: dropped yet?
    pub dropped_data: RefCell<Vec<bool>>,
    /// Per element segment: its evaluated elements, `None` once dropped.
    pub elements: RefCell<Vec<Option<Vec<usize>>>>,
    /// What it was instantiated with, detached from the store's root: kept alive, and reused
    /// by [`Instance::reset`].
    pub imports: Vec<Extern>,
    /// Whether the store's root keeps it alive (see [`crate::store`]).
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
                    crate::gc::visit_table(table, &mut visit);
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
        unsafe { crate::externs::load_size_of_memory(def) as usize }
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

    /// A handle to function `index` (exported or not) of this instance.
    pub(crate) fn func(self: &Arc<Self>, index: u32, root: Option<Arc<StoreRoot>>) -> Func {
        let module = &self.module.inner;
        let type_index = module.meta.func_types[index as usize] as usize;
        let funcref = self.vm_field::<kiln_abi::VMFuncRef>(module.offsets.func_ref(index));
        Func {
            // SAFETY: written at instantiation (imported ones carry the exporter's id).
            type_id: unsafe { (*funcref).type_id },
            kind: FuncKind::Wasm(WasmFunc {
                funcref,
                array_trampoline: module.array_trampolines[type_index],
                type_index: type_index as u32,
                owner: self.clone(),
                root,
            }),
        }
    }
}

impl Instance {
    /// Instantiates `module` in a free slot of `region`, in a store of its own (with the
    /// default [`StoreLimits`](crate::StoreLimits)).
    pub fn new(region: &Region, module: &Module, imports: &[Extern]) -> Result<Instance, InstantiationError> {
        Instance::new_in_store(region, &Store::new(), module, imports)
    }

    /// Instantiates `module` in a free slot of `region`, in `store` (instances that import from
    /// each other must share a store).
    pub fn new_in_store(
        region: &Region,
        store: &Store,
        module: &Module,
        imports: &[Extern],
    ) -> Result<Instance, InstantiationError> {
        instantiate::instantiate(region.inner(), store, module, imports)
    }

    /// The module it instantiates.
    pub fn module(&self) -> &Module {
        &self.inner.module
    }

    /// A handle that stops this instance's running guest (and its store's) from any thread:
    /// the guest traps with "deadline exceeded".
    pub fn interrupt_handle(&self) -> crate::store::InterruptHandle {
        crate::store::InterruptHandle::new(self.inner.store.clone())
    }

    /// The store this instance belongs to (for fuel, interruption and linking).
    pub fn store(&self) -> Store {
        Store { root: self.root.clone() }
    }

    /// The export called `name`.
    pub fn get_export(&self, name: &str) -> Option<Extern> {
        let export = self.inner.module.inner.meta.exports.iter().find(|e| e.name == name)?;
        Some(self.export_by_kind(export.kind))
    }

    /// The exported function called `name`.
    pub fn get_func(&self, name: &str) -> Option<Func> {
        match self.get_export(name)? {
            Extern::Func(f) => Some(f),
            _ => None,
        }
    }

    /// Every export, in order.
    pub fn exports(&self) -> Vec<(String, Extern)> {
        let meta = &self.inner.module.inner.meta;
        meta.exports.iter().map(|e| (e.name.clone(), self.export_by_kind(e.kind))).collect()
    }

    fn export_by_kind(&self, kind: ExportKind) -> Extern {
        let inner = &self.inner;
        let module = &inner.module.inner;
        let offsets = &module.offsets;
        // A re-exported import is owned by this instance too: it keeps what it imports alive.
        let home = Home::instance(inner, &self.root);
        match kind {
            ExportKind::Func(i) => Extern::Func(inner.func(i, Some(self.root.clone()))),
            ExportKind::Memory(i) => {
                // SAFETY: written at instantiation.
                let definition = unsafe { (*inner.vm_field::<VMMemoryImport>(offsets.memory(i))).definition };
                Extern::Memory(Memory { definition, ty: module.meta.memories[i as usize], home })
            }
            ExportKind::Table(i) => {
                // SAFETY: written at instantiation.
                let definition = unsafe { *inner.vm_field::<*mut VMTableDefinition>(offsets.table(i)) };
                let mut ty = module.meta.tables[i as usize];
                if let kiln_abi::ValType::Ref(r) = inner.module.canonical_val_type(kiln_abi::ValType::Ref(ty.element)) {
                    ty.element = r;
                }
                Extern::Table(Table { definition, ty, home })
            }
            ExportKind::Global(i) => {
                // SAFETY: written at instantiation.
                let definition = unsafe { *inner.vm_field::<*mut VMGlobalDefinition>(offsets.global(i)) };
                let mut ty = module.meta.globals[i as usize];
                ty.content = inner.module.canonical_val_type(ty.content);
                Extern::Global(Global { definition, ty, home })
            }
            ExportKind::Tag(i) => {
                // SAFETY: written at instantiation.
                let definition = unsafe { *inner.vm_field::<*const VMTagDefinition>(offsets.tag(i)) };
                let type_index = module.meta.tags[i as usize];
                let type_id = module.type_ids[type_index as usize];
                let ty = module.canonical_types[type_index as usize].clone();
                Extern::Tag(Tag { definition, type_id, ty, home })
            }
        }
    }

    /// Calls the exported function `name`.
    pub fn call(&self, name: &str, args: &[Val]) -> Result<Vec<Val>, CallError> {
        let func = self.get_func(name).ok_or_else(|| CallError::NoSuchExport(name.to_string()))?;
        func.call(args)
    }

    /// Tears the instance down and instantiates the same module with the same imports in the
    /// same store, normally in the same slot. Fails if something else still holds the instance
    /// (another instance imports from it, a handle to one of its exports is alive, or it is
    /// pinned to its store).
    pub fn reset(self) -> Result<Instance, InstantiationError> {
        if Arc::strong_count(&self.inner) != 1 {
            return Err(InstantiationError::InUse);
        }
        let region = self.inner.slot.region();
        let store = self.store();
        let module = self.inner.module.clone();
        let imports: Vec<Extern> = self.inner.imports.iter().map(|i| i.attached(&self.root)).collect();
        drop(self); // teardown: the slot goes back to the region
        instantiate::instantiate(&region, &store, &module, &imports)
    }
}
