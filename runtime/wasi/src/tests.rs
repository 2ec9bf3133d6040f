//! Host-side tests of the preview1 functions, called directly on a fake guest memory (no
//! compiler needed): the sandbox (one test per escape route), rights, bounds checks, and the
//! preview1 details the official suite relies on.

use std::os::unix::fs::symlink;
use std::path::Path;

use kiln_runtime::{GuestBytes, Val};

use crate::funcs::{Fail, FUNCS};
use crate::memory::GuestMemory;
use crate::types::{lookupflags, oflags, rights, Errno};
use crate::{WasiCtx, WasiCtxBuilder};

const MEM: usize = 64 * 1024;
/// Where test paths are written in the fake memory.
const PATH: u32 = 1024;
const PATH2: u32 = 2048;
/// Where results are written.
const OUT: u32 = 4096;
const SANDBOX: i32 = 3;

struct Guest {
    ctx: WasiCtx,
    mem: Vec<u8>,
}

impl Guest {
    fn new(sandbox: &Path) -> Guest {
        let ctx = WasiCtxBuilder::new().preopened_dir(sandbox, "sandbox").build().unwrap();
        Guest { ctx, mem: vec![0; MEM] }
    }

    /// Calls the preview1 function `name`; returns its errno.
    fn call(&mut self, name: &str, args: &[Val]) -> Errno {
        let call = FUNCS.iter().find(|e| e.name == name).expect("known function").call;
        let mut mem = GuestMemory::new(GuestBytes::detached(&mut self.mem));
        match call(&mut self.ctx, &mut mem, None, args) {
            Ok(()) => Errno::Success,
            Err(Fail::Errno(e)) => e,
            Err(Fail::Trap(t)) => panic!("{name} trapped: {t}"),
        }
    }

    fn put(&mut self, at: u32, bytes: &[u8]) -> i32 {
        self.mem[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        bytes.len() as i32
    }

    fn u32_at(&self, at: u32) -> u32 {
        u32::from_le_bytes(self.mem[at as usize..at as usize + 4].try_into().unwrap())
    }

    fn u64_at(&self, at: u32) -> u64 {
        u64::from_le_bytes(self.mem[at as usize..at as usize + 8].try_into().unwrap())
    }

    /// path_open beneath the preopen; `Ok(fd)` or the errno.
    fn open(&mut self, follow: bool, path: &str, oflags: u16, base: u64) -> Result<u32, Errno> {
        let len = self.put(PATH, path.as_bytes());
        let flags = if follow { lookupflags::SYMLINK_FOLLOW as i32 } else { 0 };
        let e = self.call(
            "path_open",
            &[
                Val::I32(SANDBOX),
                Val::I32(flags),
                Val::I32(PATH as i32),
                Val::I32(len),
                Val::I32(oflags as i32),
                Val::I64(base as i64),
                Val::I64(0),
                Val::I32(0),
                Val::I32(OUT as i32),
            ],
        );
        if e == Errno::Success {
            Ok(self.u32_at(OUT))
        } else {
            Err(e)
        }
    }

    /// A one-path function (`path_create_directory`, `path_unlink_file`, ...) on the preopen.
    fn path_call(&mut self, name: &str, path: &str) -> Errno {
        let len = self.put(PATH, path.as_bytes());
        self.call(name, &[Val::I32(SANDBOX), Val::I32(PATH as i32), Val::I32(len)])
    }

    /// `path_symlink(target, link)` in the preopen.
    fn symlink(&mut self, target: &str, link: &str) -> Errno {
        let target_len = self.put(PATH2, target.as_bytes());
        let link_len = self.put(PATH, link.as_bytes());
        self.call(
            "path_symlink",
            &[
                Val::I32(PATH2 as i32),
                Val::I32(target_len),
                Val::I32(SANDBOX),
                Val::I32(PATH as i32),
                Val::I32(link_len),
            ],
        )
    }

    fn stat(&mut self, follow: bool, path: &str) -> Errno {
        let len = self.put(PATH, path.as_bytes());
        let flags = if follow { lookupflags::SYMLINK_FOLLOW as i32 } else { 0 };
        self.call(
            "path_filestat_get",
            &[Val::I32(SANDBOX), Val::I32(flags), Val::I32(PATH as i32), Val::I32(len), Val::I32(OUT as i32)],
        )
    }
}

/// `root/secret.txt` outside; `root/sandbox` (the preopen) with `inside.txt`, `sub/`, and
/// links pointing out.
fn layout() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let sandbox = r.join("sandbox");
    std::fs::create_dir_all(sandbox.join("sub")).unwrap();
    std::fs::write(r.join("secret.txt"), "secret").unwrap();
    std::fs::write(sandbox.join("inside.txt"), "inside").unwrap();
    symlink(r.join("secret.txt"), sandbox.join("abs_link")).unwrap();
    symlink("../secret.txt", sandbox.join("rel_link")).unwrap();
    symlink("sub/hop", sandbox.join("chain")).unwrap();
    symlink("../../secret.txt", sandbox.join("sub/hop")).unwrap();
    symlink("..", sandbox.join("dir_link")).unwrap();
    symlink("inside.txt", sandbox.join("inside_link")).unwrap();
    root
}

