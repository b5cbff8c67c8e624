//! Content codings (`gzip`, `deflate`, `br`, `zstd`), with no I/O: every protocol that
//! compresses (REST's `Content-Encoding` and `Accept-Encoding`, gRPC's `grpc-encoding`,
//! Connect's) shares these functions, so they decode, bound and negotiate alike.
//!
//! - [`decode`] never holds more than its limit: it decodes in chunks and stops at the
//!   limit, so a small bomb costs what the limit allows and no more. The decoders' own
//!   windows are bounded too: zstd's to the larger of the limit and 8 MiB (what encoders use
//!   up to level 19), brotli's to 16 MiB by its format, deflate's to 32 KiB.
//! - [`encode`] and [`StreamEncoder`] use levels chosen for speed (gzip and deflate 1, zstd 1,
//!   brotli 3): the gateway compresses on the request path, where a slower level costs
//!   every response latency for a few percent of size.
//! - [`negotiate`] reads `Accept-Encoding` with q-values as RFC 9110 §12.5.3 says.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;

/// A content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Gzip,
    /// The zlib format (RFC 1950), as HTTP's and gRPC's `deflate` mean; raw deflate streams
    /// some clients send are read too.
    Deflate,
    Brotli,
    Zstd,
}

/// The encodings the gateway offers for REST responses unless told otherwise, in its order of
/// preference.
pub const DEFAULT_RESPONSE: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

/// The encodings the gateway decodes (request bodies, upstream gRPC messages).
pub const DECODED: [Encoding; 5] = [
    Encoding::Zstd,
    Encoding::Brotli,
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Identity,
];

/// Responses smaller than this are sent as they are: below about a kilobyte a compressed
/// body saves less than a TCP segment, while the coding's header, the CPU and the `Vary`
/// copy in caches still cost.
pub const MIN_RESPONSE_BYTES: usize = 1024;

/// Bytes decoded or read per step.
const CHUNK: usize = 16 * 1024;

/// Brotli's quality: 3 is among its fast levels, still ahead of gzip's best on JSON.
const BROTLI_QUALITY: u32 = 3;

/// The window (log2) of the brotli and zstd encoders: 256 KiB. JSON repeats itself within a
/// few kilobytes, and a stream's encoder lives as long as the stream, so a small window keeps
/// what thousands of open streams hold small (gzip's is 32 KiB by its format).
const WINDOW_LOG: u32 = 18;

impl Encoding {
    /// The header token (`identity`, `gzip`, `deflate`, `br`, `zstd`).
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding a header token names, case-insensitively (`x-gzip` is `gzip`, RFC 9110).
    pub fn parse(token: &str) -> Option<Encoding> {
        let token = token.trim();
        [
            ("identity", Encoding::Identity),
            ("gzip", Encoding::Gzip),
            ("x-gzip", Encoding::Gzip),
            ("deflate", Encoding::Deflate),
            ("br", Encoding::Brotli),
            ("zstd", Encoding::Zstd),
        ]
        .into_iter()
        .find(|(name, _)| token.eq_ignore_ascii_case(name))
        .map(|(_, encoding)| encoding)
    }

