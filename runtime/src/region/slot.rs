//! One slot of a region: where an instance's VM context, tables, stack and heap live, and what
//! the slot's heap currently holds (so a slot reused by the same module needs no remapping).

use std::mem::ManuallyDrop;
use std::sync::Arc;

use super::{kiln_abi_heap, RegionInner};
use crate::dirty::{self, PageSet};
use crate::sys::unix::mmap::{page_align, Mmap};

/// Byte offsets within one slot (see the diagram in the `region` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLayout {
    /// Start of the VM context area.
    pub vmctx_offset: usize,
    /// Size of the VM context area.
    pub vmctx_size: usize,
    /// Start of the table area (elements of the module's own tables).
    pub tables_offset: usize,
    /// Size of the table area.
    pub tables_size: usize,
    /// Start of the heap's dirty map (see `crate::dirty`).
    pub dirty_map_offset: usize,
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

/// A heap image: the initial contents of one of a module's defined memories, in its `.so` file.
pub(crate) struct ImageSource<'a> {
    /// Which image: the module's unique id and the defined memory's index (heaps remember
    /// which image they hold).
    pub id: (u64, u32),
    /// The open `.so` file.
    pub file: &'a std::fs::File,
    /// Page-aligned offset of the image in the file.
    pub offset: u64,
    /// Length in bytes, a multiple of the page size.
    pub len: usize,
}

/// What a heap (the slot's own, or an extra one) holds between tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeapState {
    /// The image mapped at the heap's start (see [`ImageSource::id`]), and its length.
    pub image: Option<((u64, u32), usize)>,
    /// Bytes from the heap's start that are readable and writable (the rest is inaccessible).
    pub accessible: usize,
    /// Pages that resets restored with plain stores since the kernel last took them back:
    /// resident while the slot is free, at most `keep_resident` bytes of them.
    resident: PageSet,
}

impl HeapState {
    /// Prepares the heap at `offset` in `mmap` for a memory of `len` bytes starting with
    /// `image` (or zeros): maps the image copy-on-write unless the heap already holds it, and
    /// makes exactly the first `page_align(len)` bytes accessible. No system call when the
    /// heap last served the same image with the same initial size.
    fn prepare(
        &mut self,
        mmap: &Mmap,
        offset: usize,
        image: Option<&ImageSource<'_>>,
        len: usize,
    ) -> std::io::Result<()> {
        let wanted = image.map(|i| (i.id, i.len));
        if self.image != wanted {
            if let Some((_, old_len)) = self.image {
                // Put fresh, inaccessible anonymous memory back where the old image was.
                mmap.make_inaccessible(offset, self.accessible)?;
                mmap.map_anonymous_inaccessible(offset, old_len)?;
                self.resident.remove_range(0..old_len / dirty::PAGE);
                self.image = None;
                self.accessible = 0;
            }
            if let Some(image) = image {
                // Accessible memory beyond the image stays as it is; the image replaces the start.
                mmap.map_file_private(offset, image.len, image.file, image.offset)?;
                self.image = wanted;
                self.accessible = self.accessible.max(image.len);
            }
        }
        let len = page_align(len);
        if self.accessible < len {
            mmap.make_accessible(offset + self.accessible, len - self.accessible)?;
        } else if self.accessible > len {
            mmap.make_inaccessible(offset + len, self.accessible - len)?;
        }
        self.accessible = len;
        Ok(())
    }

