//! The preview1 ABI's values: errno codes, rights and flags, each taken from the `wasi` crate's
//! constants (generated from the `wasi_snapshot_preview1` witx), not copied by hand; the
//! record layouts are in `layout.rs`.

use std::io;

/// A preview1 `errno`. The host functions return these as their `i32` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum Errno {
    Success = wasi::ERRNO_SUCCESS.raw(),
    TooBig = wasi::ERRNO_2BIG.raw(),
    Acces = wasi::ERRNO_ACCES.raw(),
    AddrInUse = wasi::ERRNO_ADDRINUSE.raw(),
    AddrNotAvail = wasi::ERRNO_ADDRNOTAVAIL.raw(),
    AfNoSupport = wasi::ERRNO_AFNOSUPPORT.raw(),
    Again = wasi::ERRNO_AGAIN.raw(),
    Already = wasi::ERRNO_ALREADY.raw(),
    Badf = wasi::ERRNO_BADF.raw(),
    BadMsg = wasi::ERRNO_BADMSG.raw(),
    Busy = wasi::ERRNO_BUSY.raw(),
    Canceled = wasi::ERRNO_CANCELED.raw(),
    Child = wasi::ERRNO_CHILD.raw(),
    ConnAborted = wasi::ERRNO_CONNABORTED.raw(),
    ConnRefused = wasi::ERRNO_CONNREFUSED.raw(),
    ConnReset = wasi::ERRNO_CONNRESET.raw(),
    Deadlk = wasi::ERRNO_DEADLK.raw(),
    DestAddrReq = wasi::ERRNO_DESTADDRREQ.raw(),
    Dom = wasi::ERRNO_DOM.raw(),
    Dquot = wasi::ERRNO_DQUOT.raw(),
    Exist = wasi::ERRNO_EXIST.raw(),
    Fault = wasi::ERRNO_FAULT.raw(),
    Fbig = wasi::ERRNO_FBIG.raw(),
    HostUnreach = wasi::ERRNO_HOSTUNREACH.raw(),
    Idrm = wasi::ERRNO_IDRM.raw(),
    Ilseq = wasi::ERRNO_ILSEQ.raw(),
    InProgress = wasi::ERRNO_INPROGRESS.raw(),
    Intr = wasi::ERRNO_INTR.raw(),
    Inval = wasi::ERRNO_INVAL.raw(),
    Io = wasi::ERRNO_IO.raw(),
    IsConn = wasi::ERRNO_ISCONN.raw(),
    IsDir = wasi::ERRNO_ISDIR.raw(),
    Loop = wasi::ERRNO_LOOP.raw(),
    Mfile = wasi::ERRNO_MFILE.raw(),
    Mlink = wasi::ERRNO_MLINK.raw(),
    MsgSize = wasi::ERRNO_MSGSIZE.raw(),
    Multihop = wasi::ERRNO_MULTIHOP.raw(),
    NameTooLong = wasi::ERRNO_NAMETOOLONG.raw(),
    NetDown = wasi::ERRNO_NETDOWN.raw(),
    NetReset = wasi::ERRNO_NETRESET.raw(),
    NetUnreach = wasi::ERRNO_NETUNREACH.raw(),
    Nfile = wasi::ERRNO_NFILE.raw(),
    NoBufs = wasi::ERRNO_NOBUFS.raw(),
    NoDev = wasi::ERRNO_NODEV.raw(),
    NoEnt = wasi::ERRNO_NOENT.raw(),
    NoExec = wasi::ERRNO_NOEXEC.raw(),
    NoLck = wasi::ERRNO_NOLCK.raw(),
    NoLink = wasi::ERRNO_NOLINK.raw(),
    NoMem = wasi::ERRNO_NOMEM.raw(),
    NoMsg = wasi::ERRNO_NOMSG.raw(),
    NoProtoOpt = wasi::ERRNO_NOPROTOOPT.raw(),
    NoSpc = wasi::ERRNO_NOSPC.raw(),
    NoSys = wasi::ERRNO_NOSYS.raw(),
    NotConn = wasi::ERRNO_NOTCONN.raw(),
    NotDir = wasi::ERRNO_NOTDIR.raw(),
    NotEmpty = wasi::ERRNO_NOTEMPTY.raw(),
    NotRecoverable = wasi::ERRNO_NOTRECOVERABLE.raw(),
    NotSock = wasi::ERRNO_NOTSOCK.raw(),
    NotSup = wasi::ERRNO_NOTSUP.raw(),
    NoTty = wasi::ERRNO_NOTTY.raw(),
    Nxio = wasi::ERRNO_NXIO.raw(),
    Overflow = wasi::ERRNO_OVERFLOW.raw(),
    OwnerDead = wasi::ERRNO_OWNERDEAD.raw(),
    Perm = wasi::ERRNO_PERM.raw(),
    Pipe = wasi::ERRNO_PIPE.raw(),
    Proto = wasi::ERRNO_PROTO.raw(),
    ProtoNoSupport = wasi::ERRNO_PROTONOSUPPORT.raw(),
    ProtoType = wasi::ERRNO_PROTOTYPE.raw(),
    Range = wasi::ERRNO_RANGE.raw(),
    Rofs = wasi::ERRNO_ROFS.raw(),
    Spipe = wasi::ERRNO_SPIPE.raw(),
    Srch = wasi::ERRNO_SRCH.raw(),
    Stale = wasi::ERRNO_STALE.raw(),
    TimedOut = wasi::ERRNO_TIMEDOUT.raw(),
    TxtBsy = wasi::ERRNO_TXTBSY.raw(),
    Xdev = wasi::ERRNO_XDEV.raw(),
    NotCapable = wasi::ERRNO_NOTCAPABLE.raw(),
}

