//! The waiter queue behind `memory.atomic.wait` and `memory.atomic.notify`: threads block on a
//! host address of a shared memory until notified, timed out, or their store is interrupted.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Queues {
    /// Per address: tickets of the threads waiting there, oldest first.
    waiting: HashMap<usize, Vec<u64>>,
    next_ticket: u64,
}

fn state() -> &'static (Mutex<Queues>, Condvar) {
    static STATE: OnceLock<(Mutex<Queues>, Condvar)> = OnceLock::new();
    STATE.get_or_init(|| (Mutex::new(Queues::default()), Condvar::new()))
}

/// The waiting thread's store was interrupted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Interrupted;

/// Blocks while `still_expected()` holds at the time of the call, until notified (0) or
/// `timeout_ns` passes (2; negative means forever). Returns 1 without blocking if the value
/// already differs. The check and the enqueue happen under the queue lock, so a notify that
/// follows a store cannot be missed. `interrupted()` is checked under the same lock before
/// every sleep, and [`wake_all`] takes that lock after an interrupt sets the flag, so an
/// interrupt cannot be missed either.
pub(crate) fn wait(
    addr: usize,
    still_expected: impl FnOnce() -> bool,
    timeout_ns: i64,
    interrupted: impl Fn() -> bool,
) -> Result<u32, Interrupted> {
    let (lock, condvar) = state();
    let mut queues = lock.lock().unwrap_or_else(|e| e.into_inner());
    if !still_expected() {
        return Ok(1);
    }
    let ticket = queues.next_ticket;
    queues.next_ticket += 1;
    queues.waiting.entry(addr).or_default().push(ticket);
    let deadline = (timeout_ns >= 0).then(|| Instant::now() + Duration::from_nanos(timeout_ns as u64));
    loop {
        let still_waiting = queues.waiting.get(&addr).is_some_and(|q| q.contains(&ticket));
        if !still_waiting {
            return Ok(0);
        }
        if interrupted() {
            dequeue(&mut queues, addr, ticket);
            return Err(Interrupted);
        }
        match deadline {
            None => queues = condvar.wait(queues).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    dequeue(&mut queues, addr, ticket);
                    return Ok(2);
                }
                queues = condvar.wait_timeout(queues, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }
}

fn dequeue(queues: &mut Queues, addr: usize, ticket: u64) {
    if let Some(q) = queues.waiting.get_mut(&addr) {
        q.retain(|&t| t != ticket);
        if q.is_empty() {
            queues.waiting.remove(&addr);
        }
    }
}

/// Wakes every waiter so it rechecks its store's interrupt flag (called after setting one).
pub(crate) fn wake_all() {
    let (lock, condvar) = state();
    // Taking the lock orders this after any waiter's check of the flag under it.
    drop(lock.lock().unwrap_or_else(|e| e.into_inner()));
    condvar.notify_all();
}

/// Wakes up to `count` waiters at `addr`, oldest first; returns how many.
pub(crate) fn notify(addr: usize, count: u32) -> u32 {
    let (lock, condvar) = state();
    let mut queues = lock.lock().unwrap_or_else(|e| e.into_inner());
    let Some(queue) = queues.waiting.get_mut(&addr) else { return 0 };
    let woken = queue.len().min(count as usize);
    queue.drain(..woken);
    if queue.is_empty() {
        queues.waiting.remove(&addr);
    }
    drop(queues);
    if woken > 0 {
        condvar.notify_all();
    }
    woken as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn wait_returns_not_equal_timeout_and_woken() {
        let cell = Arc::new(AtomicU32::new(5));
        let addr = Arc::as_ptr(&cell) as usize;
        let never = || false;
        assert_eq!(wait(addr, || cell.load(Ordering::SeqCst) == 6, -1, never), Ok(1));
        assert_eq!(wait(addr, || cell.load(Ordering::SeqCst) == 5, 1_000_000, never), Ok(2));
        assert_eq!(notify(addr, 1), 0);
        let waiter = {
            let cell = cell.clone();
            std::thread::spawn(move || wait(addr, || cell.load(Ordering::SeqCst) == 5, -1, never))
        };
        // Notify until the waiter has been woken (it may not be queued yet).
        while notify(addr, 1) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), Ok(0));
    }

    #[test]
    fn an_interrupt_wakes_an_endless_wait() {
        use std::sync::atomic::AtomicBool;
        let cell = Arc::new(AtomicU32::new(5));
        let addr = Arc::as_ptr(&cell) as usize;
        let flag = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (cell, flag) = (cell.clone(), flag.clone());
            std::thread::spawn(move || {
                wait(addr, || cell.load(Ordering::SeqCst) == 5, -1, || flag.load(Ordering::SeqCst))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        flag.store(true, Ordering::SeqCst);
        wake_all();
        assert_eq!(waiter.join().unwrap(), Err(Interrupted));
        assert_eq!(notify(addr, 1), 0, "the interrupted waiter left the queue");
    }
}