    /// Resets the heap at `offset` in `mmap`, which the guest grew to `len` bytes, for the next
    /// tenant: every page marked in its dirty map `map` returns to the image's contents (given
    /// as `image`) or zeros, and the marks are cleared. Unmarked pages were not written since
    /// the last reset, so they already hold that.
    ///
    /// A dirty page is reset with plain stores, and then stays resident, if it already was or
    /// if the heap's resident pages still fit in `keep_resident` bytes: the next tenant of a
    /// warm slot neither enters the kernel nor faults on it. The other dirty pages are pushed
    /// onto `discards` as runs (address, length) for the kernel to take back before the slot is
    /// reused (image pages fall back to the image, the rest to zeros).
    #[allow(clippy::too_many_arguments)]
    fn reset(
        &mut self,
        mmap: &Mmap,
        offset: usize,
        map: *mut u8,
        len: usize,
        image: Option<ResetImage<'_>>,
        keep_resident: usize,
        discards: &mut Vec<(usize, usize)>,
    ) {
        // Clamped, defensively: `memory.grow` already keeps memories within the reservation.
        self.accessible = self.accessible.max(page_align(len.min(kiln_abi_heap::RESERVATION)));
        // In a memory of (nearly) 4 GiB, a store the compiler let share another's mark may have
        // wrapped around to the first page (see `kiln_abi::WRAPPED_STORE_REACH`).
        if len as u64 > (1 << 32) - kiln_abi::DIRTY_MARK_REACH {
            // SAFETY: `map` is this heap's map; its first entry is the first page's.
            unsafe { map.write(1) };
        }
        let pages = self.accessible / dirty::PAGE;
        let image_bytes = match (&self.image, image) {
            (None, _) => Some(&[][..]),
            (Some(held), Some(image)) if *held == (image.id, image.bytes.len()) => Some(image.bytes),
            // An image whose bytes we do not have: only the kernel can restore it.
            (Some(_), _) => None,
        };
        let base = mmap.range_ptr(offset, self.accessible);
        let budget = keep_resident / dirty::PAGE;
        let resident = &mut self.resident;
        // Runs of pages to discard, as [first, end) page numbers.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let discard = |resident: &mut PageSet, runs: &mut Vec<(usize, usize)>, first: usize, end: usize| {
            resident.remove_range(first..end);
            match runs.last_mut() {
                Some(run) if run.1 >= first => run.1 = run.1.max(end),
                _ => runs.push((first, end)),
            }
        };
        // SAFETY: `map` is this heap's map, which covers the reservation; `base` is the heap,
        // accessible up to `pages` pages, which no tenant uses any more; `bytes` is the image
        // mapped there, so it does not overlap.
        unsafe {
            dirty::scan_runs(map, pages, true, |first, end| {
                let mut page = first;
                while page < end {
                    match image_bytes {
                        Some(bytes) if keeps(resident, page, budget) => {
                            // The stretch of pages kept from here on, restored at once.
                            let start = page;
                            while page < end && keeps(resident, page, budget) {
                                resident.insert(page);
                                page += 1;
                            }
                            restore(base, bytes, start * dirty::PAGE, (page - start) * dirty::PAGE);
                            // A store that began at the end of the stretch may have spilled into
                            // the next page's first bytes. If that page is in the run, it is
                            // restored or discarded whole anyway; if not, only if those bytes
                            // changed is it resident (a page nobody wrote must not become so),
                            // restored and counted, or discarded.
                            let next = page * dirty::PAGE;
                            if page == end && page < pages && !holds(base, bytes, next, dirty::SPILL) {
                                if keeps(resident, page, budget) {
                                    restore(base, bytes, next, dirty::SPILL);
                                    resident.insert(page);
                                } else {
                                    discard(resident, &mut runs, page, page + 1);
                                }
                            }
                        }
                        // With the page after it, for a store that spilled into it.
                        _ => {
                            discard(resident, &mut runs, page, (page + 2).min(pages));
                            page += 1;
                        }
                    }
                }
            })
        };
        discards.extend(runs.into_iter().map(|(first, end)| {
            // SAFETY: inside the heap's accessible pages (`end <= pages`).
            (unsafe { base.add(first * dirty::PAGE) } as usize, (end - first) * dirty::PAGE)
        }));
    }
}

impl HeapState {
    /// Bytes of the heap that resets keep resident (see [`RegionConfig::max_idle_resident`]).
    ///
    /// [`RegionConfig::max_idle_resident`]: super::RegionConfig::max_idle_resident
    pub fn kept(&self) -> usize {
        self.resident.len() * dirty::PAGE
    }