impl Errno {
    /// The errno for a host `errno` value (Linux numbering).
    pub fn from_host(raw: i32) -> Errno {
        use rustix::io::Errno as E;
        let e = E::from_raw_os_error(raw);
        match e {
            E::TOOBIG => Errno::TooBig,
            E::ACCESS => Errno::Acces,
            E::ADDRINUSE => Errno::AddrInUse,
            E::ADDRNOTAVAIL => Errno::AddrNotAvail,
            E::AFNOSUPPORT => Errno::AfNoSupport,
            E::AGAIN => Errno::Again,
            E::ALREADY => Errno::Already,
            E::BADF => Errno::Badf,
            E::BADMSG => Errno::BadMsg,
            E::BUSY => Errno::Busy,
            E::CANCELED => Errno::Canceled,
            E::CHILD => Errno::Child,
            E::CONNABORTED => Errno::ConnAborted,
            E::CONNREFUSED => Errno::ConnRefused,
            E::CONNRESET => Errno::ConnReset,
            E::DEADLK => Errno::Deadlk,
            E::DESTADDRREQ => Errno::DestAddrReq,
            E::DOM => Errno::Dom,
            E::DQUOT => Errno::Dquot,
            E::EXIST => Errno::Exist,
            E::FAULT => Errno::Fault,
            E::FBIG => Errno::Fbig,
            E::HOSTUNREACH => Errno::HostUnreach,
            E::IDRM => Errno::Idrm,
            E::ILSEQ => Errno::Ilseq,
            E::INPROGRESS => Errno::InProgress,
            E::INTR => Errno::Intr,
            E::INVAL => Errno::Inval,
            E::IO => Errno::Io,
            E::ISCONN => Errno::IsConn,
            E::ISDIR => Errno::IsDir,
            E::LOOP => Errno::Loop,
            E::MFILE => Errno::Mfile,
            E::MLINK => Errno::Mlink,
            E::MSGSIZE => Errno::MsgSize,
            E::MULTIHOP => Errno::Multihop,
            E::NAMETOOLONG => Errno::NameTooLong,
            E::NETDOWN => Errno::NetDown,
            E::NETRESET => Errno::NetReset,
            E::NETUNREACH => Errno::NetUnreach,
            E::NFILE => Errno::Nfile,
            E::NOBUFS => Errno::NoBufs,
            E::NODEV => Errno::NoDev,
            E::NOENT => Errno::NoEnt,
            E::NOEXEC => Errno::NoExec,
            E::NOLCK => Errno::NoLck,
            E::NOLINK => Errno::NoLink,
            E::NOMEM => Errno::NoMem,
            E::NOMSG => Errno::NoMsg,
            E::NOPROTOOPT => Errno::NoProtoOpt,
            E::NOSPC => Errno::NoSpc,
            E::NOSYS => Errno::NoSys,
            E::NOTCONN => Errno::NotConn,
            E::NOTDIR => Errno::NotDir,
            E::NOTEMPTY => Errno::NotEmpty,
            E::NOTRECOVERABLE => Errno::NotRecoverable,
            E::NOTSOCK => Errno::NotSock,
            E::NOTSUP => Errno::NotSup,
            E::NOTTY => Errno::NoTty,
            E::NXIO => Errno::Nxio,
            E::OVERFLOW => Errno::Overflow,
            E::OWNERDEAD => Errno::OwnerDead,
            E::PERM => Errno::Perm,
            E::PIPE => Errno::Pipe,
            E::PROTO => Errno::Proto,
            E::PROTONOSUPPORT => Errno::ProtoNoSupport,
            E::PROTOTYPE => Errno::ProtoType,
            E::RANGE => Errno::Range,
            E::ROFS => Errno::Rofs,
            E::SPIPE => Errno::Spipe,
            E::SRCH => Errno::Srch,
            E::STALE => Errno::Stale,
            E::TIMEDOUT => Errno::TimedOut,
            E::TXTBSY => Errno::TxtBsy,
            E::XDEV => Errno::Xdev,
            _ => Errno::Io,
        }
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Errno {
        Errno::from_host(e.raw_os_error())
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        if let Some(raw) = e.raw_os_error() {
            return Errno::from_host(raw);
        }
        match e.kind() {
            // cap-std reports a path that would leave the sandbox (`..` past the root, an
            // absolute path, a symlink pointing outside) as PermissionDenied without an OS code.
            io::ErrorKind::PermissionDenied => Errno::Perm,
            io::ErrorKind::NotFound => Errno::NoEnt,
            io::ErrorKind::AlreadyExists => Errno::Exist,
            io::ErrorKind::InvalidInput => Errno::Inval,
            io::ErrorKind::InvalidData => Errno::Ilseq,
            io::ErrorKind::Unsupported => Errno::NotSup,
            io::ErrorKind::WouldBlock => Errno::Again,
            io::ErrorKind::Interrupted => Errno::Intr,
            io::ErrorKind::OutOfMemory => Errno::NoMem,
            io::ErrorKind::BrokenPipe => Errno::Pipe,
            io::ErrorKind::NotADirectory => Errno::NotDir,
            io::ErrorKind::IsADirectory => Errno::IsDir,
            io::ErrorKind::DirectoryNotEmpty => Errno::NotEmpty,
            io::ErrorKind::InvalidFilename => Errno::NameTooLong,
            _ => Errno::Io,
        }
    }
}

/// Result of a WASI function body: `Ok` is `errno::success`.
pub type WasiResult<T> = Result<T, Errno>;

/// `rights` bits.
pub mod rights {
    pub const FD_DATASYNC: u64 = wasi::RIGHTS_FD_DATASYNC;
    pub const FD_READ: u64 = wasi::RIGHTS_FD_READ;
    pub const FD_SEEK: u64 = wasi::RIGHTS_FD_SEEK;
    pub const FD_FDSTAT_SET_FLAGS: u64 = wasi::RIGHTS_FD_FDSTAT_SET_FLAGS;
    pub const FD_SYNC: u64 = wasi::RIGHTS_FD_SYNC;
    pub const FD_TELL: u64 = wasi::RIGHTS_FD_TELL;
    pub const FD_WRITE: u64 = wasi::RIGHTS_FD_WRITE;
    pub const FD_ADVISE: u64 = wasi::RIGHTS_FD_ADVISE;
    pub const FD_ALLOCATE: u64 = wasi::RIGHTS_FD_ALLOCATE;
    pub const PATH_CREATE_DIRECTORY: u64 = wasi::RIGHTS_PATH_CREATE_DIRECTORY;
    pub const PATH_CREATE_FILE: u64 = wasi::RIGHTS_PATH_CREATE_FILE;
    pub const PATH_LINK_SOURCE: u64 = wasi::RIGHTS_PATH_LINK_SOURCE;
    pub const PATH_LINK_TARGET: u64 = wasi::RIGHTS_PATH_LINK_TARGET;
    pub const PATH_OPEN: u64 = wasi::RIGHTS_PATH_OPEN;
    pub const FD_READDIR: u64 = wasi::RIGHTS_FD_READDIR;
    pub const PATH_READLINK: u64 = wasi::RIGHTS_PATH_READLINK;
    pub const PATH_RENAME_SOURCE: u64 = wasi::RIGHTS_PATH_RENAME_SOURCE;
    pub const PATH_RENAME_TARGET: u64 = wasi::RIGHTS_PATH_RENAME_TARGET;
    pub const PATH_FILESTAT_GET: u64 = wasi::RIGHTS_PATH_FILESTAT_GET;
    pub const PATH_FILESTAT_SET_SIZE: u64 = wasi::RIGHTS_PATH_FILESTAT_SET_SIZE;
    pub const PATH_FILESTAT_SET_TIMES: u64 = wasi::RIGHTS_PATH_FILESTAT_SET_TIMES;
    pub const FD_FILESTAT_GET: u64 = wasi::RIGHTS_FD_FILESTAT_GET;
    pub const FD_FILESTAT_SET_SIZE: u64 = wasi::RIGHTS_FD_FILESTAT_SET_SIZE;
    pub const FD_FILESTAT_SET_TIMES: u64 = wasi::RIGHTS_FD_FILESTAT_SET_TIMES;
    pub const PATH_SYMLINK: u64 = wasi::RIGHTS_PATH_SYMLINK;
    pub const PATH_REMOVE_DIRECTORY: u64 = wasi::RIGHTS_PATH_REMOVE_DIRECTORY;
    pub const PATH_UNLINK_FILE: u64 = wasi::RIGHTS_PATH_UNLINK_FILE;
    pub const POLL_FD_READWRITE: u64 = wasi::RIGHTS_POLL_FD_READWRITE;
    pub const SOCK_SHUTDOWN: u64 = wasi::RIGHTS_SOCK_SHUTDOWN;
    pub const SOCK_ACCEPT: u64 = wasi::RIGHTS_SOCK_ACCEPT;

