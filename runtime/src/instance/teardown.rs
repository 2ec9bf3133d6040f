//! Lifecycle stage 5, teardown: when the last handle to an instance goes, zero what it touched
//! and give the slot back to the region.

use super::InstanceInner;

impl Drop for InstanceInner {
    fn drop(&mut self) {
        let heap_len = crate::sys::unix::mmap::page_align(self.own_heap_len());
        let vmctx_len = self.module.inner.offsets.size as usize;
        if let Err(err) = self.slot.reset(vmctx_len, heap_len) {
            // A slot we cannot wipe must never be handed out again.
            eprintln!("kiln: could not reset slot {}: {err}; retiring it", self.slot.index);
            self.slot.retire();
        }
        // `slot` is dropped after this, returning it to the free list (unless retired).
    }
}
