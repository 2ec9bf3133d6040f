//! What `perf` needs from the process to profile code it cannot read from disk: a monotonic
//! clock in its units, and an executable mapping of the jitdump file as a marker.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `perf record -k 1` stamps samples with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Maps the first page of `file` readable and executable, for the life of the process:
/// `perf record` notes the mapping, and `perf inject --jit` finds the jitdump file through it.
/// Nothing ever runs or reads from it.
pub fn map_jitdump_marker(file: &File) -> io::Result<()> {
    // SAFETY: a fresh private mapping chosen by the kernel; it overlaps nothing and is never
    // unmapped, so no reference into it can dangle.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            crate::sys::unix::mmap::PAGE_SIZE,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's kernel id.
pub fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}
