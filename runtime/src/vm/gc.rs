//! GC objects: the store's GC heap and allocation from the host side. The handle through which
//! the host sees a struct, an array or an i31 is [`crate::AnyRef`].
//!
//! **The heap.** A store's structs and arrays live in one heap that the store owns; its base
//! is in the store's runtime limits, which every instance's VM context points at, and a
//! reference is an offset from that base (see `kiln_abi::gc` for the encoding). The heap is created
//! when the first such instance is, as a reservation of 4 GiB plus a guard, of which the
//! first `StoreLimits::gc_heap_size` bytes are readable and writable: compiled code adds a
//! reference's low 32 bits (and a field offset below the guard's size) to the base, so no
//! reference, however it was made, reaches outside the store's own reservation. Objects are
//! bump-allocated (inline in compiled code, from the `gc_next`/`gc_end` pair in the store's
//! runtime limits) in one half of the usable bytes; when it is full, the collector
//! (`vm::collect`) copies what is live into the other half, and an allocation that still does
//! not fit traps with "GC heap exhausted". Memory past `gc_next` is always zero, so a new object's
//! fields start as zeros and nulls without being written. When the store goes, its heap is
//! zeroed up to its bump pointer (the first 4 MiB with plain stores, which stay resident, the
//! rest returned to the kernel) and kept for a later store, so the next tenant never sees an
//! earlier one's objects and a per-request tenant allocates without system calls or page
//! faults.
//!
//! **Lifetimes.** An object may hold funcrefs, which point into the VM context of the
//! instance they came from. Every instance of a module that declares a struct or array type
//! is pinned to its store (lives as long as it), so no object field outlives what it points
//! at; handles ([`crate::AnyRef`]) keep the store, and so the heap, alive, and are roots of a
//! collection through the store's [`HostRoots`].

use std::io;
use std::sync::Mutex;

use kiln_abi::gc::GC_HEAP_START;
use kiln_abi::{VMGlobalDefinition, VMTableDefinition};

use crate::sys::unix::mmap::{page_align, Mmap};

/// Address space reserved for a GC heap: every 32-bit offset, plus a guard beyond the largest
/// struct (10,000 fields of at most 16 bytes).
const RESERVATION: usize = (4 << 30) + (1 << 20);

/// A store's GC heap.
pub(crate) struct GcHeap {
    mmap: Mmap,
    /// Usable bytes.
    capacity: u64,
    /// Bytes from the start that are readable and writable (`capacity`, page-aligned).
    accessible: usize,
}

// SAFETY: the mapping is owned; objects are only accessed by the thread that owns the store.
unsafe impl Send for GcHeap {}
// SAFETY: as above.
unsafe impl Sync for GcHeap {}

/// Bytes at the start of a used heap that [`GcHeap::recycle`] zeroes with plain stores, so they
/// stay resident for the next store (a per-request tenant then allocates without a page
/// fault); the rest goes back to the kernel.
const KEEP_RESIDENT: usize = 4 << 20;
/// Most idle heaps kept for reuse (each keeps at most [`KEEP_RESIDENT`] bytes resident).
const MAX_IDLE: usize = 8;
/// Heaps of stores that are gone, zeroed, for the next stores: making and unmapping a 4 GiB
/// reservation per store would cost system calls on every request.
static IDLE: Mutex<Vec<GcHeap>> = Mutex::new(Vec::new());

impl GcHeap {
    /// A heap whose first `capacity` bytes (at most 4 GiB) are usable and zero: an idle one if
    /// there is one, else a new reservation.
    pub fn new(capacity: u64) -> io::Result<GcHeap> {
        let capacity = capacity.min(u32::MAX as u64 + 1);
        let idle = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut heap = match idle {
            Some(heap) => heap,
            None => GcHeap { mmap: Mmap::reserve(RESERVATION)?, capacity: 0, accessible: 0 },
        };
        let wanted = page_align(capacity as usize);
        if wanted > heap.accessible {
            heap.mmap.make_accessible(heap.accessible, wanted - heap.accessible)?;
        } else {
            heap.mmap.make_inaccessible(wanted, heap.accessible - wanted)?;
        }
        heap.accessible = wanted;
        heap.capacity = capacity;
        Ok(heap)
    }

    /// Zeroes the first `used` bytes (everything a store wrote: nothing lies past its bump
    /// pointer) and keeps the heap for the next store, unless enough are kept already.
    pub fn recycle(self, used: u64) {
        let used = (used as usize).min(self.accessible);
        let kept = used.min(KEEP_RESIDENT);
        // SAFETY: the first `kept <= accessible` bytes are readable and writable, and the store
        // that used them is gone.
        unsafe { std::ptr::write_bytes(self.base(), 0, kept) };
        // Beyond it (`KEEP_RESIDENT` is page-aligned), the kernel takes the pages back.
        if used > KEEP_RESIDENT && self.mmap.discard(KEEP_RESIDENT, page_align(used) - KEEP_RESIDENT).is_err() {
            return; // Not reusable: dropping it unmaps it.
        }
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(self);
        }
    }

    /// The base address references are offsets from.
    pub fn base(&self) -> *mut u8 {
        self.mmap.as_ptr()
    }

    /// Where the second half starts (objects are allocated in one half at a time; a collection
    /// copies what is live into the other, see `vm::collect`).
    pub fn half(&self) -> u64 {
        (self.capacity / 2) & !(kiln_abi::gc::OBJECT_ALIGN - 1)
    }

    /// Where bump allocation starts in a new heap.
    pub const fn start() -> u64 {
        GC_HEAP_START
    }

    /// A pointer to `len` bytes at heap offset `offset`, if they lie in the usable part.
    pub fn bytes(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // SAFETY: within the usable part of the reservation.
        (end <= self.capacity).then(|| unsafe { self.base().add(offset as usize) })
    }
}

/// The heap offsets of the objects host handles refer to (see [`crate::GcObject`]); free entries
/// are 0.
#[derive(Default)]
pub(crate) struct HostRoots {
    offsets: Vec<u32>,
    free: Vec<usize>,
}

impl HostRoots {
    pub fn add(&mut self, offset: u32) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.offsets[index] = offset;
                index
            }
            None => {
                self.offsets.push(offset);
                self.offsets.len() - 1
            }
        }
    }

    pub fn release(&mut self, index: usize) {
        self.offsets[index] = 0;
        self.free.push(index);
    }

    /// The current offset of entry `index`.
    pub fn offset(&self, index: usize) -> u32 {
        self.offsets[index]
    }

    /// Every live entry, for a collection to update.
    pub fn offsets_mut(&mut self) -> impl Iterator<Item = &mut u32> {
        self.offsets.iter_mut().filter(|o| **o != 0)
    }
}

/// A host-made global or table that may hold GC references.
#[derive(Clone, Copy)]
pub(crate) enum Place {
    Global(*mut VMGlobalDefinition),
    Table(*mut VMTableDefinition),
}

// SAFETY: the pointers are owned by the `HostPlace` that holds them and only dereferenced by
// a collection, on the thread that owns the store.
unsafe impl Send for Place {}
