//! The checksum trailer that ends every Kiln shared object.
//!
//! After linking, the compiler appends [`CHECKSUM_TRAILER_LEN`] bytes: [`CHECKSUM_MAGIC`], then
//! the little-endian XXH3-64 of every byte before the trailer. ELF loaders ignore bytes past the
//! last section, so the object stays an ordinary shared object. The runtime recomputes the hash
//! before the dynamic loader sees the file, so a corrupted byte anywhere (code and relocations
//! included, not only the metadata) is a load error instead of a crash at run time.
//!
//! This guards against accidents (a torn copy, a flipped bit, a file edited by hand), not against
//! an attacker: a shared object is native code, and whoever can write one can write any code.

use xxhash_rust::xxh3::xxh3_64;

/// First eight bytes of the trailer.
pub const CHECKSUM_MAGIC: [u8; 8] = *b"KILNSUM\0";

/// Length of the trailer: the magic and the hash.
pub const CHECKSUM_TRAILER_LEN: usize = 16;

/// The trailer to append to a linked object whose bytes are `contents`.
pub fn checksum_trailer(contents: &[u8]) -> [u8; CHECKSUM_TRAILER_LEN] {
    let mut trailer = [0u8; CHECKSUM_TRAILER_LEN];
    trailer[..8].copy_from_slice(&CHECKSUM_MAGIC);
    trailer[8..].copy_from_slice(&xxh3_64(contents).to_le_bytes());
    trailer
}

/// Why a file's trailer does not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumError {
    /// The file does not end with a trailer (truncated, or not written by Kiln's compiler).
    Missing,
    /// The trailer is there but the hash differs: the file changed after it was written.
    Mismatch,
}

impl core::fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ChecksumError::Missing => "no checksum trailer at the end of the file (truncated?)",
            ChecksumError::Mismatch => "checksum mismatch: the file changed after it was compiled",
        })
    }
}

/// Checks the trailer at the end of `file`.
pub fn verify_checksum_trailer(file: &[u8]) -> Result<(), ChecksumError> {
    let Some(split) = file.len().checked_sub(CHECKSUM_TRAILER_LEN) else {
        return Err(ChecksumError::Missing);
    };
    let (contents, trailer) = file.split_at(split);
    if trailer[..8] != CHECKSUM_MAGIC {
        return Err(ChecksumError::Missing);
    }
    if trailer[8..] != xxh3_64(contents).to_le_bytes() {
        return Err(ChecksumError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn every_single_byte_change_is_detected() {
        let contents: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let mut file = contents.clone();
        file.extend_from_slice(&checksum_trailer(&contents));
        assert_eq!(verify_checksum_trailer(&file), Ok(()));
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let expected =
                if (split_magic_range(&file)).contains(&i) { ChecksumError::Missing } else { ChecksumError::Mismatch };
            assert_eq!(verify_checksum_trailer(&bad), Err(expected), "byte {i}");
        }
        assert_eq!(verify_checksum_trailer(&file[..file.len() - 1]), Err(ChecksumError::Missing));
        assert_eq!(verify_checksum_trailer(&[]), Err(ChecksumError::Missing));
    }

    fn split_magic_range(file: &[u8]) -> core::ops::Range<usize> {
        let start = file.len() - CHECKSUM_TRAILER_LEN;
        start..start + 8
    }
}