    /// Every right preview1 defines (the highest is `sock_accept`).
    pub const ALL: u64 = (SOCK_ACCEPT << 1) - 1;

    /// The rights that mean something on a regular file.
    pub const FILE: u64 = FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;

    /// The rights that mean something on a directory.
    pub const DIRECTORY: u64 = FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_DATASYNC
        | PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE;

    /// What a directory may hand down to what is opened through it.
    pub const DIRECTORY_INHERITING: u64 = DIRECTORY | FILE;

    /// The rights of a character device or pipe.
    pub const STREAM: u64 = FD_READ | FD_WRITE | FD_FDSTAT_SET_FLAGS | FD_FILESTAT_GET | POLL_FD_READWRITE;

    /// Inherited stdin, whatever it is: read, poll, look at, and flags kept by Kiln.
    pub const STDIN: u64 = FD_READ | FD_FDSTAT_SET_FLAGS | FD_FILESTAT_GET | POLL_FD_READWRITE;

    /// Inherited stdout and stderr, whatever they are: write, poll, look at, and flags kept by
    /// Kiln.
    pub const STDOUT: u64 = FD_WRITE | FD_FDSTAT_SET_FLAGS | FD_FILESTAT_GET | POLL_FD_READWRITE;
}

/// `filetype` values.
pub mod filetype {
    pub const UNKNOWN: u8 = wasi::FILETYPE_UNKNOWN.raw();
    pub const BLOCK_DEVICE: u8 = wasi::FILETYPE_BLOCK_DEVICE.raw();
    pub const CHARACTER_DEVICE: u8 = wasi::FILETYPE_CHARACTER_DEVICE.raw();
    pub const DIRECTORY: u8 = wasi::FILETYPE_DIRECTORY.raw();
    pub const REGULAR_FILE: u8 = wasi::FILETYPE_REGULAR_FILE.raw();
    pub const SOCKET_DGRAM: u8 = wasi::FILETYPE_SOCKET_DGRAM.raw();
    pub const SOCKET_STREAM: u8 = wasi::FILETYPE_SOCKET_STREAM.raw();
    pub const SYMBOLIC_LINK: u8 = wasi::FILETYPE_SYMBOLIC_LINK.raw();
}

/// `fdflags` bits.
pub mod fdflags {
    pub const APPEND: u16 = wasi::FDFLAGS_APPEND;
    pub const DSYNC: u16 = wasi::FDFLAGS_DSYNC;
    pub const NONBLOCK: u16 = wasi::FDFLAGS_NONBLOCK;
    pub const RSYNC: u16 = wasi::FDFLAGS_RSYNC;
    pub const SYNC: u16 = wasi::FDFLAGS_SYNC;
    pub const ALL: u16 = APPEND | DSYNC | NONBLOCK | RSYNC | SYNC;
}

/// `oflags` bits.
pub mod oflags {
    pub const CREAT: u16 = wasi::OFLAGS_CREAT;
    pub const DIRECTORY: u16 = wasi::OFLAGS_DIRECTORY;
    pub const EXCL: u16 = wasi::OFLAGS_EXCL;
    pub const TRUNC: u16 = wasi::OFLAGS_TRUNC;
    pub const ALL: u16 = CREAT | DIRECTORY | EXCL | TRUNC;
}

/// `lookupflags` bits.
pub mod lookupflags {
    pub const SYMLINK_FOLLOW: u32 = wasi::LOOKUPFLAGS_SYMLINK_FOLLOW;
}

/// `fstflags` bits.
pub mod fstflags {
    pub const ATIM: u16 = wasi::FSTFLAGS_ATIM;
    pub const ATIM_NOW: u16 = wasi::FSTFLAGS_ATIM_NOW;
    pub const MTIM: u16 = wasi::FSTFLAGS_MTIM;
    pub const MTIM_NOW: u16 = wasi::FSTFLAGS_MTIM_NOW;
    pub const ALL: u16 = ATIM | ATIM_NOW | MTIM | MTIM_NOW;
}

/// `whence` values.
pub mod whence {
    pub const SET: u8 = wasi::WHENCE_SET.raw();
    pub const CUR: u8 = wasi::WHENCE_CUR.raw();
    pub const END: u8 = wasi::WHENCE_END.raw();
}

/// `clockid` values.
pub mod clockid {
    pub const REALTIME: u32 = wasi::CLOCKID_REALTIME.raw();
    pub const MONOTONIC: u32 = wasi::CLOCKID_MONOTONIC.raw();
    pub const PROCESS_CPUTIME_ID: u32 = wasi::CLOCKID_PROCESS_CPUTIME_ID.raw();
    pub const THREAD_CPUTIME_ID: u32 = wasi::CLOCKID_THREAD_CPUTIME_ID.raw();
}

/// `eventtype` values.
pub mod eventtype {
    pub const CLOCK: u8 = wasi::EVENTTYPE_CLOCK.raw();
    pub const FD_READ: u8 = wasi::EVENTTYPE_FD_READ.raw();
    pub const FD_WRITE: u8 = wasi::EVENTTYPE_FD_WRITE.raw();
}

/// `eventrwflags::fd_readwrite_hangup`.
pub const EVENTRWFLAGS_HANGUP: u16 = wasi::EVENTRWFLAGS_FD_READWRITE_HANGUP;
/// `subclockflags::subscription_clock_abstime`.
pub const SUBCLOCKFLAGS_ABSTIME: u16 = wasi::SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME;
/// `preopentype::dir`.
pub const PREOPENTYPE_DIR: u8 = wasi::PREOPENTYPE_DIR.raw();
/// `sdflags` bits (`rd`, `wr`).
pub const SDFLAGS_ALL: u32 = (wasi::SDFLAGS_RD | wasi::SDFLAGS_WR) as u32;
