//! The code registry: which address ranges hold guest code, and their trap tables.
//!
//! The signal handler reads it, so lookups take no lock and allocate nothing: a fixed array of
//! slots whose fields are atomics. Each slot is a sequence lock: a writer makes the sequence
//! odd, writes the range and table, then makes it even again; a reader that sees an odd
//! sequence, or a different one after reading, ignores the slot. So the handler never uses a
//! range of one module with the table of another (a *torn* entry), even while other threads
//! load and unload modules. A trap table is only dereferenced for a program counter inside its
//! module's code, which means that module is running and cannot be unloading.

use std::sync::atomic::{fence, AtomicPtr, AtomicUsize, Ordering};

use kiln_abi::TrapCode;

/// A module's trap sites as absolute addresses, sorted, and its functions (for backtraces).
pub(crate) struct TrapTable {
    /// Sorted program counters.
    pub pcs: Vec<usize>,
    /// The code for each entry of `pcs`.
    pub codes: Vec<TrapCode>,
    /// The wasm offset for each entry of `pcs` (`kiln_abi::NO_WASM_OFFSET`: none).
    pub wasm_offsets: Vec<u32>,
    /// The module's calls as `(return address, wasm offset)`, sorted.
    pub calls: Vec<(usize, u32)>,
    /// The module's defined functions, sorted by address.
    pub functions: Vec<FunctionRange>,
    /// The module's calls that have an exception handler, sorted by return address.
    pub handlers: Vec<HandlerEntry>,
    /// The module's calls at which GC references are live, sorted by return address.
    pub stack_maps: Vec<StackMapEntry>,
}

/// The stack slots holding GC references at one call (absolute return address).
pub(crate) struct StackMapEntry {
    /// The call's return address.
    pub return_address: usize,
    /// Offsets of the slots from the calling frame's stack pointer at the call.
    pub slots: Box<[u32]>,
}

/// A call whose exceptions go to a handler of the calling function (absolute addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HandlerEntry {
    /// The call's return address.
    pub return_address: usize,
    /// Where the handler starts.
    pub handler: usize,
    /// The calling frame's stack pointer is its frame pointer minus this.
    pub frame_offset: usize,
}

/// Where one function's code lies, and what it is called.
pub(crate) struct FunctionRange {
    pub start: usize,
    pub end: usize,
    /// Its wasm function index.
    pub index: u32,
    /// Its name in the module's `name` section, if any.
    pub name: Option<Box<str>>,
}

impl TrapTable {
    /// Binary search for `pc`.
    pub fn lookup(&self, pc: usize) -> Option<TrapCode> {
        self.pcs.binary_search(&pc).ok().map(|i| self.codes[i])
    }

    /// The handler of the call returning to `return_address`.
    pub fn handler(&self, return_address: usize) -> Option<HandlerEntry> {
        let i = self.handlers.binary_search_by_key(&return_address, |h| h.return_address).ok()?;
        Some(self.handlers[i])
    }

    /// The stack map of the call returning to `return_address`, if references are live there.
    pub fn stack_map(&self, return_address: usize) -> Option<&StackMapEntry> {
        let i = self.stack_maps.binary_search_by_key(&return_address, |m| m.return_address).ok()?;
        Some(&self.stack_maps[i])
    }

    /// The offset in the WebAssembly module of the instruction a backtrace frame is at: `pc` is
    /// a trap site, or the last byte of a call (its return address minus one; never the
    /// start of an instruction, so never a trap site).
    pub fn wasm_offset(&self, pc: usize) -> Option<u32> {
        let offset = match self.pcs.binary_search(&pc) {
            Ok(i) => self.wasm_offsets[i],
            Err(_) => {
                let return_address = pc.checked_add(1)?;
                let i = self.calls.binary_search_by_key(&return_address, |c| c.0).ok()?;
                self.calls[i].1
            }
        };
        (offset != kiln_abi::NO_WASM_OFFSET).then_some(offset)
    }

