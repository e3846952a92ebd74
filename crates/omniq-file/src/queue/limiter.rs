//! Limiter state: an object each, under `limiters/`, replaced only from the version read.

use bytes::Bytes;
use omniq_storage::{
    LimiterState, LimiterVersion, StoreResult, validate_limiter_key, validate_limiter_write,
};

use super::FileTaskQueue;
use super::keys::LIMITERS;
use crate::objects::Version;

/// Longest path segment written: local file systems refuse names past 255 bytes.
const SEGMENT: usize = 200;

/// A key's UTF-8 bytes in lower-case base32 (RFC 4648 letters, no padding): short enough
/// for the longest key to fit an object key's 1,024 bytes, and one case, so that keys stay
/// apart on case-insensitive file systems.
fn base32(key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(key.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0_u32, 0_u32);
    for byte in key.bytes() {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// `limiters/<base32>.l`, a long key's letters split into segments; the suffix keeps a
/// key's object apart from the directory of a longer key that starts like it.
fn path(key: &str) -> String {
    let encoded = base32(key);
    let segments: Vec<&str> = encoded
        .as_bytes()
        .chunks(SEGMENT)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    format!("{LIMITERS}/{}.l", segments.join("/"))
}

fn encode(version: &Version) -> LimiterVersion {
    let pair = (&version.e_tag, &version.version);
    LimiterVersion::new(serde_json::to_string(&pair).unwrap_or_default())
}

fn decode(version: &LimiterVersion) -> Option<Version> {
    let (e_tag, version) = serde_json::from_str(version.as_str()).ok()?;
    Some(Version { e_tag, version })
}

impl FileTaskQueue {
    pub(super) async fn limiter_state(&self, key: String) -> StoreResult<Option<LimiterState>> {
        validate_limiter_key(&key)?;
        let stored = self.objects().get(&path(&key)).await?;
        Ok(stored.map(|stored| LimiterState::new(stored.bytes.to_vec(), encode(&stored.version))))
    }

    pub(super) async fn replace_limiter(
        &self,
        key: String,
        expected: Option<LimiterVersion>,
        bytes: Vec<u8>,
    ) -> StoreResult<bool> {
        validate_limiter_write(&key, &bytes)?;
        let path = path(&key);
        let bytes = Bytes::from(bytes);
        let written = match expected {
            Some(expected) => {
                // A version this store never wrote cannot match.
                let Some(version) = decode(&expected) else {
                    return Ok(false);
                };
                self.objects().update(&path, bytes, &version).await?
            }
            None => self.objects().create(&path, bytes).await?,
        };
        Ok(written.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_split_into_short_segments() {
        let long = path(&"k".repeat(300));
        assert!(long.split('/').all(|segment| segment.len() <= SEGMENT + 2));
        assert_ne!(path(&"k".repeat(100)), path(&"k".repeat(200)));
        assert_eq!(path("a"), "limiters/me.l");
        assert_eq!(base32("foobar"), "mzxw6ytboi");
        let longest = path(&"é".repeat(omniq_storage::MAX_LIMITER_KEY_BYTES / 2));
        assert!(crate::objects::valid_key(&longest), "{longest}");
    }
}
