//! The context switch between the host and the guest stack.
//!
//! `kiln_context_enter(frame)` saves the host's callee-saved registers on the host stack,
//! records the host stack pointer in `frame.saved_sp`, switches to the guest stack and calls the
//! array trampoline with `(callee_vmctx, caller_vmctx, values, code)`. A normal return comes
//! back here and yields 0. A trap resumes at `kiln_context_trap_landing` with the saved stack
//! pointer (the signal handler edits the interrupted context; host code calls [`unwind`]),
//! which restores the registers and yields 1. No system call happens on either path.

use std::arch::global_asm;
use std::cell::Cell;
use std::mem::offset_of;

/// What `kiln_context_enter` needs; the assembly reads it through the offsets below.
#[repr(C)]
struct EntryFrame {
    trampoline: *const u8,
    callee_vmctx: *mut u8,
    caller_vmctx: *mut u8,
    values: *mut u128,
    code: *const u8,
    stack_top: *mut u8,
    saved_sp: *const Cell<usize>,
}

global_asm!(
    ".text",
    ".p2align 4",
    ".globl kiln_context_enter",
    // Hidden: called directly, not through the GOT.
    ".hidden kiln_context_enter",
    ".type kiln_context_enter,@function",
    "kiln_context_enter:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8", // keeps the saved stack pointer 16-byte aligned
    "mov r12, rdi",
    "mov rax, [r12 + {saved_sp}]",
    "mov [rax], rsp",
    "mov rax, [r12 + {trampoline}]",
    "mov rdi, [r12 + {callee}]",
    "mov rsi, [r12 + {caller}]",
    "mov rdx, [r12 + {values}]",
    "mov rcx, [r12 + {code}]",
    "mov rsp, [r12 + {stack_top}]",
    "call rax",
    "mov rax, [r12 + {saved_sp}]",
    "mov rsp, [rax]",
    "xor eax, eax",
    "jmp kiln_context_exit",
    ".globl kiln_context_trap_landing",
    ".hidden kiln_context_trap_landing",
    "kiln_context_trap_landing:",
    "mov eax, 1",
    ".globl kiln_context_exit",
    ".hidden kiln_context_exit",
    "kiln_context_exit:",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size kiln_context_enter, .-kiln_context_enter",
    "",
    // The direct variant: calls the wasm function itself (no array trampoline) with up to
    // four integer arguments in registers, and stores its integer result (rax).
    ".p2align 4",
    ".globl kiln_context_enter_direct",
    ".hidden kiln_context_enter_direct",
    ".type kiln_context_enter_direct,@function",
    "kiln_context_enter_direct:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov r12, rdi",
    "mov rax, [r12 + {d_saved_sp}]",
    "mov [rax], rsp",
    "mov rax, [r12 + {d_code}]",
    "mov rdi, [r12 + {d_callee}]",
    "mov rsi, [r12 + {d_caller}]",
    "mov rdx, [r12 + {d_args}]",
    "mov rcx, [r12 + {d_args} + 8]",
    "mov r8, [r12 + {d_args} + 16]",
    "mov r9, [r12 + {d_args} + 24]",
    "mov rsp, [r12 + {d_stack_top}]",
    "call rax",
    "mov [r12 + {d_result}], rax",
    "mov rax, [r12 + {d_saved_sp}]",
    "mov rsp, [rax]",
    "xor eax, eax",
    "jmp kiln_context_exit",
    ".size kiln_context_enter_direct, .-kiln_context_enter_direct",
    "",
    ".p2align 4",
    ".globl kiln_context_unwind",
    ".hidden kiln_context_unwind",
    ".type kiln_context_unwind,@function",
    // rdi: the saved host stack pointer.
    "kiln_context_unwind:",
    "mov rsp, rdi",
    "jmp kiln_context_trap_landing",
    ".size kiln_context_unwind, .-kiln_context_unwind",
    trampoline = const offset_of!(EntryFrame, trampoline),
    callee = const offset_of!(EntryFrame, callee_vmctx),
    caller = const offset_of!(EntryFrame, caller_vmctx),
    values = const offset_of!(EntryFrame, values),
    code = const offset_of!(EntryFrame, code),
    stack_top = const offset_of!(EntryFrame, stack_top),
    saved_sp = const offset_of!(EntryFrame, saved_sp),
    d_code = const offset_of!(DirectFrame, code),
    d_callee = const offset_of!(DirectFrame, callee_vmctx),
    d_caller = const offset_of!(DirectFrame, caller_vmctx),
    d_args = const offset_of!(DirectFrame, args),
    d_stack_top = const offset_of!(DirectFrame, stack_top),
    d_saved_sp = const offset_of!(DirectFrame, saved_sp),
    d_result = const offset_of!(DirectFrame, result),
);

/// What `kiln_context_enter_direct` needs.
#[repr(C)]
struct DirectFrame {
    code: *const u8,
    callee_vmctx: *mut u8,
    caller_vmctx: *mut u8,
    args: [u64; 4],
    stack_top: *mut u8,
    saved_sp: *const Cell<usize>,
    result: u64,
}

extern "C" {
    fn kiln_context_enter(frame: *const EntryFrame) -> u32;
    fn kiln_context_enter_direct(frame: *mut DirectFrame) -> u32;
    fn kiln_context_trap_landing();
    fn kiln_context_unwind(saved_sp: usize) -> !;
}

