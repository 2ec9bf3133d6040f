//! Descriptor operations: they act on the host descriptor with rustix, no path involved.

use std::os::unix::ffi::OsStrExt;

use zerocopy::IntoBytes;

use super::{fstat, rustix_timestamps, write_filestat, Ret};
use crate::funcs::Waiting;
use crate::layout::{Dirent, Fdstat, Filestat, Prestat};
use crate::memory::GuestMemory;
use crate::table::Handle;
use crate::types::{fdflags, filetype, rights, whence, Errno, PREOPENTYPE_DIR};
use crate::WasiCtx;

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
    let fd = ctx.table.get(fd)?.host_fd_with(rights::FD_DATASYNC)?;
    rustix::fs::fdatasync(fd).map_err(Errno::from)?;
    Ok(())
}

pub(crate) fn fd_sync(ctx: &mut WasiCtx, _: &mut GuestMemory<'_>, _: Waiting<'_>, fd: u32) -> Ret {
    let fd = ctx.table.get(fd)?.host_fd_with(rights::FD_SYNC)?;
    rustix::fs::fsync(fd).map_err(Errno::from)?;
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
    let stat = Fdstat {
        filetype: desc.filetype,
        flags: desc.flags.into(),
        rights_base: desc.base.into(),
        rights_inheriting: desc.inheriting.into(),
        ..Fdstat::default()
    };
    Ok(mem.write_record(stat_out, &stat)?)
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
    let mut st = match &desc.handle {
        Handle::Input(input) => Filestat { size: (input.len() as u64).into(), ..Filestat::default() },
        Handle::Output(output) => Filestat { size: (output.len() as u64).into(), ..Filestat::default() },
        _ => fstat(desc.host_fd()?)?,
    };
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
    let fd = ctx.table.get(fd)?.host_fd_with(rights::FD_FILESTAT_SET_TIMES)?;
    rustix::fs::futimens(fd, &times).map_err(Errno::from)?;
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
    let iovs = mem.iovecs(iovs, iovs_len)?;
    let mut buf = vec![0u8; GuestMemory::capacity(&iovs)];
    let n = match &desc.handle {
        Handle::Input(input) => {
            desc.require(rights::FD_READ)?;
            input.read(&mut buf)
        }
        _ => crate::io::read(desc, desc.stream(rights::FD_READ)?, &mut buf, waiter)?,
    };
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
    let iovs = mem.iovecs(iovs, iovs_len)?;
    let data = mem.gather(&iovs)?;
    if let Handle::Output(output) = &desc.handle {
        desc.require(rights::FD_WRITE)?;
        let n = output.write(&data)?;
        return Ok(mem.write_u32(nwritten_out, n as u32)?);
    }
    let fd = desc.stream(rights::FD_WRITE)?;
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
    let prestat = Prestat { tag: PREOPENTYPE_DIR, name_len: (name.len() as u32).into(), ..Prestat::default() };
    Ok(mem.write_record(prestat_out, &prestat)?)
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
        let dirent = Dirent {
            next: (index as u64 + 1).into(),
            ino: (*ino).into(),
            namlen: (name.len() as u32).into(),
            filetype: *ty,
            ..Dirent::default()
        };
        out.extend_from_slice(dirent.as_bytes());
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
