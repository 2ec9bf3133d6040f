//! The code registry: which address ranges hold guest code, and their trap tables.
//!
//! The signal handler reads it, so lookups take no lock and allocate nothing: a fixed array of
//! slots whose fields are atomics. A module registers when it loads and unregisters before it
//! unloads; a trap table is only read for a program counter inside the module's code, which
//! means that module is running and cannot be unloading.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use kiln_abi::TrapCode;

/// A module's trap sites as absolute addresses, sorted.
pub struct TrapTable {
    /// Sorted program counters.
    pub pcs: Vec<usize>,
    /// The code for each entry of `pcs`.
    pub codes: Vec<TrapCode>,
}

impl TrapTable {
    /// Binary search for `pc`.
    pub fn lookup(&self, pc: usize) -> Option<TrapCode> {
        self.pcs.binary_search(&pc).ok().map(|i| self.codes[i])
    }
}

const MAX_MODULES: usize = 4096;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    table: AtomicPtr<TrapTable>,
}

#[allow(clippy::declare_interior_mutable_const, reason = "used only to initialise the array")]
const EMPTY: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    table: AtomicPtr::new(std::ptr::null_mut()),
};

static SLOTS: [Slot; MAX_MODULES] = [EMPTY; MAX_MODULES];
/// One past the highest slot ever used, to bound the scan.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// A registration, removed on drop.
pub struct Registration {
    index: usize,
}

/// Registers code at `[start, end)` with its trap table. The table must outlive the
/// registration.
pub fn register(start: usize, end: usize, table: &TrapTable) -> Option<Registration> {
    for (index, slot) in SLOTS.iter().enumerate() {
        if slot
            .table
            .compare_exchange(std::ptr::null_mut(), table as *const _ as *mut _, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.start.store(start, Ordering::Release);
            slot.end.store(end, Ordering::Release);
            HIGH_WATER.fetch_max(index + 1, Ordering::AcqRel);
            return Some(Registration { index });
        }
    }
    None
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = &SLOTS[self.index];
        slot.start.store(0, Ordering::Release);
        slot.end.store(0, Ordering::Release);
        slot.table.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// The trap code of the instruction at `pc`, if it is a trap site of registered guest code.
/// Async-signal-safe: no locks, no allocation.
pub fn lookup(pc: usize) -> Option<TrapCode> {
    let high = HIGH_WATER.load(Ordering::Acquire);
    for slot in &SLOTS[..high] {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Acquire);
        if start <= pc && pc < end {
            let table = slot.table.load(Ordering::Acquire);
            if table.is_null() {
                continue;
            }
            // SAFETY: `pc` is inside this module's code and the faulting thread is executing
            // it, so the module (which owns the table) is alive.
            return unsafe { &*table }.lookup(pc);
        }
    }
    None
}

/// Whether `pc` lies in registered guest code.
pub fn is_guest_code(pc: usize) -> bool {
    let high = HIGH_WATER.load(Ordering::Acquire);
    SLOTS[..high].iter().any(|slot| {
        slot.start.load(Ordering::Acquire) <= pc && pc < slot.end.load(Ordering::Acquire)
    })
}