    /// Whether this coding changes the bytes.
    pub fn is_identity(self) -> bool {
        self == Encoding::Identity
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// A token that names no coding the gateway knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown content coding {0}")]
pub struct UnknownEncoding(String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(token: &str) -> Result<Encoding, UnknownEncoding> {
        Encoding::parse(token).ok_or_else(|| UnknownEncoding(crate::error::quoted(token)))
    }
}

/// `a, b, c`: a list of codings as a header value.
pub fn header_list(encodings: &[Encoding]) -> String {
    let tokens: Vec<&str> = encodings.iter().map(|e| e.token()).collect();
    tokens.join(", ")
}

/// The codings to offer from a flag's list (`zstd,br,gzip`; `none` offers none), in the
/// order of preference given.
pub fn parse_offer(list: &[String]) -> Result<Vec<Encoding>, String> {
    let list: Vec<&str> = list.iter().map(|s| s.trim()).collect();
    if list.iter().any(|s| s.eq_ignore_ascii_case("none")) {
        return match list.len() {
            1 => Ok(Vec::new()),
            _ => Err("`none` cannot be combined with other encodings".into()),
        };
    }
    let mut offer = Vec::new();
    for token in list {
        match Encoding::parse(token) {
            Some(Encoding::Identity) | None => {
                return Err(format!(
                    "{} is not one of zstd, br, gzip, deflate (or none)",
                    crate::error::quoted(token)
                ))
            }
            Some(e) if !offer.contains(&e) => offer.push(e),
            Some(_) => {}
        }
    }
    if offer.is_empty() {
        return Err("no encoding given (use none to turn compression off)".into());
    }
    Ok(offer)
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("decoded size exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid {encoding} data: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
}

/// Decodes `input`, failing as soon as the output would exceed `limit` bytes; memory held
/// stays within `limit` (plus a fixed chunk and the decoder's own window).
pub fn decode(encoding: Encoding, input: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    match encoding {
        Encoding::Identity if input.len() > limit => Err(DecodeError::TooLarge { limit }),
        Encoding::Identity => Ok(Bytes::copy_from_slice(input)),
        Encoding::Gzip => read_bounded(MultiGzDecoder::new(input), encoding, limit),
        Encoding::Deflate if is_zlib(input) => {
            read_bounded(ZlibDecoder::new(input), encoding, limit)
        }
        Encoding::Deflate => read_bounded(DeflateDecoder::new(input), encoding, limit),
        Encoding::Brotli => read_bounded(brotli::Decompressor::new(input, CHUNK), encoding, limit),
        Encoding::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt(encoding))?;
            decoder
                .window_log_max(zstd_window_log(limit))
                .map_err(corrupt(encoding))?;
            read_bounded(decoder, encoding, limit)
        }
    }
}

/// The largest zstd window (log2) a decoder allocates for output of at most `limit` bytes:
/// the window that holds `limit`, but at least the 8 MiB of level 19 (streamed frames
/// announce a window by level, whatever their size), at most zstd's default cap of 128 MiB.
/// A frame asking for more is refused before its window is allocated.
pub fn zstd_window_log(limit: usize) -> u32 {
    let log = usize::BITS - limit.saturating_sub(1).leading_zeros();
    log.clamp(23, 27)
}

/// Whether `input` starts with a zlib header (RFC 1950: method 8, check bits).
fn is_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn corrupt(encoding: Encoding) -> impl Fn(io::Error) -> DecodeError {
    move |e| DecodeError::Corrupt {
        encoding: encoding.token(),
        reason: crate::error::clipped(&e.to_string()),
    }
}

/// Reads `reader` to its end in chunks, never growing the output past `limit`.
fn read_bounded(
    mut reader: impl Read,
    encoding: Encoding,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK.min(limit.saturating_add(1)).max(1)];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(Bytes::from(out)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(encoding)(e)),
        };
        let len = out.len() + n;
        if len > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        if len > out.capacity() {
            // Doubling as `Vec` does, but never past the limit.
            let target = len.max(out.capacity() * 2).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Encodes a whole body.
pub fn encode(encoding: Encoding, input: &[u8]) -> io::Result<Bytes> {
    match StreamEncoder::new(encoding)? {
        None => Ok(Bytes::copy_from_slice(input)),
        Some(mut encoder) => {
            encoder.write(input)?;
            encoder.finish()
        }
    }
}

/// Compresses a stream message by message: [`StreamEncoder::message`] flushes after each, so
/// that what it returns decodes to the whole message at once (a client of a stream sees each
/// message as it is written, not when the compressor's buffer fills).
pub struct StreamEncoder {
    inner: Inner,
}

enum Inner {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.inner {
            Inner::Gzip(_) => "gzip",
            Inner::Deflate(_) => "deflate",
            Inner::Brotli(_) => "br",
            Inner::Zstd(_) => "zstd",
        };
        f.debug_struct("StreamEncoder")
            .field("encoding", &name)
            .finish()
    }
}

