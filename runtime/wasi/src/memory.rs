//! Bounds-checked access to the guest's linear memory.
//!
//! Every pointer the guest passes is an offset into its memory 0; [`GuestMemory`] checks that
//! `offset + length` lies inside the memory before touching it, so a bad pointer becomes
//! `errno::fault` and never reaches host memory. Reads and writes are little-endian and need
//! no alignment.

use zerocopy::FromBytes;

use crate::layout::Iovec;
use kiln_runtime::GuestBytes;

use crate::types::{Errno, WasiResult};

/// The most one read or write moves through a host buffer. Overlapping iovecs could otherwise
/// make the host allocate gigabytes; a shorter transfer is a normal short read or write.
pub const MAX_TRANSFER: usize = 16 << 20;

/// The most iovecs one call may pass, as POSIX's `IOV_MAX` on Linux: more is `inval`, as
/// `readv`/`writev` answer (the host never allocates per guest-chosen count beyond it).
pub const IOV_MAX: u32 = 1024;

/// The longest path argument, as Linux's `PATH_MAX`: longer is `nametoolong` (a guest path is
/// copied out of its memory, so its length is a host allocation).
pub const PATH_MAX: u32 = 4096;

/// The calling instance's memory 0.
pub struct GuestMemory<'a> {
    bytes: GuestBytes<'a>,
}

/// One `iovec`/`ciovec`: a guest buffer's offset and length.
#[derive(Debug, Clone, Copy)]
pub struct IoVec {
    /// Offset of the buffer in guest memory.
    pub ptr: u32,
    /// Its length in bytes.
    pub len: u32,
}

impl<'a> GuestMemory<'a> {
    /// Wraps a memory's bytes (writes are marked for teardown through [`GuestBytes`]).
    pub fn new(bytes: GuestBytes<'a>) -> GuestMemory<'a> {
        GuestMemory { bytes }
    }

    fn range(&self, ptr: u32, len: u32) -> WasiResult<std::ops::Range<usize>> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Errno::Fault)?;
        if end > self.bytes.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    /// The guest bytes `[ptr, ptr + len)`.
    pub fn slice(&self, ptr: u32, len: u32) -> WasiResult<&[u8]> {
        let range = self.range(ptr, len)?;
        Ok(&self.bytes.as_slice()[range])
    }

    /// The guest bytes `[ptr, ptr + len)`, writable.
    pub fn slice_mut(&mut self, ptr: u32, len: u32) -> WasiResult<&mut [u8]> {
        let range = self.range(ptr, len)?;
        self.bytes.slice_mut(range).ok_or(Errno::Fault)
    }

