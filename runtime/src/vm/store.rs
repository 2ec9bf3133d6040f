//! Stores: groups of instances that may call each other and so share one set of runtime limits,
//! and the rule that keeps every function reference valid.
//!
//! A call that crosses from one instance into an imported function of another keeps running on
//! the caller's stack, so both must check the same stack limit: every instance of a store
//! points at the store's [`VMRuntimeLimits`]. A store runs one call at a time.
//!
//! **Lifetimes.** A function reference is a pointer into the VM context of the instance that
//! holds it (see [`kiln_abi::VMFuncRef::home`]); it must never outlive that instance, or a
//! `call_indirect` through it would run whatever the slot holds next. Two kinds of owner keep
//! instances alive:
//! - handles ([`Instance`](crate::Instance), [`Func`](crate::Func), tables, globals, memories,
//!   funcref values): an instance lives at least as long as any handle to it;
//! - the store's *root*: an instance whose references may be held somewhere it does not own
//!   is *pinned* to the root and lives as long as the store. That is decided conservatively:
//!   at instantiation when it imports anything from another instance, any table, or a mutable
//!   global of reference type; and whenever one of its functions crosses from the host into
//!   wasm or into a table or global as a value.
//!
//! The root is held by every handle of the store and by nothing inside it (instances, tables
//! and globals only point at [`StoreInner`]), so there are no cycles: when the last handle
//! goes, the root goes, and the pinned instances with it.
//!
//! **Exclusion** without a locked instruction per call: a call first makes the store *owned* by
//! its thread (one compare-and-swap), and releases ownership when it ends, unless a
//! [`StoreBinding`](crate::StoreBinding) made on that thread is alive: then calls cost two plain loads and stores.
//! The `in_call` flag is only touched by the owning thread. Host-side access to tables, globals
//! and memories takes ownership the same way and needs the store idle.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use kiln_abi::gc::{KIND_ARRAY, KIND_STRUCT, OBJECT_KIND_OFFSET, OBJECT_TYPE_ID_OFFSET};
use kiln_abi::VMRuntimeLimits;

use crate::limits::StoreLimits;
use crate::vm::exceptions::ExceptionHeap;
use crate::vm::gc::{GcHeap, HostRoots, Place};

/// What a store's root keeps alive: a pinned instance. `vm::instance` implements it for its
/// `InstanceInner`, which points at its store's `StoreInner`, so the store names only this.
pub(crate) trait Pinned: Send + Sync {
    /// Set once the instance is pinned.
    fn pinned_flag(&self) -> &AtomicBool;

    /// Calls `visit` with every place of the instance's own that may hold a GC reference.
    ///
    /// # Safety
    /// The instance's store must be idle but for the caller (a collection), on its owning
    /// thread.
    unsafe fn visit_references(&self, visit: &mut dyn FnMut(*mut u64));
}

/// Keeps a store's pinned instances alive; held by every handle of the store, never by the
/// store's own contents.
pub(crate) struct StoreRoot {
    pub inner: Arc<StoreInner>,
    pinned: Mutex<Vec<Arc<dyn Pinned>>>,
}

/// The state compiled code and the runtime share for one store.
pub(crate) struct StoreInner {
    pub id: u64,
    limits: UnsafeCell<VMRuntimeLimits>,
    /// Key of the thread that owns the store (see [`thread_key`]), 0 when free.
    owner: AtomicUsize,
    /// Live [`StoreBinding`](crate::StoreBinding)s keeping their thread's ownership.
    bindings: AtomicUsize,
    /// Whether the owner is inside a call (detects re-entrant calls). Owner-only.
    in_call: Cell<bool>,
    /// The root, for turning references that leave wasm into handles (alive while any handle
    /// is, which is whenever a call or an access is in progress).
    root: Weak<StoreRoot>,
    /// Resource limits for the store's instances.
    pub resource_limits: StoreLimits,
    /// Instances of this store that have not been torn down.
    live_instances: AtomicUsize,
    /// Made readable by an interrupt, so a host function blocked in `poll(2)` wakes up
    /// (created the first time one blocks).
    waker: OnceLock<OwnedFd>,
    /// The exception objects the store's guests have thrown (only its owner thread allocates).
    exceptions: Mutex<ExceptionHeap>,
    /// The structs and arrays of the store's guests (see [`crate::vm::gc`]), made when the first
    /// instance of a module with such types is.
    gc: OnceLock<GcHeap>,
    /// The objects host handles refer to (roots of a collection).
    host_roots: Mutex<HostRoots>,
    /// Host-made globals and tables that may hold GC references (roots of a collection), kept
    /// as long as the store.
    host_places: Mutex<Vec<HostPlace>>,
    /// The embedder's state for this store's host functions (see [`crate::Store::set_data`]).
    pub data: OnceLock<Box<dyn Any + Send + Sync>>,
}

