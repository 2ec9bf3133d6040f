//! The region's free slots, sharded so that threads taking and returning slots at the same time
//! share no lock and no cache line: each thread has a home shard, takes from it first and
//! returns slots to it, and looks at the other shards only when its own has no slot that last
//! served the module it wants (or none at all).
//!
//! A slot whose teardown left memory for the kernel to take back (a tenant wrote more than
//! `keep_resident`) waits in its shard's pending list. The pending slots' ranges are discarded
//! together, in one `process_madvise` call: each call makes the kernel interrupt the other
//! cores to flush their TLBs, so batching pays that once per batch instead of once per request.
//! The thread that returns the [`BATCH`]th slot discards the batch; but once the pending slots
//! span [`LARGE_BATCH`] bytes, the region's background thread (the trimmer, below) discards
//! them instead, so that the kernel's work on many pages stays off the request path. A thread
//! that wants a slot when none is free discards its shard's pending slots itself.
//!
//! Each shard counts what its slots keep resident for their next tenants ([`FreeSlot::kept`]).
//! When a returned slot takes a shard over its share of `RegionConfig::max_idle_resident`, the
//! region's trimmer thread takes the shard's least recently returned resident slots out, has
//! the kernel take back all their memory in one call, and puts them back at the cold end.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::{FreeSlot, RegionInner};

/// Pending slots a shard gathers before discarding their memory in one call.
pub(crate) const BATCH: usize = 8;

/// Pending bytes from which the trimmer discards a shard's pending slots, however few. Smaller
/// batches are cheaper discarded where they are: handing them over costs a wake-up, and the
/// trimmer's discards interrupt the threads running guests (measured with
/// `lifecycles_dirty256K`); a large one costs the request path far more (about 0.5 ms for
/// 16 MiB).
pub(crate) const LARGE_BATCH: usize = 4 << 20;

/// Free slots in per-thread shards.
pub(crate) struct FreeList {
    shards: Box<[Shard]>,
    /// Set when the region's last handle is gone: slots then leave the list for good.
    closed: AtomicBool,
    /// Most bytes one shard's slots may keep resident (an even share of
    /// [`super::RegionConfig::max_idle_resident`]); the trimmer takes a shard above it down to
    /// three quarters of it.
    shard_ceiling: usize,
    /// The thread that trims shards above their ceiling, started when first needed (`None`
    /// if it could not be: threads then trim for themselves).
    trimmer: OnceLock<Option<std::thread::Thread>>,
}

/// One shard, alone on its cache lines.
#[repr(align(128))]
struct Shard(Mutex<Slots>);

#[derive(Default)]
struct Slots {
    /// Ready to take; the least recently returned first.
    free: Vec<FreeSlot>,
    /// Waiting for their `discards` to be discarded.
    pending: Vec<FreeSlot>,
    /// Bytes the `pending` slots' discards span.
    pending_bytes: usize,
    /// What the `free` and `pending` slots keep resident (the sum of [`FreeSlot::kept`]).
    kept: usize,
    /// Slots the trimmer has taken out to decommit, and will bring back.
    trimming: usize,
    /// Whether the trimmer has been asked to look at this shard and has not yet.
    trim_requested: bool,
    /// Slots returned to this shard so far (see [`FreeList::take`]).
    returns: u64,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slots {
    fn remove(&mut self, i: usize) -> FreeSlot {
        // In order: `trim` takes the least recently returned first.
        let slot = self.free.remove(i);
        self.kept -= slot.kept();
        slot
    }

    fn pop(&mut self) -> Option<FreeSlot> {
        let i = self.free.len().checked_sub(1)?;
        Some(self.remove(i))
    }

    /// Whether the pending slots are for the trimmer to discard.
    fn pending_is_large(&self) -> bool {
        self.pending_bytes >= LARGE_BATCH
    }

    /// Discards the pending slots' memory, in one batch, and makes them free.
    fn flush_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let kept: usize = pending.iter().map(FreeSlot::kept).sum();
        let ranges: Vec<(usize, usize)> = pending.iter().flat_map(|s| s.discards.iter().copied()).collect();
        if discard(&ranges, pending.len()) {
            self.free.extend(pending.into_iter().map(|s| FreeSlot { discards: Vec::new(), ..s }));
        } else {
            self.kept -= kept;
        }
    }
}

