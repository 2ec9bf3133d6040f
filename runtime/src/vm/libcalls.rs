//! The runtime functions compiled code calls through the VM context's `builtins` table, one per
//! entry of `kiln_abi::for_each_libcall!`. A libcall that traps records the trap and unwinds to
//! the host; it must own nothing on its frame when it does (see `traps::raise`).

use kiln_abi::{
    TrapCode, VMContextHeader, VMException, VMMemoryDefinition, VMMemoryImport, VMTableDefinition, VMTagDefinition,
};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::traps::{raise, Raised};
use crate::vm::instance::InstanceInner;
use crate::vm::storage::{grow_table, load_size_of_memory};

macro_rules! abi_rust_type {
    (vmctx) => { *mut u8 };
    (ptr) => { usize };
    (i32) => { u32 };
    (i64) => { u64 };
    (()) => { () };
}

macro_rules! define_builtins {
    ($($(#[$doc:meta])* $name:ident($($param:ident),*) -> $ret:tt;)*) => {
        /// The table compiled code indexes with `Libcall::table_offset`: each entry is the
        /// libcall's entry shim.
        static BUILTINS: Builtins = Builtins([
            $({
                // The assignment checks each function against the ABI's signature.
                let f: unsafe extern "C" fn($(abi_rust_type!($param)),*) -> abi_rust_type!($ret) = $name;
                let _ = f;
                entry::$name as *const ()
            },)*
        ]);

        /// One entry shim per libcall (see `context::note_guest_frame_then_jump`): a trap the
        /// libcall raises starts its backtrace at the calling guest frame, and `throw_ref`
        /// unwinds from there.
        mod entry {
            $(
                // SAFETY: the body is the whole function: it reads the runtime-limits pointer
                // from the VM context compiled code passes in rdi (every libcall's first
                // argument), writes two fields of that store-owned struct, and tail-jumps to
                // the libcall with the stack and every argument register as it found them.
                #[unsafe(naked)]
                pub(super) unsafe extern "C" fn $name() {
                    crate::context::note_guest_frame_then_jump!("rdi", super::$name)
                }
            )*
        }
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
    // SAFETY: the calling instance outlives the call.
    unsafe { InstanceInner::from_vmctx(vmctx) }
}

/// Memory `index`'s definition in `instance`. A raw pointer: host code may read its length
/// at the same time (atomically), so no reference to the whole definition is ever made.
fn memory(instance: &InstanceInner, index: u32) -> *mut VMMemoryDefinition {
    let offset = instance.module.inner.offsets.memory(index);
    // SAFETY: compiled code only passes memory indices the module has (validation), and the
    // import entry was written at instantiation.
    unsafe { (*instance.vm_field::<VMMemoryImport>(offset)).definition }
}

/// Memory `index`'s base and current length.
fn memory_bounds(instance: &InstanceInner, index: u32) -> (*mut u8, u64) {
    let def = memory(instance, index);
    // SAFETY: a live definition whose base never changes; its length is read atomically.
    unsafe { ((*def).base, load_size_of_memory(def)) }
}

/// Table `index`'s definition in `instance` (a raw pointer, as for [`memory`]).
fn table(instance: &InstanceInner, index: u32) -> *mut VMTableDefinition {
    let offset = instance.module.inner.offsets.table(index);
    // SAFETY: as for `memory`.
    unsafe { *instance.vm_field::<*mut VMTableDefinition>(offset) }
}

/// Table `index`'s first element and current size.
fn table_bounds(instance: &InstanceInner, index: u32) -> (*mut usize, u64) {
    let def = table(instance, index);
    // SAFETY: a live definition whose base never changes; its size is read atomically.
    unsafe { ((*def).base, crate::vm::storage::load_size_of_table(def)) }
}

fn in_bounds(start: u64, len: u64, size: u64) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size)
}

/// Raises `code` after every owned value of the caller has been dropped, with the backtrace
/// of the guest code that called the libcall (noted by its entry shim).
///
/// # Safety
/// Only from a libcall called by guest code, with that code's `vmctx`.
unsafe fn trap(vmctx: *mut u8, code: TrapCode) -> ! {
    // SAFETY: the caller's VM context points at its store's runtime limits, which the entry
    // shim wrote on the way in; `sp` points at the return address into the guest, on its stack.
    unsafe {
        let limits = (*(vmctx as *const VMContextHeader)).runtime_limits;
        let (fp, sp) = ((*limits).last_libcall_fp, (*limits).last_libcall_sp);
        let activation = crate::traps::current_activation();
        if !activation.is_null() {
            let return_address = *(sp as *const usize);
            (*activation).record_frames(return_address - 1, fp, sp);
        }
        raise(Raised::Code(code))
    }
}

unsafe extern "C" fn memory_grow(vmctx: *mut u8, index: u32, delta_pages: u64) -> u64 {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let page_log2 = instance.module.inner.meta.memories[index as usize].page_size_log2;
    let def = memory(instance, index);
    // SAFETY: the base and the maximum (the declared one capped by the store's memory limit)
    // never change after instantiation.
    let (base, maximum) = unsafe { ((*def).base, (*def).maximum_length) };
    // SAFETY: a live definition whose length is only ever accessed atomically.
    let length = unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*def).current_length)) };
    // A compare-and-swap loop: threads of other stores may grow a shared memory at the same
    // time, and each growth must take effect once.
    let Some(delta) = delta_pages.checked_shl(page_log2 as u32).filter(|d| d >> page_log2 == delta_pages) else {
        return u64::MAX;
    };
    let mut old = length.load(Ordering::Acquire);
    loop {
        let Some(new) = old.checked_add(delta).filter(|&new| new <= maximum) else {
            return u64::MAX;
        };
        if new > old {
            let start = crate::sys::unix::mmap::page_align(old as usize);
            let end = crate::sys::unix::mmap::page_align(new as usize);
            if end > start {
                // SAFETY: [base + start, base + end) lies inside the memory's reservation (new is at
                // most the maximum, itself at most the reservation); making pages accessible twice
                // (a racing grower) is harmless.
                let grown = unsafe { crate::sys::unix::mmap::make_accessible_at(base.add(start), end - start) };
                if grown.is_err() {
                    return u64::MAX;
                }
            }
        }
        match length.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return old >> page_log2,
            Err(current) => old = current,
        }
    }
}

