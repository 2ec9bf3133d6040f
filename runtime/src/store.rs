//! [`Store`], the public handle of a group of instances that may call each other, with its
//! thread binding and interrupt handle, and the `Home` every other handle keeps of its store. What a store is and how it keeps every function
//! reference valid and its calls exclusive is `vm::store`.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::limits::StoreLimits;
use crate::vm::instance::InstanceInner;
use crate::vm::store::{StoreInner, StoreRoot};

/// A group of instances that can be linked together. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) root: Arc<StoreRoot>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("id", &self.root.inner.id).finish()
    }
}

impl Store {
    /// A new, empty store with the default [`StoreLimits`].
    pub fn new() -> Store {
        Store::with_limits(StoreLimits::default())
    }

    /// A new, empty store whose instances are held to `limits`.
    pub fn with_limits(limits: StoreLimits) -> Store {
        Store { root: StoreRoot::new(limits) }
    }

    /// The limits this store's instances are held to.
    pub fn limits(&self) -> &StoreLimits {
        &self.root.inner.resource_limits
    }

    /// A handle that stops this store's running guest from any thread: the guest traps with
    /// "deadline exceeded" at its next function entry or loop iteration, or as soon as it is
    /// blocked in `memory.atomic.wait` or in a host function that waits with a
    /// [`Waiter`](crate::Waiter).
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle::new(self.root.inner.clone())
    }

    /// Sets the fuel left for code compiled with fuel metering
    /// (`kiln_compiler::Compiler::set_fuel_metering`): each executed operator costs one unit,
    /// and running out traps with "all fuel consumed". A new store has unlimited fuel. `false`
    /// if the store is busy (another thread runs it, or a call is in progress).
    pub fn set_fuel(&self, fuel: u64) -> bool {
        let fuel = fuel.min(i64::MAX as u64) as i64;
        // SAFETY: `access` gives this thread exclusive use of the non-atomic limit fields.
        self.root.inner.access(|inner| unsafe { (*inner.limits_ptr()).fuel = fuel }).is_ok()
    }

    /// The fuel left (0 once exhausted), or `None` if the store is busy.
    pub fn fuel_remaining(&self) -> Option<u64> {
        // SAFETY: as in `set_fuel`.
        self.root.inner.access(|inner| unsafe { (*inner.limits_ptr()).fuel }.max(0) as u64).ok()
    }

    /// Clears a pending interruption so the store can run again.
    pub fn clear_interrupt(&self) {
        self.root.inner.clear_interrupt();
    }

    /// Whether two handles refer to the same store.
    pub fn same(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.root, &other.root)
    }

    /// Binds the store to this thread while the binding lives: calls from this thread (typed
    /// ones especially) then skip the compare-and-swap that makes them exclusive, and calls
    /// from other threads fail with [`CallError::Busy`](crate::CallError::Busy). Like a lock
    /// guard, forgetting the binding (`mem::forget`) keeps the store bound to this thread.
    /// `None` if another thread owns the store now.
    pub fn bind_to_thread(&self) -> Option<StoreBinding> {
        self.root.inner.bind().then(|| StoreBinding { store: self.root.clone(), _not_send: PhantomData })
    }

    /// Attaches `data` to the store, for its host functions to find with
    /// [`Caller::data`](crate::Caller::data): the state they need per store (a request's WASI
    /// context, say), so that the functions themselves can be made once and shared by every
    /// store. Set once, for the store's life: `Err(data)` if the store already has data. (Data
    /// that holds one of the store's own instances or functions keeps the store alive for ever.)
    pub fn set_data<T: Any + Send + Sync>(&self, data: T) -> Result<(), T> {
        let mut data = Some(data);
        let _ = self.root.inner.data.get_or_init(|| Box::new(data.take().expect("taken once")));
        match data {
            None => Ok(()),
            Some(refused) => Err(refused),
        }
    }

    /// The data attached with [`Self::set_data`], if it is a `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.root.inner.data.get()?.as_ref().downcast_ref()
    }

    /// Number of instances pinned to this store (alive until the store's last handle goes).
    pub fn pinned_instances(&self) -> usize {
        self.root.pinned().len()
    }
}

/// Keeps a store bound to the thread that made it (see [`Store::bind_to_thread`]).
pub struct StoreBinding {
    store: Arc<StoreRoot>,
    /// `!Send` and `!Sync`: the binding belongs to this thread.
    _not_send: PhantomData<*const ()>,
}

impl Drop for StoreBinding {
    fn drop(&mut self) {
        self.store.inner.unbind();
    }
}

/// Stops a store's guest from another thread (a kill switch; see [`Store::interrupt_handle`]).
/// The interruption stays pending until [`Store::clear_interrupt`].
#[derive(Clone)]
pub struct InterruptHandle {
    store: Arc<StoreInner>,
}

impl InterruptHandle {
    pub(crate) fn new(store: Arc<StoreInner>) -> InterruptHandle {
        InterruptHandle { store }
    }

    /// Asks the guest to stop, waking it if it is blocked in `memory.atomic.wait` or in a host
    /// function waiting with a [`Waiter`](crate::Waiter).
    pub fn interrupt(&self) {
        self.store.interrupt();
    }
}

/// Keeps the owner of an exported entity alive (held, never read).
#[derive(Clone)]
pub(crate) enum Owner {
    Instance(Arc<InstanceInner>),
    Host(Arc<dyn Any + Send + Sync>),
}

/// The store an entity belongs to, and its root for handles the embedder holds.
#[derive(Clone)]
pub(crate) struct Home {
    #[allow(dead_code, reason = "held only to keep the owner alive")]
    pub owner: Owner,
    pub store: Arc<StoreInner>,
    /// `None` in an instance's own copy of its imports.
    pub root: Option<Arc<StoreRoot>>,
}

impl Home {
    pub(crate) fn host(store: &Store, object: Arc<dyn Any + Send + Sync>) -> Home {
        Home { owner: Owner::Host(object), store: store.root.inner.clone(), root: Some(store.root.clone()) }
    }

    pub(crate) fn instance(instance: &Arc<InstanceInner>, root: &Arc<StoreRoot>) -> Home {
        Home { owner: Owner::Instance(instance.clone()), store: instance.store.clone(), root: Some(root.clone()) }
    }
}
