//! The `wasi_snapshot_preview1` function table: each name's core wasm signature and body, and
//! the glue that turns a body into a Kiln host function. Also the small functions that touch
//! no files: arguments, environment, clocks, randomness, process control and sockets.

use std::sync::{Arc, Mutex};

use kiln_runtime::{Caller, Func, FuncType, GuestBytes, HostError, Val, ValType, Waiter};

use crate::memory::GuestMemory;
use crate::table::Handle;
use crate::types::{clockid, filetype, rights, Errno, WasiResult, SDFLAGS_ALL};
use crate::{fs, poll, Exit, Signal, Strings, WasiCtx};

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

/// How a body waits: woken when the store is interrupted (`None` in host-side tests: no store).
pub(crate) type Waiting<'a> = Option<&'a Waiter>;

/// A parameter type of preview1's core signatures, read from a call's values by its own type:
/// a value of another type is an error, never a misread.
trait Param: Sized {
    const TYPE: ValType;
    fn from_val(value: &Val) -> Option<Self>;
}

impl Param for u32 {
    const TYPE: ValType = ValType::I32;
    fn from_val(value: &Val) -> Option<u32> {
        match *value {
            Val::I32(v) => Some(v as u32),
            _ => None,
        }
    }
}

impl Param for u64 {
    const TYPE: ValType = ValType::I64;
    fn from_val(value: &Val) -> Option<u64> {
        match *value {
            Val::I64(v) => Some(v as u64),
            _ => None,
        }
    }
}

/// Takes the next argument as `T`.
fn next_arg<T: Param>(values: &mut std::slice::Iter<'_, Val>) -> Result<T, Fail> {
    values.next().and_then(T::from_val).ok_or_else(mismatch)
}

fn mismatch() -> Fail {
    Fail::Trap(HostError("wasi: arguments do not match the signature".into()))
}

/// Runs a body on a call's values (checked against the entry's parameter types).
pub(crate) type Call = fn(&mut WasiCtx, &mut GuestMemory<'_>, Waiting<'_>, &[Val]) -> Result<(), Fail>;

/// One preview1 function: its name, its core parameter types and its body.
pub(crate) struct Entry {
    pub name: &'static str,
    pub params: &'static [ValType],
    pub call: Call,
}

/// The function table, from one typed description per function: the parameter types make both
/// the core signature and the decoding, and a body takes its arguments by name, so the two
/// cannot disagree.
macro_rules! preview1 {
    ($( $name:ident ( $( $arg:ident : $ty:ty ),* ) => $body:path; )*) => {
        pub(crate) const FUNCS: &[Entry] = &[$(
            Entry {
                name: stringify!($name),
                params: &[$( <$ty as Param>::TYPE ),*],
                call: |ctx, mem, waiter, values| {
                    let mut values = values.iter();
                    $( let $arg: $ty = next_arg(&mut values)?; )*
                    if values.next().is_some() {
                        return Err(mismatch());
                    }
                    $body(ctx, mem, waiter $(, $arg)*)
                },
            },
        )*];
    };
}

