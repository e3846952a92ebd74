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
