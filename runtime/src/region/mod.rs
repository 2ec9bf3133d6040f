//! Lifecycle stage 2, regions: address space reserved once for N instance slots.
//!
//! ```text
//! one slot (repeated `slots` times, contiguous):
//! +-----------------+-------------+-----------+-------+------------------+-------------------+------------+
//! | VM context area | table area  | dirty map | guard | guest stack      | heap (4 GiB)      | heap guard |
//! | (RW, 1 MiB)     | (RW, 16MiB) | (RW, 1MiB)| 64KiB | (RW, stack_size) | RW up to its size | (2 GiB)    |
//! +-----------------+-------------+-----------+-------+------------------+-------------------+------------+
//!                                                     ^ stack limit = start + host reserve   ^ next slot
//! ```
//!
//! The VM context, table area and stack are read-write from the start (pages are committed
//! only when touched); the heap is accessible up to the memory's current size, its start mapped
//! copy-on-write from the module's heap image. Defined memories after the first (multi-memory)
//! get reservations of the same size outside the region, reserved on first use and then kept
//! by the slot (`ExtraHeap`) and wiped like the heap. A slot remembers which image it holds and
//! how much is accessible, and the free list (`free.rs`: sharded per thread) prefers a slot that
//! last served the same module, so instantiating a module again needs no system call.
//! Teardown resets exactly the pages of each heap its dirty map marks (`crate::dirty`): with
//! plain stores (the image copied back, or zeros) while the heap's resident pages fit in
//! `keep_resident`, else by discarding their span (batched over slots, see `free.rs`); and it
//! zeroes the used table elements. A warm
//! slot's lifecycle enters the kernel only when a tenant writes more than that. The VM context
//! is rewritten whole by every instantiation and the guest cannot address the stack, so neither
//! is wiped (wasm code cannot observe either).

mod free;
mod slot;

use std::sync::Arc;

pub use slot::SlotLayout;
pub(crate) use slot::{ExtraHeap, ImageSource, ResetImage, Slot};

use crate::sys::unix::mmap::{page_align, Mmap};

/// How a region is laid out.
#[derive(Debug, Clone)]
pub struct RegionConfig {
    /// Number of slots (instances that can be alive at once).
    pub slots: usize,
    /// Guest stack size per slot, in bytes, including the host reserve.
    pub stack_size: usize,
    /// Bytes of each slot's stack kept free for host functions and libcalls the guest calls.
    pub host_stack_reserve: usize,
    /// Largest VM context an instance may need (it grows with the module's function count).
    pub max_vmctx_size: usize,
    /// Bytes of each memory that may stay resident while its slot is free. Teardown resets
    /// the pages a tenant wrote (tracked exactly, wherever they are) with plain stores, and they
    /// stay resident, as long as the memory's resident pages fit in this; the next tenant of
    /// the same module then neither makes a system call nor takes a page fault on them. When a
    /// tenant writes more, teardown leaves the other written pages for the kernel to take back
    /// (batched with other slots' in one `process_madvise`). Larger values trade
    /// resident memory per idle slot for fewer kernel entries. Rounded up to the page size; 0
    /// returns every written page to the kernel.
    pub keep_resident: usize,
    /// Ceiling on the memory that free slots keep resident for their next tenants, over the
    /// whole region: the heap pages teardown reset in place (at most `keep_resident` per
    /// memory) and the table elements it zeroed. Above it, a background thread returns the
    /// least recently used free slots' memory to the kernel (heaps, tables and stacks, in one
    /// call per batch), without delaying any lifecycle; those slots stay warm for their module
    /// (nothing to remap) and their next tenants fault their pages back in. Split evenly over
    /// the free list's shards (one per core). Larger values trade idle memory for fewer page
    /// faults under bursts; 0 trims every slot that kept anything. Guest stacks are not
    /// counted: a free slot's stack stays as deep as its tenants went until it is trimmed.
    pub max_idle_resident: usize,
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            slots: 16,
            stack_size: 2 * 1024 * 1024,
            host_stack_reserve: 256 * 1024,
            max_vmctx_size: 1024 * 1024,
            keep_resident: 64 * 1024,
            max_idle_resident: 256 * 1024 * 1024,
        }
    }
}

/// Why a region could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The configuration is unusable.
    #[error("invalid region configuration: {0}")]
    Config(String),
    /// The address space could not be reserved.
    #[error("cannot reserve address space for the region: {0}")]
    Reserve(#[from] std::io::Error),
}

/// A set of reusable instance slots. Cheap to clone.
#[derive(Clone)]
pub struct Region {
    handle: Arc<RegionHandle>,
}

/// What the embedder's handles share: when the last goes, the region closes (see
/// [`free::FreeList::close`]) and is unmapped once its last instance is gone.
struct RegionHandle {
    inner: Arc<RegionInner>,
}