fn refused(e: Result<u32, Errno>) -> bool {
    matches!(e, Err(Errno::Perm | Errno::NotCapable))
}

#[test]
fn dotdot_cannot_leave_the_preopen() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    assert!(refused(g.open(false, "../secret.txt", 0, rights::FD_READ)));
    assert!(refused(g.open(false, "sub/../../secret.txt", 0, rights::FD_READ)));
    assert!(refused(g.open(false, "..", oflags::DIRECTORY, 0)));
    assert!(refused(g.open(false, "../created.txt", oflags::CREAT, rights::FD_WRITE)));
    assert!(!root.path().join("created.txt").exists());
    assert_eq!(g.path_call("path_create_directory", "../made"), Errno::Perm);
    assert!(!root.path().join("made").exists());
    assert_eq!(g.path_call("path_unlink_file", "../secret.txt"), Errno::Perm);
    assert_eq!(g.stat(false, "../secret.txt"), Errno::Perm);
    // A `..` that stays inside is fine.
    assert!(g.open(false, "sub/../inside.txt", 0, rights::FD_READ).is_ok());
    assert!(root.path().join("secret.txt").exists());
}

#[test]
fn absolute_paths_are_refused() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    let secret = root.path().join("secret.txt");
    assert!(refused(g.open(false, "/etc/passwd", 0, rights::FD_READ)));
    assert!(refused(g.open(false, secret.to_str().unwrap(), 0, rights::FD_READ)));
    assert!(refused(g.open(false, "/", oflags::DIRECTORY, 0)));
    assert_eq!(g.path_call("path_unlink_file", secret.to_str().unwrap()), Errno::Perm);
    assert!(secret.exists());
}

#[test]
fn symlinks_cannot_lead_outside() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    assert!(refused(g.open(true, "abs_link", 0, rights::FD_READ)), "absolute target");
    assert!(refused(g.open(true, "rel_link", 0, rights::FD_READ)), "relative target");
    assert!(refused(g.open(true, "chain", 0, rights::FD_READ)), "a chain of links");
    assert!(refused(g.open(false, "dir_link/secret.txt", 0, rights::FD_READ)), "a link as a directory");
    assert_eq!(g.stat(true, "rel_link"), Errno::Perm);
    // The guest cannot make a link that leads out either (the host, following it without
    // cap-std, would escape): its target must stay below the link's own directory.
    for (target, link) in [("../secret.txt", "guest_link"), ("sub/../../secret.txt", "sneaky"), ("/etc/passwd", "abs")]
    {
        let e = g.symlink(target, link);
        assert_eq!(e, Errno::Perm, "{link} -> {target}");
        assert!(std::fs::symlink_metadata(root.path().join("sandbox").join(link)).is_err());
    }
    assert_eq!(g.symlink("inside.txt", "guest_link"), Errno::Success);
    // Even a `..` that stays inside today is refused when it climbs above the link's own
    // directory: moving that directory up later would make the link lead out.
    assert_eq!(g.symlink("../inside.txt", "sub/up_one"), Errno::Perm);
    assert_eq!(g.symlink("deeper/../x", "sub/fine"), Errno::Success);
    assert!(g.open(true, "guest_link", 0, rights::FD_READ).is_ok());
    // Not following: the link itself can be looked at; a link inside works.
    assert_eq!(g.stat(false, "abs_link"), Errno::Success);
    assert!(g.open(true, "inside_link", 0, rights::FD_READ).is_ok());
}

