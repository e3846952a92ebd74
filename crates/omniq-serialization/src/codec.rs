use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Format, SerializationError};

/// A serde data format that payloads and results can be written in.
///
/// Implementations only encode and decode bodies; the envelope around them is written by
/// [`PayloadCodec`](crate::PayloadCodec).
pub trait Codec {
    /// The format tag recorded in the envelope.
    const FORMAT: Format;

    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    /// When `value` cannot be represented in this format.
    fn encode_into<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), SerializationError>;

    /// Decodes a body written by [`Codec::encode_into`].
    ///
    /// # Errors
    /// When the bytes are not a valid encoding of `T`.
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, SerializationError>;
}

/// MessagePack with named fields (structs as maps), so that adding a field to a task's
/// argument type does not break payloads already queued.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePack;

impl Codec for MessagePack {
    const FORMAT: Format = Format::MessagePack;

    fn encode_into<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), SerializationError> {
        let mut serializer = rmp_serde::Serializer::new(out).with_struct_map();
        value
            .serialize(&mut serializer)
            .map_err(|e| SerializationError::Encode {
                format: Self::FORMAT,
                message: e.to_string(),
            })
    }

    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, SerializationError> {
        check_msgpack_lengths(body).map_err(|message| SerializationError::Decode {
            format: Self::FORMAT,
            message,
        })?;
        rmp_serde::from_slice(body).map_err(|e| SerializationError::Decode {
            format: Self::FORMAT,
            message: e.to_string(),
        })
    }
}

/// JSON, for payloads people read or write by hand.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const FORMAT: Format = Format::Json;

    fn encode_into<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), SerializationError> {
        serde_json::to_writer(out, value).map_err(|e| SerializationError::Encode {
            format: Self::FORMAT,
            message: e.to_string(),
        })
    }

    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, SerializationError> {
        serde_json::from_slice(body).map_err(|e| SerializationError::Decode {
            format: Self::FORMAT,
            message: e.to_string(),
        })
    }
}

/// Walks a MessagePack value without decoding it and refuses any length that the bytes
/// cannot hold: an array or map declaring more items than bytes remain, a string, binary
/// or extension longer than what remains, a value cut short.
///
/// serde pre-allocates collections from their declared length (up to 1 MiB each), so
/// without this a 4 KiB payload of nested forged `array32` headers allocates hundreds of
/// MiB. Once every declared item is known to be present, pre-allocations add up to at most
/// a multiple of the payload size. Iterative, so nesting cannot overflow the stack.
fn check_msgpack_lengths(body: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    // Values still to read; each needs at least one byte.
    let mut pending: u64 = 1;
    while pending > 0 {
        let Some(&marker) = body.get(at) else {
            return Err(format!("truncated: {pending} values missing at byte {at}"));
        };
        at += 1;
        pending -= 1;
        let (items, skip): (u64, usize) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * u64::from(marker & 0x0f), 0),
            0x90..=0x9f => (u64::from(marker & 0x0f), 0),
            0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
            0xc1 => return Err(format!("reserved marker 0xc1 at byte {}", at - 1)),
            0xc4 | 0xd9 => (0, read_len(body, &mut at, 1)?),
            0xc5 | 0xda => (0, read_len(body, &mut at, 2)?),
            0xc6 | 0xdb => (0, read_len(body, &mut at, 4)?),
            // Extensions: length, then a type byte, then the data.
            0xc7 => (0, read_len(body, &mut at, 1)?.saturating_add(1)),
            0xc8 => (0, read_len(body, &mut at, 2)?.saturating_add(1)),
            0xc9 => (0, read_len(body, &mut at, 4)?.saturating_add(1)),
            0xca | 0xce | 0xd2 => (0, 4),
            0xcb | 0xcf | 0xd3 => (0, 8),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xdc => (read_len(body, &mut at, 2)? as u64, 0),
            0xdd => (read_len(body, &mut at, 4)? as u64, 0),
            0xde => (2 * read_len(body, &mut at, 2)? as u64, 0),
            0xdf => (2 * read_len(body, &mut at, 4)? as u64, 0),
        };
        let remaining = body.len() - at;
        if skip > remaining {
            return Err(format!(
                "a value at byte {at} declares {skip} bytes but {remaining} remain"
            ));
        }
        at += skip;
        pending = pending.saturating_add(items);
        if pending > (body.len() - at) as u64 {
            return Err(format!(
                "{pending} values declared at byte {at} but {} bytes remain",
                body.len() - at
            ));
        }
    }
    Ok(())
}

/// Reads a big-endian length of `width` bytes at `*at`, advancing past it.
fn read_len(body: &[u8], at: &mut usize, width: usize) -> Result<usize, String> {
    let bytes = body
        .get(*at..*at + width)
        .ok_or_else(|| format!("truncated length at byte {at}"))?;
    *at += width;
    Ok(bytes.iter().fold(0usize, |len, &b| {
        len.saturating_mul(256).saturating_add(usize::from(b))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_forged_array_lengths_are_refused_before_decoding() {
        let mut body = Vec::new();
        for _ in 0..800 {
            body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        }
        let err = MessagePack::decode::<serde_json::Value>(&body).expect_err("forged");
        assert!(
            matches!(&err, SerializationError::Decode { message, .. } if message.contains("declared")),
            "{err}"
        );
    }

    #[test]
    fn well_formed_values_pass_the_length_check() {
        let mut out = Vec::new();
        let value = serde_json::json!({"a": [1, -2, 3.5, "x", null, true, {"b": [[], {}]}],
            "bin": "y".repeat(300), "n": u64::MAX, "m": i64::MIN});
        MessagePack::encode_into(&value, &mut out).expect("encodes");
        assert_eq!(check_msgpack_lengths(&out), Ok(()));
        let back: serde_json::Value = MessagePack::decode(&out).expect("decodes");
        assert_eq!(back, value);
    }
}
