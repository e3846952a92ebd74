//! Decoding never allocates far past the payload limit, whatever lengths the bytes declare.
//!
//! One test only in this binary: the allocator limit is process-wide, so nothing else may
//! allocate while a decode runs under it. An allocation past the limit fails, and the
//! process aborts: that is the failure this test reports.

use std::alloc::System;

use cap::Cap;
use omniq_serialization::{Format, PayloadCodec, SerializationError};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const LIMIT: usize = 4096;
/// What a decode may allocate: a small multiple of the limit (decoded values are bigger
/// than their bytes, a `serde_json::Value` per byte at worst) — and nowhere near the
/// gigabytes a forged length prefix asks for.
const BUDGET: usize = 128 * LIMIT + 64 * 1024;

/// Decodes `bytes` with at most `BUDGET` more bytes allocated.
fn decode_within_budget(bytes: &[u8]) {
    for format in [Format::MessagePack, Format::Json] {
        let codec = PayloadCodec::new(format, LIMIT);
        let base = ALLOCATOR.allocated();
        ALLOCATOR
            .set_limit(base + BUDGET)
            .expect("the budget is above what is allocated");
        let value = codec.decode::<serde_json::Value>(bytes);
        let bin = codec.decode::<serde_bytes_like::Bytes>(bytes);
        let text = codec.decode::<String>(bytes);
        let list = codec.decode::<Vec<u64>>(bytes);
        ALLOCATOR.set_limit(usize::MAX).expect("no limit");
        for result in [
            value.map(drop),
            bin.map(drop),
            text.map(drop),
            list.map(drop),
        ] {
            if let Err(err) = result {
                assert!(
                    !matches!(err, SerializationError::Encode { .. }),
                    "decode reported an encode error: {err}"
                );
            }
        }
    }
}

/// A byte buffer deserialized through `deserialize_byte_buf`, like a binary payload.
mod serde_bytes_like {
    use serde::de::{Deserialize, Deserializer, Error, Visitor};

    pub(crate) struct Bytes(#[allow(dead_code)] pub(crate) Vec<u8>);

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
            }
            deserializer.deserialize_byte_buf(V)
        }
    }
}

/// MessagePack headers declaring huge lengths: bin32, str32, array32, map32, ext32.
const HUGE: [&[u8]; 5] = [
    &[0xC6, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0xDB, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0xDD, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0xDF, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0xC9, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn declared_lengths_never_allocate_past_the_limit(
        header in 0usize..HUGE.len(),
        nested in 0usize..4,
        tail in proptest::collection::vec(any::<u8>(), 0..256),
        random in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // Forged lengths, possibly nested inside arrays, behind a valid envelope header.
        let mut bytes = vec![0xC7, 1, 1];
        for _ in 0..nested {
            bytes.extend_from_slice(&[0xDD, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        bytes.extend_from_slice(HUGE[header]);
        bytes.extend_from_slice(&tail);
        decode_within_budget(&bytes);
        // And plain random bodies, in both formats.
        for tag in [1, 2] {
            let mut bytes = vec![0xC7, 1, tag];
            bytes.extend_from_slice(&random);
            decode_within_budget(&bytes);
        }
    }
}