/// Has the kernel take back `ranges` of `slots` free slots; false if it refused, and then the
/// caller must drop those slots (never hand them out again; the region is open, so these are
/// not its last references).
fn discard(ranges: &[(usize, usize)], slots: usize) -> bool {
    if ranges.is_empty() {
        return true;
    }
    // SAFETY: the ranges are page-aligned spans of free slots' heaps, tables and stacks (see
    // `HeapState::reset` and `FreeSlot::decommit`), private anonymous or copy-on-write
    // mappings that no instance uses while the slots are free.
    match unsafe { crate::sys::unix::mmap::discard_all(ranges) } {
        Ok(()) => true,
        Err(err) => {
            eprintln!("kiln: could not reset {slots} slots: {err}; retiring them");
            false
        }
    }
}

impl FreeList {
    /// An empty free list of `shards` shards (at least one), whose slots may keep
    /// `max_idle_resident` bytes resident in all.
    pub fn new(shards: usize, max_idle_resident: usize) -> FreeList {
        let shards: Box<[Shard]> = (0..shards.max(1)).map(|_| Shard(Mutex::new(Slots::default()))).collect();
        let shard_ceiling = max_idle_resident / shards.len();
        FreeList { shards, closed: AtomicBool::new(false), shard_ceiling, trimmer: OnceLock::new() }
    }

    /// Deals `slots` out over the shards. Within a shard, the last slot is taken first.
    pub fn deal(&self, slots: impl IntoIterator<Item = FreeSlot>) {
        for (i, slot) in slots.into_iter().enumerate() {
            let mut shard = self.shards[i % self.shards.len()].lock();
            shard.kept += slot.kept();
            shard.free.push(slot);
        }
    }