// Every function returns an `errno` (i32) except `proc_exit`, which returns nothing. Pointers
// and sizes are u32, 64-bit values (offsets, rights, timestamps) u64, as preview1 declares them.
preview1! {
    args_get(argv: u32, argv_buf: u32) => args_get;
    args_sizes_get(argc_out: u32, argv_buf_size_out: u32) => args_sizes_get;
    environ_get(environ: u32, environ_buf: u32) => environ_get;
    environ_sizes_get(count_out: u32, size_out: u32) => environ_sizes_get;
    clock_res_get(clock_id: u32, resolution_out: u32) => clock_res_get;
    clock_time_get(clock_id: u32, _precision: u64, time_out: u32) => clock_time_get;
    fd_advise(fd: u32, offset: u64, len: u64, advice: u32) => fs::fd_advise;
    fd_allocate(fd: u32, offset: u64, len: u64) => fs::fd_allocate;
    fd_close(fd: u32) => fs::fd_close;
    fd_datasync(fd: u32) => fs::fd_datasync;
    fd_fdstat_get(fd: u32, stat_out: u32) => fs::fd_fdstat_get;
    fd_fdstat_set_flags(fd: u32, flags: u32) => fs::fd_fdstat_set_flags;
    fd_fdstat_set_rights(fd: u32, base: u64, inheriting: u64) => fs::fd_fdstat_set_rights;
    fd_filestat_get(fd: u32, stat_out: u32) => fs::fd_filestat_get;
    fd_filestat_set_size(fd: u32, size: u64) => fs::fd_filestat_set_size;
    fd_filestat_set_times(fd: u32, atim: u64, mtim: u64, fst_flags: u32) => fs::fd_filestat_set_times;
    fd_pread(fd: u32, iovs: u32, iovs_len: u32, offset: u64, nread_out: u32) => fs::fd_pread;
    fd_prestat_get(fd: u32, prestat_out: u32) => fs::fd_prestat_get;
    fd_prestat_dir_name(fd: u32, path: u32, path_len: u32) => fs::fd_prestat_dir_name;
    fd_pwrite(fd: u32, iovs: u32, iovs_len: u32, offset: u64, nwritten_out: u32) => fs::fd_pwrite;
    fd_read(fd: u32, iovs: u32, iovs_len: u32, nread_out: u32) => fs::fd_read;
    fd_readdir(fd: u32, buf: u32, buf_len: u32, cookie: u64, bufused_out: u32) => fs::fd_readdir;
    fd_renumber(fd: u32, to: u32) => fs::fd_renumber;
    fd_seek(fd: u32, offset: u64, how: u32, newoffset_out: u32) => fs::fd_seek;
    fd_sync(fd: u32) => fs::fd_sync;
    fd_tell(fd: u32, offset_out: u32) => fs::fd_tell;
    fd_write(fd: u32, iovs: u32, iovs_len: u32, nwritten_out: u32) => fs::fd_write;
    path_create_directory(dir_fd: u32, path: u32, path_len: u32) => fs::path_create_directory;
    path_filestat_get(dir_fd: u32, lookup: u32, path: u32, path_len: u32, stat_out: u32) => fs::path_filestat_get;
    path_filestat_set_times(dir_fd: u32, lookup: u32, path: u32, path_len: u32, atim: u64, mtim: u64, fst_flags: u32) => fs::path_filestat_set_times;
    path_link(old_fd: u32, old_lookup: u32, old_path: u32, old_path_len: u32, new_fd: u32, new_path: u32, new_path_len: u32) => fs::path_link;
    path_open(dir_fd: u32, dirflags: u32, path: u32, path_len: u32, oflags_raw: u32, base: u64, inheriting: u64, fdflags_raw: u32, fd_out: u32) => fs::path_open;
    path_readlink(dir_fd: u32, path: u32, path_len: u32, buf: u32, buf_len: u32, bufused_out: u32) => fs::path_readlink;
    path_remove_directory(dir_fd: u32, path: u32, path_len: u32) => fs::path_remove_directory;
    path_rename(old_fd: u32, old_path: u32, old_path_len: u32, new_fd: u32, new_path: u32, new_path_len: u32) => fs::path_rename;
    path_symlink(old_path: u32, old_path_len: u32, dir_fd: u32, new_path: u32, new_path_len: u32) => fs::path_symlink;
    path_unlink_file(dir_fd: u32, path: u32, path_len: u32) => fs::path_unlink_file;
    poll_oneoff(subs_ptr: u32, events_ptr: u32, n: u32, nevents_ptr: u32) => poll::poll_oneoff;
    proc_exit(code: u32) => proc_exit;
    proc_raise(signal: u32) => proc_raise;
    sched_yield() => sched_yield;
    random_get(buf: u32, buf_len: u32) => random_get;
    sock_accept(fd: u32, flags: u32, fd_out: u32) => sock_accept;
    sock_recv(fd: u32, ri_data: u32, ri_data_len: u32, ri_flags: u32, ro_datalen_out: u32, ro_flags_out: u32) => sock_recv;
    sock_send(fd: u32, si_data: u32, si_data_len: u32, si_flags: u32, so_datalen_out: u32) => sock_send;
    sock_shutdown(fd: u32, how: u32) => sock_shutdown;
}

/// Every function name this host provides, in preview1's order.
pub const NAMES: [&str; 46] = {
    let mut names = [""; 46];
    let mut i = 0;
    while i < FUNCS.len() {
        names[i] = FUNCS[i].name;
        i += 1;
    }
    names
};

fn signature(entry: &Entry) -> FuncType {
    FuncType {
        params: entry.params.to_vec(),
        results: if entry.name == "proc_exit" { vec![] } else { vec![ValType::I32] },
    }
}

/// Where a host function finds the WASI context of the guest calling it.
#[derive(Clone)]
pub(crate) enum CtxSource {
    /// Its own, shared by the functions of one instance's imports ([`crate::imports`]).
    Captured(Arc<Mutex<WasiCtx>>),
    /// The one attached to the calling store ([`crate::attach`]), so the function can serve
    /// every store ([`crate::shared_imports`]).
    Store,
}

/// The context attached to a store by [`crate::attach`].
pub(crate) struct StoreCtx(pub Mutex<WasiCtx>);

