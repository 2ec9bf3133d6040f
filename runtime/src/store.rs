//! Stores: groups of instances that may call each other and so share one set of runtime limits.
//!
//! A call that crosses from one instance into an imported function of another keeps running on
//! the caller's stack, so both must check the same stack limit: every instance of a store
//! points at the store's [`VMRuntimeLimits`]. A store runs one call at a time.
//!
//! Exclusion without a locked instruction per call: a call first makes the store *owned* by
//! its thread (one compare-and-swap), and releases ownership when it ends, unless a
//! [`TypedFunc`](crate::TypedFunc) of the store is alive on that thread: typed functions keep
//! their thread's ownership, so their calls cost two plain loads and stores. The `in_call` flag
//! is only touched by the owning thread.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Key of the thread that owns the store (see [`thread_key`]), 0 when free.
    owner: AtomicUsize,
    /// Live typed functions keeping their thread's ownership.
    bindings: AtomicUsize,
    /// Whether the owner is inside a call (detects re-entrant calls). Owner-only.
    in_call: Cell<bool>,
}

// SAFETY: `limits` and `in_call` are only accessed by the thread that owns the store (an
// acquire on `owner` orders them after the previous owner's release), and compiled code reads
// `limits` on that same thread.
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
                owner: AtomicUsize::new(0),
                bindings: AtomicUsize::new(0),
                in_call: Cell::new(false),
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

    /// A handle that stops this store's running guest from any thread: the guest traps with
    /// "deadline exceeded" at its next function entry or loop iteration.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle { store: self.inner.clone() }
    }

    /// Sets the fuel left for code compiled with fuel metering
    /// (`kiln_compiler::Compiler::set_fuel_metering`): each executed operator costs one unit,
    /// and running out traps with "all fuel consumed". A new store has unlimited fuel. `false`
    /// if the store is busy (another thread runs it, or a call is in progress).
    pub fn set_fuel(&self, fuel: u64) -> bool {
        self.inner.with_limits(|limits| limits.fuel = fuel.min(i64::MAX as u64) as i64).is_some()
    }

    /// The fuel left (0 once exhausted), or `None` if the store is busy.
    pub fn fuel_remaining(&self) -> Option<u64> {
        self.inner.with_limits(|limits| limits.fuel.max(0) as u64)
    }

    /// Clears a pending interruption so the store can run again.
    pub fn clear_interrupt(&self) {
        self.inner.interrupt_flag().store(0, Ordering::SeqCst);
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

    /// The interrupt flag, shared with compiled code.
    fn interrupt_flag(&self) -> &AtomicU64 {
        // SAFETY: the field is a properly aligned u64 that lives as long as `self`; every access
        // from Rust goes through this atomic view, and compiled code only reads it.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.limits.get()).interrupt)) }
    }

    /// Makes this thread the owner if the store is free (or already ours).
    #[inline]
    fn acquire_owner(&self) -> bool {
        let me = thread_key();
        let owner = self.owner.load(Ordering::Acquire);
        owner == me || (owner == 0 && self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok())
    }

    /// Starts a call with the given stack limit; `None` if another thread owns the store or
    /// this thread is already inside a call of it.
    #[inline]
    pub fn begin_call(&self, stack_limit: usize) -> Option<RunningGuard<'_>> {
        if !self.acquire_owner() {
            return None;
        }
        if self.in_call.get() {
            // Re-entrant (a host function called back in): the store stays ours and busy.
            return None;
        }
        self.in_call.set(true);
        // SAFETY: we own the store, so no other thread reads or writes the limits now.
        unsafe { (*self.limits.get()).stack_limit = stack_limit };
        Some(RunningGuard { store: self })
    }

    /// Runs `f` on the limits while no call is in progress, taking ownership for the duration.
    pub fn with_limits<R>(&self, f: impl FnOnce(&mut VMRuntimeLimits) -> R) -> Option<R> {
        if !self.acquire_owner() || self.in_call.get() {
            return None;
        }
        // SAFETY: we own the store and no call is running, so nothing else touches the limits
        // (the interrupt flag, written from other threads, is not touched by `f`'s callers).
        let result = f(unsafe { &mut *self.limits.get() });
        if self.bindings.load(Ordering::Relaxed) == 0 {
            self.owner.store(0, Ordering::Release);
        }
        Some(result)
    }

    /// Starts a call on a thread that holds a [`Self::bind`]ing (so it owns the store and no
    /// other thread can take it): no atomic operation at all. `None` if re-entrant.
    #[inline]
    pub fn begin_bound_call(&self, stack_limit: usize) -> Option<BoundCallGuard<'_>> {
        debug_assert_eq!(self.owner.load(Ordering::Relaxed), thread_key(), "the caller must hold a binding");
        if self.in_call.get() {
            return None;
        }
        self.in_call.set(true);
        // SAFETY: this thread owns the store (it holds a binding).
        unsafe { (*self.limits.get()).stack_limit = stack_limit };
        Some(BoundCallGuard { store: self })
    }

    /// Keeps this thread's ownership while a typed function lives; `false` if another thread
    /// owns the store.
    pub fn bind(&self) -> bool {
        if !self.acquire_owner() {
            return false;
        }
        self.bindings.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Ends a [`Self::bind`].
    pub fn unbind(&self) {
        if self.bindings.fetch_sub(1, Ordering::Relaxed) == 1 && !self.in_call.get() {
            self.owner.store(0, Ordering::Release);
        }
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

    /// Asks the guest to stop.
    pub fn interrupt(&self) {
        self.store.interrupt_flag().store(1, Ordering::SeqCst);
    }
}

/// A number identifying the current thread while it lives: the address of a thread-local.
#[inline]
fn thread_key() -> usize {
    thread_local! {
        static KEY: u8 = const { 0 };
    }
    KEY.with(|k| k as *const u8 as usize)
}

/// Ends a bound call when dropped (the binding keeps the store owned).
pub(crate) struct BoundCallGuard<'a> {
    store: &'a StoreInner,
}

impl Drop for BoundCallGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.store.in_call.set(false);
    }
}

/// Ends the call when dropped, releasing the store unless a typed function binds it.
pub(crate) struct RunningGuard<'a> {
    store: &'a StoreInner,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.store.in_call.set(false);
        if self.store.bindings.load(Ordering::Relaxed) == 0 {
            self.store.owner.store(0, Ordering::Release);
        }
    }
}