#[test]
fn rights_only_shrink_and_are_enforced() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    let fd = g.open(false, "inside.txt", 0, rights::FD_READ | rights::FD_SEEK).unwrap();
    // No FD_WRITE was asked for: writing is not allowed.
    g.put(0, &[0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(
        g.call("fd_write", &[Val::I32(fd as i32), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]),
        Errno::NotCapable
    );
    // Rights can be dropped, never added back.
    assert_eq!(
        g.call("fd_fdstat_set_rights", &[Val::I32(fd as i32), Val::I64(rights::FD_SEEK as i64), Val::I64(0)]),
        Errno::Success
    );
    assert_eq!(
        g.call("fd_read", &[Val::I32(fd as i32), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]),
        Errno::NotCapable
    );
    let all = (rights::FD_READ | rights::FD_SEEK) as i64;
    assert_eq!(g.call("fd_fdstat_set_rights", &[Val::I32(fd as i32), Val::I64(all), Val::I64(0)]), Errno::NotCapable);
    // A directory without PATH_FILESTAT_SET_SIZE cannot truncate through path_open.
    let dir_rights = (rights::DIRECTORY & !rights::PATH_FILESTAT_SET_SIZE) as i64;
    let inheriting = rights::DIRECTORY_INHERITING as i64;
    assert_eq!(
        g.call("fd_fdstat_set_rights", &[Val::I32(SANDBOX), Val::I64(dir_rights), Val::I64(inheriting)]),
        Errno::Success
    );
    assert_eq!(g.open(false, "inside.txt", oflags::TRUNC, rights::FD_WRITE), Err(Errno::Perm));
    assert_eq!(std::fs::read_to_string(root.path().join("sandbox/inside.txt")).unwrap(), "inside");
}

#[test]
fn bad_guest_pointers_are_efault() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    // A path running past the end of memory.
    let e = g.call(
        "path_open",
        &[
            Val::I32(SANDBOX),
            Val::I32(0),
            Val::I32(MEM as i32 - 2),
            Val::I32(10),
            Val::I32(0),
            Val::I64(0),
            Val::I64(0),
            Val::I32(0),
            Val::I32(OUT as i32),
        ],
    );
    assert_eq!(e, Errno::Fault);
    // An iovec whose buffer lies outside memory.
    let mut iov = Vec::new();
    iov.extend_from_slice(&(MEM as u32 - 4).to_le_bytes());
    iov.extend_from_slice(&16u32.to_le_bytes());
    g.put(0, &iov);
    let fd = g.open(false, "inside.txt", 0, rights::FD_READ).unwrap();
    assert_eq!(g.call("fd_read", &[Val::I32(fd as i32), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]), Errno::Fault);
    // A result pointer outside memory.
    assert_eq!(g.call("fd_fdstat_get", &[Val::I32(fd as i32), Val::I32(-1)]), Errno::Fault);
    assert_eq!(g.call("random_get", &[Val::I32(MEM as i32 - 8), Val::I32(9)]), Errno::Fault);
}

#[test]
fn preopen_names_and_descriptor_errors() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    assert_eq!(g.call("fd_prestat_get", &[Val::I32(SANDBOX), Val::I32(OUT as i32)]), Errno::Success);
    assert_eq!(g.u32_at(OUT + 4), 7);
    assert_eq!(
        g.call("fd_prestat_dir_name", &[Val::I32(SANDBOX), Val::I32(PATH as i32), Val::I32(3)]),
        Errno::NameTooLong
    );
    assert_eq!(g.call("fd_prestat_dir_name", &[Val::I32(SANDBOX), Val::I32(PATH as i32), Val::I32(7)]), Errno::Success);
    assert_eq!(&g.mem[PATH as usize..PATH as usize + 7], b"sandbox");
    assert_eq!(g.call("fd_prestat_get", &[Val::I32(4), Val::I32(OUT as i32)]), Errno::Badf);
    assert_eq!(g.call("fd_close", &[Val::I32(42)]), Errno::Badf);
    assert_eq!(g.call("sock_shutdown", &[Val::I32(42), Val::I32(3)]), Errno::Badf);
    assert_eq!(g.call("sock_shutdown", &[Val::I32(SANDBOX), Val::I32(3)]), Errno::NotSock);
}