/// The host function `name` of type `ty`, over the context `ctx` gives. `Err(None)`: no such
/// function; `Err(Some(t))`: the function exists with type `t`.
pub(crate) fn host_func(name: &str, ty: &FuncType, ctx: CtxSource) -> Result<Func, Option<FuncType>> {
    let entry = FUNCS.iter().find(|e| e.name == name).ok_or(None)?;
    let expected = signature(entry);
    let call = entry.call;
    if *ty != expected {
        return Err(Some(expected));
    }
    Ok(Func::new_host(expected, move |caller: &mut Caller<'_>, args: &[Val], results: &mut [Val]| {
        let ctx = match &ctx {
            CtxSource::Captured(ctx) => ctx,
            CtxSource::Store => match caller.data::<StoreCtx>() {
                Some(StoreCtx(ctx)) => ctx,
                None => return Err(HostError("wasi: no WASI context is attached to the calling store".into())),
            },
        };
        let mut ctx = ctx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let waiter = caller.waiter();
        let mut empty = [];
        let bytes = caller.memory_bytes(0).unwrap_or_else(|| GuestBytes::detached(&mut empty));
        let mut memory = GuestMemory::new(bytes);
        let errno = match call(&mut ctx, &mut memory, Some(&waiter), args) {
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

/// Writes a list of NUL-terminated strings: the bytes at `buf`, a pointer to each at `ptrs`.
fn write_strings(list: &Strings, mem: &mut GuestMemory<'_>, ptrs: u32, buf: u32) -> WasiResult<()> {
    mem.write_bytes(buf, list.bytes())?;
    for (i, start) in list.starts().enumerate() {
        let start = u32::try_from(start).map_err(|_| Errno::Overflow)?;
        let at = buf.checked_add(start).ok_or(Errno::Fault)?;
        mem.write_u32(ptrs.checked_add(4 * i as u32).ok_or(Errno::Fault)?, at)?;
    }
    Ok(())
}

fn write_sizes(list: &Strings, mem: &mut GuestMemory<'_>, count: u32, size: u32) -> WasiResult<()> {
    mem.write_u32(count, u32::try_from(list.len()).map_err(|_| Errno::Overflow)?)?;
    mem.write_u32(size, u32::try_from(list.bytes().len()).map_err(|_| Errno::Overflow)?)?;
    Ok(())
}

fn args_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    argv: u32,
    argv_buf: u32,
) -> Result<(), Fail> {
    Ok(write_strings(&ctx.args, mem, argv, argv_buf)?)
}

fn args_sizes_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    argc_out: u32,
    argv_buf_size_out: u32,
) -> Result<(), Fail> {
    Ok(write_sizes(&ctx.args, mem, argc_out, argv_buf_size_out)?)
}

fn environ_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    environ: u32,
    environ_buf: u32,
) -> Result<(), Fail> {
    Ok(write_strings(&ctx.env, mem, environ, environ_buf)?)
}

fn environ_sizes_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    count_out: u32,
    size_out: u32,
) -> Result<(), Fail> {
    Ok(write_sizes(&ctx.env, mem, count_out, size_out)?)
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

fn clock_res_get(
    _: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    clock_id: u32,
    resolution_out: u32,
) -> Result<(), Fail> {
    let ts = rustix::time::clock_getres(host_clock(clock_id)?);
    let ns = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
    Ok(mem.write_u64(resolution_out, ns.max(1))?)
}

fn clock_time_get(
    _: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    clock_id: u32,
    _precision: u64,
    time_out: u32,
) -> Result<(), Fail> {
    let ns = now(clock_id)?;
    Ok(mem.write_u64(time_out, ns)?)
}

fn random_get(_: &mut WasiCtx, mem: &mut GuestMemory<'_>, _: Waiting<'_>, buf: u32, buf_len: u32) -> Result<(), Fail> {
    let mut buf = mem.slice_mut(buf, buf_len)?;
    while !buf.is_empty() {
        let n = rustix::rand::getrandom(&mut *buf, rustix::rand::GetRandomFlags::empty()).map_err(Errno::from)?;
        buf = &mut buf[n..];
    }
    Ok(())
}

fn proc_exit(_: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, code: u32) -> Result<(), Fail> {
    let status = code;
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
fn proc_raise(_: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, signal: u32) -> Result<(), Fail> {
    let sig = signal;
    match sig {
        // No signal, or one whose default action is to ignore it (chld, cont, urg, winch)
        // or to stop the process (stop, tstp, ttin, ttou), which a sandboxed program cannot.
        0 | 16..=22 | 27 => Ok(()),
        1..=30 => Err(Fail::Trap(HostError(Box::new(Signal(sig as u8))))),
        _ => Err(Errno::Inval.into()),
    }
}

fn sched_yield(_: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>) -> Result<(), Fail> {
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
    desc.host_fd_with(needed)
}

fn sock_accept(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    waiter: Waiting<'_>,
    fd: u32,
    flags: u32,
    fd_out: u32,
) -> Result<(), Fail> {
    let flags = flags as u16;
    if flags & !crate::types::fdflags::NONBLOCK != 0 {
        return Err(Errno::Inval.into());
    }
    let nonblocking = ctx.table.get(fd)?.flags & crate::types::fdflags::NONBLOCK != 0;
    let listener = socket(ctx, fd, rights::SOCK_ACCEPT)?;
    crate::io::wait_ready(listener, rustix::event::PollFlags::IN, nonblocking, waiter)?;
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
    Ok(mem.write_u32(fd_out, fd)?)
}

fn sock_recv(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    waiter: Waiting<'_>,
    fd: u32,
    ri_data: u32,
    ri_data_len: u32,
    ri_flags: u32,
    ro_datalen_out: u32,
    ro_flags_out: u32,
) -> Result<(), Fail> {
    // riflags: 1 recv_peek, 2 recv_waitall.
    let riflags = ri_flags as u16;
    if riflags & !3 != 0 {
        return Err(Errno::Inval.into());
    }
    let desc = ctx.table.get(fd)?;
    let sock = socket(ctx, fd, rights::FD_READ)?;
    let iovs = mem.iovecs(ri_data, ri_data_len)?;
    let total = GuestMemory::capacity(&iovs);
    if total > 0 {
        crate::io::wait_ready(
            sock,
            rustix::event::PollFlags::IN,
            desc.flags & crate::types::fdflags::NONBLOCK != 0,
            waiter,
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
    mem.write_u32(ro_datalen_out, n as u32)?;
    Ok(mem.write_u16(ro_flags_out, 0)?)
}

fn sock_send(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    waiter: Waiting<'_>,
    fd: u32,
    si_data: u32,
    si_data_len: u32,
    si_flags: u32,
    so_datalen_out: u32,
) -> Result<(), Fail> {
    if si_flags != 0 {
        return Err(Errno::Inval.into());
    }
    let desc = ctx.table.get(fd)?;
    let sock = socket(ctx, fd, rights::FD_WRITE)?;
    let iovs = mem.iovecs(si_data, si_data_len)?;
    let data = mem.gather(&iovs)?;
    if !data.is_empty() {
        crate::io::wait_ready(
            sock,
            rustix::event::PollFlags::OUT,
            desc.flags & crate::types::fdflags::NONBLOCK != 0,
            waiter,
        )?;
    }
    let n = rustix::net::send(sock, &data, rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT)
        .map_err(Errno::from)?;
    Ok(mem.write_u32(so_datalen_out, n as u32)?)
}

fn sock_shutdown(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32, how: u32) -> Result<(), Fail> {
    let sock = socket(ctx, fd, rights::SOCK_SHUTDOWN)?;
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
        use ValType::{I32, I64};
        let params = |name: &str| signature(FUNCS.iter().find(|e| e.name == name).unwrap());
        let path_open = params("path_open");
        assert_eq!(path_open.params, [I32, I32, I32, I32, I32, I64, I64, I32, I32]);
        assert_eq!(path_open.results, vec![I32]);
        assert_eq!(params("fd_seek").params, [I32, I64, I32, I32]);
        assert_eq!(params("clock_time_get").params, [I32, I64, I32]);
        assert_eq!(params("path_filestat_set_times").params, [I32, I32, I32, I32, I64, I64, I32]);
        assert!(params("sched_yield").params.is_empty());
        assert!(params("proc_exit").results.is_empty());
    }

    #[test]
    fn arguments_of_another_type_or_count_are_refused_not_misread() {
        let mut ctx = crate::WasiCtxBuilder::new().build().unwrap();
        let mut empty = [];
        let mut mem = GuestMemory::new(GuestBytes::detached(&mut empty));
        let fd_close = FUNCS.iter().find(|e| e.name == "fd_close").unwrap().call;
        // An i64 where fd_close takes an i32 descriptor: no descriptor 0 is read instead.
        for values in [&[Val::I64(3)][..], &[], &[Val::I32(3), Val::I32(4)]] {
            assert!(matches!(fd_close(&mut ctx, &mut mem, None, values), Err(Fail::Trap(_))), "{values:?}");
        }
        // The right type reaches the body, which reports the unknown descriptor.
        assert!(matches!(fd_close(&mut ctx, &mut mem, None, &[Val::I32(3)]), Err(Fail::Errno(Errno::Badf))));
    }
}
