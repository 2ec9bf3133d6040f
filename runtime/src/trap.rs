//! [`Trap`], why a call into the guest did not return normally, and how host code raises one;
//! [`Exception`], an exception no guest caught.
//! The mechanism (activations, the trap registry, the signal handlers) is `traps`, which
//! carries a raised `Trap` without naming the type.

use std::sync::Arc;

use kiln_abi::{TrapCode, VMException, VMTagDefinition};

use crate::tag::Tag;
use crate::traps::{self, Activation, HostError, Raised, WasmBacktrace};
use crate::values::Val;
use crate::vm::exceptions::{payload_slot, TagOwner, Uncaught};
use crate::vm::store::{StoreInner, StoreRoot};

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

/// An exception no guest caught: how a call that threw ends ([`crate::Trap::Exception`]).
#[derive(Clone)]
pub struct Exception {
    /// The identity of the tag it was thrown with.
    tag: *const VMTagDefinition,
    /// The values it carries.
    payload: Vec<Val>,
    /// Keep the tag's definition alive, so its address is not reused by another tag while
    /// this value can be compared with one: the store's root (which keeps the pinned throwing
    /// instance) or the host tag's owner.
    _root: Option<Arc<StoreRoot>>,
    _tag_owner: Option<TagOwner>,
}

// SAFETY: `tag` is only compared, never dereferenced; the rest is Send and Sync.
unsafe impl Send for Exception {}
// SAFETY: as above.
unsafe impl Sync for Exception {}

impl std::fmt::Debug for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exception").field("payload", &self.payload).finish_non_exhaustive()
    }
}

impl Exception {
    /// Whether it was thrown with `tag`.
    pub fn is(&self, tag: &Tag) -> bool {
        std::ptr::eq(self.tag, tag.definition)
    }

    /// The values it carries (its tag's parameters).
    pub fn payload(&self) -> &[Val] {
        &self.payload
    }

    /// Reads exception object `exn` of `store` for the host.
    ///
    /// # Safety
    /// `exn` must be a live exception object of `store` whose payload the guest has written,
    /// and what its payload refers to must be alive: it is while the call that threw it runs,
    /// and after it, until anything else runs in the store.
    pub(crate) unsafe fn read(exn: *const VMException, store: &StoreInner) -> Exception {
        let (ty, tag_owner) = store.exceptions().tag_of(exn).unzip();
        let payload = ty
            .map(|ty| {
                ty.params
                    .iter()
                    .enumerate()
                    .map(|(i, &param)| {
                        // SAFETY: the object has one 16-byte slot per parameter after its head
                        // (caller's contract), holding a value of that type.
                        unsafe { Val::from_wasm(payload_slot(exn, i).read(), param, store) }
                    })
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: a live object (caller's contract).
        let tag = unsafe { (*exn).tag };
        Exception { tag, payload, _root: store.root(), _tag_owner: tag_owner.flatten() }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uncaught wasm exception")?;
        if !self.payload.is_empty() {
            let values: Vec<String> = self.payload.iter().map(Val::to_string).collect();
            write!(f, " carrying ({})", values.join(", "))?;
        }
        Ok(())
    }
}