#[test]
fn pwrite_ignores_append_mode() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    let len = g.put(PATH, b"log.txt");
    let e = g.call(
        "path_open",
        &[
            Val::I32(SANDBOX),
            Val::I32(0),
            Val::I32(PATH as i32),
            Val::I32(len),
            Val::I32(oflags::CREAT as i32),
            Val::I64((rights::FD_WRITE | rights::FD_SEEK) as i64),
            Val::I64(0),
            Val::I32(crate::types::fdflags::APPEND as i32),
            Val::I32(OUT as i32),
        ],
    );
    assert_eq!(e, Errno::Success);
    let fd = g.u32_at(OUT) as i32;
    g.put(100, b"abcd");
    let mut iov = Vec::new();
    iov.extend_from_slice(&100u32.to_le_bytes());
    iov.extend_from_slice(&4u32.to_le_bytes());
    g.put(0, &iov);
    assert_eq!(g.call("fd_write", &[Val::I32(fd), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]), Errno::Success);
    g.put(100, b"XY");
    g.put(4, &2u32.to_le_bytes());
    assert_eq!(
        g.call("fd_pwrite", &[Val::I32(fd), Val::I32(0), Val::I32(1), Val::I64(0), Val::I32(OUT as i32)]),
        Errno::Success
    );
    assert_eq!(g.call("fd_write", &[Val::I32(fd), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]), Errno::Success);
    assert_eq!(std::fs::read_to_string(root.path().join("sandbox/log.txt")).unwrap(), "XYcdXY");
}

#[test]
fn poll_oneoff_waits_for_a_relative_clock() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    // One clock subscription: userdata 77, monotonic, 20 ms.
    let mut sub = vec![0u8; 48];
    sub[0..8].copy_from_slice(&77u64.to_le_bytes());
    sub[8] = crate::types::eventtype::CLOCK;
    sub[16..20].copy_from_slice(&crate::types::clockid::MONOTONIC.to_le_bytes());
    sub[24..32].copy_from_slice(&20_000_000u64.to_le_bytes());
    g.put(0, &sub);
    let start = std::time::Instant::now();
    assert_eq!(g.call("poll_oneoff", &[Val::I32(0), Val::I32(512), Val::I32(1), Val::I32(OUT as i32)]), Errno::Success);
    assert!(start.elapsed() >= std::time::Duration::from_millis(20));
    assert_eq!(g.u32_at(OUT), 1);
    assert_eq!(g.u64_at(512), 77);
    assert_eq!(g.mem[512 + 10], crate::types::eventtype::CLOCK);
    assert_eq!(g.call("poll_oneoff", &[Val::I32(0), Val::I32(512), Val::I32(0), Val::I32(OUT as i32)]), Errno::Inval);
}

