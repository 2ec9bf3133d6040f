//! [`Func`], a function as the host sees it: a wasm function of an instance or a host function.
//! Calling one is `instance::run` (and `instance::typed`); making a host function is `host`.

use std::sync::Arc;

use kiln_abi::{FuncType, VMFuncRef};

use crate::store::Store;
use crate::vm::instance::InstanceInner;
use crate::vm::store::{StoreInner, StoreRoot};

/// What a function handle needs of a host function: its type and the context its funcrefs
/// point at. Implemented by `host::HostFuncInner`; the handle does not name the callback,
/// whose signature takes `Val`s, which hold `Func`s.
pub(crate) trait HostFunction: Send + Sync {
    /// Its type (concrete references as canonical type ids).
    fn ty(&self) -> &FuncType;
    /// The context a funcref to it carries as its callee VM context.
    fn vmctx(&self) -> *mut u8;
}

/// A function: exported by an instance, taken from a table or global, or defined by the host.
#[derive(Clone)]
pub struct Func {
    /// The canonical type id (see `types::canonical_ids`).
    pub(crate) type_id: u32,
    pub(crate) kind: FuncKind,
}

#[derive(Clone)]
pub(crate) enum FuncKind {
    /// A function reachable through a `VMFuncRef` inside an instance's VM context.
    Wasm(WasmFunc),
    /// A host function.
    Host(Arc<dyn HostFunction>),
}

/// A wasm function: its `VMFuncRef`, kept valid by the instance whose VM context holds it.
#[derive(Clone)]
pub(crate) struct WasmFunc {
    pub funcref: *const VMFuncRef,
    /// The holding module's array trampoline for this type.
    pub array_trampoline: *const u8,
    /// Index of the function's type in the owner's module (its type, read from there, costs
    /// no reference count shared with other threads).
    pub type_index: u32,
    /// The instance whose VM context holds `funcref` (its `home`); calls run on its stack.
    pub owner: Arc<InstanceInner>,
    /// `None` in an instance's own copy of its imports.
    pub root: Option<Arc<StoreRoot>>,
}

// SAFETY: the raw pointers point into the owner's VM context or loaded code, which the `owner`
// handle keeps alive; calls go through the store's ownership and running flag.
unsafe impl Send for WasmFunc {}
// SAFETY: as above.
unsafe impl Sync for WasmFunc {}

impl std::fmt::Debug for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.wasm().is_some() { "wasm" } else { "host" };
        f.debug_struct("Func").field("kind", &kind).field("ty", self.ty()).finish()
    }
}

impl PartialEq for Func {
    /// The same function reference (the same `VMFuncRef`, or the same host function).
    fn eq(&self, other: &Func) -> bool {
        match (&self.kind, &other.kind) {
            (FuncKind::Wasm(a), FuncKind::Wasm(b)) => std::ptr::eq(a.funcref, b.funcref),
            (FuncKind::Host(a), FuncKind::Host(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Func {
    /// The function's type. Concrete references in it are canonical type ids, equal for
    /// equal types whichever module declared them.
    pub fn ty(&self) -> &FuncType {
        match &self.kind {
            FuncKind::Wasm(w) => &w.owner.module.inner.canonical_types[w.type_index as usize],
            FuncKind::Host(h) => h.ty(),
        }
    }

    /// The store a wasm function belongs to (`None` for a host function: it belongs to none).
    pub fn store(&self) -> Option<Store> {
        self.wasm().and_then(|w| w.root.clone()).map(|root| Store { root })
    }

    pub(crate) fn wasm(&self) -> Option<&WasmFunc> {
        match &self.kind {
            FuncKind::Wasm(w) => Some(w),
            FuncKind::Host(_) => None,
        }
    }

    /// The `VMFuncRef` and its holder, for a wasm function.
    pub(crate) fn wasm_parts(&self) -> Option<(*const VMFuncRef, &Arc<InstanceInner>)> {
        self.wasm().map(|w| (w.funcref, &w.owner))
    }

    /// A handle to function `index` (exported or not) of `instance`.
    pub(crate) fn of_instance(instance: &Arc<InstanceInner>, index: u32, root: Option<Arc<StoreRoot>>) -> Func {
        let module = &instance.module.inner;
        let type_index = module.meta.func_types[index as usize] as usize;
        let funcref = instance.vm_field::<VMFuncRef>(module.offsets.func_ref(index));
        Func {
            // SAFETY: written at instantiation (imported ones carry the exporter's id).
            type_id: unsafe { (*funcref).type_id },
            kind: FuncKind::Wasm(WasmFunc {
                funcref,
                array_trampoline: module.array_trampolines[type_index],
                type_index: type_index as u32,
                owner: instance.clone(),
                root,
            }),
        }
    }

    /// A handle to the function a raw funcref from wasm code of `store` points to.
    ///
    /// # Safety
    /// `funcref` must point to a live `VMFuncRef` in the VM context of an instance of `store`.
    pub(crate) unsafe fn from_vm_funcref(funcref: *const VMFuncRef, store: &StoreInner) -> Func {
        // SAFETY: forwarded from the caller; every VMFuncRef records the VM context holding it,
        // whose header points at its live instance (an `Arc<InstanceInner>`'s contents).
        let (owner, type_id) = unsafe { (InstanceInner::arc_from_vmctx((*funcref).home), (*funcref).type_id) };
        let module = &owner.module.inner;
        let t = *module.type_index_of_id.get(&type_id).expect("a funcref's type is a type of the module holding it");
        let root = store.root().expect("a store's values are read while one of its handles is alive");
        Func {
            type_id,
            kind: FuncKind::Wasm(WasmFunc {
                funcref,
                array_trampoline: module.array_trampolines[t as usize],
                type_index: t,
                owner,
                root: Some(root),
            }),
        }
    }
}