/// A host-made global or table that may hold GC references, and what keeps it alive.
pub(crate) struct HostPlace {
    pub place: Place,
    pub _owner: Arc<dyn std::any::Any + Send + Sync>,
}

// SAFETY: `limits` and `in_call` are only accessed by the thread that owns the store (an
// acquire on `owner` orders them after the previous owner's release), except the interrupt
// flag, which every thread accesses atomically; compiled code reads `limits` on the owning
// thread.
unsafe impl Send for StoreInner {}
// SAFETY: as above.
unsafe impl Sync for StoreInner {}

impl StoreRoot {
    /// A new store's root, with no instances, whose instances are held to `limits`.
    pub fn new(limits: StoreLimits) -> Arc<StoreRoot> {
        Arc::new_cyclic(|root| StoreRoot {
            inner: Arc::new(StoreInner {
                id: next_store_id(),
                limits: UnsafeCell::new(VMRuntimeLimits::default()),
                owner: AtomicUsize::new(0),
                bindings: AtomicUsize::new(0),
                in_call: Cell::new(false),
                root: root.clone(),
                resource_limits: limits,
                live_instances: AtomicUsize::new(0),
                waker: OnceLock::new(),
                exceptions: Mutex::default(),
                gc: OnceLock::new(),
                host_roots: Mutex::default(),
                host_places: Mutex::default(),
                data: OnceLock::new(),
            }),
            pinned: Mutex::new(Vec::new()),
        })
    }

    /// The instances kept alive as long as the store.
    pub fn pinned(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn Pinned>>> {
        self.pinned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `instance` alive as long as the store (idempotent).
    pub fn pin<P: Pinned + 'static>(&self, instance: &Arc<P>) {
        if !instance.pinned_flag().swap(true, Ordering::AcqRel) {
            self.pinned.lock().unwrap_or_else(|e| e.into_inner()).push(instance.clone());
        }
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        // Nothing can reach the heap any more: zero what the store used and keep it for the next.
        if let Some(heap) = self.gc.take() {
            heap.recycle(self.limits.get_mut().gc_next);
        }
    }
}

impl Drop for StoreRoot {
    fn drop(&mut self) {
        // Tear the pinned instances down latest first: importers before what they import.
        let mut pinned = std::mem::take(self.pinned.get_mut().unwrap_or_else(|e| e.into_inner()));
        while let Some(instance) = pinned.pop() {
            drop(instance);
        }
    }
}

/// Why host-side access to a store's contents was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store is running a call (on this thread or another); try again when it returns")]
pub struct StoreBusy;

impl StoreInner {
    /// The store's exception objects.
    pub fn exceptions(&self) -> std::sync::MutexGuard<'_, ExceptionHeap> {
        self.exceptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limits_ptr(&self) -> *mut VMRuntimeLimits {
        self.limits.get()
    }

    /// The objects host handles refer to.
    pub fn host_roots(&self) -> std::sync::MutexGuard<'_, HostRoots> {
        self.host_roots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Host-made globals and tables that may hold GC references.
    pub fn host_places(&self) -> std::sync::MutexGuard<'_, Vec<HostPlace>> {
        self.host_places.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's GC heap, if an instance made it.
    pub fn gc_heap(&self) -> Option<&GcHeap> {
        self.gc.get()
    }

