//! Payload encoding for OmniQ: a [`Codec`] trait with MessagePack (the default) and JSON,
//! wrapped in a small versioned envelope that records the format, so a worker decodes
//! whatever a producer wrote, and a payload size limit.
//!
//! ```
//! use omniq_serialization::{Format, PayloadCodec};
//!
//! let producer = PayloadCodec::new(Format::Json, 1024);
//! let bytes = producer.encode(&(2, 3))?;
//!
//! // A consumer configured for MessagePack still reads JSON envelopes.
//! let consumer = PayloadCodec::default();
//! let (a, b): (i64, i64) = consumer.decode(&bytes)?;
//! assert_eq!(a + b, 5);
//! # Ok::<(), omniq_serialization::SerializationError>(())
//! ```

mod codec;
mod envelope;
mod error;

pub use codec::{Codec, Json, MessagePack};
pub use envelope::{
    DEFAULT_MAX_PAYLOAD_BYTES, ENVELOPE_VERSION, Format, PayloadCodec, UnknownFormat,
};
pub use error::SerializationError;
