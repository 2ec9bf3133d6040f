//! `poll_oneoff`: wait for clocks and descriptors.
//!
//! Clock subscriptions become a timeout; descriptor subscriptions on pipes, terminals and
//! sockets go to the host's `poll(2)`. Regular files and directories are always ready, as on
//! POSIX (a read subscription reports the bytes left before the end of the file).

use std::time::Duration;

use zerocopy::FromBytes;

use crate::funcs::{now, Fail, Waiting};
use crate::layout::{Event as EventRecord, Subscription, SubscriptionClock, SubscriptionFd};
use crate::memory::GuestMemory;
use crate::table::Handle;
use crate::types::{clockid, eventtype, filetype, rights, Errno, EVENTRWFLAGS_HANGUP, SUBCLOCKFLAGS_ABSTIME};
use crate::WasiCtx;

const SUBSCRIPTION_SIZE: u32 = std::mem::size_of::<Subscription>() as u32;
const EVENT_SIZE: u32 = std::mem::size_of::<EventRecord>() as u32;

/// The most subscriptions one call may pass (`inval` beyond, as `poll(2)` answers for more
/// descriptors than a process may have): what the host allocates per call stays bounded.
pub const MAX_SUBSCRIPTIONS: u32 = 4096;

struct Event {
    userdata: u64,
    error: Errno,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

enum Sub {
    /// Fires after this many nanoseconds from the start of the call.
    Clock { userdata: u64, after: u64 },
    /// Waits on a host descriptor (index into the poll set).
    Fd { userdata: u64, kind: u8, slot: usize },
}

pub(crate) fn poll_oneoff(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    waiter: Waiting<'_>,
    subs_ptr: u32,
    events_ptr: u32,
    n: u32,
    nevents_ptr: u32,
) -> Result<(), Fail> {
    if n == 0 || n > MAX_SUBSCRIPTIONS {
        return Err(Errno::Inval.into());
    }
    mem.slice(subs_ptr, n.checked_mul(SUBSCRIPTION_SIZE).ok_or(Errno::Fault)?)?;
    mem.slice(events_ptr, n.checked_mul(EVENT_SIZE).ok_or(Errno::Fault)?)?;

    let mut ready: Vec<Event> = Vec::new();
    let mut subs = Vec::new();
    let mut poll_fds: Vec<(std::os::fd::BorrowedFd<'_>, rustix::event::PollFlags)> = Vec::new();
    for i in 0..n {
        let sub: Subscription = mem.read_record(subs_ptr + i * SUBSCRIPTION_SIZE)?;
        let (userdata, tag) = (sub.userdata.get(), sub.tag);
        match tag {
            eventtype::CLOCK => {
                let clock = SubscriptionClock::read_from_bytes(&sub.contents).expect("32 bytes");
                let (id, timeout, flags) = (clock.id.get(), clock.timeout.get(), clock.flags.get());
                let after = match (id, flags & SUBCLOCKFLAGS_ABSTIME != 0) {
                    (_, false) => crate::funcs::host_clock(id).map(|_| timeout),
                    (clockid::REALTIME | clockid::MONOTONIC, true) => now(id).map(|t| timeout.saturating_sub(t)),
                    _ => Err(Errno::Inval),
                };
                match after {
                    Ok(after) => subs.push(Sub::Clock { userdata, after }),
                    Err(error) => ready.push(Event { userdata, error, kind: tag, nbytes: 0, flags: 0 }),
                }
            }
            eventtype::FD_READ | eventtype::FD_WRITE => {
                let fd = SubscriptionFd::read_from_bytes(&sub.contents).expect("32 bytes").fd.get();
                let desc = match ctx.table.get(fd) {
                    Ok(d) => d,
                    Err(error) => {
                        ready.push(Event { userdata, error, kind: tag, nbytes: 0, flags: 0 });
                        continue;
                    }
                };
                if let Err(error) = desc.require(rights::POLL_FD_READWRITE) {
                    ready.push(Event { userdata, error, kind: tag, nbytes: 0, flags: 0 });
                    continue;
                }
                // A stream in host memory never waits: what is left to read, or room to write.
                match &desc.handle {
                    Handle::Input(input) => {
                        let nbytes = if tag == eventtype::FD_READ { input.remaining() as u64 } else { 0 };
                        ready.push(Event { userdata, error: Errno::Success, kind: tag, nbytes, flags: 0 });
                        continue;
                    }
                    Handle::Output(_) => {
                        ready.push(Event { userdata, error: Errno::Success, kind: tag, nbytes: 0, flags: 0 });
                        continue;
                    }
                    _ => {}
                }
                let host = desc.handle.fd().expect("only streams in host memory have no descriptor");
                if desc.filetype == filetype::REGULAR_FILE || desc.filetype == filetype::DIRECTORY {
                    let nbytes = if tag == eventtype::FD_READ && desc.filetype == filetype::REGULAR_FILE {
                        let size = rustix::fs::fstat(host).map(|s| s.st_size as u64).unwrap_or(0);
                        let pos = rustix::fs::seek(host, rustix::fs::SeekFrom::Current(0)).unwrap_or(0);
                        size.saturating_sub(pos)
                    } else {
                        0
                    };
                    ready.push(Event { userdata, error: Errno::Success, kind: tag, nbytes, flags: 0 });
                    continue;
                }
                let interest = if tag == eventtype::FD_READ {
                    rustix::event::PollFlags::IN
                } else {
                    rustix::event::PollFlags::OUT
                };
                subs.push(Sub::Fd { userdata, kind: tag, slot: poll_fds.len() });
                poll_fds.push((host, interest));
            }
            _ => ready.push(Event { userdata, error: Errno::Inval, kind: tag, nbytes: 0, flags: 0 }),
        }
    }

    let timeout = subs
        .iter()
        .filter_map(|s| match s {
            Sub::Clock { after, .. } => Some(*after),
            _ => None,
        })
        .min();
    let start = std::time::Instant::now();
    // Something is already ready: only look, never wait.
    let wait = if ready.is_empty() { timeout.map(Duration::from_nanos) } else { Some(Duration::ZERO) };

    if poll_fds.is_empty() && wait.is_none() {
        // Only invalid subscriptions would leave nothing to wait for; they are reported above.
        return Err(Errno::Inval.into());
    }
    let revents = wait_interruptibly(&poll_fds, wait, start, waiter)?;
    let elapsed = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;

    for sub in &subs {
        match *sub {
            Sub::Fd { userdata, kind, slot } => {
                let r = revents[slot];
                use rustix::event::PollFlags as P;
                if r.is_empty() {
                    continue;
                }
                let (error, flags) = if r.contains(P::NVAL) {
                    (Errno::Badf, 0)
                } else if r.contains(P::ERR) {
                    (Errno::Io, 0)
                } else if r.contains(P::HUP) {
                    (Errno::Success, EVENTRWFLAGS_HANGUP)
                } else {
                    (Errno::Success, 0)
                };
                let nbytes = if kind == eventtype::FD_READ && error == Errno::Success {
                    rustix::io::ioctl_fionread(poll_fds[slot].0).unwrap_or(0)
                } else {
                    0
                };
                ready.push(Event { userdata, error, kind, nbytes, flags });
            }
            Sub::Clock { userdata, after } => {
                let fired = after <= elapsed || (poll_fds.is_empty() && Some(after) == timeout);
                if fired {
                    ready.push(Event { userdata, error: Errno::Success, kind: eventtype::CLOCK, nbytes: 0, flags: 0 });
                }
            }
        }
    }
    if ready.is_empty() {
        // poll() timed out a hair early by our clock: the earliest clock is what woke us.
        if let Some(Sub::Clock { userdata, .. }) =
            subs.iter().find(|s| matches!(s, Sub::Clock { after, .. } if Some(*after) == timeout))
        {
            ready.push(Event {
                userdata: *userdata,
                error: Errno::Success,
                kind: eventtype::CLOCK,
                nbytes: 0,
                flags: 0,
            });
        }
    }

    for (i, ev) in ready.iter().enumerate() {
        let record = EventRecord {
            userdata: ev.userdata.into(),
            error: (ev.error as u16).into(),
            kind: ev.kind,
            nbytes: ev.nbytes.into(),
            flags: ev.flags.into(),
            ..EventRecord::default()
        };
        mem.write_record(events_ptr + i as u32 * EVENT_SIZE, &record)?;
    }
    Ok(mem.write_u32(nevents_ptr, ready.len() as u32)?)
}

/// Polls `fds` for at most `wait` (forever if `None`) since `start`, together with the store's
/// interrupt descriptor: an interrupt ends the wait with the trap "deadline exceeded", however
/// long the guest asked to sleep. Returns each descriptor's events.
fn wait_interruptibly(
    fds: &[(std::os::fd::BorrowedFd<'_>, rustix::event::PollFlags)],
    wait: Option<Duration>,
    start: std::time::Instant,
    waiter: Option<&kiln_runtime::Waiter>,
) -> Result<Vec<rustix::event::PollFlags>, Fail> {
    use rustix::event::{PollFd, PollFlags};
    let wake = match waiter {
        // Only a wait that can last needs the interrupt descriptor.
        Some(waiter) if wait != Some(Duration::ZERO) => Some(waiter.fd().map_err(Errno::from)?),
        _ => None,
    };
    loop {
        if waiter.is_some_and(|w| w.interrupted()) && wake.is_some() {
            return Err(Fail::Trap(kiln_runtime::HostError(Box::new(kiln_runtime::Interrupted))));
        }
        let mut set: Vec<PollFd<'_>> = fds.iter().map(|(fd, flags)| PollFd::new(fd, *flags)).collect();
        if let Some(wake) = &wake {
            set.push(PollFd::new(wake, PollFlags::IN));
        }
        let left = wait.map(|d| d.saturating_sub(start.elapsed()));
        let ts = left.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        match rustix::event::poll(&mut set, ts.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from(e).into()),
        }
        let woken = wake.is_some() && !set.last().expect("the wake descriptor").revents().is_empty();
        if woken && waiter.is_some_and(|w| w.acknowledge()) {
            return Err(Fail::Trap(kiln_runtime::HostError(Box::new(kiln_runtime::Interrupted))));
        }
        let revents: Vec<PollFlags> = set[..fds.len()].iter().map(|p| p.revents()).collect();
        let timed_out = left.is_some_and(|d| d.is_zero() || start.elapsed() >= wait.unwrap_or_default());
        // A stale wake-up with nothing else ready and time left: wait again.
        if woken && revents.iter().all(|r| r.is_empty()) && !timed_out {
            continue;
        }
        return Ok(revents);
    }
}