    /// Pushes onto `ranges` everything of the heap at `base`, and of its dirty map at `map`,
    /// that may be resident, for the kernel to take back; the heap keeps its image and size.
    fn decommit(&mut self, base: usize, map: usize, ranges: &mut Vec<(usize, usize)>) {
        if self.accessible > 0 {
            ranges.push((base, self.accessible));
            ranges.push((map, page_align(self.accessible / dirty::PAGE)));
        }
        self.resident.clear();
    }
}

/// Whether a reset restores `page` in place and keeps it resident: if it already is, or if the
/// heap's resident pages are still fewer than `budget`.
fn keeps(resident: &PageSet, page: usize, budget: usize) -> bool {
    resident.contains(page) || resident.len() < budget
}

/// Whether `[base + start, base + start + len)` holds the heap image's bytes there (zeros
/// beyond the image).
///
/// # Safety
/// The range must be readable memory that no one writes meanwhile.
unsafe fn holds(base: *const u8, image: &[u8], start: usize, len: usize) -> bool {
    // SAFETY: readable, per the caller.
    let current = unsafe { std::slice::from_raw_parts(base.add(start), len) };
    let expected = image.get(start..).unwrap_or(&[]);
    let copied = expected.len().min(len);
    current[..copied] == expected[..copied] && current[copied..].iter().all(|&b| b == 0)
}

/// Writes the heap image's bytes `[start, start + len)` (zeros beyond the image) at `base + start`.
///
/// # Safety
/// `[base + start, base + start + len)` must be writable memory that `image` does not overlap.
unsafe fn restore(base: *mut u8, image: &[u8], start: usize, len: usize) {
    let copied = image.len().saturating_sub(start).min(len);
    // SAFETY: the caller's range is writable; `image[start..start + copied]` is in bounds.
    unsafe {
        if copied > 0 {
            std::ptr::copy_nonoverlapping(image.as_ptr().add(start), base.add(start), copied);
        }
        std::ptr::write_bytes(base.add(start + copied), 0, len - copied);
    }
}

/// The image a heap held, for resetting it with plain stores.
#[derive(Clone, Copy)]
pub(crate) struct ResetImage<'a> {
    /// Which image (see [`ImageSource::id`]).
    pub id: (u64, u32),
    /// Its contents (a multiple of the page size).
    pub bytes: &'a [u8],
}

impl<'a> ResetImage<'a> {
    /// Defined memory `d`'s heap image as instantiation maps it into a slot, for teardown to
    /// copy back (`None` if the memory has none or it is copied rather than mapped).
    pub fn of(module: &'a crate::load::ModuleInner, d: u32) -> Option<ResetImage<'a>> {
        let image = module.images.get(d as usize)?.as_ref().filter(|_| module.image_file.is_some())?;
        // SAFETY: `in_memory` points to `len` bytes of the loaded object, never written, which
        // stay mapped as long as `module` (see `ModuleImage`).
        let bytes = unsafe { std::slice::from_raw_parts(image.in_memory, image.len) };
        Some(ResetImage { id: (module.id, d), bytes })
    }
}

/// The reservation of a defined memory after the first (multi-memory modules). Kept with its
/// slot between tenants, like the slot's own heap, so instantiating such a module again maps
/// nothing; teardown resets it the same way.
pub(crate) struct ExtraHeap {
    mmap: Mmap,
    /// Its dirty map.
    map: Mmap,
    state: HeapState,
}

/// A slot taken from a region; returned to the free list on drop (with its heap state and
/// extra heaps). Whoever held it must have reset its contents first (see `instance::teardown`).
pub(crate) struct Slot {
    /// Moved back into the free list with the slot (see `FreeSlot::region`).
    pub region: ManuallyDrop<Arc<RegionInner>>,
    pub index: usize,
    /// The module whose instance holds the slot.
    module_id: u64,
    pub heap_state: HeapState,
    extra_heaps: Vec<ExtraHeap>,
    /// The handle of the module it serves, while no instance holds it (see `FreeSlot::module`).
    module: Option<crate::load::Module>,
    /// Ranges (address, length) of its heaps that resets left for the kernel to discard.
    discards: Vec<(usize, usize)>,
    /// Bytes at the start of the table area that resets zeroed in place (and so stay resident).
    tables_kept: usize,
    retired: bool,
}

impl Slot {
    pub fn new(
        region: Arc<RegionInner>,
        index: usize,
        module_id: u64,
        heap_state: HeapState,
        extra_heaps: Vec<ExtraHeap>,
        module: Option<crate::load::Module>,
        tables_kept: usize,
    ) -> Slot {
        Slot {
            region: ManuallyDrop::new(region),
            index,
            module_id,
            heap_state,
            extra_heaps,
            module,
            discards: Vec::new(),
            tables_kept,
            retired: false,
        }
    }

