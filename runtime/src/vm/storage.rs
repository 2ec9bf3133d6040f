//! The storage VM contexts point at: the sizes of memories and tables (read and written
//! atomically, as host threads may read them while a guest runs), host-made table storage,
//! and table growth.

use std::sync::atomic::{AtomicU64, Ordering};

use kiln_abi::{MemoryType, TableType, VMMemoryDefinition, VMTableDefinition};

use crate::sys::unix::mmap::{page_align, Mmap};
/// Reads a size field the runtime only writes atomically.
///
/// # Safety
/// `field` must be a live, aligned `u64` that Rust code writes only atomically.
unsafe fn load_size(field: *mut u64) -> u64 {
    // SAFETY: forwarded from the caller.
    unsafe { AtomicU64::from_ptr(field) }.load(Ordering::Acquire)
}

/// The current length of a memory definition, read atomically.
///
/// # Safety
/// `definition` must point to a live memory definition.
pub(crate) unsafe fn load_size_of_memory(definition: *mut VMMemoryDefinition) -> u64 {
    // SAFETY: forwarded; the runtime writes lengths only with `store_size`.
    unsafe { load_size(std::ptr::addr_of_mut!((*definition).current_length)) }
}

/// The current size of a table definition, read atomically.
///
/// # Safety
/// `definition` must point to a live table definition.
pub(crate) unsafe fn load_size_of_table(definition: *mut VMTableDefinition) -> u64 {
    // SAFETY: forwarded; the runtime writes sizes only with `store_size`.
    unsafe { load_size(std::ptr::addr_of_mut!((*definition).current_elements)) }
}

/// Writes a size field atomically (see [`load_size`]).
///
/// # Safety
/// As for [`load_size`].
unsafe fn store_size(field: *mut u64, value: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { AtomicU64::from_ptr(field) }.store(value, Ordering::Release)
}

/// The largest length in bytes a memory of type `ty` may have under the store's `limit`: the
/// limit, the 4 GiB reservation, and for a 32-bit memory the largest page count `memory.size`
/// can return (2^32 - 1 one-byte pages: 2^32 would read as 0).
pub(crate) fn memory_cap(ty: &MemoryType, limit: u64) -> u64 {
    let pages = if ty.memory64 { u64::MAX } else { u64::from(u32::MAX) };
    let index_limit = pages.checked_shl(ty.page_size_log2.into()).unwrap_or(u64::MAX);
    limit.min(kiln_abi::HEAP_RESERVATION).min(index_limit)
}
/// Most elements any table may have, whatever the limits; address space for this many is
/// reserved per table that does not fit in its slot.
pub(crate) const MAX_TABLE_ELEMENTS: u64 = 1 << 24;

/// Backing store of a table: address space for its maximum size, reserved up front so the
/// elements never move.
pub(crate) struct TableStorage {
    _mmap: Mmap,
    pub definition: Box<VMTableDefinition>,
}

// SAFETY: plain memory; see `Table`.
unsafe impl Send for TableStorage {}
// SAFETY: as above.
unsafe impl Sync for TableStorage {}

impl TableStorage {
    /// A table of `ty.minimum` elements, each `init`, that may grow to `maximum` elements.
    pub fn new(ty: &TableType, maximum: u64, init: usize) -> std::io::Result<TableStorage> {
        let maximum = maximum.min(MAX_TABLE_ELEMENTS);
        if ty.minimum > maximum {
            return Err(std::io::Error::other("table larger than its limit"));
        }
        let bytes = page_align((maximum as usize).max(1) * 8);
        let mmap = Mmap::reserve(bytes)?;
        mmap.make_accessible(0, bytes)?;
        let base = mmap.as_ptr().cast::<usize>();
        if init != 0 {
            // SAFETY: the first `minimum` elements are inside the accessible reservation.
            unsafe { std::slice::from_raw_parts_mut(base, ty.minimum as usize) }.fill(init);
        }
        let definition = Box::new(VMTableDefinition { base, current_elements: ty.minimum, maximum_elements: maximum });
        Ok(TableStorage { _mmap: mmap, definition })
    }

    pub fn definition_ptr(&self) -> *mut VMTableDefinition {
        &*self.definition as *const VMTableDefinition as *mut VMTableDefinition
    }
}
/// Grows a table by `delta` elements set to `init`, within its maximum; the old size, or
/// `None`. Shared by `table.grow` and [`crate::Table::grow`].
///
/// # Safety
/// `definition` must be a live table definition whose store this thread owns and is not
/// running wasm code on another thread.
pub(crate) unsafe fn grow_table(definition: *mut VMTableDefinition, delta: u64, init: usize) -> Option<u64> {
    // SAFETY: forwarded from the caller.
    unsafe {
        let size_field = std::ptr::addr_of_mut!((*definition).current_elements);
        let old = load_size(size_field);
        let new = old.checked_add(delta).filter(|&new| new <= (*definition).maximum_elements)?;
        // The storage reserves `maximum_elements` accessible elements.
        std::slice::from_raw_parts_mut((*definition).base.add(old as usize), delta as usize).fill(init);
        store_size(size_field, new);
        Some(old)
    }
}

/// Calls `visit` with every element of `table`.
///
/// # Safety
/// `table` must be a live table definition that nothing else accesses meanwhile.
pub(crate) unsafe fn visit_table(table: *mut VMTableDefinition, mut visit: impl FnMut(*mut u64)) {
    // SAFETY: a live definition (caller's contract); its first `len` elements are accessible.
    unsafe {
        let len = load_size_of_table(table) as usize;
        for i in 0..len {
            visit((*table).base.add(i).cast());
        }
    }
}