#[test]
fn proc_exit_and_proc_raise_end_the_program_with_a_status() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    let exit = FUNCS.iter().find(|e| e.name == "proc_exit").unwrap().call;
    let raise = FUNCS.iter().find(|e| e.name == "proc_raise").unwrap().call;
    let mut mem = GuestMemory::new(GuestBytes::detached(&mut g.mem));
    let status = |outcome: Result<(), Fail>| match outcome {
        Err(Fail::Trap(err)) => crate::exit_status(Err(kiln_runtime::CallError::Trap(kiln_runtime::Trap::Host(err))))
            .map_err(|e| e.to_string()),
        Ok(()) => Err("returned".into()),
        Err(Fail::Errno(e)) => Err(format!("{e:?}")),
    };
    assert_eq!(status(exit(&mut g.ctx, &mut mem, None, &[Val::I32(42)])), Ok(42));
    // A status no process can report faithfully is an error, not a status (as in Wasmtime).
    for bad in [126, 256, -1] {
        let outcome = status(exit(&mut g.ctx, &mut mem, None, &[Val::I32(bad)]));
        assert!(outcome.as_ref().is_err_and(|e| e.contains("outside [0, 126)")), "proc_exit({bad}): {outcome:?}");
    }
    assert_eq!(status(raise(&mut g.ctx, &mut mem, None, &[Val::I32(15)])), Ok(128 + 15), "sigterm terminates");
    assert!(raise(&mut g.ctx, &mut mem, None, &[Val::I32(0)]).is_ok(), "signal 0 does nothing");
    assert!(matches!(raise(&mut g.ctx, &mut mem, None, &[Val::I32(99)]), Err(Fail::Errno(Errno::Inval))));
    assert_eq!(crate::exit_status(Ok(vec![])).ok(), Some(0));
}

#[test]
fn args_and_environment_are_laid_out_as_preview1_says() {
    let mut g =
        Guest { ctx: WasiCtxBuilder::new().args(["prog", "a b"]).env("K", "V").build().unwrap(), mem: vec![0; MEM] };
    assert_eq!(g.call("args_sizes_get", &[Val::I32(0), Val::I32(4)]), Errno::Success);
    assert_eq!((g.u32_at(0), g.u32_at(4)), (2, 9));
    assert_eq!(g.call("args_get", &[Val::I32(16), Val::I32(64)]), Errno::Success);
    assert_eq!((g.u32_at(16), g.u32_at(20)), (64, 69));
    assert_eq!(&g.mem[64..73], b"prog\0a b\0");
    assert_eq!(g.call("environ_sizes_get", &[Val::I32(0), Val::I32(4)]), Errno::Success);
    assert_eq!((g.u32_at(0), g.u32_at(4)), (1, 4));
    assert_eq!(g.call("environ_get", &[Val::I32(16), Val::I32(MEM as i32 - 2)]), Errno::Fault);
    assert_eq!(g.call("clock_time_get", &[Val::I32(9), Val::I64(0), Val::I32(0)]), Errno::Inval);
    assert_eq!(g.call("clock_res_get", &[Val::I32(1), Val::I32(0)]), Errno::Success);
    assert!(g.u64_at(0) > 0);
}

/// An iovec array of `count` entries at offset 0 (all zero-length, pointing at 0).
fn zero_iovecs(g: &mut Guest, count: usize) {
    g.mem[..count * 8].fill(0);
}

/// Issue 12.6: guest-chosen counts do not become host allocations. Before, one `fd_write` with
/// 0x1fffe000 zero-length iovecs made the host allocate 4 GiB.
#[test]
fn guest_counts_are_capped_with_posix_errors() {
    let root = layout();
    let mut g = Guest::new(&root.path().join("sandbox"));
    let fd = g.open(false, "inside.txt", 0, rights::FD_READ | rights::FD_WRITE).unwrap() as i32;
    zero_iovecs(&mut g, 1024);
    assert_eq!(
        g.call("fd_write", &[Val::I32(fd), Val::I32(0), Val::I32(0x1fff_e000), Val::I32(OUT as i32)]),
        Errno::Inval
    );
    assert_eq!(g.call("fd_read", &[Val::I32(fd), Val::I32(0), Val::I32(1025), Val::I32(OUT as i32)]), Errno::Inval);
    assert_eq!(g.call("fd_write", &[Val::I32(fd), Val::I32(0), Val::I32(1024), Val::I32(OUT as i32)]), Errno::Success);
    // poll_oneoff: a subscription count beyond the cap is refused before anything is built.
    assert_eq!(g.call("poll_oneoff", &[Val::I32(0), Val::I32(0), Val::I32(4097), Val::I32(OUT as i32)]), Errno::Inval);
    // A path longer than PATH_MAX is refused before it is copied.
    let e = g.call(
        "path_open",
        &[
            Val::I32(SANDBOX),
            Val::I32(0),
            Val::I32(0),
            Val::I32(8192),
            Val::I32(0),
            Val::I64(0),
            Val::I64(0),
            Val::I32(0),
            Val::I32(OUT as i32),
        ],
    );
    assert_eq!(e, Errno::NameTooLong);
}