/// Bytes a bulk memory operation moves between looks at the store's interrupt flag. One
/// `memory.fill` may cover gigabytes, and a function of nothing but such instructions has no
/// loop header for the compiled interrupt check: without this, a deadline could not stop it.
const BULK_CHUNK: u64 = 1 << 20;

/// Runs `step(offset, len)` over `[0, len)` in chunks of at most [`BULK_CHUNK`], from the end
/// backwards when `backwards` (an overlapping copy to a higher address), and traps with
/// "deadline exceeded" between chunks once the store is interrupted.
///
/// # Safety
/// Called from a libcall with its own `vmctx`, owning nothing that needs dropping (a trap
/// unwinds past this frame).
unsafe fn in_chunks(
    vmctx: *mut u8,
    instance: &InstanceInner,
    len: u64,
    backwards: bool,
    mut step: impl FnMut(u64, u64),
) {
    let chunks = len.div_ceil(BULK_CHUNK);
    for i in 0..chunks {
        if i > 0 && instance.store.interrupted() {
            // SAFETY: per this function's contract.
            unsafe { trap(vmctx, TrapCode::Interrupt) }
        }
        let chunk = if backwards { chunks - 1 - i } else { i };
        let start = chunk * BULK_CHUNK;
        step(start, BULK_CHUNK.min(len - start));
    }
}

unsafe extern "C" fn memory_fill(vmctx: *mut u8, index: u32, dst: u64, value: u32, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (base, size) = memory_bounds(instance, index);
    if !in_bounds(dst, len, size) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(vmctx, TrapCode::HeapOutOfBounds) }
    }
    // SAFETY: bounds checked against the accessible size.
    unsafe { crate::dirty::mark(memory(instance, index), dst as usize, len as usize) };
    // SAFETY: a libcall's frame; each chunk lies inside the checked range.
    unsafe {
        in_chunks(vmctx, instance, len, false, |at, n| {
            std::ptr::write_bytes(base.add((dst + at) as usize), value as u8, n as usize)
        })
    }
}

