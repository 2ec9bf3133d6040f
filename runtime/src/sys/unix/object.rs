//! Mapping a checked Kiln object into memory the way the system loader would, without it: each
//! loadable segment of the file at its address, with its permissions, from a sealed memory
//! file. Kiln's objects need nothing else (no relocation, no dependency, no initialiser: see
//! `elf_check`), so `dlopen`'s work (a path lookup through `/proc`, its global lock, its
//! bookkeeping) buys nothing, and `/proc` need not be mounted.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};

use super::mmap::{page_align, Mmap, SegmentAccess, PAGE_SIZE};

/// A memory file holding `bytes`, sealed so neither its contents nor its size can change.
pub fn sealed_memfd(bytes: &[u8]) -> io::Result<File> {
    // SAFETY: a NUL-terminated name and flags; a non-negative result is a new descriptor.
    let fd = unsafe { libc::memfd_create(c"kiln-module".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on our own descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// One loadable segment (`PT_LOAD`) of an object file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Its address, relative to where the object is mapped.
    pub address: u64,
    /// Where its bytes start in the file.
    pub offset: u64,
    /// Its size, in the file and in memory (Kiln's objects have no zero-filled tails).
    pub size: u64,
    pub access: SegmentAccess,
}

/// An object file's segments mapped into one reservation, unmapped on drop.
#[derive(Debug)]
pub struct MappedObject {
    mmap: Mmap,
    /// The sealed memory file the segments are mapped from.
    file: File,
}

impl MappedObject {
    /// Maps `segments` of the sealed memory file `file` (see [`sealed_memfd`]), each at its
    /// address from a fresh reservation's start. Refuses segments that do not lie in the file
    /// or whose address and offset differ within a page (the kernel maps whole pages).
    pub fn map(file: File, segments: &[Segment]) -> io::Result<MappedObject> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let file_len = file.metadata()?.len();
        let mut end = 0usize;
        for s in segments {
            let in_file = s.offset.checked_add(s.size).is_some_and(|e| e <= file_len);
            let seg_end = s.address.checked_add(s.size).and_then(|e| usize::try_from(e).ok());
            match seg_end {
                Some(seg_end) if in_file && s.address % PAGE_SIZE as u64 == s.offset % PAGE_SIZE as u64 => {
                    end = end.max(page_align(seg_end));
                }
                _ => return Err(invalid(format!("a loadable segment cannot be mapped: {s:?}"))),
            }
        }
        let mmap = Mmap::reserve(end)?;
        for s in segments.iter().filter(|s| s.size > 0) {
            let within = s.address as usize % PAGE_SIZE;
            let start = s.address as usize - within;
            let len = page_align(s.address as usize + s.size as usize) - start;
            mmap.map_file_segment(start, len, &file, s.offset - within as u64, s.access)?;
        }
        Ok(MappedObject { mmap, file })
    }

    /// Where the object's address 0 is.
    pub fn base(&self) -> *const u8 {
        self.mmap.as_ptr()
    }

    /// The sealed memory file the object is mapped from.
    pub fn file(&self) -> &File {
        &self.file
    }
}
