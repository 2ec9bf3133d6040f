//! Instances: a module instantiated in a region slot.
//!
//! The lifecycle stages each have a file: [`instantiate`] (stage 3), [`run`] (stage 4, calls
//! through the context switch) and `vm::instance`'s teardown (stage 5, reset the slot for the
//! next tenant, when the instance's internals are dropped).

mod const_expr;
mod instantiate;
mod run;
mod typed;

use std::sync::Arc;

use kiln_abi::{ExportKind, VMGlobalDefinition, VMMemoryImport, VMTableDefinition, VMTagDefinition};

pub use instantiate::InstantiationError;
pub use run::CallError;
pub use typed::{TypedFunc, WasmParams, WasmResults, WasmTy};

use crate::externs::{Extern, Global, Memory, Table};
use crate::func::Func;
use crate::load::Module;
use crate::region::Region;
use crate::store::Home;
use crate::store::{InterruptHandle, Store};
use crate::tag::Tag;
use crate::values::Val;
use crate::vm::instance::InstanceInner;
use crate::vm::store::StoreRoot;

/// A live instance: a reference-counted handle. The instance is torn down, and its slot
/// returned to the region, when nothing needs it any more: no handle to it or to anything it
/// exports, no instance importing from it, and, if it is pinned to its store (see
/// [`crate::Store`]), no handle of the store.
#[derive(Clone)]
pub struct Instance {
    pub(crate) inner: Arc<InstanceInner>,
    pub(crate) root: Arc<StoreRoot>,
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
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(self.inner.store.clone())
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
            ExportKind::Func(i) => Extern::Func(Func::of_instance(inner, i, Some(self.root.clone()))),
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
        let linked = self.inner.imports.as_ref().map(|i| i.downcast_ref::<Vec<Extern>>());
        let linked = linked.map_or(&[][..], |i| i.expect("instantiation keeps the imports as externs"));
        let imports: Vec<Extern> = linked.iter().map(|i| i.attached(&self.root)).collect();
        drop(self); // teardown: the slot goes back to the region
        instantiate::instantiate(&region, &store, &module, &imports)
    }
}
