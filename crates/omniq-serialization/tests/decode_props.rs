//! Property tests: decoding arbitrary bytes never panics, and errors are typed.

use omniq_serialization::{Format, PayloadCodec, SerializationError};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const LIMIT: usize = 4096;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Resize {
    path: String,
    width: u32,
    tags: Vec<String>,
    data: Vec<u8>,
}

fn codecs() -> [PayloadCodec; 2] {
    [
        PayloadCodec::new(Format::MessagePack, LIMIT),
        PayloadCodec::new(Format::Json, LIMIT),
    ]
}

/// An envelope header for `tag` (1 = MessagePack, 2 = JSON) followed by `body`.
fn envelope(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xC7, 1, tag];
    bytes.extend_from_slice(body);
    bytes
}

fn check<T: serde::de::DeserializeOwned>(codec: &PayloadCodec, bytes: &[u8]) {
    match codec.decode::<T>(bytes) {
        Ok(_)
        | Err(
            SerializationError::Decode { .. }
            | SerializationError::BadEnvelope(_)
            | SerializationError::Unsupported { .. },
        ) => {}
        Err(SerializationError::TooLarge { size, limit }) => {
            assert!(size > limit, "refused {size} bytes under the {limit} limit");
        }
        Err(other) => panic!("unexpected error decoding: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for codec in codecs() {
            check::<Resize>(&codec, &bytes);
            check::<serde_json::Value>(&codec, &bytes);
            check::<String>(&codec, &bytes);
            let _ = PayloadCodec::format_of(&bytes);
        }
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        tag in 0u8..4,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let bytes = envelope(tag, &body);
        for codec in codecs() {
            check::<Resize>(&codec, &bytes);
            check::<serde_json::Value>(&codec, &bytes);
            check::<Vec<u8>>(&codec, &bytes);
        }
    }

    #[test]
    fn corrupted_valid_payloads_never_panic(
        path in "[a-z./]{0,40}",
        width: u32,
        data in proptest::collection::vec(any::<u8>(), 0..64),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let value = Resize { path, width, tags: vec!["a".into()], data };
        for codec in codecs() {
            let mut bytes = codec.encode(&value).expect("encodes");
            prop_assert_eq!(&codec.decode::<Resize>(&bytes).expect("round trip"), &value);
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= byte;
            }
            check::<Resize>(&codec, &bytes);
            let len = cut.index(bytes.len() + 1);
            check::<Resize>(&codec, &bytes[..len]);
        }
    }

    #[test]
    fn payloads_over_the_limit_are_refused_by_size(extra in 1usize..64) {
        let bytes = envelope(1, &vec![0xC0; LIMIT - 3 + extra]);
        for codec in codecs() {
            let refused = matches!(
                codec.decode::<serde_json::Value>(&bytes),
                Err(SerializationError::TooLarge { .. })
            );
            prop_assert!(refused);
        }
    }
}
