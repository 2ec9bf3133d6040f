//! The region's free slots, sharded so that threads taking and returning slots at the same time
//! share no lock and no cache line: each thread has a home shard, takes from it first and
//! returns slots to it, and looks at the other shards only when its own has no slot that last
//! served the module it wants (or none at all).
//!
//! A slot whose teardown left memory for the kernel to take back (a tenant wrote more than
//! `keep_resident`) waits in its shard's pending list. The pending slots' ranges are discarded
//! together, in one `process_madvise` call, once [`BATCH`] have gathered or when a slot is
//! wanted and none is free: each call makes the kernel interrupt the other cores to flush their
//! TLBs, so batching pays that once per batch instead of once per request.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::FreeSlot;

/// Pending slots a shard gathers before discarding their memory in one call.
pub(crate) const BATCH: usize = 8;

/// Free slots in per-thread shards.
pub(crate) struct FreeList {
    shards: Box<[Shard]>,
    /// Set when the region's last handle is gone: slots then leave the list for good.
    closed: AtomicBool,
}

/// One shard, alone on its cache lines.
#[repr(align(128))]
struct Shard(Mutex<Slots>);

#[derive(Default)]
struct Slots {
    /// Ready to take.
    free: Vec<FreeSlot>,
    /// Waiting for their `discards` to be discarded.
    pending: Vec<FreeSlot>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FreeList {
    /// An empty free list of `shards` shards (at least one).
    pub fn new(shards: usize) -> FreeList {
        let shards: Box<[Shard]> = (0..shards.max(1)).map(|_| Shard(Mutex::new(Slots::default()))).collect();
        FreeList { shards, closed: AtomicBool::new(false) }
    }

    /// Deals `slots` out over the shards. Within a shard, the last slot is taken first.
    pub fn deal(&self, slots: impl IntoIterator<Item = FreeSlot>) {
        for (i, slot) in slots.into_iter().enumerate() {
            self.shards[i % self.shards.len()].lock().free.push(slot);
        }
    }

    /// Closes the list: the free and pending slots are dropped now (with the region references
    /// they hold), and slots returned later are refused.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for shard in self.shards.iter() {
            let slots = std::mem::take(&mut *shard.lock());
            drop(slots);
        }
    }

    /// Number of slots not in use (free or pending).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock()).map(|s| s.free.len() + s.pending.len()).sum()
    }

    /// Takes a free slot, preferring one that last served `module_id` (its heaps hold the
    /// module's images and sizes, so instantiating needs no system call): first at home, then
    /// in the other shards; otherwise the home shard's most recently freed slot, then anyone's;
    /// otherwise a pending slot, once its shard's pending memory is discarded.
    pub fn take(&self, module_id: u64) -> Option<FreeSlot> {
        let home = self.home();
        let warm = |slots: &mut Slots| {
            let i = slots.free.iter().rposition(|f| f.last_module == module_id)?;
            Some(slots.free.swap_remove(i))
        };
        if let Some(slot) = warm(&mut self.shards[home].lock()) {
            return Some(slot);
        }
        let others = || (1..self.shards.len()).map(|k| &self.shards[(home + k) % self.shards.len()]);
        if let Some(slot) = others().find_map(|shard| warm(&mut shard.lock())) {
            return Some(slot);
        }
        let shards = || std::iter::once(&self.shards[home]).chain(others());
        if let Some(slot) = shards().find_map(|shard| shard.lock().free.pop()) {
            return Some(slot);
        }
        // Nothing free: discard a shard's pending memory and take one of its slots. Under the
        // shard's lock, so that a thread looking for a slot meanwhile waits for these rather
        // than finding none.
        shards().find_map(|shard| {
            let mut slots = shard.lock();
            let pending = std::mem::take(&mut slots.pending);
            slots.free.extend(self.discard(pending));
            slots.free.pop()
        })
    }

    /// Returns a slot to the calling thread's home shard; once the list is closed, hands it
    /// back (for the caller to drop, outside the lock).
    #[must_use = "a refused slot must be dropped outside the lock"]
    pub fn put(&self, slot: FreeSlot) -> Option<FreeSlot> {
        let mut slots = self.shards[self.home()].lock();
        // Read under the lock: `close` sets the flag before it empties each shard under its
        // lock, so a slot pushed here is either dropped by `close` or refused.
        if self.closed.load(Ordering::Relaxed) {
            return Some(slot);
        }
        if slot.discards.is_empty() {
            slots.free.push(slot);
            return None;
        }
        slots.pending.push(slot);
        if slots.pending.len() >= BATCH {
            // Under the lock, as in `take`.
            let pending = std::mem::take(&mut slots.pending);
            slots.free.extend(self.discard(pending));
        }
        None
    }

    /// Discards the memory `pending` slots left, in one batch, and returns them ready. Slots
    /// whose memory could not be discarded are dropped (never handed out again; the region is
    /// open, so these are not its last references).
    fn discard(&self, mut pending: Vec<FreeSlot>) -> Vec<FreeSlot> {
        if pending.is_empty() {
            return pending;
        }
        let ranges: Vec<(usize, usize)> = pending.iter().flat_map(|s| s.discards.iter().copied()).collect();
        // SAFETY: the ranges are page-aligned spans of these slots' heaps (see
        // `HeapState::reset`), private anonymous or copy-on-write mappings that no instance
        // uses while the slots are pending.
        match unsafe { crate::sys::unix::mmap::discard_all(&ranges) } {
            Ok(()) => {
                pending.iter_mut().for_each(|s| s.discards.clear());
                pending
            }
            Err(err) => {
                eprintln!("kiln: could not reset {} slots: {err}; retiring them", pending.len());
                Vec::new()
            }
        }
    }

    /// The calling thread's home shard: threads are numbered in the order they first use a
    /// region, and the numbers dealt out over the shards.
    fn home(&self) -> usize {
        static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static THREAD: Cell<Option<usize>> = const { Cell::new(None) };
        }
        let thread = THREAD.with(|t| {
            t.get().unwrap_or_else(|| {
                let n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
                t.set(Some(n));
                n
            })
        });
        thread % self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::region::{Region, RegionConfig, RegionInner};

    /// A region to own the test's slots (its own free list is not used).
    fn region() -> (Region, Arc<RegionInner>) {
        let region = Region::new(RegionConfig { slots: 1, ..RegionConfig::default() }).unwrap();
        let inner = region.inner_arc();
        (region, inner)
    }

    fn slot(region: &Arc<RegionInner>, index: usize, last_module: u64) -> FreeSlot {
        FreeSlot {
            region: region.clone(),
            index,
            last_module,
            heap_state: Default::default(),
            extra_heaps: Vec::new(),
            module: None,
            discards: Vec::new(),
        }
    }

    #[test]
    fn slots_warm_for_the_module_come_first_from_any_shard() {
        let (_handle, r) = region();
        let list = FreeList::new(3);
        list.deal((0..4).map(|i| slot(&r, i, 10 + i as u64)));
        assert_eq!(list.len(), 4);
        // Whichever shard is this thread's home, the slot that served module 12 is found.
        assert_eq!(list.take(12).unwrap().index, 2);
        // No warm slot: the others, all of them, then nothing.
        let mut rest: Vec<usize> = std::iter::from_fn(|| list.take(99)).map(|s| s.index).collect();
        rest.sort();
        assert_eq!(rest, [0, 1, 3]);
        assert_eq!(list.len(), 0);
        // A returned slot is the next one taken, for its module and for any other.
        assert!(list.put(slot(&r, 3, 13)).is_none());
        assert!(list.put(slot(&r, 1, 11)).is_none());
        assert_eq!(list.take(13).unwrap().index, 3);
        assert_eq!(list.take(42).unwrap().index, 1);
        assert!(list.take(42).is_none());
    }

    #[test]
    fn another_thread_takes_what_this_one_returned() {
        let (_handle, r) = region();
        let list = FreeList::new(8);
        list.deal([slot(&r, 0, 0)]);
        let taken = list.take(5).unwrap();
        assert!(list.put(slot(&r, taken.index, 5)).is_none());
        let list = &list;
        let stolen = std::thread::scope(|s| s.spawn(move || list.take(6).map(|s| s.index)).join().unwrap());
        assert_eq!(stolen, Some(0));
    }

    #[test]
    fn pending_memory_is_discarded_in_batches_or_when_a_slot_is_wanted() {
        use crate::sys::unix::mmap::{Mmap, PAGE_SIZE};
        let (_handle, r) = region();
        let memory = Mmap::reserve(BATCH * PAGE_SIZE).unwrap();
        memory.make_accessible(0, BATCH * PAGE_SIZE).unwrap();
        let page = |i: usize| memory.range_ptr(i * PAGE_SIZE, PAGE_SIZE);
        // SAFETY: `page(i)` is a readable, writable page of `memory`, which only this test uses.
        let byte = |i: usize| unsafe { *page(i) };
        let list = FreeList::new(1);
        let dirty = |i: usize| {
            // SAFETY: as above.
            unsafe { *page(i) = 7 };
            FreeSlot { discards: vec![(page(i) as usize, PAGE_SIZE)], ..slot(&r, i, 0) }
        };
        // Below a batch, pending slots keep their memory and are not free...
        for i in 0..BATCH - 1 {
            assert!(list.put(dirty(i)).is_none());
        }
        assert_eq!(list.len(), BATCH - 1);
        assert!((0..BATCH - 1).all(|i| byte(i) == 7));
        // ...until a slot is wanted: the whole shard's pending memory goes at once.
        let taken = list.take(0).unwrap();
        assert!(taken.discards.is_empty());
        assert!((0..BATCH - 1).all(|i| byte(i) == 0));
        // A full batch is discarded when it fills.
        for i in 0..BATCH {
            assert!(list.put(dirty(i)).is_none());
        }
        assert!((0..BATCH).all(|i| byte(i) == 0));
        assert_eq!(list.len(), 2 * BATCH - 2);
    }

    #[test]
    fn a_closed_list_drops_its_slots_and_refuses_returns() {
        let (_handle, r) = region();
        let list = FreeList::new(2);
        list.deal((0..3).map(|i| slot(&r, i, 0)));
        let before = Arc::strong_count(&r);
        list.close();
        assert_eq!(Arc::strong_count(&r), before - 3);
        assert_eq!(list.len(), 0);
        assert!(list.put(slot(&r, 7, 0)).is_some());
        assert_eq!(list.len(), 0);
    }
}
