//! Anonymous memory reservations: reserve address space once, then change protections and
//! discard contents in place.

use std::io;
use std::ptr::NonNull;

/// The system page size Kiln assumes (x86-64 Linux).
pub const PAGE_SIZE: usize = 4096;

/// Rounds `value` up to a multiple of the page size.
pub const fn page_align(value: usize) -> usize {
    (value + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Makes `len` bytes at `addr` readable and writable (growing a memory inside a reservation
/// some other value owns).
///
/// # Safety
/// `[addr, addr + len)` must be page-aligned and lie inside a reservation whose owner expects
/// it to become accessible.
pub unsafe fn make_accessible_at(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    let rc = unsafe { libc::mprotect(addr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What code may do with a mapped segment of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentAccess {
    Read,
    ReadWrite,
    ReadExecute,
}

/// An owned, page-aligned reservation of address space, unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the reservation is plain memory owned by this value; access to its contents is
// coordinated by the owners (regions and slots), not by this type.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` only exposes the address and length.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Reserves `len` bytes of inaccessible address space without committing memory.
    pub fn reserve(len: usize) -> io::Result<Mmap> {
        let len = page_align(len.max(PAGE_SIZE));
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { base: NonNull::new(ptr.cast()).expect("mmap never returns null on success"), len })
    }

    /// Start of the reservation.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn check_range(&self, offset: usize, len: usize) {
        assert!(offset.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE), "unaligned range");
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "range outside reservation");
    }

    /// Makes `[offset, offset + len)` readable and writable.
    pub fn make_accessible(&self, offset: usize, len: usize) -> io::Result<()> {
        self.protect(offset, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Makes `[offset, offset + len)` inaccessible (accesses fault).
    pub fn make_inaccessible(&self, offset: usize, len: usize) -> io::Result<()> {
        self.protect(offset, len, libc::PROT_NONE)
    }

    fn protect(&self, offset: usize, len: usize, prot: libc::c_int) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_range(offset, len);
        // SAFETY: the range lies inside our own reservation (checked above); changing its
        // protection cannot affect memory we do not own.
        let rc = unsafe { libc::mprotect(self.as_ptr().add(offset).cast(), len, prot) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Replaces `[offset, offset + len)` with fresh inaccessible anonymous memory.
    pub fn map_anonymous_inaccessible(&self, offset: usize, len: usize) -> io::Result<()> {
        self.map_fixed(offset, len, libc::PROT_NONE, libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    }

    /// Maps `len` bytes of `file` at `file_offset` over `[offset, offset + len)`, readable,
    /// writable and private: writes are copied, the file never changes.
    pub fn map_file_private(
        &self,
        offset: usize,
        len: usize,
        file: &std::fs::File,
        file_offset: u64,
    ) -> io::Result<()> {
        self.map_file_segment(offset, len, file, file_offset, SegmentAccess::ReadWrite)
    }

    /// Maps `len` bytes of `file` from `file_offset` privately at `offset` of our reservation,
    /// readable, and writable or executable as asked (never both).
    pub fn map_file_segment(
        &self,
        offset: usize,
        len: usize,
        file: &std::fs::File,
        file_offset: u64,
        access: SegmentAccess,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let prot = libc::PROT_READ
            | match access {
                SegmentAccess::Read => 0,
                SegmentAccess::ReadWrite => libc::PROT_WRITE,
                SegmentAccess::ReadExecute => libc::PROT_EXEC,
            };
        self.map_fixed(offset, len, prot, 0, file.as_raw_fd(), file_offset as libc::off_t)
    }

    /// A private `MAP_FIXED` mapping over `[offset, offset + len)` of our reservation.
    fn map_fixed(
        &self,
        offset: usize,
        len: usize,
        prot: libc::c_int,
        flags: libc::c_int,
        fd: libc::c_int,
        file_offset: libc::off_t,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_range(offset, len);
        // SAFETY: MAP_FIXED over a range inside our own reservation (checked above) replaces only
        // our pages; the mapping is private, so a file behind it is never written.
        let ptr = unsafe {
            libc::mmap(
                self.as_ptr().add(offset).cast(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_FIXED | flags,
                fd,
                file_offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The address of `[offset, offset + len)`, checked to lie inside the mapping.
    pub fn range_ptr(&self, offset: usize, len: usize) -> *mut u8 {
        self.check_range(offset, len);
        // SAFETY: checked just above to be inside the mapping.
        unsafe { self.as_ptr().add(offset) }
    }

    /// Discards the contents of `[offset, offset + len)`: the next read sees zeros (or, for a
    /// private file mapping, the file's contents).
    pub fn discard(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_range(offset, len);
        // SAFETY: the range lies inside our own private anonymous reservation; MADV_DONTNEED
        // on it only replaces its pages with zero pages.
        let rc = unsafe { libc::madvise(self.as_ptr().add(offset).cast(), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Discards the contents of every range in `ranges` (address, length), as [`Mmap::discard`]
/// does, in as few system calls as possible: one `process_madvise` per 1024 ranges, so the
/// kernel flushes other cores' TLBs once per call rather than once per range. Falls back to one
/// `madvise` per range where `process_madvise` is missing (Linux before 5.10) or refuses
/// `MADV_DONTNEED` (before 6.13).
///
/// # Safety
/// Each range must be page-aligned and lie inside a private mapping of the caller's whose
/// contents nothing else needs.
pub unsafe fn discard_all(ranges: &[(usize, usize)]) -> io::Result<()> {
    static PIDFD: std::sync::OnceLock<Option<std::os::fd::OwnedFd>> = std::sync::OnceLock::new();
    let pidfd = PIDFD.get_or_init(|| {
        // SAFETY: `pidfd_open` on our own pid returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        // SAFETY: a descriptor just opened, owned by nobody else.
        (fd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
    });
    let mut rest = ranges;
    if let Some(pidfd) = pidfd {
        use std::os::fd::AsRawFd;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(1024)];
            let iov: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(addr, len)| libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len })
                .collect();
            // SAFETY: the ranges are the caller's private mappings (see above); the kernel only
            // reads `iov`.
            let done = unsafe {
                libc::syscall(
                    libc::SYS_process_madvise,
                    pidfd.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len(),
                    libc::MADV_DONTNEED,
                    0,
                )
            };
            let total: usize = chunk.iter().map(|r| r.1).sum();
            if done as usize != total {
                // Refused or partial: the per-range fallback below redoes this chunk (discarding
                // twice is harmless).
                break;
            }
            rest = &rest[chunk.len()..];
        }
    }
    for &(addr, len) in rest {
        // SAFETY: as above.
        if unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we own exactly this mapping; nothing refers to it once its owner is dropped.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_zeroes_and_protection_round_trips() {
        let map = Mmap::reserve(4 * PAGE_SIZE).unwrap();
        map.make_accessible(PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
        // SAFETY: the page at PAGE_SIZE was just made accessible.
        unsafe {
            *map.as_ptr().add(PAGE_SIZE) = 7;
            assert_eq!(*map.as_ptr().add(PAGE_SIZE), 7);
        }
        map.discard(PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: still accessible; its contents were discarded.
        unsafe { assert_eq!(*map.as_ptr().add(PAGE_SIZE), 0) };
        map.make_inaccessible(PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
    }
}