impl Drop for RegionHandle {
    fn drop(&mut self) {
        self.inner.free.close();
    }
}

/// The region itself. Every slot, free or taken, holds a reference to it, moved between the
/// free list and the instance with the slot, so a lifecycle changes no reference count that
/// other threads share; the free slots' references are dropped when the region closes.
pub(crate) struct RegionInner {
    pub mmap: Mmap,
    pub layout: SlotLayout,
    pub free: free::FreeList,
    /// [`RegionConfig::keep_resident`], page-aligned.
    pub keep_resident: usize,
}

/// A free slot and what its heap holds.
pub(crate) struct FreeSlot {
    /// The region, kept alive by each of its slots.
    pub region: Arc<RegionInner>,
    pub index: usize,
    /// The module whose instance last used the slot (0: none).
    pub last_module: u64,
    pub heap_state: slot::HeapState,
    pub extra_heaps: Vec<ExtraHeap>,
    /// The module of `last_module`, kept loaded while the slot is warm for it: its next
    /// instance takes this handle over instead of cloning one (no reference count shared
    /// between threads changes on a warm lifecycle).
    pub module: Option<crate::load::Module>,
    /// Ranges (address, length) of its heaps to discard before the slot is reused.
    pub discards: Vec<(usize, usize)>,
    /// Bytes at the start of its table area that stay resident (zeroed in place).
    pub tables_kept: usize,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("layout", &self.handle.inner.layout).finish_non_exhaustive()
    }
}

impl Region {
    /// Reserves address space for `config.slots` slots.
    pub fn new(config: RegionConfig) -> Result<Region, RegionError> {
        if config.slots == 0 {
            return Err(RegionError::Config("a region needs at least one slot".into()));
        }
        if config.host_stack_reserve >= config.stack_size {
            return Err(RegionError::Config("the host stack reserve must be smaller than the stack".into()));
        }
        // Bounded so the layout arithmetic below cannot overflow.
        for (name, size) in [
            ("stack_size", config.stack_size),
            ("max_vmctx_size", config.max_vmctx_size),
            ("keep_resident", config.keep_resident),
        ] {
            if size > MAX_AREA_SIZE {
                return Err(RegionError::Config(format!(
                    "{name} is {size} bytes, more than the {MAX_AREA_SIZE} a slot allows"
                )));
            }
        }
        let layout = SlotLayout::new(&config);
        let total =
            layout.slot_size.checked_mul(config.slots).ok_or_else(|| RegionError::Config("too many slots".into()))?;
        let mmap = Mmap::reserve(total)?;
        // The VM context area, the table area and the dirty map lie end to end: one call.
        let head = layout.dirty_map_offset + crate::dirty::MAP_SIZE - layout.vmctx_offset;
        debug_assert_eq!(layout.tables_offset, layout.vmctx_offset + layout.vmctx_size);
        debug_assert_eq!(layout.dirty_map_offset, layout.tables_offset + layout.tables_size);
        for index in 0..config.slots {
            let base = index * layout.slot_size;
            mmap.make_accessible(base + layout.vmctx_offset, head)?;
            mmap.make_accessible(base + layout.stack_offset, layout.stack_size)?;
        }
        let shards = cores().min(config.slots).clamp(1, MAX_SHARDS);
        let free = free::FreeList::new(shards, config.max_idle_resident);
        let keep_resident = page_align(config.keep_resident);
        let inner = Arc::new(RegionInner { mmap, layout, free, keep_resident });
        // Hand out low slots first (each shard is a LIFO list).
        inner.free.deal((0..config.slots).rev().map(|index| FreeSlot {
            region: inner.clone(),
            index,
            last_module: 0,
            heap_state: Default::default(),
            extra_heaps: Vec::new(),
            module: None,
            discards: Vec::new(),
            tables_kept: 0,
        }));
        Ok(Region { handle: Arc::new(RegionHandle { inner }) })
    }

    /// The per-slot layout.
    pub fn layout(&self) -> &SlotLayout {
        &self.handle.inner.layout
    }

    /// Number of slots not in use.
    pub fn free_slots(&self) -> usize {
        self.handle.inner.free.len()
    }

    /// Bytes the free slots keep resident for their next tenants, as counted against
    /// [`RegionConfig::max_idle_resident`] (the trimmer works in the background, so this can
    /// exceed the ceiling for a moment).
    pub fn idle_resident(&self) -> usize {
        self.handle.inner.free.kept()
    }

    /// The region itself.
    pub(crate) fn inner(&self) -> &RegionInner {
        &self.handle.inner
    }

    #[cfg(test)]
    pub(crate) fn inner_arc(&self) -> Arc<RegionInner> {
        self.handle.inner.clone()
    }
}

