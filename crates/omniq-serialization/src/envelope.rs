use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Codec, Json, MessagePack, SerializationError};

/// The envelope layout version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;

/// The payload size limit when none is configured: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

// Envelope: MAGIC, version, format tag, then the body. Three bytes buy forward
// compatibility: a new format or layout is a new tag or version, never a guess.
const MAGIC: u8 = 0xC7;
const HEADER_LEN: usize = 3;

/// A payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// MessagePack with named fields (the default).
    #[default]
    #[serde(rename = "msgpack")]
    MessagePack,
    /// JSON.
    Json,
}

impl Format {
    fn tag(self) -> u8 {
        match self {
            Format::MessagePack => 1,
            Format::Json => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Format> {
        match tag {
            1 => Some(Format::MessagePack),
            2 => Some(Format::Json),
            _ => None,
        }
    }
}

impl Format {
    /// The configuration spelling, `"msgpack"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MessagePack => "msgpack",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is neither `msgpack` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec `{0}` (expected `msgpack` or `json`)")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    /// Parses `msgpack` (also `messagepack`) or `json`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "msgpack" | "messagepack" => Ok(Format::MessagePack),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Encodes values into envelopes in one format, decodes envelopes of any format, and
/// refuses payloads over a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadCodec {
    format: Format,
    max_bytes: usize,
}

impl Default for PayloadCodec {
    fn default() -> Self {
        Self::new(Format::MessagePack, DEFAULT_MAX_PAYLOAD_BYTES)
    }
}

impl PayloadCodec {
    /// A codec writing `format`, refusing envelopes larger than `max_bytes`.
    pub fn new(format: Format, max_bytes: usize) -> Self {
        Self { format, max_bytes }
    }

    /// The format new payloads are written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The size limit in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Encodes `value` into an envelope.
    ///
    /// # Errors
    /// [`SerializationError::Encode`] when the value cannot be represented, and
    /// [`SerializationError::TooLarge`] when the envelope exceeds the limit.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, SerializationError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[MAGIC, ENVELOPE_VERSION, self.format.tag()]);
        match self.format {
            Format::MessagePack => MessagePack::encode_into(value, &mut out)?,
            Format::Json => Json::encode_into(value, &mut out)?,
        }
        self.check_size(out.len())?;
        Ok(out)
    }

    /// Decodes an envelope, whatever format it was written in.
    ///
    /// # Errors
    /// [`SerializationError::BadEnvelope`] or [`SerializationError::Unsupported`] when the
    /// bytes are not an envelope this build reads, [`SerializationError::TooLarge`] over the
    /// limit, and [`SerializationError::Decode`] when the body is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, SerializationError> {
        self.check_size(bytes.len())?;
        let (format, body) = Self::open(bytes)?;
        match format {
            Format::MessagePack => MessagePack::decode(body),
            Format::Json => Json::decode(body),
        }
    }

    /// An envelope's body as a JSON value, whatever format it was written in and however
    /// large: for showing a payload or a result to a person (the CLI, the dashboard).
    ///
    /// # Errors
    /// As [`PayloadCodec::decode`], but never [`SerializationError::TooLarge`].
    pub fn inspect(bytes: &[u8]) -> Result<serde_json::Value, SerializationError> {
        Self::new(Format::Json, usize::MAX).decode(bytes)
    }

    /// The format an envelope was written in.
    ///
    /// # Errors
    /// As [`PayloadCodec::decode`] for a malformed header.
    pub fn format_of(bytes: &[u8]) -> Result<Format, SerializationError> {
        Self::open(bytes).map(|(format, _)| format)
    }

