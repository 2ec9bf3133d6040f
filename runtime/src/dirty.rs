//! Dirty maps: which 4 KiB pages of a linear memory have been written since it was last reset.
//!
//! Every memory has a map of one byte per page of its reservation (1 MiB of address space,
//! committed only where touched). Compiled code writes 1 into it after each store (see
//! [`kiln_abi::dirty_map_entry`]); host code that writes guest memory marks through
//! [`mark`]. Teardown reads the map back with [`scan`], which also clears it, and resets only
//! those pages: the precise set, wherever in the memory the tenant wrote, at the cost of a
//! few instructions per store.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use kiln_abi::{VMMemoryDefinition, DIRTY_MAP_SIZE, DIRTY_PAGE_LOG2};

use crate::sys::unix::mmap::Mmap;

/// Bytes in one memory's map.
pub(crate) const MAP_SIZE: usize = DIRTY_MAP_SIZE as usize;

/// Size of the pages the map tracks.
pub(crate) const PAGE: usize = 1 << DIRTY_PAGE_LOG2;

/// Bytes of the page after a dirty one that a store marked there may have written: one that
/// spans the two, or one whose mark the compiler left to an earlier store's (see
/// [`kiln_abi::DIRTY_MARK_REACH`]).
pub(crate) const SPILL: usize = kiln_abi::DIRTY_MARK_REACH as usize - 1;

/// Address space for a memory's map of its own, readable and writable (pages are committed
/// when first marked).
pub(crate) fn reserve_map() -> std::io::Result<Mmap> {
    let map = Mmap::reserve(MAP_SIZE)?;
    map.make_accessible(0, MAP_SIZE)?;
    Ok(map)
}

/// The bias a memory at `base` (page-aligned) with its map at `map` publishes in its
/// definition.
pub(crate) fn bias(map: *mut u8, base: *mut u8) -> usize {
    (map as usize).wrapping_sub(base as usize >> DIRTY_PAGE_LOG2)
}

/// Marks the pages of `[start, start + len)` of the memory `definition` describes as written.
///
/// # Safety
/// `definition` must be a live memory definition and the range inside the memory's current
/// size. (A raw pointer: other threads may be growing a shared memory's length.)
pub(crate) unsafe fn mark(definition: *const VMMemoryDefinition, start: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: a live definition; base and bias never change after it is written.
    let (base, dirty_bias) = unsafe { ((*definition).base as usize, (*definition).dirty_bias) };
    let first = kiln_abi::dirty_map_entry(dirty_bias, base + start);
    let last = kiln_abi::dirty_map_entry(dirty_bias, base + start + len - 1);
    for entry in first..=last {
        // SAFETY: the range is inside the memory, so its pages' entries are inside its map,
        // which lives as long as the memory. Atomic because compiled code on other threads may
        // mark the same byte of a shared memory.
        unsafe { AtomicU8::from_ptr(entry as *mut u8) }.store(1, Ordering::Relaxed);
    }
}

/// Calls `f(page)` for each page below `pages` marked in `map`, in increasing order, clearing
/// the marks if `clear`.
///
/// # Safety
/// `map` must be a memory's map, at least `pages` bytes, and no code may be writing the memory.
pub(crate) unsafe fn scan(map: *mut u8, pages: usize, clear: bool, mut f: impl FnMut(usize)) {
    let words = pages / 8;
    // Whole words first: clean ones are skipped eight pages at a time.
    for w in 0..words {
        // SAFETY: inside the map (`w * 8 + 8 <= pages`); the map is page-aligned, so the word
        // is aligned; nothing else writes it now.
        let word = unsafe { AtomicU64::from_ptr(map.add(w * 8).cast()) };
        let bits = word.load(Ordering::Relaxed);
        if bits == 0 {
            continue;
        }
        if clear {
            word.store(0, Ordering::Relaxed);
        }
        for (k, byte) in bits.to_le_bytes().into_iter().enumerate() {
            if byte != 0 {
                f(w * 8 + k);
            }
        }
    }
    for page in words * 8..pages {
        // SAFETY: inside the map, as above.
        let byte = unsafe { AtomicU8::from_ptr(map.add(page)) };
        if byte.load(Ordering::Relaxed) != 0 {
            if clear {
                byte.store(0, Ordering::Relaxed);
            }
            f(page);
        }
    }
}

/// Calls `f(first, end)` for each run `[first, end)` of consecutive pages below `pages` marked
/// in `map`, in increasing order, clearing the marks if `clear`.
///
/// # Safety
/// As for [`scan`].
pub(crate) unsafe fn scan_runs(map: *mut u8, pages: usize, clear: bool, mut f: impl FnMut(usize, usize)) {
    let mut run: Option<(usize, usize)> = None;
    // SAFETY: the caller's promise.
    unsafe {
        scan(map, pages, clear, |page| match &mut run {
            Some((_, end)) if *end == page => *end += 1,
            _ => {
                if let Some((first, end)) = run.replace((page, page + 1)) {
                    f(first, end);
                }
            }
        })
    };
    if let Some((first, end)) = run {
        f(first, end);
    }
}

/// A set of pages (of one heap), as a bitmap that grows as needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PageSet {
    bits: Vec<u64>,
    len: usize,
}

impl PageSet {
    /// Number of pages in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn contains(&self, page: usize) -> bool {
        self.bits.get(page / 64).is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    pub fn insert(&mut self, page: usize) {
        if self.bits.len() <= page / 64 {
            self.bits.resize(page / 64 + 1, 0);
        }
        let (word, bit) = (&mut self.bits[page / 64], 1u64 << (page % 64));
        if *word & bit == 0 {
            *word |= bit;
            self.len += 1;
        }
    }

    pub fn clear(&mut self) {
        self.bits.clear();
        self.len = 0;
    }

    pub fn remove_range(&mut self, pages: std::ops::Range<usize>) {
        for page in pages.start..pages.end.min(self.bits.len() * 64) {
            let (word, bit) = (&mut self.bits[page / 64], 1u64 << (page % 64));
            if *word & bit != 0 {
                *word &= !bit;
                self.len -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_each_marked_page_once_and_clears_only_when_asked() {
        let mut map = vec![0u64; 5]; // 40 pages, aligned
        let bytes = map.as_mut_ptr().cast::<u8>();
        for page in [0, 7, 8, 9, 31, 37, 39] {
            // SAFETY: inside `map`.
            unsafe { *bytes.add(page) = 1 };
        }
        let mut seen = Vec::new();
        // SAFETY: `map` is 40 bytes and nothing else uses it.
        unsafe { scan(bytes, 38, false, |p| seen.push(p)) };
        assert_eq!(seen, [0, 7, 8, 9, 31, 37]);
        seen.clear();
        // SAFETY: as above.
        unsafe { scan(bytes, 40, true, |p| seen.push(p)) };
        assert_eq!(seen, [0, 7, 8, 9, 31, 37, 39]);
        assert!(map.iter().all(|&w| w == 0));
    }

    #[test]
    fn page_sets_count_distinct_pages() {
        let mut set = PageSet::default();
        for page in [3, 3, 64, 200, 5] {
            set.insert(page);
        }
        assert_eq!(set.len(), 4);
        assert!(set.contains(200) && set.contains(3) && !set.contains(4) && !set.contains(10_000));
        set.remove_range(4..100);
        assert_eq!(set.len(), 2);
        assert!(!set.contains(64) && !set.contains(5) && set.contains(3));
        set.remove_range(0..1_000_000);
        assert_eq!(set.len(), 0);
    }
}
