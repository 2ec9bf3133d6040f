//! Provenance for compiled objects: minisign signatures.
//!
//! A compiled `.so` is native code, so loading one means trusting whoever made it. A signature
//! moves that trust to a key: `kiln compile --sign KEY` (or the `minisign` tool) writes
//! `FILE.so.minisig` beside the object, and [`Module::load_verified`](crate::Module::load_verified)
//! loads an object only if that signature, made by one of the keys the embedder trusts, covers
//! exactly the bytes that are then loaded. Keys and signatures are minisign's formats
//! (Ed25519, BLAKE2b-prehashed), so `minisign -G` makes keys and `minisign -V` checks files too.

use std::path::{Path, PathBuf};

/// A key whose signatures the embedder trusts (a minisign public key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(minisign_verify::PublicKey);

/// Why a signature or key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The key could not be read or decoded.
    #[error("bad public key {source_name}: {reason}")]
    Key {
        /// Where it came from (a path, or "argument").
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The object has no signature file beside it.
    #[error("{path} is not signed: {signature} cannot be read ({reason})")]
    Missing {
        /// The object.
        path: PathBuf,
        /// The signature file looked for.
        signature: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The signature does not verify with the given key.
    #[error("the signature of {path} does not verify with the trusted key: {reason}")]
    Invalid {
        /// The object.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl PublicKey {
    /// Reads a minisign public key file (`minisign.pub`: a comment line, then the key in
    /// base64).
    pub fn from_file(path: impl AsRef<Path>) -> Result<PublicKey, SignatureError> {
        let path = path.as_ref();
        let key_error = |reason: String| SignatureError::Key { source_name: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
        PublicKey::decode(&text).map_err(|e| key_error(e.to_string()))
    }

    /// Decodes a key from minisign's text: the file's contents, or the base64 line alone.
    pub fn decode(text: &str) -> Result<PublicKey, SignatureError> {
        let text = text.trim();
        let key = if text.lines().count() > 1 {
            minisign_verify::PublicKey::decode(text)
        } else {
            minisign_verify::PublicKey::from_base64(text)
        };
        key.map(PublicKey).map_err(|e| SignatureError::Key { source_name: "argument".into(), reason: e.to_string() })
    }
}

/// Where the signature of the object at `path` lives: `PATH.minisig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// Checks that `bytes` (the contents of the object at `path`) carry a signature by `key`.
pub(crate) fn verify(path: &Path, bytes: &[u8], key: &PublicKey) -> Result<(), SignatureError> {
    let signature_file = signature_path(path);
    let text = std::fs::read_to_string(&signature_file).map_err(|e| SignatureError::Missing {
        path: path.to_path_buf(),
        signature: signature_file.clone(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| SignatureError::Invalid { path: path.to_path_buf(), reason };
    let signature = minisign_verify::Signature::decode(&text).map_err(|e| invalid(e.to_string()))?;
    // Only prehashed (current minisign) signatures: legacy ones hash nothing before signing.
    key.0.verify(bytes, &signature, false).map_err(|e| invalid(e.to_string()))
}
