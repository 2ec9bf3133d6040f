//! Signal handlers and the interrupted machine context: the process-wide handlers for the
//! signals guest code can raise, each thread's alternate signal stack, and chaining to the
//! handlers that were there before. Which faults are guest traps, and what to do about them, is
//! the policy the caller passes to [`install`] (`traps/signals.rs`).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use super::mmap::{Mmap, PAGE_SIZE};

/// The signals a guest can raise: memory faults, illegal instructions (`ud2` traps), and
/// arithmetic faults (division).
const SIGNALS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE];

/// The handlers that were installed before Kiln's, indexed like `SIGNALS`.
static mut PREVIOUS: [MaybeUninit<libc::sigaction>; 4] = [const { MaybeUninit::uninit() }; 4];
static INSTALL: Once = Once::new();
/// The policy (a `Policy` as a `usize`), set before the handlers are installed.
static POLICY: AtomicUsize = AtomicUsize::new(0);

/// Size of the alternate signal stack Kiln gives each thread that runs guest code.
const ALT_STACK_SIZE: usize = 64 * 1024;

/// Decides what a fault means: returns `true` when it handled the fault (typically by moving
/// the context with [`Fault::resume_at`]), `false` to pass it to the previous handler. Runs in
/// a signal handler, so it must be async-signal-safe.
pub type Policy = fn(&mut Fault<'_>) -> bool;

/// A fault as the handler sees it: the signal, and the interrupted thread's registers.
pub struct Fault<'a> {
    signal: libc::c_int,
    info: &'a libc::siginfo_t,
    context: &'a mut libc::ucontext_t,
}

impl Fault<'_> {
    fn register(&self, register: libc::c_int) -> usize {
        self.context.uc_mcontext.gregs[register as usize] as usize
    }

    /// The faulting instruction's address.
    pub fn pc(&self) -> usize {
        self.register(libc::REG_RIP)
    }

    /// The frame pointer at the fault.
    pub fn fp(&self) -> usize {
        self.register(libc::REG_RBP)
    }

    /// The stack pointer at the fault.
    pub fn sp(&self) -> usize {
        self.register(libc::REG_RSP)
    }

    /// For a memory fault (`SIGSEGV`, `SIGBUS`), the address accessed.
    pub fn memory_address(&self) -> Option<usize> {
        if self.signal != libc::SIGSEGV && self.signal != libc::SIGBUS {
            return None;
        }
        // SAFETY: `si_addr` is defined for these two signals.
        Some(unsafe { self.info.si_addr() } as usize)
    }

    /// Makes the thread continue at `pc` with stack pointer `sp` when the handler returns.
    pub fn resume_at(&mut self, sp: usize, pc: usize) {
        self.context.uc_mcontext.gregs[libc::REG_RSP as usize] = sp as i64;
        self.context.uc_mcontext.gregs[libc::REG_RIP as usize] = pc as i64;
    }
}

/// Installs the process-wide handlers with `policy` (first call only: later calls keep the
/// first policy) and this thread's alternate signal stack (first call on each thread).
#[cold]
pub fn install(policy: Policy) {
    INSTALL.call_once(|| {
        POLICY.store(policy as usize, Ordering::Release);
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

/// The handler: asks the policy, and chains to the previous handler when it declines.
extern "C" fn handle_signal(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let policy = POLICY.load(Ordering::Acquire);
    if policy != 0 {
        // SAFETY: only `install` stores into POLICY, and it stores a `Policy`.
        let policy: Policy = unsafe { std::mem::transmute::<usize, Policy>(policy) };
        // SAFETY: the kernel passes a valid siginfo_t and ucontext_t to SA_SIGINFO handlers, for
        // the duration of the handler.
        let mut fault = unsafe { Fault { signal, info: &*info, context: &mut *(context as *mut libc::ucontext_t) } };
        if policy(&mut fault) {
            return;
        }
    }
    // SAFETY: forwarding to the previous handler with the arguments we were given.
    unsafe { chain(signal, info, context) }
}

/// Writes `message` to stderr with one `write` call (async-signal-safe).
pub fn write_stderr(message: &[u8]) {
    // SAFETY: writing a buffer we borrow to fd 2; `write` is async-signal-safe.
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
