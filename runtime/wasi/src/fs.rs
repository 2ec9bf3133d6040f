//! The `fd_*` and `path_*` functions.
//!
//! Descriptor operations act on the host descriptor with rustix (no path is involved).
//! Every path operation goes through the `cap_std::fs::Dir` of the directory descriptor the
//! guest names, so it resolves beneath that directory or fails: cap-std is the sandbox.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cap_fs_ext::{
    DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt, OpenOptionsSyncExt, SystemTimeSpec,
};
use cap_std::fs::{Dir, MetadataExt, OpenOptions};

use crate::funcs::{Fail, Waiting};
use crate::memory::GuestMemory;
use crate::table::{Descriptor, Handle};
use crate::types::{
    fdflags, filetype, fstflags, lookupflags, oflags, rights, whence, Errno, WasiResult, PREOPENTYPE_DIR,
};
use crate::WasiCtx;

type Ret = Result<(), Fail>;

/// Bytes of a `filestat`.
const FILESTAT_SIZE: u32 = 64;

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

struct Filestat {
    dev: u64,
    ino: u64,
    filetype: u8,
    nlink: u64,
    size: u64,
    atim: u64,
    mtim: u64,
    ctim: u64,
}

fn timestamp(sec: i64, nsec: i64) -> u64 {
    (sec as u64).wrapping_mul(1_000_000_000).wrapping_add(nsec as u64)
}

fn write_filestat(mem: &mut GuestMemory<'_>, ptr: u32, st: &Filestat) -> WasiResult<()> {
    mem.slice(ptr, FILESTAT_SIZE)?;
    mem.write_u64(ptr, st.dev)?;
    mem.write_u64(ptr + 8, st.ino)?;
    mem.write_u8(ptr + 16, st.filetype)?;
    mem.write_bytes(ptr + 17, &[0; 7])?;
    mem.write_u64(ptr + 24, st.nlink)?;
    mem.write_u64(ptr + 32, st.size)?;
    mem.write_u64(ptr + 40, st.atim)?;
    mem.write_u64(ptr + 48, st.mtim)?;
    mem.write_u64(ptr + 56, st.ctim)
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
        dev: st.st_dev,
        ino: st.st_ino,
        filetype: filetype_of_mode(st.st_mode),
        nlink: st.st_nlink,
        size: st.st_size as u64,
        atim: timestamp(st.st_atime, st.st_atime_nsec as i64),
        mtim: timestamp(st.st_mtime, st.st_mtime_nsec as i64),
        ctim: timestamp(st.st_ctime, st.st_ctime_nsec as i64),
    })
}

