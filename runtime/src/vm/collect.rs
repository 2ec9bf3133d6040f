//! The collector: a semispace copying collector (Cheney's algorithm) with precise roots.
//!
//! The heap is two halves; objects are bump-allocated in one. When it is full, everything
//! reachable from the roots is copied to the other half, in breadth-first order, and the
//! references to it are updated; the half left behind is zeroed, so memory past the bump
//! pointer stays zero. The roots:
//! - the guest stack: the slots Cranelift's stack maps name at each call in progress (compiled
//!   code reloads them after the call, so they may change);
//! - the globals, tables and passive element segments of the store's pinned instances (every
//!   instance whose module can hold a GC reference in one of them is pinned, see
//!   `instantiate`), and host-made globals and tables that can ([`Place`]);
//! - the objects host handles refer to ([`crate::vm::gc::HostRoots`]);
//! - the payloads of the store's exception objects.
//!
//! A collection runs only where compiled code called the runtime to allocate (so every guest
//! frame is at a call with a stack map), never during instantiation.

use kiln_abi::gc::{
    array_size, ref_kind, RefKind, ARRAY_LEN_OFFSET, KIND_ARRAY, OBJECT_KIND_OFFSET, OBJECT_TYPE_ID_OFFSET,
};

use crate::types::{layouts, Layouts, ObjectLayout};
use crate::vm::gc::{GcHeap, Place};
use crate::vm::storage::visit_table;
use crate::vm::store::StoreInner;

/// Kind byte of an object that was copied: its type-id word holds the new offset.
const FORWARDED: u8 = 0xff;

/// Copies what is live out of one half of the heap into the other.
struct Copier<'a> {
    layouts: &'a Layouts<'a>,
    base: *mut u8,
    /// The half being evacuated: `[from_start, from_end)` holds every object.
    from_start: u64,
    from_end: u64,
    /// Where the next copy goes in the other half, and that half's end.
    to_next: u64,
    to_end: u64,
}

impl Copier<'_> {
    /// The size of the object at `object` (a native address).
    ///
    /// # Safety
    /// `object` must be an object of the heap that was not forwarded.
    unsafe fn size(&self, object: *mut u8) -> u64 {
        // SAFETY: the header of a live object (caller's contract).
        let (type_id, kind) =
            unsafe { (object.cast::<u32>().read_unaligned(), *object.add(OBJECT_KIND_OFFSET as usize)) };
        match self.layouts.get(type_id) {
            Some(ObjectLayout::Struct { size, .. }) => u64::from(*size),
            Some(ObjectLayout::Array { element_size, .. }) if kind == KIND_ARRAY => {
                // SAFETY: an array's length follows its header.
                let len = unsafe { object.add(ARRAY_LEN_OFFSET as usize).cast::<u32>().read_unaligned() };
                array_size(*element_size, len).expect("a live array fits the heap")
            }
            _ => unreachable!("every object's header names a struct or array type"),
        }
    }

    /// The updated form of reference `raw`: objects of the evacuated half are copied (once)
    /// and their new offset returned; anything else is returned as it is.
    fn forward(&mut self, raw: u64) -> u64 {
        let Some(RefKind::Object(offset)) = ref_kind(raw) else { return raw };
        let offset = u64::from(offset);
        if offset < self.from_start || offset >= self.from_end {
            return raw;
        }
        // SAFETY: an object of the evacuated half (which the heap's reservation covers).
        unsafe {
            let object = self.base.add(offset as usize);
            if *object.add(OBJECT_KIND_OFFSET as usize) == FORWARDED {
                return u64::from(object.cast::<u32>().read_unaligned());
            }
            let size = self.size(object);
            let new = self.to_next;
            assert!(new + size <= self.to_end, "live objects fit the other half");
            std::ptr::copy_nonoverlapping(object, self.base.add(new as usize), size as usize);
            self.to_next += size;
            *object.add(OBJECT_KIND_OFFSET as usize) = FORWARDED;
            object.add(OBJECT_TYPE_ID_OFFSET as usize).cast::<u32>().write_unaligned(new as u32);
            new
        }
    }

    /// Updates the 8-byte reference at `slot`.
    ///
    /// # Safety
    /// `slot` must be a readable and writable place holding a reference.
    unsafe fn forward_slot(&mut self, slot: *mut u64) {
        // SAFETY: forwarded from the caller.
        unsafe { slot.write_unaligned(self.forward(slot.read_unaligned())) }
    }

    /// Updates the references inside every copied object, copying what they refer to in turn,
    /// until nothing is left to scan.
    fn scan(&mut self, mut at: u64) {
        while at < self.to_next {
            // SAFETY: `at` walks the copied objects, which lie back to back in the other half.
            unsafe {
                let object = self.base.add(at as usize);
                let size = self.size(object);
                let type_id = object.cast::<u32>().read_unaligned();
                let layouts = self.layouts;
                match layouts.get(type_id) {
                    Some(ObjectLayout::Struct { references, .. }) => {
                        for &field in references.iter() {
                            self.forward_slot(object.add(field as usize).cast());
                        }
                    }
                    Some(ObjectLayout::Array { references: true, .. }) => {
                        let len = object.add(ARRAY_LEN_OFFSET as usize).cast::<u32>().read_unaligned();
                        let data = object.add(kiln_abi::gc::ARRAY_DATA_OFFSET as usize).cast::<u64>();
                        for i in 0..len as usize {
                            self.forward_slot(data.add(i));
                        }
                    }
                    _ => {}
                }
                at += size;
            }
        }
    }
}