unsafe extern "C" fn memory_copy(vmctx: *mut u8, dst_index: u32, src_index: u32, dst: u64, src: u64, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (dst_base, dst_len) = memory_bounds(instance, dst_index);
    let (src_base, src_len) = memory_bounds(instance, src_index);
    if !in_bounds(dst, len, dst_len) || !in_bounds(src, len, src_len) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(vmctx, TrapCode::HeapOutOfBounds) }
    }
    // SAFETY: the destination range was checked.
    unsafe { crate::dirty::mark(memory(instance, dst_index), dst as usize, len as usize) };
    // Chunks go from the end when the destination lies above the source, so an overlapping
    // copy never reads bytes it already overwrote (and `copy` handles overlap within a chunk).
    // SAFETY: a libcall's frame; each chunk lies inside both checked ranges.
    unsafe {
        in_chunks(vmctx, instance, len, dst > src, |at, n| {
            std::ptr::copy(src_base.add((src + at) as usize), dst_base.add((dst + at) as usize), n as usize)
        })
    }
}

unsafe extern "C" fn memory_init(vmctx: *mut u8, index: u32, segment: u32, dst: u64, src: u32, len: u32) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let bytes: &[u8] = if instance.dropped_data.borrow()[segment as usize] {
        &[]
    } else {
        &instance.module.inner.meta.data[segment as usize].bytes
    };
    let (base, size) = memory_bounds(instance, index);
    let (src, len) = (src as u64, len as u64);
    if !in_bounds(src, len, bytes.len() as u64) || !in_bounds(dst, len, size) {
        // SAFETY: called by guest code; the borrow above has ended.
        unsafe { trap(vmctx, TrapCode::HeapOutOfBounds) }
    }
    // SAFETY: the destination range was checked.
    unsafe { crate::dirty::mark(memory(instance, index), dst as usize, len as usize) };
    // SAFETY: a libcall's frame; each chunk lies inside both checked ranges, and a segment
    // never overlaps a linear memory.
    unsafe {
        in_chunks(vmctx, instance, len, false, |at, n| {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add((src + at) as usize),
                base.add((dst + at) as usize),
                n as usize,
            )
        })
    }
}

unsafe extern "C" fn data_drop(vmctx: *mut u8, segment: u32) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    instance.dropped_data.borrow_mut()[segment as usize] = true;
}

unsafe extern "C" fn table_grow(vmctx: *mut u8, index: u32, delta: u64, init: usize) -> u64 {
    // SAFETY: called by compiled code with its own VM context.
    let def = table(unsafe { instance(vmctx) }, index);
    // SAFETY: a live definition of a table of this (running, so owned) store.
    unsafe { grow_table(def, delta, init) }.unwrap_or(u64::MAX)
}

unsafe extern "C" fn table_fill(vmctx: *mut u8, index: u32, dst: u64, value: usize, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let (base, size) = table_bounds(unsafe { instance(vmctx) }, index);
    if !in_bounds(dst, len, size) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(vmctx, TrapCode::TableAccessOutOfBounds) }
    }
    // SAFETY: bounds checked.
    unsafe { std::slice::from_raw_parts_mut(base.add(dst as usize), len as usize) }.fill(value);
}

unsafe extern "C" fn table_copy(vmctx: *mut u8, dst_index: u32, src_index: u32, dst: u64, src: u64, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (dst_base, dst_size) = table_bounds(instance, dst_index);
    let (src_base, src_size) = table_bounds(instance, src_index);
    if !in_bounds(dst, len, dst_size) || !in_bounds(src, len, src_size) {
        // SAFETY: called by guest code; nothing owned on this frame.
        unsafe { trap(vmctx, TrapCode::TableAccessOutOfBounds) }
    }
    // SAFETY: both ranges checked; `copy` handles overlap.
    unsafe { std::ptr::copy(src_base.add(src as usize), dst_base.add(dst as usize), len as usize) }
}

