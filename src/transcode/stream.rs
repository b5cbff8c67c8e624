//! Streaming over REST: splitting a request body of concatenated (or newline-delimited) JSON
//! values into messages as they arrive, and framing response messages as newline-delimited
//! JSON (`{"result": ...}` lines, grpc-gateway's format) or Server-Sent Events.

use bytes::{Buf, Bytes, BytesMut};
use serde_json::value::RawValue;

/// How a server stream is written to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// `{"result": <message>}\n` per message, `{"error": <status>}\n` on failure.
    NdJson,
    /// `data: <message>\n\n` per message, `event: error\ndata: <status>\n\n` on failure.
    Sse,
    /// `google.api.HttpBody` streams: the raw `data` of each message.
    Raw,
}

impl StreamFormat {
    /// The content type of the stream (raw streams take their first message's).
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::NdJson => "application/json",
            StreamFormat::Sse => "text/event-stream",
            StreamFormat::Raw => "application/octet-stream",
        }
    }

    /// One message, already rendered as JSON (or raw bytes for [`StreamFormat::Raw`]).
    pub fn message(self, rendered: &[u8]) -> Bytes {
        match self {
            StreamFormat::NdJson => wrap(b"{\"result\":", rendered, b"}\n"),
            StreamFormat::Sse => wrap(b"data: ", rendered, b"\n\n"),
            StreamFormat::Raw => Bytes::copy_from_slice(rendered),
        }
    }

    /// The final error of a stream that already began; `None` where the format has no way to
    /// carry one (the stream is then aborted).
    pub fn error(self, status_json: &[u8]) -> Option<Bytes> {
        match self {
            StreamFormat::NdJson => Some(wrap(b"{\"error\":", status_json, b"}\n")),
            StreamFormat::Sse => Some(wrap(b"event: error\ndata: ", status_json, b"\n\n")),
            StreamFormat::Raw => None,
        }
    }
}

fn wrap(prefix: &[u8], body: &[u8], suffix: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() + body.len() + suffix.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(body);
    out.extend_from_slice(suffix);
    out.freeze()
}

/// Why a request stream could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("request message {index} is not valid JSON: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("request message {index} exceeds the limit of {limit} bytes")]
    TooLarge { index: usize, limit: usize },
    #[error("the request stream ended inside message {index}")]
    Truncated { index: usize },
}

/// Splits a byte stream into complete JSON values.
#[derive(Debug)]
pub struct JsonSplitter {
    buf: BytesMut,
    limit: usize,
    index: usize,
}

impl JsonSplitter {
    /// A splitter refusing any single value longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        JsonSplitter {
            buf: BytesMut::new(),
            limit,
            index: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete value, if one is buffered.
    pub fn next_value(&mut self) -> Result<Option<Bytes>, SplitError> {
        let start = self
            .buf
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        self.buf.advance(start);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<&RawValue>();
        match values.next() {
            Some(Ok(_)) => {
                let end = values.byte_offset();
                self.index += 1;
                Ok(Some(self.buf.split_to(end).freeze()))
            }
            Some(Err(e)) if e.is_eof() => self.check_size().map(|()| None),
            Some(Err(e)) => Err(SplitError::Invalid {
                index: self.index,
                reason: e.to_string(),
            }),
            None => Ok(None),
        }
    }

    fn check_size(&self) -> Result<(), SplitError> {
        match self.buf.len() > self.limit {
            true => Err(SplitError::TooLarge {
                index: self.index,
                limit: self.limit,
            }),
            false => Ok(()),
        }
    }

    /// Checks that the stream ended between values.
    pub fn finish(&self) -> Result<(), SplitError> {
        match self.buf.iter().all(u8::is_ascii_whitespace) {
            true => Ok(()),
            false => Err(SplitError::Truncated { index: self.index }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Result<Vec<String>, SplitError> {
        let mut s = JsonSplitter::new(1024);
        let mut out = Vec::new();
        for chunk in chunks {
            s.push(chunk);
            while let Some(v) = s.next_value()? {
                out.push(String::from_utf8(v.to_vec()).unwrap());
            }
        }
        s.finish()?;
        Ok(out)
    }

    #[test]
    fn concatenated_and_newline_delimited_values_split_anywhere() {
        let text = b"{\"a\":1}\n{\"b\":\"}{\"} {\"c\":[1,{}]}\n";
        for cut in 0..text.len() {
            let got = split_all(&[&text[..cut], &text[cut..]]).unwrap();
            assert_eq!(
                got,
                vec![r#"{"a":1}"#, r#"{"b":"}{"}"#, r#"{"c":[1,{}]}"#],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn errors_name_the_message() {
        assert_eq!(
            split_all(&[b"{\"a\":1}{\"b\""]),
            Err(SplitError::Truncated { index: 1 })
        );
        let invalid = split_all(&[b"{} {\"a\" 1}"]).unwrap_err();
        assert!(
            matches!(invalid, SplitError::Invalid { index: 1, .. }),
            "{invalid:?}"
        );
        let mut s = JsonSplitter::new(4);
        s.push(b"{\"abcdef\"");
        assert_eq!(
            s.next_value(),
            Err(SplitError::TooLarge { index: 0, limit: 4 })
        );
        assert_eq!(split_all(&[b"  \n "]), Ok(vec![]));
    }

    #[test]
    fn framing() {
        assert_eq!(
            StreamFormat::NdJson.message(b"{}"),
            Bytes::from_static(b"{\"result\":{}}\n")
        );
        assert_eq!(
            StreamFormat::Sse.message(b"{}"),
            Bytes::from_static(b"data: {}\n\n")
        );
        assert_eq!(
            StreamFormat::Sse.error(b"{}"),
            Some(Bytes::from_static(b"event: error\ndata: {}\n\n"))
        );
        assert_eq!(StreamFormat::Raw.error(b"{}"), None);
    }
}
