use crate::Format;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerializationError {
    /// The value cannot be represented in the format.
    #[error("cannot encode payload as {format}: {message}")]
    Encode {
        /// The format.
        format: Format,
        /// The encoder's reason.
        message: String,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode {format} payload: {message}")]
    Decode {
        /// The format.
        format: Format,
        /// The decoder's reason.
        message: String,
    },
    /// The encoded payload is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes do not start with an OmniQ envelope.
    #[error("not an OmniQ payload envelope: {0}")]
    BadEnvelope(String),
    /// The envelope names a format or version this build does not know.
    #[error("unsupported payload envelope: version {version}, format tag {format}")]
    Unsupported {
        /// The envelope version.
        version: u8,
        /// The format tag.
        format: u8,
    },
}