/// Collects the store's heap: afterwards its bump pointer is past the live objects only.
/// `frames`: the frame pointer and stack pointer the runtime's entry shim noted for the libcall
/// in progress.
///
/// # Safety
/// Must be called from a libcall that guest code of `store` called to allocate (so every
/// guest frame of the call is stopped at a call with a stack map), with `frames` as noted, on
/// the thread that owns the store, with no reference to a GC object held anywhere but in the
/// roots.
pub(crate) unsafe fn collect(store: &StoreInner, frames: (usize, usize)) {
    let Some(heap) = store.gc_heap() else { return };
    let limits = store.limits_ptr();
    // SAFETY: the store's runtime limits, on its owning thread.
    let (next, end) = unsafe { ((*limits).gc_next, (*limits).gc_end) };
    let half = heap.half();
    // The halves are the same size: `[start, half)` and `[half + start, 2 * half)`.
    let start = GcHeap::start();
    let (from_start, to_start, to_end) =
        if end <= half { (start, half + start, 2 * half) } else { (half + start, start, half) };
    let layouts = layouts();
    let mut copier =
        Copier { layouts: &layouts, base: heap.base(), from_start, from_end: next, to_next: to_start, to_end };

    // The guest stack.
    let activation = crate::traps::current_activation();
    if !activation.is_null() {
        // SAFETY: the activation of the call in progress on this thread, and the frames its
        // entry shim noted (caller's contract); every slot named is in a live guest frame.
        unsafe { (*activation).visit_stack_references(frames.0, frames.1, |slot| copier.forward_slot(slot)) };
    }
    // Instances' globals, tables and passive element segments.
    if let Some(root) = store.root() {
        for instance in root.pinned().iter() {
            // SAFETY: a live instance of this store, which is idle but for this libcall.
            unsafe { instance.visit_references(&mut |slot| copier.forward_slot(slot)) };
        }
    }
    // Host-made globals and tables.
    for place in store.host_places().iter() {
        // SAFETY: kept alive by the entry; only this thread touches the store's places now.
        unsafe {
            match place.place {
                Place::Global(global) => copier.forward_slot((*global).storage.as_mut_ptr().cast()),
                Place::Table(table) => visit_table(table, |slot| copier.forward_slot(slot)),
            }
        }
    }
    // Host handles.
    for offset in store.host_roots().offsets_mut() {
        *offset = copier.forward(u64::from(*offset)) as u32;
    }
    // Exception payloads.
    // SAFETY: the store's objects, on its owning thread.
    store.exceptions().visit_references(|slot| unsafe { copier.forward_slot(slot) });

    copier.scan(to_start);
    let to_next = copier.to_next;
    drop(layouts);
    // The evacuated half must read as zeros again for the next time it is allocated from.
    // SAFETY: `[from_start, next)` lies in the heap's usable part, and nothing refers to it.
    unsafe { std::ptr::write_bytes(heap.base().add(from_start as usize), 0, (next - from_start) as usize) };
    // SAFETY: as above.
    unsafe {
        (*limits).gc_next = to_next;
        (*limits).gc_end = to_end;
    }
}
