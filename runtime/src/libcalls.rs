//! The runtime functions compiled code calls through the VM context's `builtins` table, one per
//! entry of `kiln_abi::for_each_libcall!`. A libcall that traps records the trap and unwinds to
//! the host; it must own nothing on its frame when it does (see `traps::raise`).

use kiln_abi::{TrapCode, VMContextHeader, VMMemoryDefinition, VMMemoryImport, VMTableDefinition};

use crate::instance::InstanceInner;
use crate::traps::{raise, Trap};

macro_rules! abi_rust_type {
    (vmctx) => { *mut u8 };
    (ptr) => { usize };
    (i32) => { u32 };
    (i64) => { u64 };
    (()) => { () };
}

macro_rules! define_builtins {
    ($($(#[$doc:meta])* $name:ident($($param:ident),*) -> $ret:tt;)*) => {
        /// The table compiled code indexes with `Libcall::table_offset`.
        static BUILTINS: Builtins = Builtins([
            $({
                // The assignment checks each function against the ABI's signature.
                let f: unsafe extern "C" fn($(abi_rust_type!($param)),*) -> abi_rust_type!($ret) = $name;
                f as *const ()
            },)*
        ]);
    };
}

/// Function addresses, in `Libcall` order.
struct Builtins([*const (); kiln_abi::Libcall::ALL.len()]);

// SAFETY: immutable code addresses.
unsafe impl Sync for Builtins {}

kiln_abi::for_each_libcall!(define_builtins);

/// Address of the builtins table, stored in every VM context header.
pub(crate) fn builtins() -> *const usize {
    BUILTINS.0.as_ptr().cast()
}

/// The instance whose VM context this is.
///
/// # Safety
/// `vmctx` must be the VM context of a live instance (compiled code passes its own).
unsafe fn instance<'a>(vmctx: *mut u8) -> &'a InstanceInner {
    // SAFETY: every VM context header points at its instance, which outlives the call.
    unsafe { &*(*(vmctx as *const VMContextHeader)).instance.cast::<InstanceInner>() }
}

/// Memory `index`'s definition in `instance`.
#[allow(clippy::mut_from_ref, reason = "the definition lives in VM memory, not in `InstanceInner`; the store's single-call rule makes this the only reference")]
fn memory(instance: &InstanceInner, index: u32) -> &mut VMMemoryDefinition {
    let offset = instance.module.inner.offsets.memory(index);
    // SAFETY: compiled code only passes memory indices the module has (validation), and the
    // import entry was written at instantiation; the store runs one call at a time.
    unsafe { &mut *(*instance.vm_field::<VMMemoryImport>(offset)).definition }
}

/// Table `index`'s definition in `instance`.
#[allow(clippy::mut_from_ref, reason = "the definition lives in VM memory, not in `InstanceInner`; the store's single-call rule makes this the only reference")]
fn table(instance: &InstanceInner, index: u32) -> &mut VMTableDefinition {
    let offset = instance.module.inner.offsets.table(index);
    // SAFETY: as for `memory`.
    unsafe { &mut **instance.vm_field::<*mut VMTableDefinition>(offset) }
}

fn in_bounds(start: u64, len: u64, size: u64) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size)
}

/// Raises `code` after every owned value of the caller has been dropped.
///
/// # Safety
/// Only from a libcall called by guest code.
unsafe fn trap(code: TrapCode) -> ! {
    // SAFETY: forwarded.
    unsafe { raise(Trap::Wasm(code)) }
}

unsafe extern "C" fn memory_grow(vmctx: *mut u8, index: u32, delta_pages: u64) -> u64 {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let page_log2 = instance.module.inner.meta.memories[index as usize].page_size_log2;
    let def = memory(instance, index);
    let old = def.current_length;
    let Some(new) = delta_pages.checked_shl(page_log2 as u32).filter(|d| d >> page_log2 == delta_pages).and_then(|d| old.checked_add(d)) else {
        return u64::MAX;
    };
    if new > def.maximum_length {
        return u64::MAX;
    }
    if new > old {
        let start = crate::sys::unix::mmap::page_align(old as usize);
        let end = crate::sys::unix::mmap::page_align(new as usize);
        if end > start {
            // SAFETY: [base + start, base + end) lies inside the memory's reservation (new is
            // at most the maximum, itself at most the reservation).
            let rc = unsafe { libc::mprotect(def.base.add(start).cast(), end - start, libc::PROT_READ | libc::PROT_WRITE) };
            if rc != 0 {
                return u64::MAX;
            }
        }
        def.current_length = new;
    }
    old >> page_log2
}

