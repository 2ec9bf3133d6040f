//! Reads and writes that can block (pipes, terminals, sockets, FIFOs), made to wake when the
//! store is interrupted, and to honour the guest's `nonblock` flag without ever changing the
//! host descriptor's own flags (stdio belongs to whoever started the host).
//!
//! Before each read or write on such a stream, `poll(2)` waits for the descriptor together with
//! the store's interrupt descriptor ([`kiln_runtime::Waiter`]); an interrupt ends the wait with
//! the trap "deadline exceeded". A write then moves at most `PIPE_BUF` bytes at a time, the
//! most a writable pipe is guaranteed to take without blocking. Regular files, directories and
//! block devices never block that way and are read and written directly.

use std::os::fd::BorrowedFd;

use kiln_runtime::{HostError, Interrupted, Waiter};
use rustix::event::{PollFd, PollFlags};

use crate::funcs::Fail;
use crate::table::Descriptor;
use crate::types::{fdflags, filetype, Errno};

/// The most one write to a stream moves after `poll(2)` said it is writable.
const PIPE_BUF: usize = 4096;

/// Whether operations on `desc` may wait for someone else (a stream, not a file).
pub(crate) fn may_block(desc: &Descriptor) -> bool {
    !matches!(desc.filetype, filetype::REGULAR_FILE | filetype::DIRECTORY | filetype::BLOCK_DEVICE)
}

fn interrupted() -> Fail {
    Fail::Trap(HostError(Box::new(Interrupted)))
}

/// Waits until `fd` is ready for `interest` (`IN` or `OUT`): at once if `nonblocking` (then
/// `again` if it is not), else until it is or the store is interrupted.
pub(crate) fn wait_ready(
    fd: BorrowedFd<'_>,
    interest: PollFlags,
    nonblocking: bool,
    waiter: Option<&Waiter>,
) -> Result<(), Fail> {
    if poll_one(fd, interest, Some(0))? {
        return Ok(());
    }
    if nonblocking {
        return Err(Errno::Again.into());
    }
    let Some(waiter) = waiter else {
        // No store to interrupt (host-side tests): a plain wait.
        poll_one(fd, interest, None)?;
        return Ok(());
    };
    let wake = waiter.fd().map_err(Errno::from)?;
    loop {
        if waiter.interrupted() {
            return Err(interrupted());
        }
        let mut set = [PollFd::new(&fd, interest), PollFd::new(&wake, PollFlags::IN)];
        match rustix::event::poll(&mut set, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from(e).into()),
        }
        if !set[0].revents().is_empty() {
            return Ok(());
        }
        if !set[1].revents().is_empty() && !waiter.acknowledge() {
            // A stale wake-up (an interrupt already cleared): drained, keep waiting.
            continue;
        }
    }
}

/// One `poll(2)` of `fd` alone; whether it is ready (or in error, which the next operation
/// reports).
fn poll_one(fd: BorrowedFd<'_>, interest: PollFlags, timeout_ms: Option<i32>) -> Result<bool, Fail> {
    let mut set = [PollFd::new(&fd, interest)];
    let timeout = timeout_ms.map(|ms| rustix::event::Timespec { tv_sec: 0, tv_nsec: (ms as i64 * 1_000_000) as _ });
    loop {
        match rustix::event::poll(&mut set, timeout.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from(e).into()),
        }
    }
}

/// Reads into `buf` from the stream or file behind `desc`.
pub(crate) fn read(
    desc: &Descriptor,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    waiter: Option<&Waiter>,
) -> Result<usize, Fail> {
    if may_block(desc) && !buf.is_empty() {
        wait_ready(fd, PollFlags::IN, desc.flags & fdflags::NONBLOCK != 0, waiter)?;
    }
    Ok(rustix::io::read(fd, buf).map_err(Errno::from)?)
}

/// Writes `data` to the stream or file behind `desc`: all of it (a stream, in `PIPE_BUF`
/// pieces, waiting as needed), or what a non-blocking stream takes now.
pub(crate) fn write(
    desc: &Descriptor,
    fd: BorrowedFd<'_>,
    data: &[u8],
    waiter: Option<&Waiter>,
) -> Result<usize, Fail> {
    if !may_block(desc) {
        return Ok(if data.is_empty() { 0 } else { rustix::io::write(fd, data).map_err(Errno::from)? });
    }
    let nonblocking = desc.flags & fdflags::NONBLOCK != 0;
    let mut written = 0;
    while written < data.len() {
        match wait_ready(fd, PollFlags::OUT, nonblocking, waiter) {
            Ok(()) => {}
            // A non-blocking stream that took some already: a short write.
            Err(Fail::Errno(Errno::Again)) if written > 0 => break,
            Err(other) => return Err(other),
        }
        let end = data.len().min(written + PIPE_BUF);
        match rustix::io::write(fd, &data[written..end]) {
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) if written > 0 => break,
            Err(e) => return Err(Errno::from(e).into()),
        }
    }
    Ok(written)
}
