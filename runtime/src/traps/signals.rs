//! Trap policy for faults: a fault at a guest trap site becomes that trap, and the thread
//! resumes at the trap landing of the context switch. The handlers themselves, the alternate
//! stacks and the machine context are `sys/unix/signals.rs`.

use crate::sys::unix::signals::{self, Fault};
use crate::traps::{current_activation, registry};

/// Installs the process-wide handlers (first call only) and this thread's alternate signal
/// stack (first call on each thread). Cheap after the first call on a thread.
#[inline]
pub fn ensure_installed() {
    thread_local! {
        static READY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !READY.with(|r| r.get()) {
        signals::install(on_fault);
        READY.with(|r| r.set(true));
    }
}

/// The policy. Async-signal-safe: reads a thread-local cell, searches the lock-free registry,
/// writes the activation's trap cell and the interrupted context.
fn on_fault(fault: &mut Fault<'_>) -> bool {
    let activation = current_activation();
    if activation.is_null() {
        return false;
    }
    let pc = fault.pc();
    if let Some(code) = registry::lookup(pc) {
        // SAFETY: the activation is live: its guest call is the code that just faulted.
        let activation = unsafe { &*activation };
        activation.trap_code.set(code as u8);
        activation.record_frames(pc, fault.fp(), fault.sp());
        fault.resume_at(activation.saved_sp.get(), crate::context::trap_landing_address());
        return true;
    }
    if fault.memory_address().is_some_and(|addr| addr.abs_diff(fault.sp()) < STACK_FAULT_DISTANCE) {
        // Host code (a host function or libcall) called from wasm runs on the guest stack and
        // ran past its reserve into the guard. It cannot become a trap (the host frames would
        // be abandoned without their destructors), so the process still dies, but with a
        // message that says why.
        signals::write_stderr(HOST_STACK_OVERFLOW);
    }
    false
}

/// A fault this close to the stack pointer is a stack overflow (pushes and calls write just
/// below it); other faults (null or wild pointers) land far away.
const STACK_FAULT_DISTANCE: usize = 64 * 1024;

const HOST_STACK_OVERFLOW: &[u8] =
    b"kiln: stack overflow in host code called from wasm: host functions and libcalls run on \
the guest stack, in the RegionConfig::host_stack_reserve bytes kept below the wasm stack limit\n";
