//! Traps: how a fault in guest code becomes a [`Trap`] for the caller.
//!
//! Each call into the guest pushes an [`Activation`] on a per-thread list. A fault (SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE) at a program counter listed in a loaded module's trap table is a guest
//! trap: the handler ([`signals`]) records the code in the activation and resumes the host at
//! the context switch's landing pad. Any other fault is passed to the handler that was
//! installed before Kiln's, so the host's own crashes still crash.

pub(crate) mod registry;
pub(crate) mod signals;

use std::cell::Cell;
use std::fmt;

use kiln_abi::TrapCode;

/// Why a call into the guest did not return normally.
#[derive(Debug, thiserror::Error)]
pub enum Trap {
    /// The guest executed a trapping instruction.
    #[error("{0}")]
    Wasm(TrapCode),
    /// A host function called by the guest failed.
    #[error("{0}")]
    Host(HostError),
}

impl Trap {
    /// The trap code, if this is a wasm trap.
    pub fn code(&self) -> Option<TrapCode> {
        match self {
            Trap::Wasm(code) => Some(*code),
            Trap::Host(_) => None,
        }
    }
}

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
    /// Error recorded by a host function before unwinding.
    pub host_error: Cell<Option<HostError>>,
    /// The activation this one interrupted, if the guest called the host which called back in.
    pub previous: *const Activation,
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
    #[inline]
    pub(crate) fn new() -> Activation {
        Activation {
            saved_sp: Cell::new(0),
            trap_code: Cell::new(0),
            host_error: Cell::new(None),
            previous: current_activation(),
        }
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

    /// The trap recorded while the guest ran.
    pub(crate) fn take_trap(&self) -> Trap {
        if let Some(err) = self.host_error.take() {
            return Trap::Host(err);
        }
        match TrapCode::from_u8(self.trap_code.get()) {
            Some(code) => Trap::Wasm(code),
            None => Trap::Host(HostError("guest stopped without a recorded trap".into())),
        }
    }
}

/// Raises a trap from host code running on behalf of the guest (a libcall or host function):
/// records it in the innermost activation and abandons the guest frames.
///
/// # Safety
/// Must be called from code that the guest called (so an activation is live on this thread),
/// with no owned resources in any frame between here and the guest.
pub(crate) unsafe fn raise(trap: Trap) -> ! {
    let activation = current_activation();
    assert!(!activation.is_null(), "trap raised outside of guest code");
    // SAFETY: a live activation outlives the guest call it belongs to, which is running.
    let activation = unsafe { &*activation };
    match trap {
        Trap::Wasm(code) => activation.trap_code.set(code as u8),
        Trap::Host(err) => activation.host_error.set(Some(err)),
    }
    let saved_sp = activation.saved_sp.get();
    // SAFETY: we are on the guest stack of this activation (caller's contract).
    unsafe { crate::context::unwind(saved_sp) }
}
