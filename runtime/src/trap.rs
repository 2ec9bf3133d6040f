//! [`Trap`], why a call into the guest did not return normally, and how host code raises one.
//! The mechanism (activations, the trap registry, the signal handlers) is `traps/`, which
//! carries a raised `Trap` without naming the type.

use kiln_abi::TrapCode;

use crate::exceptions::Exception;
use crate::traps::{self, Activation, HostError, Raised, WasmBacktrace};

/// Why a call into the guest did not return normally.
#[derive(Debug, thiserror::Error)]
pub enum Trap {
    /// The guest executed a trapping instruction.
    #[error("{code}")]
    Wasm {
        /// Which trap.
        code: TrapCode,
        /// The guest's frames when it trapped.
        trace: WasmBacktrace,
    },
    /// A host function called by the guest failed.
    #[error("{0}")]
    Host(HostError),
    /// The guest threw an exception that no guest frame of the call caught.
    #[error("{0}")]
    Exception(Exception),
}

impl Trap {
    /// A wasm trap with no frames (one the host raises on the guest's behalf).
    pub fn wasm(code: TrapCode) -> Trap {
        Trap::Wasm { code, trace: WasmBacktrace::default() }
    }

    /// The trap code, if this is a wasm trap.
    pub fn code(&self) -> Option<TrapCode> {
        match self {
            Trap::Wasm { code, .. } => Some(*code),
            Trap::Host(_) | Trap::Exception(_) => None,
        }
    }

    /// The guest's frames when it trapped, innermost first (empty for host errors).
    pub fn backtrace(&self) -> &WasmBacktrace {
        static EMPTY: WasmBacktrace = WasmBacktrace::EMPTY;
        match self {
            Trap::Wasm { trace, .. } => trace,
            Trap::Host(_) | Trap::Exception(_) => &EMPTY,
        }
    }
}

/// Raises `trap` from host code running on behalf of the guest (a libcall or host function).
///
/// # Safety
/// As [`traps::raise`]: called from code the guest called, owning nothing on the frames
/// between here and the guest.
pub(crate) unsafe fn raise(trap: Trap) -> ! {
    let raised = match trap {
        Trap::Wasm { code, .. } => Raised::Code(code),
        other => Raised::Other(Box::new(other)),
    };
    // SAFETY: the caller's contract is `traps::raise`'s.
    unsafe { traps::raise(raised) }
}

/// The trap recorded while the guest of `activation` ran.
pub(crate) fn take_trap(activation: &Activation) -> Trap {
    if let Some(raised) = activation.take_raised() {
        return *raised.downcast::<Trap>().expect("host code raises only traps");
    }
    match activation.trapped_code() {
        Some(code) => Trap::Wasm { code, trace: activation.backtrace() },
        None => Trap::Host(HostError("guest stopped without a recorded trap".into())),
    }
}
