//! Path operations: each resolves beneath the directory descriptor the guest names, through
//! its `cap_std::fs::Dir`.

use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt, OpenOptionsMaybeDirExt, OpenOptionsSyncExt};
use cap_std::fs::{Dir, OpenOptions};

use super::{as_path, metadata_filestat, path_arg, time_specs, write_filestat, Ret};
use crate::funcs::Waiting;
use crate::memory::GuestMemory;
use crate::table::{Descriptor, Handle};
use crate::types::{fdflags, filetype, lookupflags, oflags, rights, Errno, WasiResult};
use crate::WasiCtx;

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
    let host = handle.fd().expect("path_open opens host files and directories");
    refuse_host_internals(host)?;
    let (filetype, mask) = crate::table::classify(host);
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
