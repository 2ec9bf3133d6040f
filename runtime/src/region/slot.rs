//! One slot of a region: where an instance's VM context, stack and heap live.

use std::sync::Arc;

use super::RegionInner;

/// Byte offsets within one slot (see the diagram in [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLayout {
    /// Start of the VM context area.
    pub vmctx_offset: usize,
    /// Size of the VM context area.
    pub vmctx_size: usize,
    /// Start of the guest stack (lowest address).
    pub stack_offset: usize,
    /// Size of the guest stack.
    pub stack_size: usize,
    /// Bytes at the bottom of the stack kept for host code the guest calls.
    pub host_stack_reserve: usize,
    /// Start of the heap.
    pub heap_offset: usize,
    /// Address space reserved for the heap.
    pub heap_reservation: usize,
    /// Distance between slots.
    pub slot_size: usize,
}

/// A slot taken from a region; returned to the free list on drop. Whoever held it must have
/// reset its contents first (see `instance::teardown`).
pub(crate) struct Slot {
    pub region: Arc<RegionInner>,
    pub index: usize,
    retired: bool,
}

impl Slot {
    pub fn new(region: Arc<RegionInner>, index: usize) -> Slot {
        Slot { region, index, retired: false }
    }

    /// Keeps the slot out of the free list for good (its contents could not be reset).
    pub fn retire(&mut self) {
        self.retired = true;
    }

    fn base_offset(&self) -> usize {
        self.index * self.region.layout.slot_size
    }

    fn at(&self, offset: usize) -> *mut u8 {
        // SAFETY: every offset used below is inside this slot, which is inside the mapping.
        unsafe { self.region.mmap.as_ptr().add(self.base_offset() + offset) }
    }

    pub fn vmctx(&self) -> *mut u8 {
        self.at(self.region.layout.vmctx_offset)
    }

    pub fn stack_top(&self) -> *mut u8 {
        let layout = &self.region.layout;
        self.at(layout.stack_offset + layout.stack_size)
    }

    pub fn stack_limit(&self) -> usize {
        let layout = &self.region.layout;
        self.at(layout.stack_offset + layout.host_stack_reserve) as usize
    }

    pub fn heap(&self) -> *mut u8 {
        self.at(self.region.layout.heap_offset)
    }

    /// Makes heap bytes `[0, len)` accessible.
    pub fn map_heap(&self, len: usize) -> std::io::Result<()> {
        let layout = &self.region.layout;
        self.region.mmap.make_accessible(self.base_offset() + layout.heap_offset, len)
    }

    /// Zeroes what an instance may have touched: `vmctx_len` bytes of VM context, the whole
    /// stack, and `heap_len` bytes of heap (which become inaccessible again).
    pub fn reset(&self, vmctx_len: usize, heap_len: usize) -> std::io::Result<()> {
        let layout = &self.region.layout;
        let base = self.base_offset();
        let mmap = &self.region.mmap;
        mmap.discard(base + layout.vmctx_offset, crate::sys::unix::mmap::page_align(vmctx_len).min(layout.vmctx_size))?;
        mmap.discard(base + layout.stack_offset, layout.stack_size)?;
        mmap.discard(base + layout.heap_offset, heap_len)?;
        mmap.make_inaccessible(base + layout.heap_offset, heap_len)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.retired {
            return;
        }
        self.region.free.lock().unwrap_or_else(|e| e.into_inner()).push(self.index);
    }
}
