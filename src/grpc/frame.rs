//! Length-prefixed gRPC message framing: `[compressed: u8][length: u32 BE][payload]`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// Encodes `message` as one uncompressed frame in a single buffer sized up front.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// Frames an already-encoded payload.
pub fn encode_raw(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    buf.put_u8(0);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// Why a byte stream is not a valid sequence of gRPC frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("gRPC message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("gRPC frame has an invalid compressed flag {0}")]
    BadFlag(u8),
    #[error("gRPC message is compressed but the upstream sent no grpc-encoding")]
    CompressedWithoutEncoding,
    #[error("gRPC message is compressed with {0:?}, which the gateway cannot decode")]
    UnsupportedEncoding(String),
    #[error("gRPC stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub compressed: bool,
    pub payload: Bytes,
}

/// Splits a stream of DATA chunks into frames, copying only frames split across chunks.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: usize,
}

impl Decoder {
    /// A decoder that refuses any message longer than `limit` before buffering it.
    pub fn new(limit: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Appends a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let flag = self.buf[0];
        if flag > 1 {
            return Err(FrameError::BadFlag(flag));
        }
        let len = (&self.buf[1..HEADER_LEN]).get_u32() as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame {
            compressed: flag == 1,
            payload,
        }))
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(FrameError::Truncated(n)),
        }
    }
}

/// Decodes every frame of a complete body.
pub fn decode_all(body: &[u8], limit: usize) -> Result<Vec<Frame>, FrameError> {
    let mut decoder = Decoder::new(limit);
    decoder.push(body);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    decoder.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_several_frames_split_anywhere() {
        let mut wire = Vec::new();
        for payload in [&b"abc"[..], b"", b"0123456789"] {
            wire.extend_from_slice(&encode_raw(payload));
        }
        for cut in 0..wire.len() {
            let mut d = Decoder::new(100);
            d.push(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.payload);
            }
            d.push(&wire[cut..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.payload);
            }
            d.finish().unwrap();
            assert_eq!(got, vec![&b"abc"[..], b"", b"0123456789"], "cut at {cut}");
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut d = Decoder::new(4);
        d.push(&[0, 0, 0, 0, 5]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 5, limit: 4 })
        );
    }

    #[test]
    fn truncated_and_bad_flags_are_errors() {
        assert_eq!(
            decode_all(&[0, 0, 0, 0, 3, 1], 10),
            Err(FrameError::Truncated(6))
        );
        assert_eq!(
            decode_all(&[7, 0, 0, 0, 0], 10),
            Err(FrameError::BadFlag(7))
        );
        let f = decode_all(&[1, 0, 0, 0, 1, 9], 10).unwrap();
        assert!(f[0].compressed);
    }
}
