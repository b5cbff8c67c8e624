//! `application/grpc-web-text` request bodies: base64, decoded here as they arrive, in chunks
//! of any size. Each message may be encoded on its own, so padding may end a group in the
//! middle of the body. A body that is not base64 is the client's error: the decoder says at
//! which byte, and the body records it in its [`Refusal`] before it fails, so that the call is
//! answered `INVALID_ARGUMENT` rather than with whatever the upstream makes of a cut stream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{DecodeError, Engine};
use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;

/// Base64 as gRPC-Web clients write it: standard alphabet, padded groups.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a text body was refused, shared between the body that found it and the call that
/// answers for it; set at most once.
pub(super) type Refusal = Arc<OnceLock<String>>;

/// Decodes a base64 body chunk by chunk, carrying an incomplete 4-character group over.
#[derive(Debug, Default)]
pub(super) struct TextDecoder {
    carry: [u8; 4],
    carried: usize,
    /// Bytes of the body before `carry`.
    offset: usize,
}

impl TextDecoder {
    /// The bytes `chunk` completes, or where it stops being base64.
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        let mut out = Vec::with_capacity((self.carried + chunk.len()) / 4 * 3);
        let mut rest = chunk;
        if self.carried > 0 {
            let take = (4 - self.carried).min(rest.len());
            self.hold(&rest[..take])?;
            rest = &rest[take..];
            if self.carried < 4 {
                return Ok(Bytes::new());
            }
            let group = self.carry;
            self.carried = 0;
            self.decode_groups(&group, &mut out)?;
        }
        let whole = rest.len() / 4 * 4;
        self.decode_groups(&rest[..whole], &mut out)?;
        self.hold(&rest[whole..])?;
        Ok(Bytes::from(out))
    }

    /// Keeps the start of a group for the next chunk, checking its characters now.
    fn hold(&mut self, bytes: &[u8]) -> Result<(), String> {
        if let Some(at) = bytes.iter().position(|b| !is_base64(*b)) {
            return Err(format!(
                "{} {}",
                invalid_at(),
                self.offset + self.carried + at
            ));
        }
        self.carry[self.carried..self.carried + bytes.len()].copy_from_slice(bytes);
        self.carried += bytes.len();
        Ok(())
    }

    /// The body ended: it must not end inside a group.
    pub(super) fn finish(&self) -> Result<(), String> {
        match self.carried {
            0 => Ok(()),
            _ => Err(format!(
                "{} {}: it ends inside a 4-character group",
                invalid_at(),
                self.offset + self.carried
            )),
        }
    }

    /// Decodes whole groups, each run ending at a padded group decoded on its own.
    fn decode_groups(&mut self, mut groups: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !groups.is_empty() {
            let end = memchr::memchr(b'=', groups).map_or(groups.len(), |at| (at / 4 + 1) * 4);
            let (run, next) = groups.split_at(end);
            BASE64
                .decode_vec(run, out)
                .map_err(|e| format!("{} {}", invalid_at(), self.offset + error_offset(&e, run)))?;
            self.offset += run.len();
            groups = next;
        }
        Ok(())
    }
}

/// Whether `b` may appear in base64 text (padding included).
fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

fn invalid_at() -> &'static str {
    "invalid base64 in the grpc-web-text request body at byte"
}

/// Where in `run` decoding failed.
fn error_offset(error: &DecodeError, run: &[u8]) -> usize {
    match error {
        DecodeError::InvalidByte(at, _) | DecodeError::InvalidLastSymbol(at, _) => *at,
        DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => {
            memchr::memchr(b'=', run).unwrap_or(0)
        }
    }
}

/// A gRPC-Web request body as `tonic-web` reads it: the client's body as it is (binary mode),
/// or the binary body its base64 encodes (text mode, with a decoder). Trailers in a text body
/// (gRPC-Web requests have none) are dropped.
pub(super) struct WebBody {
    inner: Incoming,
    text: Option<Text>,
}

/// The text-mode state of a body.
struct Text {
    decoder: TextDecoder,
    refusal: Refusal,
    /// A frame read ahead by [`WebBody::peek`].
    peeked: Option<Result<Frame<Bytes>, BodyError>>,
    ended: bool,
}

