//! The `wasi_snapshot_preview1` function table: each name's core wasm signature and body, and
//! the glue that turns a body into a Kiln host function. Also the small functions that touch
//! no files: arguments, environment, clocks, randomness, process control and sockets.

use std::sync::{Arc, Mutex};

use kiln_runtime::{Caller, Func, FuncType, GuestBytes, HostError, Val, ValType, Waiter};

use crate::memory::GuestMemory;
use crate::table::Handle;
use crate::types::{clockid, filetype, rights, Errno, WasiResult, SDFLAGS_ALL};
use crate::{fs, poll, Exit, Signal, WasiCtx};

/// How a body fails: with an errno for the guest, or by trapping.
pub(crate) enum Fail {
    Errno(Errno),
    Trap(HostError),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Fail {
        Fail::Errno(e)
    }
}

/// The arguments of one call, as the unsigned values preview1 means, and how to wait in it.
pub(crate) struct Args<'a> {
    pub values: &'a [Val],
    /// Wakes a wait when the store is interrupted (`None` in host-side tests: no store).
    pub waiter: Option<&'a Waiter>,
}

impl Args<'_> {
    pub fn u32(&self, i: usize) -> u32 {
        match self.values[i] {
            Val::I32(v) => v as u32,
            Val::I64(v) => v as u32,
            _ => 0,
        }
    }

    pub fn u64(&self, i: usize) -> u64 {
        match self.values[i] {
            Val::I64(v) => v as u64,
            Val::I32(v) => v as u32 as u64,
            _ => 0,
        }
    }
}

/// A body: runs with the context locked and the caller's memory.
pub(crate) type Body = fn(&mut WasiCtx, &mut GuestMemory<'_>, &Args<'_>) -> Result<(), Fail>;

/// Name, parameters (`i` = i32, `I` = i64), body. Every function returns an `errno` (i32)
/// except `proc_exit`, which returns nothing.
pub(crate) const FUNCS: &[(&str, &str, Body)] = &[
    ("args_get", "ii", args_get),
    ("args_sizes_get", "ii", args_sizes_get),
    ("environ_get", "ii", environ_get),
    ("environ_sizes_get", "ii", environ_sizes_get),
    ("clock_res_get", "ii", clock_res_get),
    ("clock_time_get", "iIi", clock_time_get),
    ("fd_advise", "iIIi", fs::fd_advise),
    ("fd_allocate", "iII", fs::fd_allocate),
    ("fd_close", "i", fs::fd_close),
    ("fd_datasync", "i", fs::fd_datasync),
    ("fd_fdstat_get", "ii", fs::fd_fdstat_get),
    ("fd_fdstat_set_flags", "ii", fs::fd_fdstat_set_flags),
    ("fd_fdstat_set_rights", "iII", fs::fd_fdstat_set_rights),
    ("fd_filestat_get", "ii", fs::fd_filestat_get),
    ("fd_filestat_set_size", "iI", fs::fd_filestat_set_size),
    ("fd_filestat_set_times", "iIIi", fs::fd_filestat_set_times),
    ("fd_pread", "iiiIi", fs::fd_pread),
    ("fd_prestat_get", "ii", fs::fd_prestat_get),
    ("fd_prestat_dir_name", "iii", fs::fd_prestat_dir_name),
    ("fd_pwrite", "iiiIi", fs::fd_pwrite),
    ("fd_read", "iiii", fs::fd_read),
    ("fd_readdir", "iiiIi", fs::fd_readdir),
    ("fd_renumber", "ii", fs::fd_renumber),
    ("fd_seek", "iIii", fs::fd_seek),
    ("fd_sync", "i", fs::fd_sync),
    ("fd_tell", "ii", fs::fd_tell),
    ("fd_write", "iiii", fs::fd_write),
    ("path_create_directory", "iii", fs::path_create_directory),
    ("path_filestat_get", "iiiii", fs::path_filestat_get),
    ("path_filestat_set_times", "iiiiIIi", fs::path_filestat_set_times),
    ("path_link", "iiiiiii", fs::path_link),
    ("path_open", "iiiiiIIii", fs::path_open),
    ("path_readlink", "iiiiii", fs::path_readlink),
    ("path_remove_directory", "iii", fs::path_remove_directory),
    ("path_rename", "iiiiii", fs::path_rename),
    ("path_symlink", "iiiii", fs::path_symlink),
    ("path_unlink_file", "iii", fs::path_unlink_file),
    ("poll_oneoff", "iiii", poll::poll_oneoff),
    ("proc_exit", "i", proc_exit),
    ("proc_raise", "i", proc_raise),
    ("sched_yield", "", sched_yield),
    ("random_get", "ii", random_get),
    ("sock_accept", "iii", sock_accept),
    ("sock_recv", "iiiiii", sock_recv),
    ("sock_send", "iiiii", sock_send),
    ("sock_shutdown", "ii", sock_shutdown),
];

