//! Stores: groups of instances that may call each other and so share one set of runtime limits.
//!
//! A call that crosses from one instance into an imported function of another keeps running on
//! the caller's stack, so both must check the same stack limit: every instance of a store
//! points at the store's [`VMRuntimeLimits`]. A store runs one call at a time.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::instance::InstanceInner;

use kiln_abi::VMRuntimeLimits;

/// A group of instances that can be linked together. Cheap to clone.
///
/// The store also keeps alive every instance that was linked to another one of the store
/// (imports from an instance) until the last `Store` handle is dropped: such an instance's
/// functions may have been stored in tables it does not own, even if its instantiation failed
/// half-way (the spec keeps the effects of the segments applied before the failure).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
    retained: Arc<Mutex<Vec<Arc<InstanceInner>>>>,
}

pub(crate) struct StoreInner {
    pub id: u64,
    limits: UnsafeCell<VMRuntimeLimits>,
    running: AtomicBool,
}

// SAFETY: `limits` is written only by the thread that holds `running`, and read by compiled
// code running on that same thread.
unsafe impl Send for StoreInner {}
// SAFETY: as above.
unsafe impl Sync for StoreInner {}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("id", &self.inner.id).finish()
    }
}

impl Store {
    /// A new, empty store.
    pub fn new() -> Store {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Store {
            inner: Arc::new(StoreInner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                limits: UnsafeCell::new(VMRuntimeLimits::default()),
                running: AtomicBool::new(false),
            }),
            retained: Arc::default(),
        }
    }

    /// A handle to an existing store's limits that retains nothing (for `Instance::reset`).
    pub(crate) fn from_inner(inner: Arc<StoreInner>) -> Store {
        Store { inner, retained: Arc::default() }
    }

    /// Keeps `instance` alive as long as this store.
    pub(crate) fn retain(&self, instance: Arc<InstanceInner>) {
        self.retained.lock().unwrap_or_else(|e| e.into_inner()).push(instance);
    }

    /// Whether two handles refer to the same store.
    pub fn same(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl StoreInner {
    pub fn limits_ptr(&self) -> *mut VMRuntimeLimits {
        self.limits.get()
    }

    /// Marks the store as running a call with the given stack limit; `None` if it already is.
    pub fn begin_call(&self, stack_limit: usize) -> Option<RunningGuard<'_>> {
        if self.running.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return None;
        }
        // SAFETY: we hold `running`, so no other thread reads or writes the limits now.
        unsafe { (*self.limits.get()).stack_limit = stack_limit };
        Some(RunningGuard { store: self })
    }
}

/// Clears the store's running flag when the call ends.
pub(crate) struct RunningGuard<'a> {
    store: &'a StoreInner,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.store.running.store(false, Ordering::Release);
    }
}
