//! The records preview1 passes through guest memory, as `#[repr(C)]` structs of little-endian
//! fields (`zerocopy`), so each record's layout is declared once, checked against preview1's
//! sizes and offsets at compile time, and read or written whole.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `filestat`.
#[derive(Debug, Default, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Filestat {
    pub dev: U64,
    pub ino: U64,
    pub filetype: u8,
    pub _pad: [u8; 7],
    pub nlink: U64,
    pub size: U64,
    pub atim: U64,
    pub mtim: U64,
    pub ctim: U64,
}

/// `fdstat`.
#[derive(Debug, Default, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Fdstat {
    pub filetype: u8,
    pub _pad: u8,
    pub flags: U16,
    pub _pad2: [u8; 4],
    pub rights_base: U64,
    pub rights_inheriting: U64,
}

/// `prestat` (the `dir` variant, the only one).
#[derive(Debug, Default, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Prestat {
    pub tag: u8,
    pub _pad: [u8; 3],
    pub name_len: U32,
}

/// `dirent`, which the name's bytes follow.
#[derive(Debug, Default, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Dirent {
    pub next: U64,
    pub ino: U64,
    pub namlen: U32,
    pub filetype: u8,
    pub _pad: [u8; 3],
}

/// `iovec` and `ciovec`: a guest buffer.
#[derive(Debug, Default, Clone, Copy, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Iovec {
    pub buf: U32,
    pub buf_len: U32,
}

/// `subscription`: what `poll_oneoff` waits for; `contents` is a [`SubscriptionClock`] or a
/// [`SubscriptionFd`] by `tag`.
#[derive(Debug, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Subscription {
    pub userdata: U64,
    pub tag: u8,
    pub _pad: [u8; 7],
    pub contents: [u8; 32],
}

/// `subscription_clock`.
#[derive(Debug, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct SubscriptionClock {
    pub id: U32,
    pub _pad: [u8; 4],
    pub timeout: U64,
    pub precision: U64,
    pub flags: U16,
    pub _pad2: [u8; 6],
}

/// `subscription_fd_readwrite`.
#[derive(Debug, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct SubscriptionFd {
    pub fd: U32,
    pub _pad: [u8; 28],
}

/// `event`: one of `poll_oneoff`'s results.
#[derive(Debug, Default, Clone, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Event {
    pub userdata: U64,
    pub error: U16,
    pub kind: u8,
    pub _pad: [u8; 5],
    pub nbytes: U64,
    pub flags: U16,
    pub _pad2: [u8; 6],
}

// preview1's sizes and the offsets of the fields guests read (from `wasi_snapshot_preview1.witx`,
// the layouts wasi-libc compiles against).
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Filestat>() == 64 && offset_of!(Filestat, filetype) == 16 && offset_of!(Filestat, ctim) == 56);
    assert!(size_of::<Fdstat>() == 24 && offset_of!(Fdstat, flags) == 2 && offset_of!(Fdstat, rights_base) == 8);
    assert!(size_of::<Prestat>() == 8 && offset_of!(Prestat, name_len) == 4);
    assert!(size_of::<Dirent>() == 24 && offset_of!(Dirent, namlen) == 16 && offset_of!(Dirent, filetype) == 20);
    assert!(size_of::<Iovec>() == 8 && offset_of!(Iovec, buf_len) == 4);
    assert!(size_of::<Subscription>() == 48 && offset_of!(Subscription, tag) == 8);
    assert!(offset_of!(Subscription, contents) == 16);
    assert!(size_of::<SubscriptionClock>() == 32 && offset_of!(SubscriptionClock, timeout) == 8);
    assert!(offset_of!(SubscriptionClock, flags) == 24 && size_of::<SubscriptionFd>() == 32);
    assert!(size_of::<Event>() == 32 && offset_of!(Event, error) == 8 && offset_of!(Event, kind) == 10);
    assert!(offset_of!(Event, nbytes) == 16 && offset_of!(Event, flags) == 24);
};