impl StreamEncoder {
    /// An encoder for `encoding`; `None` for identity.
    pub fn new(encoding: Encoding) -> io::Result<Option<StreamEncoder>> {
        let inner = match encoding {
            Encoding::Identity => return Ok(None),
            Encoding::Gzip => Inner::Gzip(GzEncoder::new(Vec::new(), Compression::fast())),
            Encoding::Deflate => Inner::Deflate(ZlibEncoder::new(Vec::new(), Compression::fast())),
            Encoding::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                CHUNK,
                BROTLI_QUALITY,
                WINDOW_LOG,
            ))),
            Encoding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1)?;
                encoder.window_log(WINDOW_LOG)?;
                Inner::Zstd(encoder)
            }
        };
        Ok(Some(StreamEncoder { inner }))
    }

    fn writer(&mut self) -> &mut dyn Write {
        match &mut self.inner {
            Inner::Gzip(w) => w,
            Inner::Deflate(w) => w,
            Inner::Brotli(w) => w.as_mut(),
            Inner::Zstd(w) => w,
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match &mut self.inner {
            Inner::Gzip(w) => w.get_mut(),
            Inner::Deflate(w) => w.get_mut(),
            Inner::Brotli(w) => w.get_mut(),
            Inner::Zstd(w) => w.get_mut(),
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer().write_all(data)
    }

    /// Compresses one message and flushes: the bytes returned decode to all of it.
    pub fn message(&mut self, data: &[u8]) -> io::Result<Bytes> {
        self.write(data)?;
        self.writer().flush()?;
        Ok(Bytes::from(std::mem::take(self.output())))
    }

    /// Ends the stream: the last bytes (the coding's trailer).
    pub fn finish(self) -> io::Result<Bytes> {
        let out = match self.inner {
            Inner::Gzip(w) => w.finish()?,
            Inner::Deflate(w) => w.finish()?,
            Inner::Brotli(w) => {
                let mut w = *w;
                w.flush()?;
                w.into_inner()
            }
            Inner::Zstd(w) => w.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

/// The coding to answer with, from the client's `Accept-Encoding` and the `offered` codings
/// (in the server's order of preference); `None` means identity.
///
/// RFC 9110 §12.5.3: a coding's weight is its own entry's `q`, else `*`'s, else it is not
/// acceptable; `q=0` excludes. The highest weight wins, ties go to the server's order.
/// Identity is chosen over them only when the client weighs it explicitly higher.
pub fn negotiate(accept: &str, offered: &[Encoding]) -> Option<Encoding> {
    negotiate_values([accept], offered)
}

/// [`negotiate`] over every `Accept-Encoding` value a request carries, read as one
/// comma-separated list (RFC 9110 §5.3); none: identity.
pub fn negotiate_values<'a>(
    values: impl IntoIterator<Item = &'a str>,
    offered: &[Encoding],
) -> Option<Encoding> {
    if offered.iter().all(|e| e.is_identity()) {
        return None;
    }
    let weights = Weights::read(values);
    let mut best: Option<(Encoding, u16)> = None;
    for &encoding in offered.iter().filter(|e| !e.is_identity()) {
        let q = weights.of(encoding).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((encoding, q));
        }
    }
    let (encoding, q) = best?;
    match weights.own[Weights::slot(Encoding::Identity)] {
        Some(i) if i > q => None,
        _ => Some(encoding),
    }
}

/// The weights an `Accept-Encoding` list gives, read in one pass: each known coding's from
/// its first entry (`x-gzip` is `gzip`'s), and the first `*`'s.
#[derive(Default)]
struct Weights {
    own: [Option<u16>; 5],
    any: Option<u16>,
}

impl Weights {
    /// `encoding`'s place in `own`: a match, so that a new coding cannot compile without one.
    fn slot(encoding: Encoding) -> usize {
        match encoding {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Deflate => 2,
            Encoding::Brotli => 3,
            Encoding::Zstd => 4,
        }
    }

    fn read<'a>(values: impl IntoIterator<Item = &'a str>) -> Weights {
        let mut weights = Weights::default();
        for (token, q) in values
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(entry)
        {
            let slot = match Encoding::parse(token) {
                Some(encoding) => &mut weights.own[Weights::slot(encoding)],
                None if token == "*" => &mut weights.any,
                None => continue,
            };
            slot.get_or_insert(q);
        }
        weights
    }

    /// `encoding`'s weight: its own entry's, else `*`'s; `None` when the list names neither.
    fn of(&self, encoding: Encoding) -> Option<u16> {
        self.own[Weights::slot(encoding)].or(self.any)
    }
}

/// One `token;q=0.5` entry as the token and the weight in thousandths; `None` when empty or
/// its weight is malformed (such an entry is ignored).
fn entry(item: &str) -> Option<(&str, u16)> {
    let mut parts = item.split(';');
    let token = parts.next()?.trim();
    if token.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            q = qvalue(value.trim())?;
        }
    }
    Some((token, q))
}