/// Every function name this host provides, in preview1's order.
pub const NAMES: [&str; 46] = {
    let mut names = [""; 46];
    let mut i = 0;
    while i < FUNCS.len() {
        names[i] = FUNCS[i].0;
        i += 1;
    }
    names
};

fn signature(name: &str, params: &str) -> FuncType {
    FuncType {
        params: params.chars().map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 }).collect(),
        results: if name == "proc_exit" { vec![] } else { vec![ValType::I32] },
    }
}

/// The host function `name` of type `ty` over `ctx`. `Err(None)`: no such function;
/// `Err(Some(t))`: the function exists with type `t`.
pub(crate) fn host_func(name: &str, ty: &FuncType, ctx: Arc<Mutex<WasiCtx>>) -> Result<Func, Option<FuncType>> {
    let &(_, params, body) = FUNCS.iter().find(|(n, _, _)| *n == name).ok_or(None)?;
    let expected = signature(name, params);
    if *ty != expected {
        return Err(Some(expected));
    }
    Ok(Func::new_host(expected, move |caller: &mut Caller<'_>, args: &[Val], results: &mut [Val]| {
        let mut ctx = ctx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let waiter = caller.waiter();
        let mut empty = [];
        let bytes = caller.memory_bytes(0).unwrap_or_else(|| GuestBytes::detached(&mut empty));
        let mut memory = GuestMemory::new(bytes);
        let errno = match body(&mut ctx, &mut memory, &Args { values: args, waiter: Some(&waiter) }) {
            Ok(()) => Errno::Success,
            Err(Fail::Errno(e)) => e,
            Err(Fail::Trap(err)) => return Err(err),
        };
        if let Some(slot) = results.first_mut() {
            *slot = Val::I32(errno as i32);
        }
        Ok(())
    }))
}

/// Writes a list of NUL-terminated strings: pointers at `ptrs`, bytes at `buf`.
fn write_strings(list: &[Vec<u8>], mem: &mut GuestMemory<'_>, ptrs: u32, buf: u32) -> WasiResult<()> {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        mem.write_u32(ptrs.checked_add(4 * i as u32).ok_or(Errno::Fault)?, at)?;
        mem.write_bytes(at, s)?;
        at = at.checked_add(s.len() as u32).ok_or(Errno::Fault)?;
        mem.write_u8(at, 0)?;
        at = at.checked_add(1).ok_or(Errno::Fault)?;
    }
    Ok(())
}

fn write_sizes(list: &[Vec<u8>], mem: &mut GuestMemory<'_>, count: u32, size: u32) -> WasiResult<()> {
    let bytes: usize = list.iter().map(|s| s.len() + 1).sum();
    mem.write_u32(count, list.len() as u32)?;
    mem.write_u32(size, u32::try_from(bytes).map_err(|_| Errno::Overflow)?)?;
    Ok(())
}

fn args_get(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    Ok(write_strings(&ctx.args, mem, a.u32(0), a.u32(1))?)
}

fn args_sizes_get(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    Ok(write_sizes(&ctx.args, mem, a.u32(0), a.u32(1))?)
}

fn environ_get(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    Ok(write_strings(&ctx.env, mem, a.u32(0), a.u32(1))?)
}

fn environ_sizes_get(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    Ok(write_sizes(&ctx.env, mem, a.u32(0), a.u32(1))?)
}