    /// The store's GC heap, made (of `resource_limits.gc_heap_size` bytes) if it does not exist
    /// yet. Only the owning thread calls this (at instantiation).
    pub fn ensure_gc_heap(&self) -> std::io::Result<&GcHeap> {
        if let Some(heap) = self.gc.get() {
            return Ok(heap);
        }
        let heap = GcHeap::new(self.resource_limits.gc_heap_size)?;
        let limits = self.limits_ptr();
        // SAFETY: the store's runtime limits, accessed by its owning thread only; compiled code
        // reads the pair only during calls.
        unsafe {
            (*limits).gc_heap_base = heap.base() as usize;
            (*limits).gc_next = GcHeap::start();
            (*limits).gc_end = heap.half();
        }
        Ok(self.gc.get_or_init(|| heap))
    }

    /// The root, while any handle of the store is alive.
    pub fn root(&self) -> Option<Arc<StoreRoot>> {
        self.root.upgrade()
    }

    /// Pins `instance` (an instance of this store) to the store's root. Values only enter
    /// wasm while a handle of the store is alive (the one being called or written through).
    pub fn pin<P: Pinned + 'static>(&self, instance: &Arc<P>) {
        self.root().expect("values enter a store's wasm while one of its handles is alive").pin(instance);
    }

    /// The interrupt flag, shared with compiled code.
    fn interrupt_flag(&self) -> &AtomicU64 {
        // SAFETY: the field is a properly aligned u64 that lives as long as `self`; every access
        // from Rust goes through this atomic view (no reference to the whole struct is ever
        // made), and compiled code only reads it atomically.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.limits.get()).interrupt)) }
    }

    /// Asks the guest to stop, waking it if it is blocked in `memory.atomic.wait` or in a host
    /// function waiting on the store's waker.
    pub fn interrupt(&self) {
        self.interrupt_flag().store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if let Some(waker) = self.waker.get() {
            crate::sys::unix::signal_eventfd(waker);
        }
        crate::parking::wake_all();
    }

    /// Clears a pending interruption so the store can run again.
    pub fn clear_interrupt(&self) {
        self.interrupt_flag().store(0, Ordering::SeqCst);
        if let Some(waker) = self.waker.get() {
            drain_eventfd(waker);
        }
    }

    /// Whether the guest has been asked to stop.
    pub fn interrupted(&self) -> bool {
        self.interrupt_flag().load(Ordering::SeqCst) != 0
    }

    /// Counts a new instance against the store's limit; `false` if it is reached.
    pub fn add_instance(&self) -> bool {
        let max = self.resource_limits.instances;
        self.live_instances.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Uncounts an instance torn down.
    pub fn remove_instance(&self) {
        self.live_instances.fetch_sub(1, Ordering::AcqRel);
    }

    /// The eventfd an interrupt writes to, created on first use. The fence orders its
    /// publication before the caller's next look at the interrupt flag, matching the fence in
    /// [`Self::interrupt`]: either the interrupter sees the waker, or the waiter sees
    /// the flag.
    pub fn waker(&self) -> std::io::Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        if self.waker.get().is_none() {
            let fd = crate::sys::unix::eventfd()?;
            // A racing initialiser's fd is dropped (closed) here: only one is ever published.
            let _ = self.waker.set(fd);
        }
        fence(Ordering::SeqCst);
        Ok(self.waker.get().expect("initialised above").as_fd())
    }

    /// Makes this thread the owner if the store is free (or already ours).
    #[inline]
    fn acquire_owner(&self) -> bool {
        let me = thread_key();
        let owner = self.owner.load(Ordering::Acquire);
        owner == me || (owner == 0 && self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok())
    }

    /// Releases ownership unless a binding keeps it.
    #[inline]
    fn release_owner(&self) {
        if self.bindings.load(Ordering::Relaxed) == 0 {
            self.owner.store(0, Ordering::Release);
        }
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
        // SAFETY: we own the store, so no other thread reads or writes the limits now; the
        // write goes through a raw place, never a reference to the whole struct.
        unsafe { (*self.limits.get()).stack_limit = stack_limit };
        Some(RunningGuard { store: self })
    }