/// `0`, `0.5`, `1.000`: a weight (RFC 9110 §12.4.2) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Up to three digits, checked above, read as if padded with zeros to three.
    let digit = |i: usize| {
        fraction
            .as_bytes()
            .get(i)
            .map_or(0, |b| u16::from(b - b'0'))
    };
    let thousandths = digit(0) * 100 + digit(1) * 10 + digit(2);
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a body of `content_type` is worth compressing: not media, archives or other
/// formats that are compressed already.
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "image/svg+xml" {
        return true;
    }
    let compressed_families = ["image/", "video/", "audio/", "font/woff"];
    let compressed_types = [
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/zstd",
        "application/x-bzip2",
        "application/x-xz",
        "application/x-7z-compressed",
        "application/vnd.rar",
        "application/x-rar-compressed",
        "application/x-brotli",
        "application/pdf",
        "application/wasm",
    ];
    !compressed_families.iter().any(|p| essence.starts_with(p))
        && !compressed_types.contains(&essence.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Encoding; 4] = [
        Encoding::Zstd,
        Encoding::Brotli,
        Encoding::Gzip,
        Encoding::Deflate,
    ];

    fn sample() -> Vec<u8> {
        (0..5000)
            .flat_map(|i| format!("{{\"n\":{i},\"text\":\"hello\"}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn tokens_round_trip() {
        for e in DECODED {
            assert_eq!(Encoding::parse(e.token()), Some(e));
            assert_eq!(e.to_string().parse::<Encoding>(), Ok(e));
        }
        assert_eq!(Encoding::parse(" GZIP "), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("x-gzip"), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("snappy"), None);
        assert!("compress".parse::<Encoding>().is_err());
        assert_eq!(header_list(&DEFAULT_RESPONSE), "zstd, br, gzip");
    }

    #[test]
    fn every_coding_round_trips() {
        let data = sample();
        for e in DECODED {
            let encoded = encode(e, &data).unwrap();
            if !e.is_identity() {
                assert!(encoded.len() < data.len() / 4, "{e}: {}", encoded.len());
            }
            assert_eq!(decode(e, &encoded, data.len()).unwrap(), data, "{e}");
        }
    }

    #[test]
    fn raw_deflate_is_read_as_deflate() {
        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        w.write_all(b"raw deflate body").unwrap();
        let raw = w.finish().unwrap();
        assert_eq!(
            decode(Encoding::Deflate, &raw, 100).unwrap(),
            &b"raw deflate body"[..]
        );
    }

    #[test]
    fn decoding_stops_at_the_limit() {
        let data = sample();
        for e in DECODED {
            let encoded = encode(e, &data).unwrap();
            assert_eq!(
                decode(e, &encoded, data.len() - 1),
                Err(DecodeError::TooLarge {
                    limit: data.len() - 1
                }),
                "{e}"
            );
        }
    }

    #[test]
    fn a_bomb_fails_at_the_limit_cheaply() {
        // 64 MiB of zeros: each coding shrinks it to kilobytes; decoding stops at 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        for e in ALL {
            let bomb = encode(e, &zeros).unwrap();
            assert!(bomb.len() < 1 << 20, "{e}: {}", bomb.len());
            let started = std::time::Instant::now();
            assert_eq!(
                decode(e, &bomb, 1 << 20),
                Err(DecodeError::TooLarge { limit: 1 << 20 })
            );
            // Generous: only a decoder that expanded everything would come near it.
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");
        }
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for e in ALL {
            let got = decode(e, b"\x1f\x8b\x08 this is not compressed at all", 1000);
            assert!(
                matches!(got, Err(DecodeError::Corrupt { .. })),
                "{e}: {got:?}"
            );
        }
        let truncated = encode(Encoding::Gzip, &sample()).unwrap();
        let got = decode(Encoding::Gzip, &truncated[..truncated.len() / 2], 1 << 20);
        assert!(matches!(got, Err(DecodeError::Corrupt { .. })), "{got:?}");
    }

    #[test]
    fn a_zstd_window_beyond_the_limit_is_refused() {
        assert_eq!(zstd_window_log(1), 23);
        assert_eq!(zstd_window_log(1 << 24), 24);
        assert_eq!(zstd_window_log((1 << 24) + 1), 25);
        assert_eq!(zstd_window_log(usize::MAX), 27);
        // A frame that announces a 64 MiB window is refused under an 8 MiB limit.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        encoder.window_log(26).unwrap();
        encoder.write_all(b"small").unwrap();
        let frame = encoder.finish().unwrap();
        assert!(matches!(
            decode(Encoding::Zstd, &frame, 8 << 20),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn stream_messages_decode_as_they_are_written() {
        for e in ALL {
            let mut encoder = StreamEncoder::new(e).unwrap().unwrap();
            let mut wire = Vec::new();
            let mut seen = Vec::new();
            for i in 0..3 {
                let message = format!("{{\"result\":{i}}}\n");
                wire.extend_from_slice(&encoder.message(message.as_bytes()).unwrap());
                seen.extend_from_slice(message.as_bytes());
                assert_eq!(partial_decode(e, &wire), seen, "{e} after message {i}");
            }
            wire.extend_from_slice(&encoder.finish().unwrap());
            assert_eq!(decode(e, &wire, 1000).unwrap(), seen, "{e}");
        }
        assert!(StreamEncoder::new(Encoding::Identity).unwrap().is_none());
    }

    /// What a streaming decoder yields from an unfinished stream.
    fn partial_decode(e: Encoding, wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut reader: Box<dyn Read + '_> = match e {
            Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(wire)),
            Encoding::Deflate => Box::new(ZlibDecoder::new(wire)),
            Encoding::Brotli => Box::new(brotli::Decompressor::new(wire, 4096)),
            Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(wire).unwrap()),
            Encoding::Identity => Box::new(wire),
        };
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn negotiation_follows_q_values() {
        let offer = DEFAULT_RESPONSE;
        let n = |accept: &str| negotiate(accept, &offer);
        assert_eq!(n("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(n("gzip, br"), Some(Encoding::Brotli));
        assert_eq!(n("gzip;q=0.5, br;q=0.9"), Some(Encoding::Brotli));
        assert_eq!(n("gzip;q=1.0, br;q=0.9"), Some(Encoding::Gzip));
        assert_eq!(n("GZIP"), Some(Encoding::Gzip));
        assert_eq!(n("x-gzip"), Some(Encoding::Gzip));
        assert_eq!(n("*"), Some(Encoding::Zstd));
        assert_eq!(n("*;q=0.5, zstd;q=0"), Some(Encoding::Brotli));
        assert_eq!(n("*;q=0"), None);
        assert_eq!(n(""), None);
        assert_eq!(n("identity"), None);
        assert_eq!(n("deflate"), None, "not offered");
        assert_eq!(n("gzip;q=0.5, identity;q=0.8"), None);
        assert_eq!(n("gzip;q=0.8, identity;q=0.5"), Some(Encoding::Gzip));
        assert_eq!(n("gzip;q=2, br;q=abc, zstd;q=0.0001"), None, "malformed");
        assert_eq!(n("gzip ; q=0.3 , br;q=0.2"), Some(Encoding::Gzip));
        assert_eq!(n("gzip;q=0.05, br;q=0.04"), Some(Encoding::Gzip));
        assert_eq!(n("gzip;q=0.5, br;q=0.49"), Some(Encoding::Gzip));
        assert_eq!(n("gzip;q=1.000, zstd;q=0.999"), Some(Encoding::Gzip));
        // A coding's first entry counts, `x-gzip` as `gzip`.
        assert_eq!(n("gzip;q=0.2, br;q=0.5, gzip"), Some(Encoding::Brotli));
        assert_eq!(n("x-gzip;q=0.1, br;q=0.5, gzip"), Some(Encoding::Brotli));
        assert_eq!(n("*;q=0.1, *;q=0.9, gzip;q=0.2"), Some(Encoding::Gzip));
        assert_eq!(
            n("compress, gzip;q=0.2"),
            Some(Encoding::Gzip),
            "unknown ignored"
        );
        assert_eq!(negotiate("gzip;q=0", &[Encoding::Gzip]), None);
        assert_eq!(
            negotiate("gzip, br", &[Encoding::Gzip]),
            Some(Encoding::Gzip)
        );
        assert_eq!(negotiate("gzip", &[]), None);
    }

    #[test]
    fn several_accept_encoding_values_read_as_one_list() {
        let offer = [Encoding::Zstd, Encoding::Gzip];
        let values = |v: &[&str]| negotiate_values(v.iter().copied(), &offer);
        assert_eq!(values(&[]), None);
        assert_eq!(values(&["gzip"]), Some(Encoding::Gzip));
        assert_eq!(values(&["gzip", "zstd;q=0.5"]), Some(Encoding::Gzip));
        assert_eq!(values(&["gzip;q=0.2", "zstd;q=0.5"]), Some(Encoding::Zstd));
        assert_eq!(values(&["gzip;q=0.5", "identity"]), None);
    }

    #[test]
    fn offers_from_the_flag() {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            parse_offer(&list("zstd,br,gzip")),
            Ok(DEFAULT_RESPONSE.to_vec())
        );
        assert_eq!(parse_offer(&list("gzip")), Ok(vec![Encoding::Gzip]));
        assert_eq!(parse_offer(&list("none")), Ok(vec![]));
        assert_eq!(
            parse_offer(&list("gzip, deflate,gzip")),
            Ok(vec![Encoding::Gzip, Encoding::Deflate])
        );
        assert!(parse_offer(&list("none,gzip")).is_err());
        assert!(parse_offer(&list("snappy")).is_err());
        assert!(parse_offer(&list("identity")).is_err());
    }

    #[test]
    fn media_and_archives_are_not_compressed_again() {
        for t in [
            "application/json",
            "text/plain; charset=utf-8",
            "image/svg+xml",
        ] {
            assert!(compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "Video/mp4",
            "audio/ogg",
            "application/zip",
            "application/gzip; x=1",
        ] {
            assert!(!compressible(t), "{t}");
        }
    }
}
