//! Limiter state: a small value per limiter key that workers replace by compare-and-set, so
//! that rate and concurrency limits hold across every worker sharing the store. The store
//! only keeps the bytes and their version; what they mean is the workers' business.

use crate::{StoreError, StoreResult};

/// Longest limiter key accepted, in bytes.
pub const MAX_LIMITER_KEY_BYTES: usize = 512;

/// Largest limiter state accepted, in bytes.
pub const MAX_LIMITER_STATE_BYTES: usize = 256 * 1024;

/// The version a limiter state was read at: a write made from it succeeds only while the
/// state is still that version. Opaque: a counter, a revision or an e-tag, as the store
/// keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimiterVersion(String);

impl LimiterVersion {
    /// A version as the store writes it.
    pub fn new(version: impl Into<String>) -> Self {
        Self(version.into())
    }

    /// The version as the store wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A limiter's stored value and the version to replace it from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterState {
    /// The value last written.
    pub bytes: Vec<u8>,
    /// Its version.
    pub version: LimiterVersion,
}

impl LimiterState {
    /// `bytes` stored at `version`.
    pub fn new(bytes: Vec<u8>, version: LimiterVersion) -> Self {
        Self { bytes, version }
    }
}

/// Refuses a limiter key no store could keep: empty, longer than
/// [`MAX_LIMITER_KEY_BYTES`], or holding a NUL character.
///
/// # Errors
/// [`StoreError::Invalid`] saying which.
pub fn validate_limiter_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        Err(StoreError::Invalid("the limiter key is empty".into()))
    } else if key.len() > MAX_LIMITER_KEY_BYTES {
        Err(StoreError::Invalid(format!(
            "the limiter key is {} bytes, more than the {MAX_LIMITER_KEY_BYTES} allowed",
            key.len()
        )))
    } else if key.contains('\0') {
        Err(StoreError::Invalid(format!(
            "the limiter key {key:?} contains a NUL character"
        )))
    } else {
        Ok(())
    }
}

/// Refuses a limiter write no store should take: a bad key (see [`validate_limiter_key`])
/// or a state larger than [`MAX_LIMITER_STATE_BYTES`].
///
/// # Errors
/// [`StoreError::Invalid`] saying which.
pub fn validate_limiter_write(key: &str, bytes: &[u8]) -> StoreResult<()> {
    validate_limiter_key(key)?;
    if bytes.len() > MAX_LIMITER_STATE_BYTES {
        return Err(StoreError::Invalid(format!(
            "the limiter state is {} bytes, more than the {MAX_LIMITER_STATE_BYTES} allowed",
            bytes.len()
        )));
    }
    Ok(())
}

/// The key a limiter key is stored under where keys are restricted to a few characters
/// (NATS subjects, object paths): its UTF-8 bytes in lower-case hex.
pub fn limiter_key_hex(key: &str) -> String {
    use std::fmt::Write;
    key.bytes()
        .fold(String::with_capacity(key.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_hex_encoded() {
        assert!(validate_limiter_key("").is_err());
        assert!(validate_limiter_key("a\0b").is_err());
        assert!(validate_limiter_key(&"k".repeat(MAX_LIMITER_KEY_BYTES + 1)).is_err());
        assert!(validate_limiter_key("q:emails").is_ok());
        assert!(validate_limiter_write("k", &vec![0; MAX_LIMITER_STATE_BYTES + 1]).is_err());
        assert_eq!(limiter_key_hex("a/é"), "612fc3a9");
    }
}
