//! The `fd_*` and `path_*` functions: descriptor operations in `fd.rs`, path operations in
//! `path.rs`, and what both need here (stat records, timestamps, paths from guest memory).
//!
//! Descriptor operations act on the host descriptor with rustix (no path is involved).
//! Every path operation goes through the `cap_std::fs::Dir` of the directory descriptor the
//! guest names, so it resolves beneath that directory or fails: cap-std is the sandbox.

mod fd;
mod path;

pub(crate) use fd::*;
pub(crate) use path::*;

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cap_fs_ext::SystemTimeSpec;
use cap_std::fs::MetadataExt;

use crate::funcs::Fail;
use crate::layout::Filestat;
use crate::memory::GuestMemory;
use crate::types::{filetype, fstflags, Errno, WasiResult};

type Ret = Result<(), Fail>;

fn path_arg(mem: &GuestMemory<'_>, ptr: u32, len: u32) -> WasiResult<Vec<u8>> {
    let path = mem.path(ptr, len)?;
    if path.contains(&0) {
        return Err(Errno::Ilseq);
    }
    Ok(path)
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn timestamp(sec: i64, nsec: i64) -> u64 {
    (sec as u64).wrapping_mul(1_000_000_000).wrapping_add(nsec as u64)
}

fn write_filestat(mem: &mut GuestMemory<'_>, ptr: u32, st: &Filestat) -> WasiResult<()> {
    mem.write_record(ptr, st)
}

fn filetype_of_mode(mode: u32) -> u8 {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::RegularFile => filetype::REGULAR_FILE,
        rustix::fs::FileType::Directory => filetype::DIRECTORY,
        rustix::fs::FileType::Symlink => filetype::SYMBOLIC_LINK,
        rustix::fs::FileType::CharacterDevice => filetype::CHARACTER_DEVICE,
        rustix::fs::FileType::BlockDevice => filetype::BLOCK_DEVICE,
        rustix::fs::FileType::Socket => filetype::SOCKET_STREAM,
        _ => filetype::UNKNOWN,
    }
}

fn fstat(fd: BorrowedFd<'_>) -> WasiResult<Filestat> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Filestat {
        dev: st.st_dev.into(),
        ino: st.st_ino.into(),
        filetype: filetype_of_mode(st.st_mode),
        nlink: st.st_nlink.into(),
        size: (st.st_size as u64).into(),
        atim: timestamp(st.st_atime, st.st_atime_nsec as i64).into(),
        mtim: timestamp(st.st_mtime, st.st_mtime_nsec as i64).into(),
        ctim: timestamp(st.st_ctime, st.st_ctime_nsec as i64).into(),
        ..Filestat::default()
    })
}

fn metadata_filestat(md: &cap_std::fs::Metadata) -> Filestat {
    Filestat {
        dev: md.dev().into(),
        ino: md.ino().into(),
        filetype: filetype_of_mode(md.mode()),
        nlink: md.nlink().into(),
        size: md.size().into(),
        atim: timestamp(md.atime(), md.atime_nsec()).into(),
        mtim: timestamp(md.mtime(), md.mtime_nsec()).into(),
        ctim: timestamp(md.ctime(), md.ctime_nsec()).into(),
        ..Filestat::default()
    }
}

/// Checks `fstflags` and turns them into the two optional time specs.
fn time_specs(atim: u64, mtim: u64, fst: u16) -> WasiResult<(Option<SystemTimeSpec>, Option<SystemTimeSpec>)> {
    if fst & !fstflags::ALL != 0
        || (fst & fstflags::ATIM != 0 && fst & fstflags::ATIM_NOW != 0)
        || (fst & fstflags::MTIM != 0 && fst & fstflags::MTIM_NOW != 0)
    {
        return Err(Errno::Inval);
    }
    let spec = |set: u16, now: u16, t: u64| {
        if fst & now != 0 {
            Some(SystemTimeSpec::SymbolicNow)
        } else if fst & set != 0 {
            let time = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(t);
            Some(SystemTimeSpec::Absolute(cap_std::time::SystemTime::from_std(time)))
        } else {
            None
        }
    };
    Ok((spec(fstflags::ATIM, fstflags::ATIM_NOW, atim), spec(fstflags::MTIM, fstflags::MTIM_NOW, mtim)))
}

fn rustix_timestamps(atim: u64, mtim: u64, fst: u16) -> WasiResult<rustix::fs::Timestamps> {
    time_specs(atim, mtim, fst)?;
    let spec = |set: u16, now: u16, t: u64| {
        if fst & now != 0 {
            rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW }
        } else if fst & set != 0 {
            rustix::fs::Timespec { tv_sec: (t / 1_000_000_000) as i64, tv_nsec: (t % 1_000_000_000) as _ }
        } else {
            rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT }
        }
    };
    Ok(rustix::fs::Timestamps {
        last_access: spec(fstflags::ATIM, fstflags::ATIM_NOW, atim),
        last_modification: spec(fstflags::MTIM, fstflags::MTIM_NOW, mtim),
    })
}