    fn open(bytes: &[u8]) -> Result<(Format, &[u8]), SerializationError> {
        let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(SerializationError::BadEnvelope(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        };
        let [magic, version, tag] = *header;
        if magic != MAGIC {
            return Err(SerializationError::BadEnvelope(format!(
                "unexpected first byte {magic:#04x}"
            )));
        }
        match (version, Format::from_tag(tag)) {
            (ENVELOPE_VERSION, Some(format)) => Ok((format, body)),
            _ => Err(SerializationError::Unsupported {
                version,
                format: tag,
            }),
        }
    }

    fn check_size(&self, size: usize) -> Result<(), SerializationError> {
        if size > self.max_bytes {
            return Err(SerializationError::TooLarge {
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Resize {
        path: String,
        width: u32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct ResizeV2 {
        path: String,
        width: u32,
        #[serde(default)]
        height: Option<u32>,
    }

    fn sample() -> Resize {
        Resize {
            path: "a.png".into(),
            width: 640,
        }
    }

    #[test]
    fn each_format_round_trips() {
        for format in [Format::MessagePack, Format::Json] {
            let codec = PayloadCodec::new(format, 1024);
            let bytes = codec.encode(&sample()).expect("encodes");
            assert_eq!(PayloadCodec::format_of(&bytes).ok(), Some(format));
            assert_eq!(codec.decode::<Resize>(&bytes).ok(), Some(sample()));
        }
    }

    #[test]
    fn a_reader_decodes_any_writer_format() {
        let json = PayloadCodec::new(Format::Json, 1024)
            .encode(&sample())
            .expect("encodes");
        let msgpack = PayloadCodec::default().encode(&sample()).expect("encodes");
        assert_eq!(
            PayloadCodec::default().decode::<Resize>(&json).ok(),
            Some(sample())
        );
        let json_reader = PayloadCodec::new(Format::Json, 1024);
        assert_eq!(json_reader.decode::<Resize>(&msgpack).ok(), Some(sample()));
    }

    #[test]
    fn msgpack_uses_named_fields_so_types_can_grow() {
        let bytes = PayloadCodec::default().encode(&sample()).expect("encodes");
        let grown: ResizeV2 = PayloadCodec::default().decode(&bytes).expect("decodes");
        assert_eq!(grown.path, "a.png");
        assert_eq!(grown.height, None);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Circle,
        Square(u32),
        Rect { w: u32, h: u32 },
    }

    /// The encodings docs/wire-format.md promises producers in other languages.
    #[test]
    fn the_documented_encodings_hold() {
        let msgpack = PayloadCodec::default().encode(&sample()).expect("encodes");
        let mut expected = vec![0xC7, 1, 1, 0x82, 0xA4];
        expected.extend_from_slice(b"path");
        expected.push(0xA5);
        expected.extend_from_slice(b"a.png");
        expected.push(0xA5);
        expected.extend_from_slice(b"width");
        expected.extend_from_slice(&[0xCD, 0x02, 0x80]);
        assert_eq!(msgpack, expected);
        let json = PayloadCodec::new(Format::Json, 1024)
            .encode(&sample())
            .expect("encodes");
        assert_eq!(json, b"\xC7\x01\x02{\"path\":\"a.png\",\"width\":640}");
        // Enums as serde's externally tagged form, in both formats: a unit variant is its
        // name, any other a one-entry map from its name to its content.
        let cases: [(Shape, &[u8], &str); 3] = [
            (Shape::Circle, b"\xA6Circle", r#""Circle""#),
            (Shape::Square(3), b"\x81\xA6Square\x03", r#"{"Square":3}"#),
            (
                Shape::Rect { w: 1, h: 2 },
                b"\x81\xA4Rect\x82\xA1w\x01\xA1h\x02",
                r#"{"Rect":{"w":1,"h":2}}"#,
            ),
        ];
        for (shape, msgpack, json) in cases {
            let bytes = PayloadCodec::default().encode(&shape).expect("encodes");
            assert_eq!(&bytes[3..], msgpack, "{shape:?}");
            let bytes = PayloadCodec::new(Format::Json, 1024)
                .encode(&shape)
                .expect("encodes");
            assert_eq!(&bytes[3..], json.as_bytes(), "{shape:?}");
            assert_eq!(
                PayloadCodec::default().decode::<Shape>(&bytes).ok(),
                Some(shape)
            );
        }
    }

    #[test]
    fn oversized_payloads_are_refused_with_sizes() {
        let codec = PayloadCodec::new(Format::MessagePack, 16);
        let err = codec.encode(&"x".repeat(100)).expect_err("too large");
        assert!(matches!(
            err,
            SerializationError::TooLarge { limit: 16, .. }
        ));
        assert!(err.to_string().contains("exceeds the limit of 16 bytes"));
    }

    #[test]
    fn garbage_is_a_clear_error_not_a_panic() {
        let codec = PayloadCodec::default();
        assert!(matches!(
            codec.decode::<Resize>(b""),
            Err(SerializationError::BadEnvelope(_))
        ));
        assert!(matches!(
            codec.decode::<Resize>(b"hello world"),
            Err(SerializationError::BadEnvelope(_))
        ));
        assert!(matches!(
            codec.decode::<Resize>(&[MAGIC, 9, 1, 0]),
            Err(SerializationError::Unsupported { version: 9, .. })
        ));
        let wrong_type = codec.encode(&42u8).expect("encodes");
        assert!(matches!(
            codec.decode::<Resize>(&wrong_type),
            Err(SerializationError::Decode { .. })
        ));
    }
}