    /// Runs `f` while no call is in progress, taking ownership for the duration: the way host
    /// code reads and writes what a guest of this store may also touch.
    pub fn access<R>(&self, f: impl FnOnce(&StoreInner) -> R) -> Result<R, StoreBusy> {
        if !self.acquire_owner() {
            return Err(StoreBusy);
        }
        if self.in_call.get() {
            return Err(StoreBusy);
        }
        // Counts as a call, so `f` cannot re-enter (a panic in `f` releases through the guard).
        self.in_call.set(true);
        let _guard = RunningGuard { store: self };
        Ok(f(self))
    }

    /// Keeps this thread's ownership while a binding lives; `false` if another thread owns
    /// the store.
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

impl StoreInner {
    /// Takes `size` bytes (a multiple of 8) from the store's GC heap by bump allocation;
    /// `None` when the heap is full or does not exist. Only the owning thread allocates.
    pub(crate) fn gc_bump(&self, size: u64) -> Option<u64> {
        self.gc_heap()?;
        let limits = self.limits_ptr();
        // SAFETY: the store's runtime limits, accessed by its owning thread only.
        let (next, end) = unsafe { ((*limits).gc_next, (*limits).gc_end) };
        let new_next = next.checked_add(size).filter(|&n| n <= end)?;
        // SAFETY: as above.
        unsafe { (*limits).gc_next = new_next };
        Some(next)
    }

    /// Allocates an array of canonical type `type_id` with `len` zeroed elements of
    /// `element_size` bytes and writes its header and length; `None` when the heap has no
    /// room (or the array could never fit a heap).
    pub(crate) fn gc_alloc_array(&self, type_id: u32, element_size: u32, len: u32) -> Option<u32> {
        let size = kiln_abi::gc::array_size(element_size, len)?;
        let offset = self.gc_alloc(size, type_id, true)?;
        let header = self.gc_heap()?.bytes(u64::from(offset), kiln_abi::gc::ARRAY_DATA_OFFSET as u64)?;
        // SAFETY: the new array's header, inside the heap (checked).
        unsafe { header.add(kiln_abi::gc::ARRAY_LEN_OFFSET as usize).cast::<u32>().write_unaligned(len) };
        Some(offset)
    }

    /// Allocates `size` bytes (a multiple of 8) in the store's GC heap and writes the header of
    /// an object of canonical type `type_id` (`array`: an array's kind); `None` when the heap
    /// is full or does not exist. Only the owning thread allocates.
    pub(crate) fn gc_alloc(&self, size: u64, type_id: u32, array: bool) -> Option<u32> {
        let next = self.gc_bump(size)?;
        let object = self.gc_heap()?.bytes(next, size)?;
        // SAFETY: the object's first 8 bytes, inside the heap (checked).
        unsafe {
            object.add(OBJECT_TYPE_ID_OFFSET as usize).cast::<u32>().write_unaligned(type_id);
            object.add(OBJECT_KIND_OFFSET as usize).write(if array { KIND_ARRAY } else { KIND_STRUCT });
        }
        Some(next as u32)
    }
}

/// Empties an eventfd (non-blocking), so a handled interrupt does not wake the next wait.
fn drain_eventfd(fd: &OwnedFd) {
    crate::sys::unix::drain_eventfd(fd.as_raw_fd());
}

/// A new process-unique store id (never 0). Threads reserve ids in blocks, so creating a store
/// touches no cache line that other threads write.
fn next_store_id() -> u64 {
    const BLOCK: u64 = 1 << 16;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static RESERVED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    RESERVED.with(|reserved| {
        let (mut next, mut end) = reserved.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed) * BLOCK;
            end = next + BLOCK;
        }
        reserved.set((next + 1, end));
        next
    })
}

/// A number identifying the current thread while it lives: the address of a thread-local.
#[inline]
fn thread_key() -> usize {
    thread_local! {
        static KEY: u8 = const { 0 };
    }
    KEY.with(|k| k as *const u8 as usize)
}

/// Ends the call when dropped, releasing the store unless a binding keeps it.
pub(crate) struct RunningGuard<'a> {
    store: &'a StoreInner,
}

impl Drop for RunningGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.store.in_call.set(false);
        self.store.release_owner();
    }
}
