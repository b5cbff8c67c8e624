//! Connect's envelopes, the framing of its streams: a flags byte (`0x01` compressed, `0x02`
//! end-stream), the payload's length as a big-endian `u32`, the payload. Pure: bytes in,
//! messages out.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::GatewayError;
use crate::grpc::Code;

/// The flag of a compressed payload.
pub(crate) const COMPRESSED: u8 = 0x01;
/// The flag of the end-stream message, the last of a response.
pub(crate) const END_STREAM: u8 = 0x02;
/// Bytes before the payload.
const PREFIX_LEN: usize = 5;

/// One envelope around `payload`.
pub(crate) fn encode(flags: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + payload.len());
    buf.put_u8(flags);
    buf.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    buf.put_slice(payload);
    buf.freeze()
}

/// Why a client's request stream is not a valid sequence of envelopes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("request message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error(
        "request message is flagged compressed, but the request has no Connect-Content-Encoding"
    )]
    Compressed,
    #[error("request message carries the end-stream flag, which only responses set")]
    EndStream,
    #[error("request envelope has unknown flags {0:#04x}")]
    Flags(u8),
    #[error("request stream ended inside a message ({0} bytes left over)")]
    Truncated(usize),
}

impl From<EnvelopeError> for GatewayError {
    fn from(error: EnvelopeError) -> Self {
        let code = match error {
            EnvelopeError::TooLarge { .. } => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        };
        GatewayError::new(code, error.to_string()).from_source(crate::error::ErrorSource::Client)
    }
}

/// One request message: its payload, and whether it is compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub compressed: bool,
    pub payload: Bytes,
}

/// Splits a client's request stream into messages, refusing a message over the limit
/// as soon as its prefix arrives (before it is buffered).
#[derive(Debug)]
pub(crate) struct RequestDecoder {
    buf: BytesMut,
    limit: usize,
}

impl RequestDecoder {
    pub(crate) fn new(limit: usize) -> Self {
        RequestDecoder {
            buf: BytesMut::new(),
            limit,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if one is buffered.
    pub(crate) fn next_message(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let flags = self.buf[0];
        match flags {
            0 | COMPRESSED => {}
            flags if flags & END_STREAM != 0 => return Err(EnvelopeError::EndStream),
            flags => return Err(EnvelopeError::Flags(flags)),
        }
        let len = (&self.buf[1..PREFIX_LEN]).get_u32() as usize;
        if len > self.limit {
            return Err(EnvelopeError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < PREFIX_LEN + len {
            self.buf.reserve(PREFIX_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(Envelope {
            compressed: flags == COMPRESSED,
            payload: self.buf.split_to(len).freeze(),
        }))
    }

    /// Checks that the stream ended between messages.
    pub(crate) fn finish(&self) -> Result<(), EnvelopeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(EnvelopeError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], limit: usize) -> Result<Vec<Envelope>, EnvelopeError> {
        let mut decoder = RequestDecoder::new(limit);
        let mut out = Vec::new();
        for byte in bytes {
            decoder.push(&[*byte]);
            while let Some(message) = decoder.next_message()? {
                out.push(message);
            }
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn messages_split_anywhere() {
        let mut stream = encode(0, b"one").to_vec();
        stream.extend_from_slice(&encode(0, b""));
        stream.extend_from_slice(&encode(0, b"three"));
        stream.extend_from_slice(&encode(COMPRESSED, b"four"));
        let messages = decode(&stream, 10).unwrap();
        let payloads: Vec<&[u8]> = messages.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(payloads, [&b"one"[..], b"", b"three", b"four"]);
        let flags: Vec<bool> = messages.iter().map(|m| m.compressed).collect();
        assert_eq!(flags, [false, false, false, true]);
    }

    #[test]
    fn broken_streams() {
        assert_eq!(
            decode(&encode(END_STREAM, b"{}"), 10),
            Err(EnvelopeError::EndStream)
        );
        assert_eq!(
            decode(&encode(0x80, b""), 10),
            Err(EnvelopeError::Flags(0x80))
        );
        let too_large = EnvelopeError::TooLarge { len: 11, limit: 10 };
        assert_eq!(decode(&encode(0, &[0; 11])[..5], 10), Err(too_large));
        assert_eq!(
            decode(&encode(0, b"abc")[..6], 10),
            Err(EnvelopeError::Truncated(6))
        );
        let error = GatewayError::from(EnvelopeError::TooLarge { len: 11, limit: 10 });
        assert_eq!(error.code, Code::ResourceExhausted);
    }
}
