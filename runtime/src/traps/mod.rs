//! Traps: how a fault in guest code becomes a trap for the caller (`crate::trap::Trap`).
//!
//! Each call into the guest pushes an [`Activation`] on a per-thread list. A fault (SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE) at a program counter listed in a loaded module's trap table is a guest
//! trap: the handler ([`signals`]) records the code in the activation and resumes the host at
//! the context switch's landing pad. Any other fault is passed to the handler that was
//! installed before Kiln's, so the host's own crashes still crash.

pub(crate) mod registry;
pub(crate) mod signals;

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::fmt;
use std::mem::MaybeUninit;

use kiln_abi::TrapCode;

/// The guest functions on the stack when a trap happened, innermost first. Its `Display`
/// lists them one per line, as `wasmtime` does: the frame's number, its offset in the module,
/// its function's name and index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmBacktrace {
    frames: Vec<Frame>,
    /// Frames beyond the ones kept (a deep recursion).
    more: usize,
}

/// One guest function on the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its wasm function index.
    pub func_index: u32,
    /// Its name in the module's `name` section, if it has one, demangled if a Rust or C++
    /// compiler mangled it. (A copy: threads that trap in the same function share nothing.)
    pub name: Option<String>,
    /// The offset in the WebAssembly module's bytes of the instruction the frame is at: the one
    /// that trapped, or the call that is still running. `None` for code no wasm instruction
    /// produced (a function's entry checks).
    pub module_offset: Option<u32>,
}

impl WasmBacktrace {
    /// No frames (a trap the host raised, or a host error).
    pub(crate) const EMPTY: WasmBacktrace = WasmBacktrace { frames: Vec::new(), more: 0 };

    /// The frames kept, innermost first.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// How many frames the trap had beyond [`Self::frames`].
    pub fn frames_omitted(&self) -> usize {
        self.more
    }
}

impl fmt::Display for WasmBacktrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, frame) in self.frames.iter().enumerate() {
            match frame.module_offset {
                Some(offset) => write!(f, "  {i:>4}: {:>8} - ", format!("{offset:#x}"))?,
                None => write!(f, "  {i:>4}: {:>8} - ", "?")?,
            }
            match &frame.name {
                Some(name) => writeln!(f, "{name} (wasm function {})", frame.func_index)?,
                None => writeln!(f, "wasm function {}", frame.func_index)?,
            }
        }
        if self.more > 0 {
            writeln!(f, "        ... {} more frames", self.more)?;
        }
        Ok(())
    }
}

/// Most frames a trap keeps (a deep recursion is cut, and the rest counted).
const MAX_FRAMES: usize = 100;