unsafe extern "C" fn memory_fill(vmctx: *mut u8, index: u32, dst: u64, value: u32, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let def = memory(unsafe { instance(vmctx) }, index);
    if !in_bounds(dst, len, def.current_length) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(TrapCode::HeapOutOfBounds) }
    }
    // SAFETY: bounds checked against the accessible size.
    unsafe { std::ptr::write_bytes(def.base.add(dst as usize), value as u8, len as usize) }
}

unsafe extern "C" fn memory_copy(vmctx: *mut u8, dst_index: u32, src_index: u32, dst: u64, src: u64, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (dst_base, dst_len) = {
        let d = memory(instance, dst_index);
        (d.base, d.current_length)
    };
    let (src_base, src_len) = {
        let s = memory(instance, src_index);
        (s.base, s.current_length)
    };
    if !in_bounds(dst, len, dst_len) || !in_bounds(src, len, src_len) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(TrapCode::HeapOutOfBounds) }
    }
    // SAFETY: both ranges checked; `copy` handles overlap.
    unsafe { std::ptr::copy(src_base.add(src as usize), dst_base.add(dst as usize), len as usize) }
}

unsafe extern "C" fn memory_init(vmctx: *mut u8, index: u32, segment: u32, dst: u64, src: u32, len: u32) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let bytes: &[u8] = if instance.dropped_data.borrow()[segment as usize] {
        &[]
    } else {
        &instance.module.inner.meta.data[segment as usize].bytes
    };
    let def = memory(instance, index);
    let (src, len) = (src as u64, len as u64);
    if !in_bounds(src, len, bytes.len() as u64) || !in_bounds(dst, len, def.current_length) {
        // SAFETY: called by guest code; the borrow above has ended.
        unsafe { trap(TrapCode::HeapOutOfBounds) }
    }
    // SAFETY: both ranges checked; a segment never overlaps a linear memory.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().add(src as usize), def.base.add(dst as usize), len as usize) }
}

unsafe extern "C" fn data_drop(vmctx: *mut u8, segment: u32) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    instance.dropped_data.borrow_mut()[segment as usize] = true;
}

unsafe extern "C" fn table_grow(vmctx: *mut u8, index: u32, delta: u64, init: usize) -> u64 {
    // SAFETY: called by compiled code with its own VM context.
    let def = table(unsafe { instance(vmctx) }, index);
    let old = def.current_elements;
    let Some(new) = old.checked_add(delta).filter(|&new| new <= def.maximum_elements) else {
        return u64::MAX;
    };
    // SAFETY: the storage reserves `maximum_elements` accessible elements.
    unsafe { std::slice::from_raw_parts_mut(def.base.add(old as usize), delta as usize) }.fill(init);
    def.current_elements = new;
    old
}

unsafe extern "C" fn table_fill(vmctx: *mut u8, index: u32, dst: u64, value: usize, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let def = table(unsafe { instance(vmctx) }, index);
    if !in_bounds(dst, len, def.current_elements) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(TrapCode::TableAccessOutOfBounds) }
    }
    // SAFETY: bounds checked.
    unsafe { std::slice::from_raw_parts_mut(def.base.add(dst as usize), len as usize) }.fill(value);
}

unsafe extern "C" fn table_copy(vmctx: *mut u8, dst_index: u32, src_index: u32, dst: u64, src: u64, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (dst_base, dst_size) = {
        let d = table(instance, dst_index);
        (d.base, d.current_elements)
    };
    let (src_base, src_size) = {
        let s = table(instance, src_index);
        (s.base, s.current_elements)
    };
    if !in_bounds(dst, len, dst_size) || !in_bounds(src, len, src_size) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(TrapCode::TableAccessOutOfBounds) }
    }
    // SAFETY: both ranges checked; `copy` handles overlap.
    unsafe { std::ptr::copy(src_base.add(src as usize), dst_base.add(dst as usize), len as usize) }
}