    /// The function whose code holds `pc`.
    pub fn function(&self, pc: usize) -> Option<&FunctionRange> {
        let i = self.functions.partition_point(|f| f.start <= pc).checked_sub(1)?;
        let function = &self.functions[i];
        (pc < function.end).then_some(function)
    }
}

const MAX_MODULES: usize = 4096;

struct Slot {
    /// Even: stable; odd: being written. Claimed slots hold a non-zero `owner` too.
    sequence: AtomicUsize,
    /// Non-zero while a registration owns the slot (claimed with a compare-and-swap).
    claimed: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    table: AtomicPtr<TrapTable>,
}

#[allow(clippy::declare_interior_mutable_const, reason = "used only to initialise the array")]
const EMPTY: Slot = Slot {
    sequence: AtomicUsize::new(0),
    claimed: AtomicUsize::new(0),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    table: AtomicPtr::new(std::ptr::null_mut()),
};

static SLOTS: [Slot; MAX_MODULES] = [EMPTY; MAX_MODULES];
/// One past the highest slot ever used, to bound the scan.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

impl Slot {
    /// Publishes `(start, end, table)` (the slot must be claimed by the caller).
    fn publish(&self, start: usize, end: usize, table: *mut TrapTable) {
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.table.store(table, Ordering::Relaxed);
        self.sequence.store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// A consistent `(start, end, table)`, or `None` while it is being written.
    fn read(&self) -> Option<(usize, usize, *mut TrapTable)> {
        let before = self.sequence.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let entry =
            (self.start.load(Ordering::Relaxed), self.end.load(Ordering::Relaxed), self.table.load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        (self.sequence.load(Ordering::Relaxed) == before).then_some(entry)
    }
}

/// A registration, removed on drop.
pub(crate) struct Registration {
    index: usize,
}

/// Registers code at `[start, end)` with its trap table; `None` if every slot is taken.
///
/// # Safety
/// `table` must stay alive, unmoved and unchanged until the returned registration is dropped,
/// and the registration must be dropped (not forgotten) before the table is: the signal
/// handler reads the table through the registry.
pub(crate) unsafe fn register(start: usize, end: usize, table: &TrapTable) -> Option<Registration> {
    for (index, slot) in SLOTS.iter().enumerate() {
        if slot.claimed.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            slot.publish(start, end, table as *const _ as *mut _);
            HIGH_WATER.fetch_max(index + 1, Ordering::AcqRel);
            return Some(Registration { index });
        }
    }
    None
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = &SLOTS[self.index];
        slot.publish(0, 0, std::ptr::null_mut());
        slot.claimed.store(0, Ordering::Release);
    }
}

/// The trap table of the registered module whose code holds `pc` (`None`: `pc` is not guest
/// code). Async-signal-safe: no locks, no allocation. The table may only be dereferenced while
/// that module stays loaded (for example, `pc` is running or a return address of a call that
/// has not returned).
pub(crate) fn table_of(pc: usize) -> Option<*mut TrapTable> {
    let high = HIGH_WATER.load(Ordering::Acquire);
    for slot in &SLOTS[..high] {
        let Some((start, end, table)) = slot.read() else { continue };
        if start <= pc && pc < end && !table.is_null() {
            return Some(table);
        }
    }
    None
}

/// The trap code of the instruction at `pc`, if it is a trap site of registered guest code.
/// Async-signal-safe: no locks, no allocation.
pub(crate) fn lookup(pc: usize) -> Option<TrapCode> {
    // SAFETY: `pc` is inside this module's code and the faulting thread is executing it, so
    // the module (which owns the table) is alive; the sequence check in `table_of` guarantees
    // the table belongs to this range.
    table_of(pc).and_then(|table| unsafe { &*table }.lookup(pc))
}

