//! The guest's descriptor table: what each WASI `fd` number refers to, with its rights.
//!
//! A descriptor is a host handle (a `cap_std` file or directory, or an inherited stdio fd)
//! plus the preview1 bookkeeping the host cannot keep for us: base and inheriting rights, the
//! `fdflags` (`append` is emulated here so that `fd_pwrite` honours its offset), and the guest
//! name of a preopened directory.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};

use cap_std::fs::{Dir, File};

use crate::stdio::{MemoryInput, OutputCapture};
use crate::types::{filetype, rights, Errno, WasiResult};

/// The host object behind a descriptor.
pub enum Handle {
    /// One of the host process's own descriptors (0, 1 or 2), passed through.
    Inherited(i32),
    /// An open file (or any non-directory object).
    File(File),
    /// An open directory: the capability every `path_*` call resolves beneath.
    Dir(Dir),
    /// Stdin from bytes in host memory.
    Input(MemoryInput),
    /// Stdout or stderr into a buffer in host memory.
    Output(OutputCapture),
}

impl Handle {
    /// The host descriptor (`None` for the streams in host memory).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            // SAFETY: inherited descriptors are the process's stdio (0, 1, 2), which stay open
            // for the life of the process; Kiln never closes them.
            Handle::Inherited(fd) => Some(unsafe { BorrowedFd::borrow_raw(*fd) }),
            Handle::File(f) => Some(f.as_fd()),
            Handle::Dir(d) => Some(d.as_fd()),
            Handle::Input(_) | Handle::Output(_) => None,
        }
    }
}

/// One open descriptor.
pub struct Descriptor {
    /// The host object.
    pub handle: Handle,
    /// Its preview1 file type.
    pub filetype: u8,
    /// Rights for operations on this descriptor.
    pub base: u64,
    /// Rights that descriptors opened through this one may get.
    pub inheriting: u64,
    /// `fdflags` as the guest set them.
    pub flags: u16,
    /// For preopened directories: the name the guest sees.
    pub preopen: Option<Vec<u8>>,
}

impl Descriptor {
    /// Fails with `notcapable` unless the descriptor has every right in `needed`.
    pub fn require(&self, needed: u64) -> WasiResult<()> {
        if self.base & needed == needed {
            Ok(())
        } else {
            Err(Errno::NotCapable)
        }
    }

    /// The directory, or `notdir`.
    pub fn dir(&self) -> WasiResult<&Dir> {
        match &self.handle {
            Handle::Dir(d) => Ok(d),
            _ => Err(Errno::NotDir),
        }
    }

    /// The directory with the `needed` rights, for a `path_*` call.
    pub fn dir_with(&self, needed: u64) -> WasiResult<&Dir> {
        let dir = self.dir()?;
        self.require(needed)?;
        Ok(dir)
    }

    /// The host descriptor of a non-directory with the `needed` rights (`isdir` for a
    /// directory, as POSIX answers read, write and seek on one; `spipe` for a stream in host
    /// memory, whose rights allow nothing that needs one).
    pub fn stream(&self, needed: u64) -> WasiResult<BorrowedFd<'_>> {
        if let Handle::Dir(_) = self.handle {
            return Err(Errno::IsDir);
        }
        self.require(needed)?;
        self.host_fd()
    }

    /// The host descriptor, with the `needed` rights checked first.
    pub fn host_fd_with(&self, needed: u64) -> WasiResult<BorrowedFd<'_>> {
        self.require(needed)?;
        self.host_fd()
    }

    /// The host descriptor (`spipe` for a stream in host memory).
    pub fn host_fd(&self) -> WasiResult<BorrowedFd<'_>> {
        self.handle.fd().ok_or(Errno::Spipe)
    }
}

/// The preview1 file type and natural rights of a host descriptor.
pub fn classify(fd: BorrowedFd<'_>) -> (u8, u64) {
    let Ok(stat) = rustix::fs::fstat(fd) else {
        return (filetype::UNKNOWN, rights::STREAM);
    };
    match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
        rustix::fs::FileType::RegularFile => (filetype::REGULAR_FILE, rights::FILE),
        rustix::fs::FileType::Directory => (filetype::DIRECTORY, rights::DIRECTORY),
        rustix::fs::FileType::CharacterDevice => {
            // A terminal is not seekable: wasi-libc's isatty() looks for a character device
            // without the seek and tell rights.
            (filetype::CHARACTER_DEVICE, rights::STREAM)
        }
        rustix::fs::FileType::BlockDevice => (filetype::BLOCK_DEVICE, rights::FILE),
        rustix::fs::FileType::Socket => {
            (filetype::SOCKET_STREAM, rights::STREAM | rights::SOCK_SHUTDOWN | rights::SOCK_ACCEPT)
        }
        rustix::fs::FileType::Symlink => (filetype::SYMBOLIC_LINK, rights::FILE),
        _ => (filetype::UNKNOWN, rights::STREAM),
    }
}

/// The table: fd number → descriptor, holding at most `limit` at once.
pub struct Table {
    entries: BTreeMap<u32, Descriptor>,
    limit: usize,
}

impl Table {
    /// An empty table that refuses (`mfile`) to hold more than `limit` descriptors.
    pub fn with_limit(limit: usize) -> Table {
        Table { entries: BTreeMap::new(), limit }
    }

    /// The descriptor `fd`, or `badf`.
    pub fn get(&self, fd: u32) -> WasiResult<&Descriptor> {
        self.entries.get(&fd).ok_or(Errno::Badf)
    }

    /// The descriptor `fd`, writable, or `badf`.
    pub fn get_mut(&mut self, fd: u32) -> WasiResult<&mut Descriptor> {
        self.entries.get_mut(&fd).ok_or(Errno::Badf)
    }

    /// Puts `desc` at the lowest free number (`mfile` if the table is full; `desc` is then
    /// dropped, closing it).
    pub fn push(&mut self, desc: Descriptor) -> WasiResult<u32> {
        if self.entries.len() >= self.limit {
            return Err(Errno::Mfile);
        }
        let mut fd = 0u32;
        for &used in self.entries.keys() {
            if used != fd {
                break;
            }
            fd = fd.checked_add(1).ok_or(Errno::Mfile)?;
        }
        self.entries.insert(fd, desc);
        Ok(fd)
    }

    /// Puts `desc` at `fd`, replacing (and closing) what was there (the host's own setup and
    /// `fd_renumber`, which never add to the count a guest can reach).
    pub fn insert(&mut self, fd: u32, desc: Descriptor) {
        self.entries.insert(fd, desc);
    }

    /// Removes `fd`, closing it when the returned value is dropped.
    pub fn remove(&mut self, fd: u32) -> WasiResult<Descriptor> {
        self.entries.remove(&fd).ok_or(Errno::Badf)
    }
}