unsafe extern "C" fn table_init(vmctx: *mut u8, index: u32, segment: u32, dst: u64, src: u64, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let def = table(instance, index);
    let ok = {
        let elements = instance.elements.borrow();
        let items: &[usize] = elements[segment as usize].as_deref().unwrap_or(&[]);
        let ok = in_bounds(src, len, items.len() as u64) && in_bounds(dst, len, def.current_elements);
        if ok {
            // SAFETY: both ranges checked; segments never overlap tables.
            unsafe {
                std::ptr::copy_nonoverlapping(items.as_ptr().add(src as usize), def.base.add(dst as usize), len as usize)
            }
        }
        ok
    };
    if !ok {
        // SAFETY: called by guest code; the borrow has ended.
        unsafe { trap(TrapCode::TableAccessOutOfBounds) }
    }
}

unsafe extern "C" fn elem_drop(vmctx: *mut u8, segment: u32) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    instance.elements.borrow_mut()[segment as usize] = None;
}

/// Checks an atomic access of `size` bytes at `addr` in memory `index` and returns its host
/// address, or the trap it deserves.
fn atomic_address(instance: &InstanceInner, index: u32, addr: u64, size: u64) -> Result<*mut u8, TrapCode> {
    let def = memory(instance, index);
    if !in_bounds(addr, size, def.current_length) {
        return Err(TrapCode::HeapOutOfBounds);
    }
    if !addr.is_multiple_of(size) {
        return Err(TrapCode::HeapMisaligned);
    }
    // SAFETY: in bounds of the accessible memory.
    Ok(unsafe { def.base.add(addr as usize) })
}

unsafe extern "C" fn memory_atomic_wait32(vmctx: *mut u8, index: u32, addr: u64, expected: u32, timeout: u64) -> u32 {
    // SAFETY: forwarded; `atomic_wait` checks the 4-byte access.
    unsafe {
        atomic_wait(vmctx, index, addr, 4, timeout, |ptr| {
            // SAFETY: aligned and in bounds (checked); other threads only access it atomically
            // or racily as the wasm threads proposal allows.
            std::sync::atomic::AtomicU32::from_ptr(ptr.cast()).load(std::sync::atomic::Ordering::SeqCst) == expected
        })
    }
}

unsafe extern "C" fn memory_atomic_wait64(vmctx: *mut u8, index: u32, addr: u64, expected: u64, timeout: u64) -> u32 {
    // SAFETY: forwarded; `atomic_wait` checks the 8-byte access.
    unsafe {
        atomic_wait(vmctx, index, addr, 8, timeout, |ptr| {
            // SAFETY: as in `memory_atomic_wait32`.
            std::sync::atomic::AtomicU64::from_ptr(ptr.cast()).load(std::sync::atomic::Ordering::SeqCst) == expected
        })
    }
}

/// `memory.atomic.wait32/64`: checks the `size`-byte access at `addr` in shared memory `index`,
/// then parks while `still_expected(address)` holds (0 woken, 1 not-equal, 2 timed out).
///
/// # Safety
/// Called by compiled code with its own VM context. `still_expected` is only given an address
/// checked to be in bounds and aligned for `size` bytes.
unsafe fn atomic_wait(
    vmctx: *mut u8,
    index: u32,
    addr: u64,
    size: u64,
    timeout: u64,
    still_expected: impl Fn(*mut u8) -> bool,
) -> u32 {
    // SAFETY: forwarded from the caller.
    let instance = unsafe { instance(vmctx) };
    let result = atomic_address(instance, index, addr, size).and_then(|ptr| {
        if !instance.module.inner.meta.memories[index as usize].shared {
            return Err(TrapCode::WaitOnUnsharedMemory);
        }
        Ok(crate::parking::wait(ptr as usize, || still_expected(ptr), timeout as i64))
    });
    match result {
        Ok(code) => code,
        // SAFETY: called by guest code; nothing owned on this frame.
        Err(code) => unsafe { trap(code) },
    }
}

unsafe extern "C" fn memory_atomic_notify(vmctx: *mut u8, index: u32, addr: u64, count: u32) -> u32 {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    match atomic_address(instance, index, addr, 4) {
        // Notifying an unshared memory is allowed and wakes nobody.
        Ok(ptr) => crate::parking::notify(ptr as usize, count),
        // SAFETY: called by guest code; nothing owned on this frame.
        Err(code) => unsafe { trap(code) },
    }
}
