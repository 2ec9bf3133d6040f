//! Standard streams in host memory: bytes the guest reads as stdin, and a bounded buffer that
//! collects what it writes to stdout or stderr. No descriptor and no system call per stream,
//! which is what a server running one guest per request wants (its request body in, its
//! response out).

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use crate::types::{Errno, WasiResult};

/// Bytes in host memory that the guest reads, once, from the start.
pub struct MemoryInput {
    data: Vec<u8>,
    position: Cell<usize>,
}

impl MemoryInput {
    pub(crate) fn new(data: Vec<u8>) -> MemoryInput {
        MemoryInput { data, position: Cell::new(0) }
    }

    /// Reads into `buf` from where the last read ended; 0 at the end.
    pub(crate) fn read(&self, buf: &mut [u8]) -> usize {
        let rest = &self.data[self.position.get()..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.position.set(self.position.get() + n);
        n
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.position.get()
    }

    /// Its whole length.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }
}

/// Where a guest's stdout or stderr goes when the host wants it in memory
/// ([`crate::WasiCtxBuilder::stdout_capture`]): at most `limit` bytes are kept; a write past
/// the limit keeps what fits and reports a short write, and the next one fails with `fbig`,
/// as a file at its size limit does. Clones share one buffer.
#[derive(Clone)]
pub struct OutputCapture {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl OutputCapture {
    /// An empty capture that keeps at most `limit` bytes.
    pub fn new(limit: usize) -> OutputCapture {
        OutputCapture { inner: Arc::new(Mutex::new(Captured { bytes: Vec::new(), limit, overflowed: false })) }
    }

    /// What the guest wrote so far (at most the limit).
    pub fn contents(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// Takes what the guest wrote so far, leaving the capture empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().bytes)
    }

    /// Whether the guest tried to write more than the limit.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Bytes kept so far.
    pub fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    /// Whether nothing was kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends what fits of `data`: the bytes taken, or `fbig` when nothing more fits.
    pub(crate) fn write(&self, data: &[u8]) -> WasiResult<usize> {
        let mut captured = self.lock();
        let room = captured.limit - captured.bytes.len();
        if room == 0 && !data.is_empty() {
            captured.overflowed = true;
            return Err(Errno::Fbig);
        }
        let n = room.min(data.len());
        if n < data.len() {
            captured.overflowed = true;
        }
        captured.bytes.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_read_once_in_pieces() {
        let input = MemoryInput::new(b"hello".to_vec());
        let mut buf = [0u8; 3];
        assert_eq!(input.read(&mut buf), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(input.remaining(), 2);
        assert_eq!(input.read(&mut buf), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(input.read(&mut buf), 0);
    }

    #[test]
    fn a_capture_keeps_at_most_its_limit_and_says_so() {
        let capture = OutputCapture::new(5);
        assert_eq!(capture.write(b"abc"), Ok(3));
        assert!(!capture.overflowed());
        assert_eq!(capture.write(b"defg"), Ok(2));
        assert!(capture.overflowed());
        assert_eq!(capture.write(b"h"), Err(Errno::Fbig));
        assert_eq!(capture.write(b""), Ok(0));
        assert_eq!(capture.contents(), b"abcde");
        assert_eq!(capture.take(), b"abcde");
        assert!(capture.is_empty());
    }
}