    /// The handle of the module the slot serves that it kept while free, if any (its instance
    /// holds it until teardown, which gives it back with [`Self::keep_module`]).
    pub fn take_module(&mut self) -> Option<crate::load::Module> {
        self.module.take()
    }

    /// Keeps the handle of the module the slot serves, for its next instance.
    pub fn keep_module(&mut self, module: crate::load::Module) {
        self.module = Some(module);
    }

    /// Keeps the slot out of the free list for good (its contents could not be reset).
    pub fn retire(&mut self) {
        self.retired = true;
    }

    /// The slot's region.
    pub fn region(&self) -> Arc<RegionInner> {
        Arc::clone(&self.region)
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

    pub fn tables(&self) -> *mut usize {
        self.at(self.region.layout.tables_offset).cast()
    }

    /// Number of table elements the table area holds.
    pub fn table_capacity(&self) -> usize {
        self.region.layout.tables_size / std::mem::size_of::<usize>()
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

    /// The dirty-map bias of the slot's heap (see `crate::dirty`).
    pub fn heap_dirty_bias(&self) -> usize {
        dirty::bias(self.at(self.region.layout.dirty_map_offset), self.heap())
    }

    /// Prepares the slot's heap (own memory 0) for a memory of `len` bytes starting with
    /// `image` (see [`HeapState::prepare`]).
    pub fn prepare_heap(&mut self, image: Option<&ImageSource<'_>>, len: usize) -> std::io::Result<()> {
        let offset = self.base_offset() + self.region.layout.heap_offset;
        self.heap_state.prepare(&self.region.mmap, offset, image, len)
    }

    /// Resets the slot's heap, which the guest grew to `len` bytes and which started with
    /// `image`, for the next tenant (what is left for the kernel is discarded before the slot
    /// is reused: see `FreeList::put`).
    pub fn reset_heap(&mut self, len: usize, image: Option<ResetImage<'_>>) {
        let offset = self.base_offset() + self.region.layout.heap_offset;
        let map = self.at(self.region.layout.dirty_map_offset);
        let keep_resident = self.region.keep_resident;
        self.heap_state.reset(&self.region.mmap, offset, map, len, image, keep_resident, &mut self.discards);
    }

    /// Prepares extra heap `i` (own memory `i + 1`; reserved on first use) like the slot's
    /// heap and returns its base.
    pub fn prepare_extra_heap(
        &mut self,
        i: usize,
        image: Option<&ImageSource<'_>>,
        len: usize,
    ) -> std::io::Result<*mut u8> {
        while self.extra_heaps.len() <= i {
            let mmap = Mmap::reserve(kiln_abi_heap::RESERVATION + kiln_abi_heap::GUARD)?;
            let map = dirty::reserve_map()?;
            self.extra_heaps.push(ExtraHeap { mmap, map, state: HeapState::default() });
        }
        let heap = &mut self.extra_heaps[i];
        heap.state.prepare(&heap.mmap, 0, image, len)?;
        Ok(heap.mmap.as_ptr())
    }

    /// Base of extra heap `i` (prepared at instantiation).
    pub fn extra_heap(&self, i: usize) -> *mut u8 {
        self.extra_heaps[i].mmap.as_ptr()
    }

    /// The dirty-map bias of extra heap `i` (prepared at instantiation).
    pub fn extra_heap_dirty_bias(&self, i: usize) -> usize {
        let heap = &self.extra_heaps[i];
        dirty::bias(heap.map.as_ptr(), heap.mmap.as_ptr())
    }

    /// Resets extra heap `i`, which the guest grew to `len` bytes and which started with
    /// `image`, for the next tenant.
    pub fn reset_extra_heap(&mut self, i: usize, len: usize, image: Option<ResetImage<'_>>) {
        let keep_resident = self.region.keep_resident;
        let Some(heap) = self.extra_heaps.get_mut(i) else { return };
        heap.state.reset(&heap.mmap, 0, heap.map.as_ptr(), len, image, keep_resident, &mut self.discards);
    }

    /// Zeroes the first `elements` elements of the table area from `start`.
    pub fn reset_tables(&mut self, start: usize, elements: usize) -> std::io::Result<()> {
        const MEMSET_LIMIT: usize = 16 * 1024;
        if elements == 0 {
            return Ok(());
        }
        if elements <= MEMSET_LIMIT {
            // SAFETY: the range lies inside this slot's table area, which only the (finished)
            // tenant used.
            unsafe { std::ptr::write_bytes(self.tables().add(start), 0, elements) };
            let end = page_align((start + elements) * std::mem::size_of::<usize>());
            self.tables_kept = self.tables_kept.max(end);
            return Ok(());
        }
        let offset = self.base_offset() + self.region.layout.tables_offset + start * std::mem::size_of::<usize>();
        let aligned_start = offset & !(crate::sys::unix::mmap::PAGE_SIZE - 1);
        let end = page_align(offset + elements * std::mem::size_of::<usize>());
        self.region.mmap.discard(aligned_start, end - aligned_start)
    }
}

impl super::FreeSlot {
    /// Bytes the slot keeps resident for its next tenant: the heap pages its resets restored
    /// in place and the table elements they zeroed (see [`RegionConfig::max_idle_resident`]).
    ///
    /// [`RegionConfig::max_idle_resident`]: super::RegionConfig::max_idle_resident
    pub fn kept(&self) -> usize {
        let heaps: usize = self.extra_heaps.iter().map(|h| h.state.kept()).sum();
        self.heap_state.kept() + heaps + self.tables_kept
    }

    /// The ranges (address, length) of everything the slot may hold resident: its heaps and
    /// their dirty maps, the table area its resets zeroed, and its stack. Once the kernel has
    /// taken them back, the slot keeps nothing resident; it still holds its heaps' images and
    /// sizes, so it stays warm for its module without any other system call.
    pub fn decommit(&mut self) -> Vec<(usize, usize)> {
        let layout = self.region.layout;
        let base = self.region.mmap.as_ptr() as usize + self.index * layout.slot_size;
        let mut ranges =
            vec![(base + layout.tables_offset, self.tables_kept), (base + layout.stack_offset, layout.stack_size)];
        self.tables_kept = 0;
        self.heap_state.decommit(base + layout.heap_offset, base + layout.dirty_map_offset, &mut ranges);
        for heap in &mut self.extra_heaps {
            heap.state.decommit(heap.mmap.as_ptr() as usize, heap.map.as_ptr() as usize, &mut ranges);
        }
        ranges.retain(|r| r.1 > 0);
        ranges
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: `region` is not used after this.
        let region = unsafe { ManuallyDrop::take(&mut self.region) };
        if self.retired {
            return;
        }
        let list: *const super::free::FreeList = &region.free;
        let free = super::FreeSlot {
            region,
            index: self.index,
            last_module: self.module_id,
            heap_state: std::mem::take(&mut self.heap_state),
            extra_heaps: std::mem::take(&mut self.extra_heaps),
            module: self.module.take(),
            discards: std::mem::take(&mut self.discards),
            tables_kept: self.tables_kept,
        };
        // SAFETY: the list lives in the region, which `free` keeps alive until `put` has
        // stored it or handed it back.
        let refused = unsafe { (*list).put(free) };
        // A closed region's slot is dropped here, outside the shard's lock; the last one takes
        // the region with it.
        drop(refused);
    }
}