/// Issue 12.7: a guest cannot hold more descriptors than its limit (before: ~20,000, the
/// whole process's).
#[test]
fn open_descriptors_are_limited() {
    let root = layout();
    let ctx =
        WasiCtxBuilder::new().preopened_dir(root.path().join("sandbox"), "sandbox").max_open_files(10).build().unwrap();
    let mut g = Guest { ctx, mem: vec![0; MEM] };
    let mut opened = 0;
    let error = loop {
        match g.open(false, "inside.txt", 0, rights::FD_READ) {
            Ok(_) => opened += 1,
            Err(e) => break e,
        }
        assert!(opened <= 10, "the limit is not enforced");
    };
    assert_eq!(error, Errno::Mfile);
    assert_eq!(opened, 9, "ten in all, the preopen included");
    assert_eq!(g.call("fd_close", &[Val::I32(4)]), Errno::Success);
    assert!(g.open(false, "inside.txt", 0, rights::FD_READ).is_ok(), "closing one makes room");
}

/// Issue 12.5: stdio the host lends (a file here, inherited stdio in `kiln run`) is a stream:
/// the guest cannot truncate, re-time, seek or allocate it, and flags it sets stay Kiln's,
/// never the host descriptor's. Before, `fd_filestat_set_size` truncated the caller's log and
/// `fd_fdstat_set_flags` left the caller's pipe non-blocking.
#[test]
fn lent_stdio_cannot_be_changed_by_the_guest() {
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    std::fs::write(&log_path, "keep me").unwrap();
    let log = std::fs::OpenOptions::new().read(true).write(true).open(&log_path).unwrap();
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let writer_probe = writer.try_clone().unwrap();
    let ctx = WasiCtxBuilder::new()
        .stdio_file(0, std::fs::File::from(reader))
        .stdio_file(1, log)
        .stdio_file(2, std::fs::File::from(writer))
        .build()
        .unwrap();
    let mut g = Guest { ctx, mem: vec![0; MEM] };
    assert_eq!(g.call("fd_filestat_set_size", &[Val::I32(1), Val::I64(0)]), Errno::NotCapable);
    assert_eq!(
        g.call("fd_filestat_set_times", &[Val::I32(1), Val::I64(0), Val::I64(0), Val::I32(1 << 2)]),
        Errno::NotCapable
    );
    assert_eq!(g.call("fd_allocate", &[Val::I32(1), Val::I64(0), Val::I64(1 << 20)]), Errno::NotCapable);
    assert_eq!(g.call("fd_seek", &[Val::I32(1), Val::I64(0), Val::I32(0), Val::I32(OUT as i32)]), Errno::NotCapable);
    assert_eq!(std::fs::read_to_string(&log_path).unwrap(), "keep me");

    let nonblock = crate::types::fdflags::NONBLOCK as i32;
    for fd in [0, 2] {
        assert_eq!(g.call("fd_fdstat_set_flags", &[Val::I32(fd), Val::I32(nonblock)]), Errno::Success);
    }
    let flags = rustix::fs::fcntl_getfl(writer_probe.as_fd()).unwrap();
    assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK), "the host's pipe stays blocking");
    // The guest's non-blocking read of an empty pipe still answers `again`, and fdstat shows
    // the flag it set.
    g.put(0, &[0, 1, 0, 0, 4, 0, 0, 0]);
    assert_eq!(g.call("fd_read", &[Val::I32(0), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]), Errno::Again);
    assert_eq!(g.call("fd_fdstat_get", &[Val::I32(0), Val::I32(OUT as i32)]), Errno::Success);
    assert_eq!(u16::from_le_bytes([g.mem[OUT as usize + 2], g.mem[OUT as usize + 3]]) as i32, nonblock);
}