/// The backtrace frame of the guest function whose code holds `pc` (a trap site, or a return
/// address minus one).
///
/// # Safety
/// The module holding `pc` must stay loaded during the call: `pc` is a return address or trap
/// site on a guest stack whose call has not returned yet (its instances keep their modules).
pub(crate) unsafe fn frame_at(pc: usize) -> Option<super::Frame> {
    // SAFETY: the module is alive (caller's contract), and so is its table.
    let table = unsafe { &*table_of(pc)? };
    let function = table.function(pc)?;
    Some(super::Frame {
        func_index: function.index,
        name: function.name.as_deref().map(String::from),
        module_offset: table.wasm_offset(pc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_found_and_removed() {
        let table = TrapTable {
            pcs: vec![0x1010, 0x1020],
            codes: vec![TrapCode::UnreachableCodeReached, TrapCode::HeapOutOfBounds],
            wasm_offsets: vec![0x41, kiln_abi::NO_WASM_OFFSET],
            calls: vec![(0x1030, 0x52)],
            functions: vec![FunctionRange { start: 0x1000, end: 0x1080, index: 3, name: Some("f".into()) }],
            handlers: vec![HandlerEntry { return_address: 0x1030, handler: 0x1060, frame_offset: 32 }],
            stack_maps: Vec::new(),
        };
        // SAFETY: `table` outlives the registration, dropped below.
        let registration = unsafe { register(0x1000, 0x1100, &table) }.unwrap();
        assert_eq!(lookup(0x1020), Some(TrapCode::HeapOutOfBounds));
        assert_eq!(lookup(0x1011), None);
        // SAFETY: the table is alive.
        assert_eq!(unsafe { frame_at(0x107f) }.map(|f| f.func_index), Some(3));
        // SAFETY: as above.
        assert!(unsafe { frame_at(0x1080) }.is_none() && table_of(0x1080).is_some());
        // A trap site, a trap site without an offset, the last byte of a call, anything else.
        // SAFETY: as above.
        let offsets = [0x1010, 0x1020, 0x102f, 0x1030].map(|pc| unsafe { frame_at(pc) }.unwrap().module_offset);
        assert_eq!(offsets, [Some(0x41), None, Some(0x52), None]);
        // SAFETY: as above.
        let found = unsafe { &*table_of(0x1030).unwrap() };
        assert_eq!(found.handler(0x1030).map(|h| h.handler), Some(0x1060));
        assert!(found.handler(0x1031).is_none());
        drop(registration);
        assert_eq!(lookup(0x1020), None);
    }

    #[test]
    fn concurrent_registration_never_shows_a_torn_entry() {
        // One thread registers and unregisters two modules whose ranges and tables differ;
        // readers must only ever see each module's own code for its range.
        let a = TrapTable {
            pcs: vec![0x7000_0010],
            codes: vec![TrapCode::IntegerOverflow],
            wasm_offsets: vec![0],
            calls: Vec::new(),
            functions: Vec::new(),
            handlers: Vec::new(),
            stack_maps: Vec::new(),
        };
        let b = TrapTable {
            pcs: vec![0x7000_0010],
            codes: vec![TrapCode::StackOverflow],
            wasm_offsets: vec![0],
            calls: Vec::new(),
            functions: Vec::new(),
            handlers: Vec::new(),
            stack_maps: Vec::new(),
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..20_000 {
                    // SAFETY: both tables outlive the scope; each registration is dropped at
                    // the end of its statement.
                    drop(unsafe { register(0x7000_0000, 0x7000_0100, &a) });
                    // SAFETY: as above.
                    drop(unsafe { register(0x7100_0000, 0x7100_0100, &b) });
                }
                stop.store(true, Ordering::Release);
            });
            while !stop.load(Ordering::Acquire) {
                // A pc in a's range must never come back with b's code.
                assert_ne!(lookup(0x7000_0010), Some(TrapCode::StackOverflow));
            }
        });
    }
}