/// The whole body of a naked entry shim through which guest code calls runtime code (libcalls,
/// host functions): notes the calling guest frame's frame pointer, and its stack pointer at
/// the call (where the return address lies), in the store's runtime limits, read through the
/// VM context in register `$vmctx`, then jumps to `$target` with the stack and every argument
/// register as it found them. Rust code keeps no frame-pointer chain, so a trap's backtrace and
/// an exception's unwinding start at the noted frame. r11 is a scratch register of the C
/// convention, never an argument.
macro_rules! note_guest_frame_then_jump {
    ($vmctx:literal, $target:path) => {
        core::arch::naked_asm!(
            concat!("mov r11, qword ptr [", $vmctx, " + {limits}]"),
            "mov qword ptr [r11 + {fp}], rbp",
            "mov qword ptr [r11 + {sp}], rsp",
            "jmp {target}",
            limits = const kiln_abi::VMContextHeader::RUNTIME_LIMITS_OFFSET,
            fp = const kiln_abi::VMRuntimeLimits::LAST_LIBCALL_FP_OFFSET,
            sp = const kiln_abi::VMRuntimeLimits::LAST_LIBCALL_SP_OFFSET,
            target = sym $target,
        )
    };
}
pub(crate) use note_guest_frame_then_jump;

/// Where a trapped guest resumes: the signal handler points the interrupted context here.
pub fn trap_landing_address() -> usize {
    kiln_context_trap_landing as *const () as usize
}

/// Runs `trampoline(callee_vmctx, caller_vmctx, values, code)` on the guest stack. Returns
/// `true` if it returned normally, `false` if it trapped.
///
/// # Safety
/// `trampoline` must be an array trampoline matching `code`'s type, `values` must hold enough
/// slots for its parameters and results, `stack_top` must be the 16-byte-aligned top of an
/// unused, mapped stack, and `saved_sp` must stay valid until this returns (the trap path reads
/// it).
#[allow(clippy::too_many_arguments, reason = "mirrors the trampoline's parameters")]
#[inline]
pub unsafe fn enter(
    trampoline: *const u8,
    callee_vmctx: *mut u8,
    caller_vmctx: *mut u8,
    values: *mut u128,
    code: *const u8,
    stack_top: *mut u8,
    saved_sp: *const Cell<usize>,
) -> bool {
    debug_assert_eq!(stack_top as usize % 16, 0);
    let frame = EntryFrame { trampoline, callee_vmctx, caller_vmctx, values, code, stack_top, saved_sp };
    // SAFETY: forwarded from the caller's contract; `frame` lives on this stack frame for the
    // whole call. `Cell<usize>` has the layout of `usize`, which the assembly writes.
    unsafe { kiln_context_enter(&frame) == 0 }
}

/// Calls the wasm function `code` directly on the guest stack with `(callee_vmctx,
/// caller_vmctx, args...)` and returns its first integer result (`None` if it trapped).
///
/// # Safety
/// `code` must be a wasm function (`tail` convention) whose parameters after the two VM
/// contexts are at most four integers and whose results are none or one integer; the rest as
/// for [`enter`].
#[inline]
pub unsafe fn enter_direct(
    code: *const u8,
    callee_vmctx: *mut u8,
    caller_vmctx: *mut u8,
    args: [u64; 4],
    stack_top: *mut u8,
    saved_sp: *const Cell<usize>,
) -> Option<u64> {
    let mut frame = DirectFrame { code, callee_vmctx, caller_vmctx, args, stack_top, saved_sp, result: 0 };
    // SAFETY: forwarded from the caller's contract; `frame` outlives the call.
    let trapped = unsafe { kiln_context_enter_direct(&mut frame) } != 0;
    (!trapped).then_some(frame.result)
}

/// Resumes guest code at an exception handler: `handler` runs with the frame pointer `fp`, the
/// stack pointer `sp` and the exnref in `rax`, as Cranelift's exception ABI expects (every
/// other register is dead at a handler).
///
/// # Safety
/// `(handler, sp, fp)` must come from the handler table entry of a call on the current
/// activation's guest stack whose frame is still live, and no frame between here and that one
/// may own resources (they are abandoned without running destructors).
pub unsafe fn resume_at_handler(handler: usize, sp: usize, fp: usize, exn: usize) -> ! {
    // SAFETY: forwarded from the caller's contract. The sequence switches to the handler's
    // frame and never comes back.
    unsafe {
        std::arch::asm!(
            "mov rsp, {sp}",
            "mov rbp, {fp}",
            "jmp {handler}",
            sp = in(reg) sp,
            fp = in(reg) fp,
            handler = in(reg) handler,
            in("rax") exn,
            options(noreturn),
        )
    }
}

/// Abandons the guest frames and returns `false` from the [`enter`] that saved `saved_sp`.
///
/// # Safety
/// Must be called on the guest stack of a live activation whose saved stack pointer is
/// `saved_sp`, and no frame between here and that activation may own resources (they are
/// dropped without running destructors).
pub unsafe fn unwind(saved_sp: usize) -> ! {
    // SAFETY: forwarded from the caller's contract.
    unsafe { kiln_context_unwind(saved_sp) }
}
