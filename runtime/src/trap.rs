//! [`Trap`], why a call into the guest did not return normally, and how host code raises one.
//! The mechanism (activations, the trap registry, the signal handlers) is `traps/`, which
//! carries a raised `Trap` without naming the type.

use kiln_abi::TrapCode;

use crate::exceptions::Exception;
use crate::traps::{self, Activation, HostError, Raised, WasmBacktrace};
use crate::vm::exceptions::Uncaught;
use crate::vm::store::StoreInner;

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

/// The trap recorded while the guest of `activation`, of `store`, ran. Called as soon as the
/// call ends, before anything else runs in the store.
pub(crate) fn take_trap(activation: &Activation, store: &StoreInner) -> Trap {
    if let Some(raised) = activation.take_raised() {
        let raised = match raised.downcast::<Trap>() {
            Ok(trap) => return *trap,
            Err(raised) => raised,
        };
        let Uncaught(exn) = *raised.downcast::<Uncaught>().expect("host code raises traps and uncaught exceptions");
        // SAFETY: the object of a throw of this call, still in the store's heap (see
        // `Uncaught`); what its payload refers to is as alive as when it was thrown, as nothing
        // ran in the store since.
        let exception = unsafe { Exception::read(exn, store) };
        // The host has its own copy now; unless the guest holds the exnref as a value, nothing
        // refers to the object any more.
        store.exceptions().drop_unescaped(exn);
        return Trap::Exception(exception);
    }
    match activation.trapped_code() {
        Some(code) => Trap::Wasm { code, trace: activation.backtrace() },
        None => Trap::Host(HostError("guest stopped without a recorded trap".into())),
    }
}
