//! The wire between a process worker and its children: each message is a header encoded
//! with the payload codec (msgpack) and a body of raw bytes, each part prefixed by its
//! length (u32, big-endian).
//!
//! A child first sends [`READY`] once it serves. Then, parent to child: an
//! [`AttemptHeader`] and the task's payload; child to parent: any number of progress
//! reports, then the attempt's outcome (`Result<(), TaskError>`) and, on success, the
//! encoded result ([`ChildMessage`]).

use std::io;

use omniq_models::{TaskError, TaskErrorKind};
use omniq_serialization::PayloadCodec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The header of a child's first message: it serves.
pub(crate) const READY: &[u8] = b"omniq-ready";

/// Largest part sent or accepted (1 GiB). A part is read as its bytes arrive, so a
/// garbled length allocates no more than the peer actually sent.
pub(crate) const MAX_PART: usize = 1 << 30;

pub(crate) use crate::context::AttemptHeader;

/// How an attempt in a child ended; the result bytes travel as the body.
pub(crate) type OutcomeHeader = Result<(), TaskError>;

/// The header of a message from a child during an attempt.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildMessage {
    /// The handler of the attempt holding lease `token` reported progress (the value as
    /// JSON text); the body is empty. The parent stores it; the child does not wait for
    /// that. The token lets the parent drop a report that arrives after its attempt ended.
    Progress {
        /// The attempt's lease.
        token: omniq_models::LeaseToken,
        /// The value, as JSON.
        value: String,
    },
    /// The attempt ended; on success the body is the encoded result.
    Outcome(OutcomeHeader),
}

/// Encodes a header.
pub(crate) fn encode_header<T: Serialize>(header: &T) -> io::Result<Vec<u8>> {
    PayloadCodec::default()
        .encode(header)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decodes a header.
pub(crate) fn decode_header<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    PayloadCodec::default()
        .decode(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one message.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    header: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let mut message = Vec::with_capacity(8 + header.len() + body.len());
    for part in [header, body] {
        let len = u32::try_from(part.len())
            .ok()
            .filter(|_| fits(part.len()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message part too large"))?;
        message.extend_from_slice(&len.to_be_bytes());
        message.extend_from_slice(part);
    }
    writer.write_all(&message).await?;
    writer.flush().await
}

/// Reads one message: its header and body.
///
/// # Cancel safety
/// Not cancel safe: a message half read is lost. The parent drops (and so kills) a child
/// whose exchange was cancelled.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let header = read_part(reader).await?;
    let body = read_part(reader).await?;
    Ok((header, body))
}

/// Whether a part of `len` bytes can be sent.
pub(crate) fn fits(len: usize) -> bool {
    len <= MAX_PART
}

/// The permanent error of an attempt whose payload or result cannot cross to or from a
/// child.
pub(crate) fn too_large(what: &str, len: usize) -> TaskError {
    TaskError::with_kind(
        TaskErrorKind::Encode,
        format!(
            "the {what} ({len} bytes) is larger than a process worker passes between \
             processes ({MAX_PART} bytes)"
        ),
        false,
    )
}

async fn read_part<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let len = reader.read_u32().await?;
    if !fits(len as usize) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message part too large",
        ));
    }
    // Grown as the bytes arrive rather than allocated up front from the length.
    let mut part = Vec::with_capacity((len as usize).min(64 * 1024));
    let read = reader.take(u64::from(len)).read_to_end(&mut part).await?;
    if read < len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the message ended early",
        ));
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_message_reads_back_as_written() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_message(&mut a, b"head", b"body")
            .await
            .expect("write");
        let (header, body) = read_message(&mut b).await.expect("read");
        assert_eq!(
            (header.as_slice(), body.as_slice()),
            (&b"head"[..], &b"body"[..])
        );
    }

    #[tokio::test]
    async fn a_part_cut_short_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        // A length the cap allows (512 MiB) with four bytes behind it, then the end.
        a.write_all(&(512_u32 << 20).to_be_bytes())
            .await
            .expect("write");
        a.write_all(b"four").await.expect("write");
        drop(a);
        let err = read_message(&mut b).await.expect_err("cut short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn parts_over_the_cap_do_not_fit_and_fail_for_good() {
        assert!(fits(MAX_PART));
        assert!(!fits(MAX_PART + 1));
        let error = too_large("payload", MAX_PART + 1);
        assert_eq!(error.kind, TaskErrorKind::Encode);
        assert!(
            !error.retryable,
            "it would fail the same way on every attempt"
        );
    }

    #[tokio::test]
    async fn a_garbled_length_is_refused_without_allocating_it() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let err = read_message(&mut b).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