/// An error raised by a host function, carried out of the guest to the caller.
pub struct HostError(pub Box<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One call from the host into the guest, live while the guest runs on this thread.
pub(crate) struct Activation {
    /// Host stack pointer saved by the context switch; the trap path resumes there.
    pub saved_sp: Cell<usize>,
    /// Trap code recorded by the signal handler (0: none).
    pub trap_code: Cell<u8>,
    /// What host code raised on the guest's behalf before unwinding: the layer above's error
    /// (a host function's error or an exception that left the guest, as a `crate::trap::Trap`),
    /// boxed opaquely so this layer does not name it (and one pointer to initialise per call).
    raised: Cell<Option<Box<dyn Any>>>,
    /// The activation this one interrupted, if the guest called the host which called back in.
    pub previous: *const Activation,
    /// The top of the guest stack the call runs on: the frame walk stays below it.
    stack_top: usize,
    /// Program counters of the guest's frames at a trap, innermost first, written by the
    /// signal handler (which may not allocate); the first `frame_count` are set.
    frames: UnsafeCell<[MaybeUninit<usize>; MAX_FRAMES]>,
    frame_count: Cell<usize>,
    /// Frames walked beyond `MAX_FRAMES`.
    frames_omitted: Cell<usize>,
}

thread_local! {
    /// The innermost activation on this thread (null when no guest code is running). Read by
    /// the signal handler, so it must stay a plain `const`-initialised cell.
    static CURRENT: Cell<*const Activation> = const { Cell::new(std::ptr::null()) };
}

/// The innermost activation on this thread, or null.
#[inline]
pub(crate) fn current_activation() -> *const Activation {
    CURRENT.with(|c| c.get())
}

impl Activation {
    /// An activation for a call on the guest stack whose top is `stack_top`.
    #[inline]
    pub(crate) fn new(stack_top: usize) -> Activation {
        Activation {
            saved_sp: Cell::new(0),
            trap_code: Cell::new(0),
            raised: Cell::new(None),
            previous: current_activation(),
            stack_top,
            frames: UnsafeCell::new([const { MaybeUninit::uninit() }; MAX_FRAMES]),
            frame_count: Cell::new(0),
            frames_omitted: Cell::new(0),
        }
    }

    /// The frames on the frame-pointer chain from `fp` outwards, as `(fp, return address,
    /// caller's fp, the trap table of the module returned to)`, while the chain stays in this
    /// call's guest stack (between `sp` and its top) and returns into guest code. Every guest
    /// function keeps a frame pointer: `[fp]` is its caller's, `[fp + 8]` the address it
    /// returns to; the chain leaves the guest stack at the entry trampoline. Async-signal-safe
    /// (no allocation, no lock).
    fn guest_frames(
        &self,
        fp: usize,
        sp: usize,
    ) -> impl Iterator<Item = (usize, usize, usize, *mut registry::TrapTable)> + '_ {
        let mut next = Some(fp);
        std::iter::from_fn(move || {
            let fp = next.take()?;
            if fp < sp || !fp.is_multiple_of(8) || fp.checked_add(16).is_none_or(|end| end > self.stack_top) {
                return None;
            }
            // SAFETY: `fp .. fp + 16` lies in the guest stack of this call (checked above),
            // which is mapped and readable.
            let (caller_fp, return_address) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
            let table = registry::table_of(return_address)?;
            if caller_fp > fp {
                next = Some(caller_fp);
            }
            Some((fp, return_address, caller_fp, table))
        })
    }

    /// Records the guest's frames at a trap at `pc`, whose frame pointer was `fp` and stack
    /// pointer `sp`: `pc`, then the return address of each frame on the frame-pointer chain
    /// while it lies in guest code. Async-signal-safe, and it reads only this call's guest
    /// stack (see [`Self::guest_frames`]).
    pub(crate) fn record_frames(&self, pc: usize, fp: usize, sp: usize) {
        let frames = self.frames.get();
        let (mut kept, mut omitted) = (0, 0);
        let mut push = |pc: usize| {
            if kept < MAX_FRAMES {
                // SAFETY: in bounds; only the handler of this thread writes the buffer, while
                // the guest is stopped.
                unsafe { (*frames)[kept].write(pc) };
                kept += 1;
            } else {
                omitted += 1;
            }
        };
        push(pc);
        for (_, return_address, _, _) in self.guest_frames(fp, sp) {
            // The call instruction itself, so that a call at a function's end is not taken
            // for the next function.
            push(return_address - 1);
        }
        self.frame_count.set(kept);
        self.frames_omitted.set(omitted);
    }

    /// The handler for an exception thrown by the guest frame whose frame pointer is `fp`,
    /// its stack pointer being at least `sp`: the first return address on the frame-pointer
    /// chain (that frame's, then its callers') that has a handler, as `(handler, stack
    /// pointer, frame pointer)` to resume at. `None` if the chain leaves the guest code or this
    /// call's guest stack first.
    pub(crate) fn find_handler(&self, fp: usize, sp: usize) -> Option<(usize, usize, usize)> {
        for (fp, return_address, caller_fp, table) in self.guest_frames(fp, sp) {
            // SAFETY: the return address is in guest code of a call that has not returned, so
            // its module, which owns the table, is loaded.
            if let Some(handler) = unsafe { &*table }.handler(return_address) {
                // The handler's frame is the caller's, further out on this stack.
                let resume_sp = caller_fp.checked_sub(handler.frame_offset)?;
                let inside = resume_sp > fp && caller_fp < self.stack_top;
                return inside.then_some((handler.handler, resume_sp, caller_fp));
            }
        }
        None
    }

    /// Calls `visit` with every stack slot of this call's guest frames that holds a GC
    /// reference at the call in progress, innermost first: the guest frame whose frame pointer
    /// is `fp` called the runtime, with `sp` pointing at the return address its call pushed.
    /// A frame's slots are offsets from its stack pointer at the call, which is just above the
    /// return address: `sp + 8` for the innermost, the callee's frame pointer + 16 (saved frame
    /// pointer, return address) for the others. Compiled code reloads these slots after each
    /// call, so the collector may update them.
    ///
    /// # Safety
    /// `fp` and `sp` must be what the runtime's entry shim noted for the libcall in progress on
    /// this thread, for a call of this activation.
    pub(crate) unsafe fn visit_stack_references(&self, fp: usize, sp: usize, mut visit: impl FnMut(*mut u64)) {
        let stack_top = self.stack_top;
        let mut frame = |call_sp: usize, return_address: usize, table: *mut registry::TrapTable| {
            // SAFETY: the return address is in guest code of a call that has not returned, so
            // its module, which owns the table, is loaded.
            let Some(map) = (unsafe { &*table }).stack_map(return_address) else { return };
            for &slot in map.slots.iter() {
                let address = call_sp + slot as usize;
                // Only ever this call's guest stack.
                if address.checked_add(8).is_some_and(|end| end <= stack_top) {
                    visit(address as *mut u64);
                }
            }
        };
        if sp < fp && fp < self.stack_top {
            // SAFETY: `sp` points at the return address into the innermost guest frame, on this
            // call's guest stack (the caller's contract).
            let return_address = unsafe { *(sp as *const usize) };
            if let Some(table) = registry::table_of(return_address) {
                frame(sp + 8, return_address, table);
            }
        }
        for (callee_fp, return_address, _, table) in self.guest_frames(fp, sp) {
            frame(callee_fp + 16, return_address, table);
        }
    }

    /// The recorded frames as guest functions.
    pub(crate) fn backtrace(&self) -> WasmBacktrace {
        let frames = self.frames.get();
        let frames = (0..self.frame_count.get())
            .filter_map(|i| {
                // SAFETY: the first `frame_count` entries were written by `record_frames`.
                let pc = unsafe { (*frames)[i].assume_init() };
                // SAFETY: the call that trapped has not returned, so every module with code on
                // its stack is still loaded (its instances hold them).
                unsafe { registry::frame_at(pc) }
            })
            .collect();
        WasmBacktrace { frames, more: self.frames_omitted.get() }
    }

    /// Runs `f` with this activation installed as the thread's innermost one.
    #[inline]
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const Activation);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(self.previous);
        CURRENT.with(|c| c.set(self));
        f()
    }

    /// What host code raised while the guest ran, if it raised more than a code.
    pub(crate) fn take_raised(&self) -> Option<Box<dyn Any>> {
        self.raised.take()
    }

    /// The trap code the signal handler or host code recorded, if any.
    pub(crate) fn trapped_code(&self) -> Option<TrapCode> {
        TrapCode::from_u8(self.trap_code.get())
    }
}

/// What host code raises on the guest's behalf: a trap code, or the layer above's error value.
pub(crate) enum Raised {
    Code(TrapCode),
    Other(Box<dyn Any>),
}

/// Raises a trap from host code running on behalf of the guest (a libcall or host function):
/// records it in the innermost activation and abandons the guest frames.
///
/// # Safety
/// Must be called from code that the guest called (so an activation is live on this thread),
/// with no owned resources in any frame between here and the guest.
pub(crate) unsafe fn raise(raised: Raised) -> ! {
    let activation = current_activation();
    assert!(!activation.is_null(), "trap raised outside of guest code");
    // SAFETY: a live activation outlives the guest call it belongs to, which is running.
    let activation = unsafe { &*activation };
    match raised {
        Raised::Code(code) => activation.trap_code.set(code as u8),
        Raised::Other(other) => activation.raised.set(Some(other)),
    }
    let saved_sp = activation.saved_sp.get();
    // SAFETY: we are on the guest stack of this activation (caller's contract).
    unsafe { crate::context::unwind(saved_sp) }
}