impl RegionInner {
    /// Takes a free slot, if any, preferring one that last served `module_id`.
    pub(crate) fn take_slot(&self, module_id: u64) -> Option<Slot> {
        let slot = self.free.take(module_id)?;
        let module = slot.module.filter(|m| m.inner.id == module_id);
        Some(Slot::new(slot.region, slot.index, module_id, slot.heap_state, slot.extra_heaps, module, slot.tables_kept))
    }
}

/// Most shards a region's free list has (one per core, up to this).
const MAX_SHARDS: usize = 64;

/// Largest stack or VM context area a slot may have (1 GiB).
const MAX_AREA_SIZE: usize = 1 << 30;

/// Address space for the elements of a module's own tables (2 Mi elements); tables that do
/// not fit get a reservation of their own.
const TABLE_AREA_SIZE: usize = 16 * 1024 * 1024;

impl SlotLayout {
    fn new(config: &RegionConfig) -> SlotLayout {
        let vmctx_size = page_align(config.max_vmctx_size);
        let stack_guard = 64 * 1024;
        let stack_size = page_align(config.stack_size);
        let tables_size = TABLE_AREA_SIZE;
        let dirty_map_offset = vmctx_size + tables_size;
        let stack_offset = dirty_map_offset + crate::dirty::MAP_SIZE + stack_guard;
        let heap_offset = stack_offset + stack_size;
        let heap_reservation = kiln_abi_heap::RESERVATION;
        let heap_guard = kiln_abi_heap::GUARD;
        SlotLayout {
            vmctx_offset: 0,
            vmctx_size,
            tables_offset: vmctx_size,
            tables_size,
            dirty_map_offset,
            stack_offset,
            stack_size,
            host_stack_reserve: page_align(config.host_stack_reserve),
            heap_offset,
            heap_reservation,
            slot_size: heap_offset + heap_reservation + heap_guard,
        }
    }
}

/// The number of cores this process may use, read once (the standard library reads the
/// cgroup files on every call, which cost more than the rest of a small region's creation).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Heap reservation sizes; must match what the compiler assumes when it omits bounds checks.
pub(crate) mod kiln_abi_heap {
    /// Address space reserved for each 32-bit memory.
    pub const RESERVATION: usize = kiln_abi::HEAP_RESERVATION as usize;
    /// Inaccessible space after it.
    pub const GUARD: usize = kiln_abi::HEAP_GUARD as usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to ten seconds) for `done`.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Four slots, each with a table element zeroed in place and a byte on its stack, returned
    /// to a region whose free slots may keep `max_idle_resident` bytes; their stack bytes.
    fn return_four_used_slots(max_idle_resident: usize) -> (Region, Vec<*mut u8>) {
        let region = Region::new(RegionConfig { slots: 4, max_idle_resident, ..RegionConfig::default() }).unwrap();
        let slots: Vec<Slot> = (0..4).map(|_| region.inner().take_slot(7).unwrap()).collect();
        let mut stacks = Vec::new();
        for mut slot in slots {
            let stack = slot.stack_top().wrapping_sub(100);
            // SAFETY: a byte of the slot's stack and an element of its table area, which this
            // test holds.
            unsafe {
                *stack = 1;
                *slot.tables().add(1) = 1;
            }
            slot.reset_tables(0, 2).unwrap();
            stacks.push(stack);
        }
        (region, stacks)
    }

    #[test]
    fn free_slots_above_the_ceiling_are_decommitted_in_the_background_and_stay_warm() {
        // Under the ceiling, free slots keep their pages.
        let (region, stacks) = return_four_used_slots(usize::MAX);
        assert_eq!(region.idle_resident(), 4 * crate::sys::unix::mmap::PAGE_SIZE);
        // SAFETY: the slots' stacks lie in the region, which is mapped; no one uses them.
        assert!(stacks.iter().all(|&s| unsafe { *s } == 1));
        // Above it, the trimmer returns their memory to the kernel (the stack reads zero again)...
        let (region, stacks) = return_four_used_slots(0);
        assert!(eventually(|| region.idle_resident() == 0), "{} bytes still kept", region.idle_resident());
        // SAFETY: as above.
        assert!(eventually(|| stacks.iter().all(|&s| unsafe { *s } == 0)));
        assert!(eventually(|| region.free_slots() == 4));
        // ...and they still serve their module, without remapping.
        assert_eq!(region.inner().free.take(8).unwrap().last_module, 7);
    }

    #[test]
    fn a_region_outlives_its_last_handle_until_its_last_slot_comes_back() {
        let region = Region::new(RegionConfig { slots: 3, ..RegionConfig::default() }).unwrap();
        let weak = Arc::downgrade(&region.inner_arc());
        let slot = region.inner().take_slot(1).unwrap();
        drop(region);
        assert!(weak.upgrade().is_some(), "a slot in use keeps the region mapped");
        drop(slot);
        assert!(weak.upgrade().is_none(), "the region is freed with its last slot");
    }
}
