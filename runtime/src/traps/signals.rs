//! Signal handling: installed once per process, with an alternate signal stack installed once
//! per thread.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Once;

use crate::sys::unix::mmap::{Mmap, PAGE_SIZE};
use crate::traps::{current_activation, registry};

const SIGNALS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// The handlers that were installed before Kiln's, indexed like `SIGNALS`.
static mut PREVIOUS: [MaybeUninit<libc::sigaction>; 4] = [const { MaybeUninit::uninit() }; 4];
static INSTALL: Once = Once::new();

/// Size of the alternate signal stack Kiln gives each thread that runs guest code.
const ALT_STACK_SIZE: usize = 64 * 1024;

/// Installs the process-wide handlers (first call only) and this thread's alternate signal
/// stack (first call on each thread). Cheap after the first call on a thread.
#[inline]
pub fn ensure_installed() {
    thread_local! {
        static READY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !READY.with(|r| r.get()) {
        install();
        READY.with(|r| r.set(true));
    }
}

#[cold]
fn install() {
    INSTALL.call_once(|| {
        for (i, &signal) in SIGNALS.iter().enumerate() {
            // SAFETY: plain sigaction calls with a fully initialised action; PREVIOUS is written
            // only here, inside `call_once`, before the handler that reads it is installed.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handle_signal as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let previous = &raw mut PREVIOUS;
                let slot = (*previous)[i].as_mut_ptr();
                if libc::sigaction(signal, &action, slot) != 0 {
                    panic!("sigaction failed: {}", std::io::Error::last_os_error());
                }
            }
        }
    });
    ALT_STACK.with(|stack| {
        if stack.borrow().is_none() {
            *stack.borrow_mut() = Some(AltStack::install());
        }
    });
}

/// This thread's alternate signal stack, removed when the thread exits.
struct AltStack {
    /// `None` when the thread already had a large enough one.
    mapping: Option<Mmap>,
}

thread_local! {
    static ALT_STACK: RefCell<Option<AltStack>> = const { RefCell::new(None) };
}

impl AltStack {
    fn install() -> AltStack {
        // SAFETY: querying the current alternate stack writes only `old`.
        let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigaltstack(std::ptr::null(), &mut old) };
        if old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= ALT_STACK_SIZE {
            return AltStack { mapping: None };
        }
        // A guard page below the stack, so a handler overflow faults instead of corrupting.
        let mapping = Mmap::reserve(ALT_STACK_SIZE + PAGE_SIZE).expect("reserve alternate signal stack");
        mapping.make_accessible(PAGE_SIZE, ALT_STACK_SIZE).expect("map alternate signal stack");
        let new = libc::stack_t {
            // SAFETY: inside the mapping just made accessible.
            ss_sp: unsafe { mapping.as_ptr().add(PAGE_SIZE) }.cast(),
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        // SAFETY: `new` describes memory that stays mapped until this value is dropped, when
        // the alternate stack is disabled first.
        let rc = unsafe { libc::sigaltstack(&new, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaltstack failed: {}", std::io::Error::last_os_error());
        AltStack { mapping: Some(mapping) }
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if self.mapping.is_some() {
            let disable = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            // SAFETY: disabling this thread's alternate stack before its memory is unmapped.
            unsafe { libc::sigaltstack(&disable, std::ptr::null_mut()) };
        }
    }
}

/// The handler. Async-signal-safe: reads a thread-local cell, searches the lock-free registry,
/// writes the activation's trap cell and the interrupted context.
extern "C" fn handle_signal(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let activation = current_activation();
    if !activation.is_null() {
        // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers.
        let uc = unsafe { &mut *(context as *mut libc::ucontext_t) };
        let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        if let Some(code) = registry::lookup(pc) {
            // SAFETY: the activation is live: its guest call is the code that just faulted.
            let activation = unsafe { &*activation };
            activation.trap_code.set(code as u8);
            let fp = uc.uc_mcontext.gregs[libc::REG_RBP as usize] as usize;
            let sp = uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize;
            activation.record_frames(pc, fp, sp);
            uc.uc_mcontext.gregs[libc::REG_RSP as usize] = activation.saved_sp.get() as i64;
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = crate::context::trap_landing_address() as i64;
            return;
        }
        if signal == libc::SIGSEGV || signal == libc::SIGBUS {
            let sp = uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize;
            // SAFETY: the kernel passes a valid siginfo_t; si_addr is defined for these signals.
            let addr = unsafe { (*info).si_addr() } as usize;
            if addr.abs_diff(sp) < STACK_FAULT_DISTANCE {
                // Host code (a host function or libcall) called from wasm runs on the guest
                // stack and ran past its reserve into the guard. It cannot become a trap (the
                // host frames would be abandoned without their destructors), so the process
                // still dies, but with a message that says why.
                write_stderr(HOST_STACK_OVERFLOW);
            }
        }
    }
    // SAFETY: forwarding to the previous handler with the arguments we were given.
    unsafe { chain(signal, info, context) }
}

/// A fault this close to the stack pointer is a stack overflow (pushes and calls write just
/// below it); other faults (null or wild pointers) land far away.
const STACK_FAULT_DISTANCE: usize = 64 * 1024;

const HOST_STACK_OVERFLOW: &[u8] =
    b"kiln: stack overflow in host code called from wasm: host functions and libcalls run on \
the guest stack, in the RegionConfig::host_stack_reserve bytes kept below the wasm stack limit\n";

/// Writes `message` to stderr with one `write` call (async-signal-safe).
fn write_stderr(message: &[u8]) {
    // SAFETY: writing a static buffer to fd 2; `write` is async-signal-safe.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

/// Hands a fault that is not a guest trap to whoever handled it before Kiln.
///
/// # Safety
/// Must be called from the signal handler with its own arguments.
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(index) = SIGNALS.iter().position(|&s| s == signal) else { return };
    // SAFETY: PREVIOUS was fully written before our handler was installed.
    let previous =
        unsafe { (*(&raw const PREVIOUS).cast::<MaybeUninit<libc::sigaction>>().add(index)).assume_init_ref() };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default action and return: the faulting instruction runs again and the
        // process dies of the original signal, as it would have without Kiln.
        // SAFETY: resetting a signal's disposition is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        return;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered with SA_SIGINFO, so it has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: registered without SA_SIGINFO: the one-argument signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}