unsafe extern "C" fn table_init(vmctx: *mut u8, index: u32, segment: u32, dst: u64, src: u64, len: u64) {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (base, size) = table_bounds(instance, index);
    let ok = {
        let elements = instance.elements.borrow();
        let items: &[usize] = elements[segment as usize].as_deref().unwrap_or(&[]);
        let ok = in_bounds(src, len, items.len() as u64) && in_bounds(dst, len, size);
        if ok {
            // SAFETY: both ranges checked; segments never overlap tables.
            unsafe {
                std::ptr::copy_nonoverlapping(items.as_ptr().add(src as usize), base.add(dst as usize), len as usize)
            }
        }
        ok
    };
    if !ok {
        // SAFETY: called by guest code; the borrow has ended.
        unsafe { trap(vmctx, TrapCode::TableAccessOutOfBounds) }
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
    let (base, len) = memory_bounds(instance, index);
    if !in_bounds(addr, size, len) {
        return Err(TrapCode::HeapOutOfBounds);
    }
    if !addr.is_multiple_of(size) {
        return Err(TrapCode::HeapMisaligned);
    }
    // SAFETY: in bounds of the accessible memory.
    Ok(unsafe { base.add(addr as usize) })
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
        // Interruptible: an interrupt of this store wakes the wait and traps.
        crate::parking::wait(ptr as usize, || still_expected(ptr), timeout as i64, || instance.store.interrupted())
            .map_err(|crate::parking::Interrupted| TrapCode::Interrupt)
    });
    match result {
        Ok(code) => code,
        // SAFETY: called by guest code; nothing owned on this frame.
        Err(code) => unsafe { trap(vmctx, code) },
    }
}

unsafe extern "C" fn memory_atomic_notify(vmctx: *mut u8, index: u32, addr: u64, count: u32) -> u32 {
    // SAFETY: called by compiled code with its own VM context.
    let instance = unsafe { instance(vmctx) };
    match atomic_address(instance, index, addr, 4) {
        // Notifying an unshared memory is allowed and wakes nobody.
        Ok(ptr) => crate::parking::notify(ptr as usize, count),
        // SAFETY: called by guest code; nothing owned on this frame.
        Err(code) => unsafe { trap(vmctx, code) },
    }
}

/// A new exception object of tag `tag` for the guest to fill in and throw.
unsafe extern "C" fn exn_new(vmctx: *mut u8, tag: u32) -> usize {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let module = &instance.module.inner;
    let type_index = module.meta.tags[tag as usize] as usize;
    // SAFETY: validated code only names tags the module has; the entry was written at
    // instantiation.
    let definition = unsafe { *instance.vm_field::<*const VMTagDefinition>(module.offsets.tag(tag)) };
    // Whatever the object refers to (its tag, funcrefs in its payload) is reachable from the
    // throwing instance, which must then live as long as the object may: as long as the store.
    if !instance.pinned.load(Ordering::Acquire) {
        // SAFETY: compiled code passes its own VM context.
        instance.store.pin(&unsafe { InstanceInner::arc_from_vmctx(vmctx) });
    }
    let limit = instance.store.resource_limits.exception_memory;
    let ty = module.canonical_types[type_index].clone();
    let exn = instance.store.exceptions().alloc(definition, ty, None, limit);
    match exn {
        Some(exn) => exn as usize,
        // SAFETY: called by guest code with its VM context; nothing owned is left on this frame.
        None => unsafe { trap(vmctx, TrapCode::TooManyExceptions) },
    }
}

/// Releases exception `exn`, which a `catch` clause consumed, unless it escaped.
unsafe extern "C" fn exn_drop(vmctx: *mut u8, exn: usize) {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    instance.store.exceptions().drop_unescaped(exn as *const VMException);
}

/// `throw_ref` of the non-null exception `exn`: resumes at the nearest handler on this call's
/// guest stack (see `crate::vm::exceptions`), or ends the call with the exception.
unsafe extern "C" fn throw_ref(vmctx: *mut u8, exn: usize) {
    // SAFETY: compiled code passes its own VM context and a live exnref of its store, whose
    // payload it has written; the entry shim noted the throwing frame; this frame owns nothing.
    unsafe { crate::vm::exceptions::throw(instance(vmctx).store.limits_ptr(), exn as *const VMException) }
}

// ---- GC objects ------------------------------------------------------------------------------