/// Issue 12.8: `/proc`, `/sys` and `/dev` cannot be preopened, and through a wider preopen the
/// host's own files there cannot be opened (`/proc/self/mem` would be the host's memory).
#[test]
fn the_host_itself_is_out_of_reach() {
    for special in ["/proc", "/proc/self", "/sys", "/dev"] {
        let err = WasiCtxBuilder::new().preopened_dir(special, "x").build().err().expect("refused");
        assert!(matches!(err, crate::WasiError::Forbidden { .. }), "{special}: {err}");
    }
    let ctx = WasiCtxBuilder::new().preopened_dir("/", "/").build().unwrap();
    let mut g = Guest { ctx, mem: vec![0; MEM] };
    for path in ["proc/self/mem", "proc/self/environ", "sys/kernel/mm/transparent_hugepage/enabled", "dev/mem"] {
        let e = g.open(false, path, 0, rights::FD_READ);
        assert!(matches!(e, Err(Errno::Acces | Errno::NoEnt | Errno::Perm)), "{path}: {e:?}");
    }
    assert_eq!(g.open(false, "proc", oflags::DIRECTORY, 0), Err(Errno::Acces));
    assert!(g.open(false, "dev/null", 0, rights::FD_READ).is_ok(), "harmless devices stay usable");
}

#[test]
fn stdio_in_host_memory_reads_the_given_bytes_and_captures_a_bounded_output() {
    let out = crate::OutputCapture::new(8);
    let ctx = WasiCtxBuilder::new().stdin_bytes(b"request body".to_vec()).stdout_capture(&out).build().unwrap();
    let mut g = Guest { ctx, mem: vec![0; MEM] };
    // One iovec at 0: 5 bytes at 64.
    g.put(0, &64u32.to_le_bytes());
    g.put(4, &5u32.to_le_bytes());
    let read = |g: &mut Guest| g.call("fd_read", &[Val::I32(0), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]);
    assert_eq!(read(&mut g), Errno::Success);
    assert_eq!((g.u32_at(OUT), &g.mem[64..69]), (5, &b"reque"[..]));
    // Reading on to the end, then 0.
    assert_eq!(read(&mut g), Errno::Success);
    assert_eq!(read(&mut g), Errno::Success);
    assert_eq!((g.u32_at(OUT), &g.mem[64..66]), (2, &b"dy"[..]));
    assert_eq!(read(&mut g), Errno::Success);
    assert_eq!(g.u32_at(OUT), 0);

    let write = |g: &mut Guest| g.call("fd_write", &[Val::I32(1), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]);
    g.put(64, b"hello");
    assert_eq!(write(&mut g), Errno::Success);
    assert_eq!(g.u32_at(OUT), 5);
    // Past the limit: a short write, then `fbig`; the capture keeps exactly the limit.
    assert_eq!(write(&mut g), Errno::Success);
    assert_eq!(g.u32_at(OUT), 3);
    assert_eq!(write(&mut g), Errno::Fbig);
    assert_eq!((out.contents(), out.overflowed()), (b"hellohel".to_vec(), true));

    // Reading stdout or writing stdin is refused, and neither can seek or sync.
    assert_eq!(g.call("fd_read", &[Val::I32(1), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]), Errno::NotCapable);
    assert_eq!(g.call("fd_write", &[Val::I32(0), Val::I32(0), Val::I32(1), Val::I32(OUT as i32)]), Errno::NotCapable);
    assert_eq!(g.call("fd_seek", &[Val::I32(0), Val::I64(0), Val::I32(0), Val::I32(OUT as i32)]), Errno::NotCapable);
    assert_eq!(g.call("fd_sync", &[Val::I32(1)]), Errno::NotCapable);
    // filestat: the sizes of the streams, and no host descriptor behind them.
    assert_eq!(g.call("fd_filestat_get", &[Val::I32(0), Val::I32(OUT as i32)]), Errno::Success);
    assert_eq!(g.u64_at(OUT + 32), 12);
    assert_eq!(g.call("fd_filestat_get", &[Val::I32(1), Val::I32(OUT as i32)]), Errno::Success);
    assert_eq!(g.u64_at(OUT + 32), 8);
}
