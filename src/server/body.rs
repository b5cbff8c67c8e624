//! The bodies of the responses the gateway sends.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Errors carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the gateway sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// Reads and drops what is left of a request body refused before it was read, up to `limit`
/// bytes and for at most `wait`. An HTTP/1.1 client still writing its body then reads the
/// answer, where closing the connection on it would give it a broken pipe instead. Over
/// HTTP/2 the stream is reset instead: nothing to do.
pub(super) async fn drain<B>(
    version: http::Version,
    body: B,
    limit: usize,
    wait: std::time::Duration,
) where
    B: http_body::Body + Unpin,
{
    if version >= http::Version::HTTP_2 {
        return;
    }
    let read = async {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, bytes::Buf::remaining);
            if seen > limit {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
}

/// A complete body.
pub(super) fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