/// Collects the store's heap (see `crate::vm::collect::collect`) for an allocation of guest code.
///
/// # Safety
/// Only from a libcall that guest code called to allocate, with its `vmctx`, holding no
/// reference to a GC object and no borrow of the calling instance's element segments.
unsafe fn collect(vmctx: *mut u8, instance: &InstanceInner) {
    // SAFETY: the caller's VM context points at its store's runtime limits, where the entry
    // shim noted the calling frame.
    let frames = unsafe {
        let limits = (*(vmctx as *const VMContextHeader)).runtime_limits;
        ((*limits).last_libcall_fp, (*limits).last_libcall_sp)
    };
    // SAFETY: per this function's contract.
    unsafe { crate::vm::collect::collect(&instance.store, frames) }
}

/// Bump allocation ran out of room in compiled code: collect, then take the room, or trap
/// when what is live leaves too little.
unsafe extern "C" fn gc_alloc(vmctx: *mut u8, size: u64) -> u64 {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let offset = instance.store.gc_bump(size).or_else(|| {
        // SAFETY: called by guest code to allocate; nothing is held here.
        unsafe { collect(vmctx, instance) };
        instance.store.gc_bump(size)
    });
    match offset {
        Some(offset) => offset,
        // SAFETY: called by guest code; nothing owned on this frame.
        None => unsafe { trap(vmctx, TrapCode::GcHeapExhausted) },
    }
}

unsafe extern "C" fn is_subtype(_vmctx: *mut u8, sub: u32, sup: u32) -> u32 {
    crate::types::is_subtype_id(sub, sup) as u32
}

/// A new array of type `index` of `instance` with `len` elements (zero), collecting first if
/// the heap has no room, or the trap code when it still has none. Returns its offset and the
/// address of its elements.
///
/// # Safety
/// As for [`collect`].
unsafe fn new_array(
    vmctx: *mut u8,
    instance: &InstanceInner,
    index: u32,
    len: u32,
) -> Result<(u64, *mut u8), TrapCode> {
    let module = &instance.module.inner;
    let element_size = kiln_abi::gc::storage_size(module.array_element(index).storage);
    let type_id = module.type_ids[index as usize];
    let offset = instance.store.gc_alloc_array(type_id, element_size, len).or_else(|| {
        // SAFETY: per this function's contract.
        unsafe { collect(vmctx, instance) };
        instance.store.gc_alloc_array(type_id, element_size, len)
    });
    let offset = offset.ok_or(TrapCode::GcHeapExhausted)?;
    let heap = instance.store.gc_heap().expect("allocation made the heap");
    let elements = heap.bytes(u64::from(offset) + kiln_abi::gc::ARRAY_DATA_OFFSET as u64, 0);
    Ok((u64::from(offset), elements.expect("a new array lies in the heap")))
}

/// The length of array `array` (a non-null reference compiled code checked) and the address of
/// its elements.
fn array_parts(instance: &InstanceInner, array: u64) -> (u64, *mut u8) {
    let heap = instance.store.gc_heap().expect("a store with arrays has a GC heap");
    let object = heap.bytes(array as u32 as u64, kiln_abi::gc::ARRAY_DATA_OFFSET as u64).expect("a live array");
    // SAFETY: the array's header, inside the heap.
    unsafe {
        let len = object.add(kiln_abi::gc::ARRAY_LEN_OFFSET as usize).cast::<u32>().read_unaligned();
        (len as u64, object.add(kiln_abi::gc::ARRAY_DATA_OFFSET as usize))
    }
}

/// The bytes of data segment `segment` (empty once dropped).
fn data_segment(instance: &InstanceInner, segment: u32) -> &[u8] {
    if instance.dropped_data.borrow()[segment as usize] {
        &[]
    } else {
        &instance.module.inner.meta.data[segment as usize].bytes
    }
}

unsafe extern "C" fn array_new_data(vmctx: *mut u8, index: u32, segment: u32, offset: u32, len: u32) -> u64 {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let element_size = kiln_abi::gc::storage_size(instance.module.inner.array_element(index).storage) as u64;
    let bytes = data_segment(instance, segment);
    let byte_len = len as u64 * element_size;
    let result = if !in_bounds(offset as u64, byte_len, bytes.len() as u64) {
        Err(TrapCode::HeapOutOfBounds)
    } else {
        // SAFETY: called by guest code to allocate; nothing is held here.
        unsafe { new_array(vmctx, instance, index, len) }.map(|(array, elements)| {
            // SAFETY: the segment range was checked and the array holds `byte_len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().add(offset as usize), elements, byte_len as usize) };
            array
        })
    };
    match result {
        Ok(array) => array,
        // SAFETY: called by guest code; nothing owned on this frame.
        Err(code) => unsafe { trap(vmctx, code) },
    }
}