/// Why a request body failed: the client's connection, or a body that is not base64.
#[derive(Debug)]
pub(super) enum BodyError {
    Client(hyper::Error),
    Refused(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Client(e) => e.fmt(f),
            BodyError::Refused(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for BodyError {}

impl WebBody {
    /// A binary-mode body, passed on as it is.
    pub(super) fn binary(inner: Incoming) -> Self {
        WebBody { inner, text: None }
    }

    /// A text-mode body, decoded; a refusal is recorded in `refusal`.
    pub(super) fn text(inner: Incoming, refusal: Refusal) -> Self {
        let text = Text {
            decoder: TextDecoder::default(),
            refusal,
            peeked: None,
            ended: false,
        };
        WebBody {
            inner,
            text: Some(text),
        }
    }

    /// Reads the first chunk of a text body ahead, waiting at most `limit` for it, so that a
    /// body refused from its start is refused before any upstream is called.
    pub(super) async fn peek(&mut self, limit: Duration) {
        let next = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx));
        let read = tokio::time::timeout(limit, next).await;
        let Some(text) = self.text.as_mut() else {
            return;
        };
        match read {
            Ok(Some(frame)) => text.peeked = Some(frame),
            Ok(None) => text.ended = true,
            Err(_) => {}
        }
    }
}

impl Text {
    /// The next decoded frame of `inner`, or where it stops being base64.
    fn poll_decoded(
        &mut self,
        inner: &mut Incoming,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.peeked.take() {
            return Poll::Ready(Some(frame));
        }
        while !self.ended {
            let frame = match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    return match self.decoder.finish() {
                        Ok(()) => Poll::Ready(None),
                        Err(reason) => self.refuse(reason),
                    };
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Client(e)))),
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            // A body whose end is known with its last chunk is judged whole at once.
            let last = inner.is_end_stream();
            match self
                .decoder
                .push(&data)
                .and_then(|d| self.finish_if(last).map(|()| d))
            {
                Ok(decoded) if decoded.is_empty() => {}
                Ok(decoded) => return Poll::Ready(Some(Ok(Frame::data(decoded)))),
                Err(reason) => return self.refuse(reason),
            }
        }
        Poll::Ready(None)
    }

    fn finish_if(&mut self, last: bool) -> Result<(), String> {
        if last {
            self.ended = true;
            self.decoder.finish()?;
        }
        Ok(())
    }

    fn refuse(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.ended = true;
        let _ = self.refusal.set(reason.clone());
        Poll::Ready(Some(Err(BodyError::Refused(reason))))
    }
}

impl Body for WebBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match this.text.as_mut() {
            Some(text) => text.poll_decoded(&mut this.inner, cx),
            None => Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(BodyError::Client),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.text {
            None => self.inner.is_end_stream(),
            Some(text) => text.ended && text.peeked.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_chunks(chunks: &[&str]) -> Result<Vec<u8>, String> {
        let mut decoder = TextDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&decoder.push(chunk.as_bytes())?);
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn chunks_of_any_size_and_padding_between_messages() {
        let text = format!("{}{}", BASE64.encode(b"hello"), BASE64.encode(b"!?"));
        assert_eq!(text, "aGVsbG8=IT8=");
        for cut in 0..=text.len() {
            for second in cut..=text.len() {
                let chunks = [&text[..cut], &text[cut..second], &text[second..]];
                assert_eq!(decode_chunks(&chunks).unwrap(), b"hello!?", "{chunks:?}");
            }
        }
        assert_eq!(decode_chunks(&[]).unwrap(), b"");
    }

    #[test]
    fn errors_name_the_byte_of_the_body() {
        let at = |chunks: &[&str]| decode_chunks(chunks).unwrap_err();
        assert_eq!(
            at(&["AAAA!AAA"]),
            "invalid base64 in the grpc-web-text request body at byte 4"
        );
        assert!(at(&["AAAAA", "A!AA"]).ends_with("at byte 6"));
        assert!(at(&["AAAAA*"]).ends_with("at byte 5"));
        assert!(at(&["AAAAA", "*"]).ends_with("at byte 5"));
        assert!(at(&["aGVsbG8=", "IT8=A*AA"]).ends_with("at byte 13"));
        assert!(
            at(&["AAAA", "A=AA"]).ends_with("at byte 5"),
            "{}",
            at(&["AAAA", "A=AA"])
        );
        assert_eq!(
            at(&["AAAAAA"]),
            "invalid base64 in the grpc-web-text request body at byte 6: \
             it ends inside a 4-character group"
        );
        // Stray bits after the last byte are not base64 a client writes.
        assert!(at(&["AAB="]).contains("at byte 2"), "{}", at(&["AAB="]));
    }
}
