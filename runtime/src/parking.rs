//! The waiter queue behind `memory.atomic.wait` and `memory.atomic.notify`: threads block on a
//! host address of a shared memory until notified or timed out.

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

/// Blocks while `still_expected()` holds at the time of the call, until notified (0) or
/// `timeout_ns` passes (2; negative means forever). Returns 1 without blocking if the value
/// already differs. The check and the enqueue happen under the queue lock, so a notify that
/// follows a store cannot be missed.
pub(crate) fn wait(addr: usize, still_expected: impl FnOnce() -> bool, timeout_ns: i64) -> u32 {
    let (lock, condvar) = state();
    let mut queues = lock.lock().unwrap_or_else(|e| e.into_inner());
    if !still_expected() {
        return 1;
    }
    let ticket = queues.next_ticket;
    queues.next_ticket += 1;
    queues.waiting.entry(addr).or_default().push(ticket);
    let deadline = (timeout_ns >= 0).then(|| Instant::now() + Duration::from_nanos(timeout_ns as u64));
    loop {
        let still_waiting = queues.waiting.get(&addr).is_some_and(|q| q.contains(&ticket));
        if !still_waiting {
            return 0;
        }
        match deadline {
            None => queues = condvar.wait(queues).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    if let Some(q) = queues.waiting.get_mut(&addr) {
                        q.retain(|&t| t != ticket);
                    }
                    return 2;
                }
                queues = condvar.wait_timeout(queues, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }
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
        assert_eq!(wait(addr, || cell.load(Ordering::SeqCst) == 6, -1), 1);
        assert_eq!(wait(addr, || cell.load(Ordering::SeqCst) == 5, 1_000_000), 2);
        assert_eq!(notify(addr, 1), 0);
        let waiter = {
            let cell = cell.clone();
            std::thread::spawn(move || wait(addr, || cell.load(Ordering::SeqCst) == 5, -1))
        };
        // Notify until the waiter has been woken (it may not be queued yet).
        while notify(addr, 1) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap(), 0);
    }
}