/// The host clock for a preview1 clock id.
pub(crate) fn host_clock(id: u32) -> WasiResult<rustix::time::ClockId> {
    use rustix::time::ClockId;
    Ok(match id {
        clockid::REALTIME => ClockId::Realtime,
        clockid::MONOTONIC => ClockId::Monotonic,
        clockid::PROCESS_CPUTIME_ID => ClockId::ProcessCPUTime,
        clockid::THREAD_CPUTIME_ID => ClockId::ThreadCPUTime,
        _ => return Err(Errno::Inval),
    })
}

/// A clock's current value in nanoseconds.
pub(crate) fn now(id: u32) -> WasiResult<u64> {
    let ts = rustix::time::clock_gettime(host_clock(id)?);
    Ok((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
}

fn clock_res_get(_: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let ts = rustix::time::clock_getres(host_clock(a.u32(0))?);
    let ns = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
    Ok(mem.write_u64(a.u32(1), ns.max(1))?)
}

fn clock_time_get(_: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let ns = now(a.u32(0))?;
    Ok(mem.write_u64(a.u32(2), ns)?)
}

fn random_get(_: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let mut buf = mem.slice_mut(a.u32(0), a.u32(1))?;
    while !buf.is_empty() {
        let n = rustix::rand::getrandom(&mut *buf, rustix::rand::GetRandomFlags::empty()).map_err(Errno::from)?;
        buf = &mut buf[n..];
    }
    Ok(())
}

fn proc_exit(_: &mut WasiCtx, _: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let status = a.u32(0);
    // As Wasmtime: a status outside [0, 126) is an error rather than a status, which a process
    // could not report faithfully (exit statuses are 8 bits, and shells give 126 and up their
    // own meanings: 256 would read as success).
    if status >= 126 {
        return Err(Fail::Trap(HostError(format!("exit status {status} is outside [0, 126)").into())));
    }
    Err(Fail::Trap(HostError(Box::new(Exit(status as i32)))))
}

/// preview1's `signal` numbering: 0 none, 1 hup, 2 int, 3 quit, 4 ill, 5 trap, 6 abrt, 7 bus,
/// 8 fpe, 9 kill, 10 usr1, 11 segv, 12 usr2, 13 pipe, 14 alrm, 15 term, 16 chld, 17 cont,
/// 18 stop, 19 tstp, 20 ttin, 21 ttou, 22 urg, 23 xcpu, 24 xfsz, 25 vtalrm, 26 prof, 27 winch,
/// 28 poll, 29 pwr, 30 sys.
fn proc_raise(_: &mut WasiCtx, _: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let sig = a.u32(0);
    match sig {
        // No signal, or one whose default action is to ignore it (chld, cont, urg, winch)
        // or to stop the process (stop, tstp, ttin, ttou), which a sandboxed program cannot.
        0 | 16..=22 | 27 => Ok(()),
        1..=30 => Err(Fail::Trap(HostError(Box::new(Signal(sig as u8))))),
        _ => Err(Errno::Inval.into()),
    }
}

fn sched_yield(_: &mut WasiCtx, _: &mut GuestMemory<'_>, _: &Args<'_>) -> Result<(), Fail> {
    rustix::thread::sched_yield();
    Ok(())
}

/// The host socket behind `fd` with the `needed` rights: `badf` for no descriptor, `notsock`
/// for anything else.
fn socket(ctx: &WasiCtx, fd: u32, needed: u64) -> WasiResult<std::os::fd::BorrowedFd<'_>> {
    let desc = ctx.table.get(fd)?;
    if desc.filetype != filetype::SOCKET_STREAM && desc.filetype != filetype::SOCKET_DGRAM {
        return Err(Errno::NotSock);
    }
    desc.require(needed)?;
    Ok(desc.handle.fd())
}

fn sock_accept(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let flags = a.u32(1) as u16;
    if flags & !crate::types::fdflags::NONBLOCK != 0 {
        return Err(Errno::Inval.into());
    }
    let nonblocking = ctx.table.get(a.u32(0))?.flags & crate::types::fdflags::NONBLOCK != 0;
    let listener = socket(ctx, a.u32(0), rights::SOCK_ACCEPT)?;
    crate::io::wait_ready(listener, rustix::event::PollFlags::IN, nonblocking, a.waiter)?;
    let mut sock_flags = rustix::net::SocketFlags::CLOEXEC;
    if flags & crate::types::fdflags::NONBLOCK != 0 {
        sock_flags |= rustix::net::SocketFlags::NONBLOCK;
    }
    let conn = rustix::net::accept_with(listener, sock_flags).map_err(Errno::from)?;
    let desc = crate::table::Descriptor {
        handle: Handle::File(cap_std::fs::File::from_std(std::fs::File::from(conn))),
        filetype: filetype::SOCKET_STREAM,
        base: rights::STREAM | rights::SOCK_SHUTDOWN,
        inheriting: 0,
        flags,
        preopen: None,
    };
    let fd = ctx.table.push(desc)?;
    Ok(mem.write_u32(a.u32(2), fd)?)
}

fn sock_recv(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    // riflags: 1 recv_peek, 2 recv_waitall.
    let riflags = a.u32(3) as u16;
    if riflags & !3 != 0 {
        return Err(Errno::Inval.into());
    }
    let desc = ctx.table.get(a.u32(0))?;
    let sock = socket(ctx, a.u32(0), rights::FD_READ)?;
    let iovs = mem.iovecs(a.u32(1), a.u32(2))?;
    let total = GuestMemory::capacity(&iovs);
    if total > 0 {
        crate::io::wait_ready(
            sock,
            rustix::event::PollFlags::IN,
            desc.flags & crate::types::fdflags::NONBLOCK != 0,
            a.waiter,
        )?;
    }
    let mut flags = rustix::net::RecvFlags::DONTWAIT;
    if riflags & 1 != 0 {
        flags |= rustix::net::RecvFlags::PEEK;
    }
    if riflags & 2 != 0 {
        flags |= rustix::net::RecvFlags::WAITALL;
    }
    let mut buf = vec![0u8; total];
    let (n, _) = rustix::net::recv(sock, &mut buf[..], flags).map_err(Errno::from)?;
    mem.scatter(&iovs, &buf[..n])?;
    mem.write_u32(a.u32(4), n as u32)?;
    Ok(mem.write_u16(a.u32(5), 0)?)
}

fn sock_send(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    if a.u32(3) != 0 {
        return Err(Errno::Inval.into());
    }
    let desc = ctx.table.get(a.u32(0))?;
    let sock = socket(ctx, a.u32(0), rights::FD_WRITE)?;
    let iovs = mem.iovecs(a.u32(1), a.u32(2))?;
    let data = mem.gather(&iovs)?;
    if !data.is_empty() {
        crate::io::wait_ready(
            sock,
            rustix::event::PollFlags::OUT,
            desc.flags & crate::types::fdflags::NONBLOCK != 0,
            a.waiter,
        )?;
    }
    let n = rustix::net::send(sock, &data, rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT)
        .map_err(Errno::from)?;
    Ok(mem.write_u32(a.u32(4), n as u32)?)
}

fn sock_shutdown(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, a: &Args<'_>) -> Result<(), Fail> {
    let how = a.u32(1);
    let sock = socket(ctx, a.u32(0), rights::SOCK_SHUTDOWN)?;
    let how = match how {
        1 => rustix::net::Shutdown::Read,
        2 => rustix::net::Shutdown::Write,
        SDFLAGS_ALL => rustix::net::Shutdown::Both,
        _ => return Err(Errno::Inval.into()),
    };
    rustix::net::shutdown(sock, how).map_err(Errno::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preview1_function_is_provided_once() {
        assert_eq!(FUNCS.len(), NAMES.len());
        let mut names: Vec<_> = NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 46, "duplicate names");
        for name in ["fd_readdir", "path_open", "poll_oneoff", "sock_shutdown", "proc_raise"] {
            assert!(NAMES.contains(&name), "{name} missing");
        }
    }

    #[test]
    fn signatures_match_preview1() {
        let path_open = signature("path_open", "iiiiiIIii");
        assert_eq!(path_open.params.len(), 9);
        assert_eq!(path_open.params[5], ValType::I64);
        assert_eq!(path_open.results, vec![ValType::I32]);
        assert!(signature("proc_exit", "i").results.is_empty());
    }
}