    /// Closes the list: the free and pending slots are dropped now (with the region references
    /// they hold), and slots returned later are refused.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for shard in self.shards.iter() {
            // Dropped outside the lock. Slots with the trimmer are dropped when it is done.
            let slots = {
                let mut slots = shard.lock();
                slots.kept = 0;
                (std::mem::take(&mut slots.free), std::mem::take(&mut slots.pending))
            };
            drop(slots);
        }
        if let Some(Some(trimmer)) = self.trimmer.get() {
            trimmer.unpark();
        }
    }

    /// Number of slots not in use (free, pending or being trimmed).
    pub fn len(&self) -> usize {
        self.census().0
    }

    /// The slots not in use, and how many slots have been returned so far. Each shard is
    /// counted under its lock, but not all at once: a slot taken from a shard not yet counted
    /// and returned to one already counted escapes the count, but not the returns.
    fn census(&self) -> (usize, u64) {
        self.shards
            .iter()
            .map(|s| s.lock())
            .fold((0, 0), |(len, returns), s| (len + s.free.len() + s.pending.len() + s.trimming, returns + s.returns))
    }

    /// Bytes the slots not in use keep resident for their next tenants.
    pub fn kept(&self) -> usize {
        self.shards.iter().map(|s| s.lock().kept).sum()
    }

    /// Takes a free slot, preferring one that last served `module_id` (its heaps hold the
    /// module's images and sizes, so instantiating needs no system call): first at home, then
    /// in the other shards; otherwise the home shard's most recently freed slot, then anyone's;
    /// otherwise a pending slot, once its shard's pending memory is discarded; otherwise one
    /// the trimmer is about to bring back.
    pub fn take(&self, module_id: u64) -> Option<FreeSlot> {
        let home = self.home();
        let warm = |slots: &mut Slots| {
            let i = slots.free.iter().rposition(|f| f.last_module == module_id)?;
            Some(slots.remove(i))
        };
        if let Some(slot) = warm(&mut self.shards[home].lock()) {
            return Some(slot);
        }
        let others = || (1..self.shards.len()).map(|k| &self.shards[(home + k) % self.shards.len()]);
        if let Some(slot) = others().find_map(|shard| warm(&mut shard.lock())) {
            return Some(slot);
        }
        let shards = || std::iter::once(&self.shards[home]).chain(others());
        loop {
            let (_, returns) = self.census();
            if let Some(slot) = shards().find_map(|shard| shard.lock().pop()) {
                return Some(slot);
            }
            // Nothing free: discard a shard's pending memory and take one of its slots. Under
            // the shard's lock, so that a thread looking for a slot meanwhile waits for these
            // rather than finding none.
            let slot = shards().find_map(|shard| {
                let mut slots = shard.lock();
                slots.flush_pending();
                slots.pop()
            });
            // None are free only if none are counted and none came back meanwhile: slots move
            // between shards only by being taken and returned, which a scan can miss (see
            // `census`) but not without a return.
            if slot.is_some() || self.census() == (0, returns) {
                return slot;
            }
            std::thread::yield_now();
        }
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
        slots.returns += 1;
        slots.kept += slot.kept();
        slots.pending_bytes += slot.discards.iter().map(|&(_, len)| len).sum::<usize>();
        let trim = (slots.kept > self.shard_ceiling || slots.pending_is_large()) && !slots.trim_requested;
        // Only when trimming (rarely): the trimmer's handle on the region.
        let region = trim.then(|| Arc::downgrade(&slot.region));
        if slot.discards.is_empty() {
            slots.free.push(slot);
        } else {
            slots.pending.push(slot);
            if slots.pending.len() >= BATCH && !slots.pending_is_large() {
                // Under the lock, as in `take`.
                slots.flush_pending();
            }
        }
        slots.trim_requested |= trim;
        drop(slots);
        if let Some(region) = region {
            self.wake_trimmer(region);
        }
        None
    }

    /// Wakes the trimmer, starting it the first time (it keeps `region` to reach this list).
    fn wake_trimmer(&self, region: Weak<RegionInner>) {
        let trimmer = self.trimmer.get_or_init(|| {
            let spawned = std::thread::Builder::new().name("kiln-trim".into()).spawn(move || loop {
                std::thread::park();
                let Some(region) = region.upgrade() else { return };
                if region.free.closed.load(Ordering::Relaxed) {
                    return;
                }
                region.free.trim();
            });
            spawned
                .map(|handle| handle.thread().clone())
                .inspect_err(|err| {
                    eprintln!("kiln: cannot start the slot trimmer ({err}); lifecycles will trim");
                })
                .ok()
        });
        match trimmer {
            Some(trimmer) => trimmer.unpark(),
            None => self.trim(),
        }
    }

    /// Discards the memory of every shard's pending slots that span [`LARGE_BATCH`] bytes, and
    /// takes every shard above its ceiling down to three quarters of it: its pending slots and
    /// its least recently returned free slots that keep memory resident leave the shard, the
    /// kernel takes back all their memory (see [`FreeSlot::decommit`]), and they return at the
    /// shard's cold end. One call per shard; lifecycles on the shard's threads go on meanwhile.
    fn trim(&self) {
        let target = self.shard_ceiling / 4 * 3;
        for shard in self.shards.iter() {
            // `pending` keep what they hold resident (and stay counted); `cold` give it all back.
            let (mut pending, mut cold) = {
                let mut slots = shard.lock();
                slots.trim_requested = false;
                let over = slots.kept > self.shard_ceiling;
                if !over && !slots.pending_is_large() {
                    continue;
                }
                let Slots { free, pending, pending_bytes, kept, trimming, .. } = &mut *slots;
                *pending_bytes = 0;
                let mut pending = std::mem::take(pending);
                let mut cold = Vec::new();
                if over {
                    let mut stay = Vec::with_capacity(free.len());
                    for slot in pending.drain(..).chain(free.drain(..)) {
                        if (*kept > target && slot.kept() > 0) || !slot.discards.is_empty() {
                            *kept -= slot.kept();
                            cold.push(slot);
                        } else {
                            stay.push(slot);
                        }
                    }
                    *free = stay;
                }
                *trimming += pending.len() + cold.len();
                (pending, cold)
            };
            let mut ranges = Vec::new();
            for slot in &mut pending {
                ranges.append(&mut slot.discards);
            }
            for slot in &mut cold {
                ranges.append(&mut slot.discards);
                ranges.append(&mut slot.decommit());
            }
            let ok = discard(&ranges, pending.len() + cold.len());
            let refused = {
                let mut slots = shard.lock();
                slots.trimming -= pending.len() + cold.len();
                if ok && !self.closed.load(Ordering::Relaxed) {
                    slots.free.splice(0..0, cold);
                    slots.free.append(&mut pending);
                    Vec::new()
                } else {
                    // A closed list counts nothing any more.
                    let kept: usize = pending.iter().map(FreeSlot::kept).sum();
                    slots.kept = slots.kept.saturating_sub(kept);
                    pending.append(&mut cold);
                    pending
                }
            };
            drop(refused);
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
            tables_kept: 0,
        }
    }

    #[test]
    fn slots_warm_for_the_module_come_first_from_any_shard() {
        let (_handle, r) = region();
        let list = FreeList::new(3, usize::MAX);
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
        let list = FreeList::new(8, usize::MAX);
        list.deal([slot(&r, 0, 0)]);
        let taken = list.take(5).unwrap();
        assert!(list.put(slot(&r, taken.index, 5)).is_none());
        let list = &list;
        let stolen = std::thread::scope(|s| s.spawn(move || list.take(6).map(|s| s.index)).join().unwrap());
        assert_eq!(stolen, Some(0));
    }

    #[test]
    fn pending_memory_is_discarded_in_batches_in_the_background_when_large_or_when_a_slot_is_wanted() {
        use crate::sys::unix::mmap::{Mmap, PAGE_SIZE};
        let (_handle, r) = region();
        // The region's own list, which its trimmer serves; its one slot is put aside.
        let list = &r.free;
        let _own = list.take(99).unwrap();
        let big = LARGE_BATCH / PAGE_SIZE;
        let memory = Mmap::reserve((BATCH + big) * PAGE_SIZE).unwrap();
        memory.make_accessible(0, (BATCH + big) * PAGE_SIZE).unwrap();
        let page = |i: usize| memory.range_ptr(i * PAGE_SIZE, PAGE_SIZE);
        // SAFETY: `page(i)` is a readable, writable page of `memory`, which only this test uses.
        let byte = |i: usize| unsafe { std::ptr::read_volatile(page(i)) };
        let dirty = |i: usize, pages: usize| {
            for p in i..i + pages {
                // SAFETY: as above.
                unsafe { *page(p) = 7 };
            }
            FreeSlot { discards: vec![(page(i) as usize, pages * PAGE_SIZE)], ..slot(&r, i, 0) }
        };
        let eventually = |done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !done() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            done()
        };
        // Below a batch, pending slots keep their memory and are not free...
        for i in 0..BATCH - 1 {
            assert!(list.put(dirty(i, 1)).is_none());
        }
        assert_eq!(list.len(), BATCH - 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!((0..BATCH - 1).all(|i| byte(i) == 7));
        // ...until a slot is wanted: the whole shard's pending memory goes at once.
        let taken = list.take(0).unwrap();
        assert!(taken.discards.is_empty());
        assert!((0..BATCH - 1).all(|i| byte(i) == 0));
        // A full batch is discarded when it fills.
        for i in 0..BATCH {
            assert!(list.put(dirty(i, 1)).is_none());
        }
        assert!((0..BATCH).all(|i| byte(i) == 0));
        assert_eq!(list.len(), 2 * BATCH - 2);
        // A large one goes to the trimmer, which discards it and makes the slot free.
        assert!(list.put(dirty(BATCH, big)).is_none());
        assert!(eventually(&|| (BATCH..BATCH + big).all(|i| byte(i) == 0)), "a large discard stays pending");
        assert!(eventually(&|| list.shards.iter().all(|s| s.lock().pending.is_empty()) && list.len() == 2 * BATCH - 1));
        assert!(std::iter::from_fn(|| list.take(0)).all(|s| s.discards.is_empty()));
    }

    #[test]
    fn a_closed_list_drops_its_slots_and_refuses_returns() {
        let (_handle, r) = region();
        let list = FreeList::new(2, usize::MAX);
        list.deal((0..3).map(|i| slot(&r, i, 0)));
        let before = Arc::strong_count(&r);
        list.close();
        assert_eq!(Arc::strong_count(&r), before - 3);
        assert_eq!(list.len(), 0);
        assert!(list.put(slot(&r, 7, 0)).is_some());
        assert_eq!(list.len(), 0);
    }
}