fn metadata_filestat(md: &cap_std::fs::Metadata) -> Filestat {
    Filestat {
        dev: md.dev(),
        ino: md.ino(),
        filetype: filetype_of_mode(md.mode()),
        nlink: md.nlink(),
        size: md.size(),
        atim: timestamp(md.atime(), md.atime_nsec()),
        mtim: timestamp(md.mtime(), md.mtime_nsec()),
        ctim: timestamp(md.ctime(), md.ctime_nsec()),
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

pub(crate) fn fd_advise(
    ctx: &mut WasiCtx,
    _: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    offset: u64,
    len: u64,
    advice: u32,
) -> Ret {
    let advice = match advice {
        0 => rustix::fs::Advice::Normal,
        1 => rustix::fs::Advice::Sequential,
        2 => rustix::fs::Advice::Random,
        3 => rustix::fs::Advice::WillNeed,
        4 => rustix::fs::Advice::DontNeed,
        5 => rustix::fs::Advice::NoReuse,
        _ => return Err(Errno::Inval.into()),
    };
    let fd = ctx.table.get(fd)?.stream(rights::FD_ADVISE)?;
    let len = std::num::NonZeroU64::new(len);
    rustix::fs::fadvise(fd, offset, len, advice).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn fd_allocate(
    ctx: &mut WasiCtx,
    _: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    offset: u64,
    len: u64,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    let fd = desc.stream(rights::FD_ALLOCATE)?;
    if desc.filetype != filetype::REGULAR_FILE {
        return Err(Errno::Badf.into());
    }
    let end = offset.checked_add(len).filter(|&e| e <= i64::MAX as u64).ok_or(Errno::Fbig)?;
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate: grow the file the plain way.
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let size = rustix::fs::fstat(fd).map_err(Errno::from)?.st_size as u64;
            if end > size {
                rustix::fs::ftruncate(fd, end).map_err(Errno::from)?;
            }
            Ok(())
        }
        Err(e) => Err(Errno::from(e).into()),
    }
}

pub(crate) fn fd_close(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32) -> Ret {
    ctx.table.remove(fd)?;
    Ok(())
}

pub(crate) fn fd_datasync(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32) -> Ret {
    let desc = ctx.table.get(fd)?;
    desc.require(rights::FD_DATASYNC)?;
    rustix::fs::fdatasync(desc.handle.fd()).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn fd_sync(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32) -> Ret {
    let desc = ctx.table.get(fd)?;
    desc.require(rights::FD_SYNC)?;
    rustix::fs::fsync(desc.handle.fd()).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn fd_fdstat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    stat_out: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    mem.slice(stat_out, 24)?;
    mem.write_u8(stat_out, desc.filetype)?;
    mem.write_u8(stat_out + 1, 0)?;
    mem.write_u16(stat_out + 2, desc.flags)?;
    mem.write_u32(stat_out + 4, 0)?;
    mem.write_u64(stat_out + 8, desc.base)?;
    mem.write_u64(stat_out + 16, desc.inheriting)?;
    Ok(())
}

pub(crate) fn fd_fdstat_set_flags(
    ctx: &mut WasiCtx,
    _: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    flags: u32,
) -> Ret {
    if flags > fdflags::ALL as u32 {
        return Err(Errno::Inval.into());
    }
    let flags = flags as u16;
    let desc = ctx.table.get_mut(fd)?;
    desc.require(rights::FD_FDSTAT_SET_FLAGS)?;
    // Linux cannot change the synchronisation flags of an open file.
    let sync = fdflags::DSYNC | fdflags::RSYNC | fdflags::SYNC;
    if flags & sync != desc.flags & sync {
        return Err(Errno::NotSup.into());
    }
    // Kept here and honoured by Kiln (`append` in fd_write, `nonblock` in io.rs), never set on
    // the host descriptor: it may be the host's own stdio, shared with whoever started it.
    desc.flags = flags;
    Ok(())
}

pub(crate) fn fd_fdstat_set_rights(
    ctx: &mut WasiCtx,
    _: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    base: u64,
    inheriting: u64,
) -> Ret {
    let desc = ctx.table.get_mut(fd)?;
    if base & !desc.base != 0 || inheriting & !desc.inheriting != 0 {
        return Err(Errno::NotCapable.into());
    }
    desc.base = base;
    desc.inheriting = inheriting;
    Ok(())
}

pub(crate) fn fd_filestat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    stat_out: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    desc.require(rights::FD_FILESTAT_GET)?;
    let mut st = fstat(desc.handle.fd())?;
    // Keep the descriptor's own view of what it is (a pipe reads as `unknown`, as fdstat says).
    st.filetype = if st.filetype == filetype::UNKNOWN { desc.filetype } else { st.filetype };
    Ok(write_filestat(mem, stat_out, &st)?)
}

pub(crate) fn fd_filestat_set_size(
    ctx: &mut WasiCtx,
    _: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    size: u64,
) -> Ret {
    let fd = ctx.table.get(fd)?.stream(rights::FD_FILESTAT_SET_SIZE)?;
    if size > i64::MAX as u64 {
        return Err(Errno::Fbig.into());
    }
    rustix::fs::ftruncate(fd, size).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn fd_filestat_set_times(
    ctx: &mut WasiCtx,
    _: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    atim: u64,
    mtim: u64,
    fst_flags: u32,
) -> Ret {
    let times = rustix_timestamps(atim, mtim, fst_flags as u16)?;
    let desc = ctx.table.get(fd)?;
    desc.require(rights::FD_FILESTAT_SET_TIMES)?;
    rustix::fs::futimens(desc.handle.fd(), &times).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn fd_read(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    waiter: Waiting<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nread_out: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    let fd = desc.stream(rights::FD_READ)?;
    let iovs = mem.iovecs(iovs, iovs_len)?;
    let mut buf = vec![0u8; GuestMemory::capacity(&iovs)];
    let n = crate::io::read(desc, fd, &mut buf, waiter)?;
    mem.scatter(&iovs, &buf[..n])?;
    Ok(mem.write_u32(nread_out, n as u32)?)
}

pub(crate) fn fd_pread(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    offset: u64,
    nread_out: u32,
) -> Ret {
    let fd = ctx.table.get(fd)?.stream(rights::FD_READ | rights::FD_SEEK)?;
    if offset > i64::MAX as u64 {
        return Err(Errno::Inval.into());
    }
    let iovs = mem.iovecs(iovs, iovs_len)?;
    let mut buf = vec![0u8; GuestMemory::capacity(&iovs)];
    // Positioned: only seekable files, which never wait for anyone.
    let n = rustix::io::pread(fd, &mut buf[..], offset).map_err(Errno::from)?;
    mem.scatter(&iovs, &buf[..n])?;
    Ok(mem.write_u32(nread_out, n as u32)?)
}

pub(crate) fn fd_write(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    waiter: Waiting<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten_out: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    let fd = desc.stream(rights::FD_WRITE)?;
    let iovs = mem.iovecs(iovs, iovs_len)?;
    let data = mem.gather(&iovs)?;
    if desc.flags & fdflags::APPEND != 0 && desc.filetype == filetype::REGULAR_FILE {
        rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).map_err(Errno::from)?;
    }
    let n = crate::io::write(desc, fd, &data, waiter)?;
    Ok(mem.write_u32(nwritten_out, n as u32)?)
}

pub(crate) fn fd_pwrite(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    offset: u64,
    nwritten_out: u32,
) -> Ret {
    let fd = ctx.table.get(fd)?.stream(rights::FD_WRITE | rights::FD_SEEK)?;
    if offset > i64::MAX as u64 {
        return Err(Errno::Inval.into());
    }
    let iovs = mem.iovecs(iovs, iovs_len)?;
    let data = mem.gather(&iovs)?;
    // The host descriptor never has O_APPEND (append is emulated in fd_write), so the write
    // lands at `offset` as preview1 says, even on an append-mode descriptor.
    let n = rustix::io::pwrite(fd, &data, offset).map_err(Errno::from)?;
    Ok(mem.write_u32(nwritten_out, n as u32)?)
}

pub(crate) fn fd_prestat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    prestat_out: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    let name = desc.preopen.as_ref().ok_or(Errno::Badf)?;
    mem.slice(prestat_out, 8)?;
    mem.write_u32(prestat_out, PREOPENTYPE_DIR as u32)?;
    mem.write_u32(prestat_out + 4, name.len() as u32)?;
    Ok(())
}

pub(crate) fn fd_prestat_dir_name(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    path: u32,
    path_len: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    let name = desc.preopen.as_ref().ok_or(Errno::Badf)?;
    if (path_len as usize) < name.len() {
        return Err(Errno::NameTooLong.into());
    }
    Ok(mem.write_bytes(path, name)?)
}

pub(crate) fn fd_readdir(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    buf: u32,
    buf_len: u32,
    cookie: u64,
    bufused_out: u32,
) -> Ret {
    let desc = ctx.table.get(fd)?;
    let dir = match &desc.handle {
        Handle::Dir(d) => d,
        _ => return Err(Errno::NotDir.into()),
    };
    desc.require(rights::FD_READDIR)?;
    mem.slice(buf, buf_len)?;

    // `.` and `..` first (both report this directory's inode: the parent may lie outside the
    // sandbox), then the entries in the host's order. The cookie is the index of the next one.
    let own = rustix::fs::fstat(dir).map_err(Errno::from)?;
    let mut entries: Vec<(u64, u8, Vec<u8>)> =
        vec![(own.st_ino, filetype::DIRECTORY, b".".to_vec()), (own.st_ino, filetype::DIRECTORY, b"..".to_vec())];
    for entry in dir.entries().map_err(Errno::from)? {
        let entry = entry.map_err(Errno::from)?;
        let ft = entry.file_type().map_err(Errno::from)?;
        let ty = if ft.is_dir() {
            filetype::DIRECTORY
        } else if ft.is_file() {
            filetype::REGULAR_FILE
        } else if ft.is_symlink() {
            filetype::SYMBOLIC_LINK
        } else {
            use cap_fs_ext::FileTypeExt;
            if ft.is_char_device() {
                filetype::CHARACTER_DEVICE
            } else if ft.is_block_device() {
                filetype::BLOCK_DEVICE
            } else if ft.is_socket() {
                filetype::SOCKET_STREAM
            } else {
                filetype::UNKNOWN
            }
        };
        let ino = std::os::unix::fs::DirEntryExt::ino(&entry);
        entries.push((ino, ty, entry.file_name().as_bytes().to_vec()));
    }

    let mut out = Vec::new();
    for (index, (ino, ty, name)) in entries.iter().enumerate().skip(cookie.min(usize::MAX as u64) as usize) {
        if out.len() >= buf_len as usize {
            break;
        }
        out.extend_from_slice(&(index as u64 + 1).to_le_bytes());
        out.extend_from_slice(&ino.to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.push(*ty);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(name);
    }
    // A full buffer (the last entry may be cut) tells the guest to call again.
    out.truncate(buf_len as usize);
    mem.write_bytes(buf, &out)?;
    Ok(mem.write_u32(bufused_out, out.len() as u32)?)
}

pub(crate) fn fd_renumber(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32, to: u32) -> Ret {
    ctx.table.get(fd)?;
    ctx.table.get(to)?;
    if fd != to {
        let desc = ctx.table.remove(fd)?;
        ctx.table.insert(to, desc);
    }
    Ok(())
}

pub(crate) fn fd_seek(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    fd: u32,
    offset: u64,
    how: u32,
    newoffset_out: u32,
) -> Ret {
    let offset = offset as i64;
    let needed = if offset == 0 && how == whence::CUR as u32 { rights::FD_TELL } else { rights::FD_SEEK };
    let desc = ctx.table.get(fd)?;
    let fd = match desc.stream(needed) {
        // Either right lets the guest learn the position.
        Err(Errno::NotCapable) if needed == rights::FD_TELL => desc.stream(rights::FD_SEEK)?,
        other => other?,
    };
    let from = match u8::try_from(how) {
        Ok(whence::SET) if offset >= 0 => rustix::fs::SeekFrom::Start(offset as u64),
        Ok(whence::CUR) => rustix::fs::SeekFrom::Current(offset),
        Ok(whence::END) => rustix::fs::SeekFrom::End(offset),
        // A negative absolute position, or no such `whence`.
        _ => return Err(Errno::Inval.into()),
    };
    let pos = rustix::fs::seek(fd, from).map_err(Errno::from)?;
    Ok(mem.write_u64(newoffset_out, pos)?)
}

pub(crate) fn fd_tell(ctx: &mut WasiCtx, mem: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32, offset_out: u32) -> Ret {
    let fd = ctx.table.get(fd)?.stream(rights::FD_TELL)?;
    let pos = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).map_err(Errno::from)?;
    Ok(mem.write_u64(offset_out, pos)?)
}

pub(crate) fn path_create_directory(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    path: u32,
    path_len: u32,
) -> Ret {
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_CREATE_DIRECTORY)?;
    let path = path_arg(mem, path, path_len)?;
    dir.create_dir(as_path(&path)).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn path_filestat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    lookup: u32,
    path: u32,
    path_len: u32,
    stat_out: u32,
) -> Ret {
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_FILESTAT_GET)?;
    let follow = lookup & lookupflags::SYMLINK_FOLLOW != 0;
    let path = path_arg(mem, path, path_len)?;
    let md = if follow { dir.metadata(as_path(&path)) } else { dir.symlink_metadata(as_path(&path)) };
    let st = metadata_filestat(&md.map_err(Errno::from)?);
    Ok(write_filestat(mem, stat_out, &st)?)
}

