//! Length-prefixed gRPC message framing: `[compressed: u8][length: u32 BE][payload]`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// The header of an uncompressed frame whose message is `len` bytes.
///
/// Messages are bounded by `--max-request-bytes` and `--max-response-bytes`, which start-up
/// refuses beyond `u32::MAX`, so `len` fits in the header's 32 bits. Were it not to, the header
/// would claim `u32::MAX` bytes: the peer then refuses a truncated frame instead of reading the
/// rest as another message.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [0, a, b, c, d]
}

/// Encodes `message` as one uncompressed frame in a single buffer sized up front.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(HEADER_LEN + len);
    buf.put_slice(&header(len));
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// Frames an already-encoded payload.
pub fn encode_raw(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    buf.put_slice(&header(payload.len()));
    buf.put_slice(payload);
    buf.freeze()
}

/// Payloads from this size on are framed without being copied, a piece of their own (the
/// upstream reads them as their own HTTP/2 DATA frames); smaller ones are copied into one
/// buffer with their header.
pub const SHARE_FROM: usize = 4096;

/// One frame to send, held as up to three pieces sent one after the other: the header and
/// what precedes the payload, a payload shared with the buffer it arrived in, and what
/// follows it. A large message the client sent as binary protobuf is framed this way without
/// being copied; every other frame is one piece.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    pieces: [Bytes; 3],
}

impl Outgoing {
    /// A frame already in one buffer.
    pub fn whole(frame: Bytes) -> Outgoing {
        Outgoing {
            pieces: [frame, Bytes::new(), Bytes::new()],
        }
    }

    /// `head` (the header, and any bytes of the payload before `shared`), then `shared` as it
    /// is, then `tail`.
    pub fn around(head: Bytes, shared: Bytes, tail: Bytes) -> Outgoing {
        Outgoing {
            pieces: [head, shared, tail],
        }
    }

    /// `payload` framed: without copying it from [`SHARE_FROM`] bytes on.
    pub fn shared(payload: Bytes) -> Outgoing {
        if payload.len() < SHARE_FROM {
            return Outgoing::whole(encode_raw(&payload));
        }
        let head = Bytes::copy_from_slice(&header(payload.len()));
        Outgoing::around(head, payload, Bytes::new())
    }

    /// Bytes in the whole frame.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    /// Whether the frame has no bytes at all (never a valid frame).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next piece that holds bytes, in order; `None` once all are taken.
    pub fn next_piece(&mut self) -> Option<Bytes> {
        let piece = self.pieces.iter_mut().find(|p| !p.is_empty())?;
        Some(std::mem::take(piece))
    }

    /// The frame in one buffer: the piece itself when only one holds bytes, else a copy.
    pub fn to_bytes(&self) -> Bytes {
        let mut pieces = self.pieces.iter().filter(|p| !p.is_empty());
        match (pieces.next(), pieces.next()) {
            (None, _) => Bytes::new(),
            (Some(only), None) => only.clone(),
            _ => {
                let mut whole = BytesMut::with_capacity(self.len());
                self.pieces.iter().for_each(|p| whole.put_slice(p));
                whole.freeze()
            }
        }
    }
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
    fn a_header_holds_the_length_big_endian_and_never_wraps() {
        assert_eq!(header(0x0102_0304), [0, 1, 2, 3, 4]);
        assert_eq!(&encode_raw(b"ab")[..], &[0, 0, 0, 0, 2, b'a', b'b']);
        // Past 32 bits the header claims the most it can, so the peer finds the frame
        // truncated rather than reading its tail as another message.
        let past = usize::try_from(u64::from(u32::MAX) + 1).unwrap();
        assert_eq!(header(past), [0, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn an_outgoing_frame_in_pieces_is_the_frame_in_one_buffer() {
        let small = Outgoing::shared(Bytes::from_static(b"0123456789"));
        assert_eq!(
            small,
            Outgoing::whole(encode_raw(b"0123456789")),
            "a small one is copied"
        );
        let payload = Bytes::from(vec![7; SHARE_FROM]);
        let shared = Outgoing::shared(payload.clone());
        assert_eq!(shared.to_bytes(), encode_raw(&payload));
        assert_eq!(shared.len(), HEADER_LEN + SHARE_FROM);
        let pieces: Vec<Bytes> = std::iter::from_fn({
            let mut frame = shared.clone();
            move || frame.next_piece()
        })
        .collect();
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[1].as_ptr(),
            payload.as_ptr(),
            "the payload is not copied"
        );

        let around = Outgoing::around(
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cd"),
        );
        assert_eq!(around.to_bytes(), Bytes::from_static(b"abcd"));
        let mut taken = around.clone();
        assert_eq!(taken.next_piece(), Some(Bytes::from_static(b"ab")));
        assert_eq!(
            taken.next_piece(),
            Some(Bytes::from_static(b"cd")),
            "empty pieces are left out"
        );
        assert_eq!(taken.next_piece(), None);
        assert!(taken.is_empty());

        let whole = Outgoing::whole(encode_raw(b"x"));
        assert_eq!(whole.to_bytes(), encode_raw(b"x"));
        assert!(Outgoing::default().is_empty());
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