    fn read<const N: usize>(&self, ptr: u32) -> WasiResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(ptr, N as u32)?);
        Ok(out)
    }

    /// Reads a preview1 record (see `layout.rs`).
    pub(crate) fn read_record<T: zerocopy::FromBytes>(&self, ptr: u32) -> WasiResult<T> {
        let len = u32::try_from(std::mem::size_of::<T>()).map_err(|_| Errno::Fault)?;
        Ok(T::read_from_bytes(self.slice(ptr, len)?).expect("a slice of the record's size"))
    }

    /// Writes a preview1 record (see `layout.rs`).
    pub(crate) fn write_record<T: zerocopy::IntoBytes + zerocopy::Immutable>(
        &mut self,
        ptr: u32,
        record: &T,
    ) -> WasiResult<()> {
        self.write_bytes(ptr, record.as_bytes())
    }

    /// Reads a `u8`.
    pub fn read_u8(&self, ptr: u32) -> WasiResult<u8> {
        Ok(self.read::<1>(ptr)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn read_u16(&self, ptr: u32) -> WasiResult<u16> {
        Ok(u16::from_le_bytes(self.read(ptr)?))
    }

    /// Reads a little-endian `u32`.
    pub fn read_u32(&self, ptr: u32) -> WasiResult<u32> {
        Ok(u32::from_le_bytes(self.read(ptr)?))
    }

    /// Reads a little-endian `u64`.
    pub fn read_u64(&self, ptr: u32) -> WasiResult<u64> {
        Ok(u64::from_le_bytes(self.read(ptr)?))
    }

    /// Writes bytes at `ptr`.
    pub fn write_bytes(&mut self, ptr: u32, data: &[u8]) -> WasiResult<()> {
        let len = u32::try_from(data.len()).map_err(|_| Errno::Fault)?;
        self.slice_mut(ptr, len)?.copy_from_slice(data);
        Ok(())
    }

    /// Writes a `u8`.
    pub fn write_u8(&mut self, ptr: u32, v: u8) -> WasiResult<()> {
        self.write_bytes(ptr, &[v])
    }

    /// Writes a little-endian `u16`.
    pub fn write_u16(&mut self, ptr: u32, v: u16) -> WasiResult<()> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// Writes a little-endian `u32`.
    pub fn write_u32(&mut self, ptr: u32, v: u32) -> WasiResult<()> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// Writes a little-endian `u64`.
    pub fn write_u64(&mut self, ptr: u32, v: u64) -> WasiResult<()> {
        self.write_bytes(ptr, &v.to_le_bytes())
    }

    /// Reads an array of `len` iovecs at `ptr` (at most [`IOV_MAX`]), checking that each
    /// buffer lies in memory.
    pub fn iovecs(&self, ptr: u32, len: u32) -> WasiResult<Vec<IoVec>> {
        if len > IOV_MAX {
            return Err(Errno::Inval);
        }
        let bytes = self.slice(ptr, len * std::mem::size_of::<Iovec>() as u32)?;
        let records = <[Iovec]>::ref_from_bytes(bytes).expect("whole records (Iovec has alignment 1)");
        let mut out = Vec::with_capacity(len as usize);
        let mut total: u64 = 0;
        for record in records {
            let iov = IoVec { ptr: record.buf.get(), len: record.buf_len.get() };
            self.range(iov.ptr, iov.len)?;
            total += iov.len as u64;
            out.push(iov);
        }
        // preview1's `size` is 32 bits: a transfer larger than that cannot be reported.
        if total > u32::MAX as u64 {
            return Err(Errno::Inval);
        }
        Ok(out)
    }

    /// Concatenates the buffers of `iovs`, at most [`MAX_TRANSFER`] bytes (the rest is left
    /// for the guest's next call, as a short write).
    pub fn gather(&self, iovs: &[IoVec]) -> WasiResult<Vec<u8>> {
        let mut out = Vec::new();
        for iov in iovs {
            let room = MAX_TRANSFER - out.len();
            let take = (iov.len as usize).min(room) as u32;
            out.extend_from_slice(self.slice(iov.ptr, take)?);
            if out.len() == MAX_TRANSFER {
                break;
            }
        }
        Ok(out)
    }

    /// The bytes one read into `iovs` may bring: their total, at most [`MAX_TRANSFER`].
    pub fn capacity(iovs: &[IoVec]) -> usize {
        iovs.iter().map(|v| v.len as usize).sum::<usize>().min(MAX_TRANSFER)
    }

    /// Spreads `data` over the buffers of `iovs`, in order.
    pub fn scatter(&mut self, iovs: &[IoVec], mut data: &[u8]) -> WasiResult<()> {
        for iov in iovs {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(iov.len as usize);
            self.write_bytes(iov.ptr, &data[..n])?;
            data = &data[n..];
        }
        Ok(())
    }

    /// A path argument: the bytes `[ptr, ptr + len)` (at most [`PATH_MAX`]), copied out of
    /// guest memory.
    pub fn path(&self, ptr: u32, len: u32) -> WasiResult<Vec<u8>> {
        if len > PATH_MAX {
            return Err(Errno::NameTooLong);
        }
        Ok(self.slice(ptr, len)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_is_fault() {
        let mut bytes = vec![0u8; 16];
        let mut mem = GuestMemory::new(GuestBytes::detached(&mut bytes));
        assert_eq!(mem.read_u32(13), Err(Errno::Fault));
        assert_eq!(mem.read_u32(12), Ok(0));
        assert_eq!(mem.write_u64(9, 1), Err(Errno::Fault));
        assert_eq!(mem.slice(u32::MAX, 2).map(|s| s.len()), Err(Errno::Fault));
        mem.write_u16(14, 0xBEEF).unwrap();
        assert_eq!(mem.read_u16(14), Ok(0xBEEF));
    }

    #[test]
    fn iovec_buffers_are_checked() {
        let mut bytes = vec![0u8; 64];
        bytes[0..4].copy_from_slice(&32u32.to_le_bytes());
        bytes[4..8].copy_from_slice(&40u32.to_le_bytes()); // 32 + 40 > 64
        let mem = GuestMemory::new(GuestBytes::detached(&mut bytes));
        assert_eq!(mem.iovecs(0, 1).map(|v| v.len()), Err(Errno::Fault));
        assert_eq!(mem.iovecs(60, 1).map(|v| v.len()), Err(Errno::Fault));
        assert_eq!(mem.iovecs(0, u32::MAX).map(|v| v.len()), Err(Errno::Inval));
    }

    #[test]
    fn guest_counts_and_lengths_are_capped() {
        // 0x1fffe000 zero-length iovecs once made the host allocate 4 GiB.
        let mut bytes = vec![0u8; 64];
        let mem = GuestMemory::new(GuestBytes::detached(&mut bytes));
        assert_eq!(mem.iovecs(0, 0x1fff_e000).map(|v| v.len()), Err(Errno::Inval));
        assert_eq!(mem.iovecs(0, IOV_MAX + 1).map(|v| v.len()), Err(Errno::Inval));
        assert_eq!(mem.path(0, PATH_MAX + 1), Err(Errno::NameTooLong));
        assert_eq!(mem.path(0, 8).map(|p| p.len()), Ok(8));
    }

    #[test]
    fn transfers_are_capped() {
        let mut bytes = vec![7u8; MAX_TRANSFER + 64];
        let mem = GuestMemory::new(GuestBytes::detached(&mut bytes));
        // Two iovecs over the same large buffer: the copy stops at the cap.
        let iovs = [IoVec { ptr: 0, len: MAX_TRANSFER as u32 }, IoVec { ptr: 0, len: MAX_TRANSFER as u32 }];
        assert_eq!(mem.gather(&iovs).unwrap().len(), MAX_TRANSFER);
        assert_eq!(GuestMemory::capacity(&iovs), MAX_TRANSFER);
        assert_eq!(GuestMemory::capacity(&[IoVec { ptr: 0, len: 3 }]), 3);
    }
}