pub(crate) fn path_filestat_set_times(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    lookup: u32,
    path: u32,
    path_len: u32,
    atim: u64,
    mtim: u64,
    fst_flags: u32,
) -> Ret {
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_FILESTAT_SET_TIMES)?;
    let follow = lookup & lookupflags::SYMLINK_FOLLOW != 0;
    let path = path_arg(mem, path, path_len)?;
    let (atime, mtime) = time_specs(atim, mtim, fst_flags as u16)?;
    let result = if follow {
        dir.set_times(as_path(&path), atime, mtime)
    } else {
        dir.set_symlink_times(as_path(&path), atime, mtime)
    };
    result.map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn path_link(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    old_fd: u32,
    old_lookup: u32,
    old_path: u32,
    old_path_len: u32,
    new_fd: u32,
    new_path: u32,
    new_path_len: u32,
) -> Ret {
    let old_dir = ctx.table.get(old_fd)?.dir_with(rights::PATH_LINK_SOURCE)?;
    if old_lookup & lookupflags::SYMLINK_FOLLOW != 0 {
        // cap-std links the path itself; following a symlink first is not offered.
        return Err(Errno::Inval.into());
    }
    let old_path = path_arg(mem, old_path, old_path_len)?;
    let new_dir = ctx.table.get(new_fd)?.dir_with(rights::PATH_LINK_TARGET)?;
    let new_path = path_arg(mem, new_path, new_path_len)?;
    if new_path.ends_with(b"/") {
        // A trailing slash names a directory, which a hard link never is.
        return Err(Errno::NoEnt.into());
    }
    old_dir.hard_link(as_path(&old_path), new_dir, as_path(&new_path)).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn path_open(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    dirflags: u32,
    path: u32,
    path_len: u32,
    oflags_raw: u32,
    base: u64,
    inheriting: u64,
    fdflags_raw: u32,
    fd_out: u32,
) -> Ret {
    if oflags_raw > oflags::ALL as u32 || fdflags_raw > fdflags::ALL as u32 {
        return Err(Errno::Inval.into());
    }
    let (of, ff) = (oflags_raw as u16, fdflags_raw as u16);
    let parent = ctx.table.get(dir_fd)?;
    let mut needed = rights::PATH_OPEN;
    if of & oflags::CREAT != 0 {
        needed |= rights::PATH_CREATE_FILE;
    }
    if of & oflags::TRUNC != 0 {
        needed |= rights::PATH_FILESTAT_SET_SIZE;
    }
    let dir = parent.dir()?;
    if parent.base & needed != needed {
        // Truncating without the right is a permission problem, the rest a missing capability.
        return Err(
            if needed & rights::PATH_FILESTAT_SET_SIZE != 0 && parent.base & rights::PATH_FILESTAT_SET_SIZE == 0 {
                Errno::Perm
            } else {
                Errno::NotCapable
            }
            .into(),
        );
    }
    let parent_inheriting = parent.inheriting;
    let path = path_arg(mem, path, path_len)?;
    let follow = dirflags & lookupflags::SYMLINK_FOLLOW != 0;
    let wants_write = base & (rights::FD_WRITE | rights::FD_ALLOCATE | rights::FD_FILESTAT_SET_SIZE) != 0;
    let wants_read = base & (rights::FD_READ | rights::FD_READDIR) != 0 || !wants_write;

    let handle = if of & oflags::DIRECTORY != 0 {
        if of & (oflags::CREAT | oflags::TRUNC) != 0 {
            return Err(Errno::Inval.into());
        }
        let opened = if follow { dir.open_dir(as_path(&path)) } else { dir.open_dir_nofollow(as_path(&path)) };
        let opened = opened.map_err(|e| match Errno::from(e) {
            // O_NOFOLLOW on a symlink: Linux says ELOOP, preview1 programs expect notdir.
            Errno::Loop if !follow => Errno::NotDir,
            other => other,
        })?;
        if base & rights::FD_WRITE != 0 {
            // A directory cannot be opened for writing.
            return Err(Errno::IsDir.into());
        }
        Handle::Dir(opened)
    } else {
        let mut opts = OpenOptions::new();
        let creating = of & (oflags::CREAT | oflags::TRUNC) != 0;
        opts.read(wants_read).write(wants_write || creating);
        if of & oflags::CREAT != 0 {
            if of & oflags::EXCL != 0 {
                opts.create_new(true);
            } else {
                opts.create(true);
            }
        }
        opts.truncate(of & oflags::TRUNC != 0);
        opts.follow(if follow { FollowSymlinks::Yes } else { FollowSymlinks::No });
        opts.maybe_dir(true);
        // Always: opening a FIFO would otherwise wait for its other end, out of reach of any
        // interrupt. The guest's own `nonblock` is kept in the descriptor (see io.rs).
        opts.nonblock(true);
        opts.sync(ff & fdflags::SYNC != 0);
        opts.dsync(ff & fdflags::DSYNC != 0);
        opts.rsync(ff & fdflags::RSYNC != 0);
        if path.ends_with(b"/") && of & oflags::CREAT != 0 {
            // `name/` can only be a directory, which O_CREAT does not make.
            return Err(Errno::IsDir.into());
        }
        let file = dir.open_with(as_path(&path), &opts).map_err(Errno::from)?;
        let std_file = file.into_std();
        let (ty, _) = crate::table::classify(std::os::fd::AsFd::as_fd(&std_file));
        if ty == filetype::DIRECTORY {
            if wants_write {
                return Err(Errno::IsDir.into());
            }
            Handle::Dir(Dir::from_std_file(std_file))
        } else {
            Handle::File(cap_std::fs::File::from_std(std_file))
        }
    };
    refuse_host_internals(handle.fd())?;
    let (filetype, mask) = crate::table::classify(handle.fd());
    let (base, inheriting) = match handle {
        Handle::Dir(_) => (base & parent_inheriting & rights::DIRECTORY, inheriting & parent_inheriting),
        _ => (base & parent_inheriting & mask, inheriting & parent_inheriting & mask),
    };
    let desc = Descriptor { handle, filetype, base, inheriting, flags: ff, preopen: None };
    let fd = ctx.table.push(desc)?;
    Ok(mem.write_u32(fd_out, fd)?)
}

/// Refuses what a wide preopen (`/`, say) would otherwise reach of the host itself: procfs and
/// sysfs (`/proc/self/mem` is the host's memory), block devices, and character devices other
/// than the harmless ones (null, zero, full, random, urandom, tty).
fn refuse_host_internals(fd: BorrowedFd<'_>) -> WasiResult<()> {
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    let fs = rustix::fs::fstatfs(fd)?;
    if fs.f_type as i64 == PROC_SUPER_MAGIC || fs.f_type as i64 == SYSFS_MAGIC {
        return Err(Errno::Acces);
    }
    let st = rustix::fs::fstat(fd)?;
    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::BlockDevice => Err(Errno::Acces),
        rustix::fs::FileType::CharacterDevice => {
            let device = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
            const HARMLESS: [(u32, u32); 6] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];
            if HARMLESS.contains(&device) {
                Ok(())
            } else {
                Err(Errno::Acces)
            }
        }
        _ => Ok(()),
    }
}

