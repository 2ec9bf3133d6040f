//! Lifecycle stage 5, teardown: when the last handle to an instance goes, wipe what the guest
//! could observe (heaps, own tables) and give the slot back to the region. Globals and every
//! other VM context field are rewritten by the next instantiation; the stack is not
//! addressable from wasm.

use std::mem::ManuallyDrop;

use kiln_abi::VMTableDefinition;

use super::{InstanceInner, TablePlacement};
use crate::region::ResetImage;

impl Drop for InstanceInner {
    fn drop(&mut self) {
        let heap_len = self.own_heap_len();
        let offsets = self.module.inner.offsets;
        let mut result = Ok(());
        for (d, placement) in self.table_placements.iter().enumerate() {
            if let TablePlacement::Slot { start, capacity } = *placement {
                let def = self.vm_field::<VMTableDefinition>(offsets.defined_table(d as u32));
                // SAFETY: the definition lies in this instance's VM context. If instantiation
                // failed before writing it, it is a previous tenant's: clamped to the capacity,
                // that only wipes more than needed.
                let used = (unsafe { crate::vm::storage::load_size_of_table(def) } as usize).min(capacity);
                result = result.and(self.slot.reset_tables(start, used));
            }
        }
        let module = &self.module.inner;
        self.slot.reset_heap(heap_len, ResetImage::of(module, 0));
        for d in 1..self.own_memory_count() {
            let len = self.own_memory_len(d);
            self.slot.reset_extra_heap(d as usize - 1, len, ResetImage::of(module, d));
        }
        if let Err(err) = result {
            // A slot we cannot wipe must never be handed out again.
            eprintln!("kiln: could not reset slot {}: {err}; retiring it", self.slot.index);
            self.slot.retire();
        }
        self.store.remove_instance();
        // SAFETY: `module` is never used again: this is the end of `drop`, and no other field's
        // drop reads it.
        let module = unsafe { ManuallyDrop::take(&mut self.module) };
        self.slot.keep_module(module);
        // `slot` is dropped after this, returning it to the free list (unless retired) with the
        // module handle, so the module stays loaded while the slot is warm for it.
    }
}