unsafe extern "C" fn array_new_elem(vmctx: *mut u8, index: u32, segment: u32, offset: u32, len: u32) -> u64 {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let segment_len = instance.elements.borrow()[segment as usize].as_ref().map_or(0, Vec::len);
    let result = if !in_bounds(offset as u64, len as u64, segment_len as u64) {
        Err(TrapCode::TableAccessOutOfBounds)
    } else {
        // The array first (a collection may update the segment's elements), then its contents.
        // SAFETY: called by guest code to allocate; nothing is held or borrowed here.
        unsafe { new_array(vmctx, instance, index, len) }.map(|(array, slots)| {
            let elements = instance.elements.borrow();
            let items: &[usize] = elements[segment as usize].as_deref().unwrap_or(&[]);
            // SAFETY: the segment range was checked (segments only shrink by being dropped,
            // which needs the guest); the array holds `len` 8-byte elements.
            unsafe { std::ptr::copy_nonoverlapping(items.as_ptr().add(offset as usize), slots.cast(), len as usize) };
            array
        })
    };
    match result {
        Ok(array) => array,
        // SAFETY: called by guest code; the borrows have ended.
        Err(code) => unsafe { trap(vmctx, code) },
    }
}

unsafe extern "C" fn array_init_data(
    vmctx: *mut u8,
    index: u32,
    segment: u32,
    array: u64,
    dst: u32,
    src: u32,
    len: u32,
) {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let element_size = kiln_abi::gc::storage_size(instance.module.inner.array_element(index).storage) as u64;
    let (array_len, elements) = array_parts(instance, array);
    let bytes = data_segment(instance, segment);
    let byte_len = len as u64 * element_size;
    let code = if !in_bounds(dst as u64, len as u64, array_len) {
        TrapCode::ArrayOutOfBounds
    } else if !in_bounds(src as u64, byte_len, bytes.len() as u64) {
        TrapCode::HeapOutOfBounds
    } else {
        // SAFETY: both ranges checked; a segment never overlaps the GC heap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr().add(src as usize),
                elements.add((dst as u64 * element_size) as usize),
                byte_len as usize,
            )
        };
        return;
    };
    // SAFETY: called by guest code; nothing owned on this frame.
    unsafe { trap(vmctx, code) }
}

unsafe extern "C" fn array_init_elem(
    vmctx: *mut u8,
    _index: u32,
    segment: u32,
    array: u64,
    dst: u32,
    src: u32,
    len: u32,
) {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let (array_len, slots) = array_parts(instance, array);
    let code = {
        let elements = instance.elements.borrow();
        let items: &[usize] = elements[segment as usize].as_deref().unwrap_or(&[]);
        if !in_bounds(dst as u64, len as u64, array_len) {
            TrapCode::ArrayOutOfBounds
        } else if !in_bounds(src as u64, len as u64, items.len() as u64) {
            TrapCode::TableAccessOutOfBounds
        } else {
            // SAFETY: both ranges checked; the array's elements are 8-byte references.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    items.as_ptr().add(src as usize),
                    slots.cast::<usize>().add(dst as usize),
                    len as usize,
                )
            };
            return;
        }
    };
    // SAFETY: called by guest code; the borrow has ended.
    unsafe { trap(vmctx, code) }
}

unsafe extern "C" fn gc_copy(vmctx: *mut u8, dst: u64, src: u64, bytes: u64) {
    // SAFETY: compiled code passes its own VM context.
    let instance = unsafe { instance(vmctx) };
    let heap = instance.store.gc_heap().expect("a store with arrays has a GC heap");
    let (Some(to), Some(from)) = (heap.bytes(dst, bytes), heap.bytes(src, bytes)) else {
        unreachable!("compiled code checked both ranges against their arrays")
    };
    // SAFETY: both ranges lie in the heap; `copy` handles overlap.
    unsafe { std::ptr::copy(from, to, bytes as usize) }
}