pub(crate) fn path_readlink(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    path: u32,
    path_len: u32,
    buf: u32,
    buf_len: u32,
    bufused_out: u32,
) -> Ret {
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_READLINK)?;
    let path = path_arg(mem, path, path_len)?;
    let target = dir.read_link_contents(as_path(&path)).map_err(Errno::from)?;
    let bytes = target.as_os_str().as_bytes();
    let n = bytes.len().min(buf_len as usize);
    mem.write_bytes(buf, &bytes[..n])?;
    Ok(mem.write_u32(bufused_out, n as u32)?)
}

pub(crate) fn path_remove_directory(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    path: u32,
    path_len: u32,
) -> Ret {
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_REMOVE_DIRECTORY)?;
    let mut path: &[u8] = &path_arg(mem, path, path_len)?;
    // `dir/` names the same directory as `dir` (cap-std would read it as `dir/.`, which
    // rmdir refuses); on a file, rmdir still answers notdir.
    while path.len() > 1 && path.ends_with(b"/") {
        path = &path[..path.len() - 1];
    }
    dir.remove_dir(as_path(path)).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn path_rename(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    old_fd: u32,
    old_path: u32,
    old_path_len: u32,
    new_fd: u32,
    new_path: u32,
    new_path_len: u32,
) -> Ret {
    let old_dir = ctx.table.get(old_fd)?.dir_with(rights::PATH_RENAME_SOURCE)?;
    let old_path = path_arg(mem, old_path, old_path_len)?;
    let new_dir = ctx.table.get(new_fd)?.dir_with(rights::PATH_RENAME_TARGET)?;
    let new_path = path_arg(mem, new_path, new_path_len)?;
    old_dir.rename(as_path(&old_path), new_dir, as_path(&new_path)).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn path_symlink(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    old_path: u32,
    old_path_len: u32,
    dir_fd: u32,
    new_path: u32,
    new_path_len: u32,
) -> Ret {
    let old_path = path_arg(mem, old_path, old_path_len)?;
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_SYMLINK)?;
    let new_path = path_arg(mem, new_path, new_path_len)?;
    // Through cap-std, no symlink ever leads a guest out; but the host (or another program)
    // follows links without it. So a link may only point into the subtree of the directory
    // that holds it: not absolute, and no `..` climbing above its own directory. Wherever the
    // directory is later moved inside the preopen, the link still points inside it.
    if !stays_below(&old_path) {
        return Err(Errno::Perm.into());
    }
    dir.symlink(as_path(&old_path), as_path(&new_path)).map_err(Errno::from)?;
    Ok(())
}

/// Whether a symlink target stays in the subtree of the link's directory: relative, and never
/// more `..` than names before them.
fn stays_below(target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return false;
    }
    let mut depth = 0i64;
    for component in target.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

pub(crate) fn path_unlink_file(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    _: Waiting<'_>,
    dir_fd: u32,
    path: u32,
    path_len: u32,
) -> Ret {
    let dir = ctx.table.get(dir_fd)?.dir_with(rights::PATH_UNLINK_FILE)?;
    let path = path_arg(mem, path, path_len)?;
    dir.remove_file_or_symlink(as_path(&path)).map_err(Errno::from)?;
    Ok(())
}
