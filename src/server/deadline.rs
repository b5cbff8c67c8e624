//! The deadline of an upstream call, decided here for every protocol: the client's own
//! (`grpc-timeout`, or a Connect client's `connect-timeout-ms`), lowered to what the gateway
//! configures for the method (its own `--method-timeout`, its service's, or `--timeout`).

use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::settings::Settings;
use crate::error::{quoted, GatewayError};
use crate::grpc::timeout;

/// The header that carries a Connect client's deadline, in milliseconds.
pub(super) const CONNECT_TIMEOUT: &str = "connect-timeout-ms";

/// The deadline for `method` (`package.Service/Method`) given the client's `headers`: `None`
/// when neither sets one. A `grpc-timeout` that does not parse is the client's error.
pub(super) fn deadline(
    settings: &Settings,
    method: &str,
    headers: &HeaderMap,
) -> Result<Option<Duration>, GatewayError> {
    let client = match headers.get(timeout::HEADER) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(timeout::parse).ok_or_else(|| {
            let text = String::from_utf8_lossy(v.as_bytes());
            GatewayError::invalid_argument(format!("invalid Grpc-Timeout header {}", quoted(&text)))
        })?),
    };
    Ok(lowered(client, configured(settings, method)))
}

/// The deadline for `method` of a Connect call: its `connect-timeout-ms` (a positive integer
/// of at most 10 digits), lowered to the configured one. One that does not parse is the
/// client's error.
pub(super) fn connect_deadline(
    settings: &Settings,
    method: &str,
    headers: &HeaderMap,
) -> Result<Option<Duration>, GatewayError> {
    let client = match headers.get(CONNECT_TIMEOUT) {
        None => None,
        Some(v) => Some(connect_timeout(v.as_bytes()).ok_or_else(|| {
            let text = String::from_utf8_lossy(v.as_bytes());
            GatewayError::invalid_argument(format!(
                "invalid Connect-Timeout-Ms header {}",
                quoted(&text)
            ))
        })?),
    };
    Ok(lowered(client, configured(settings, method)))
}

/// A `connect-timeout-ms` value: 1 to 10 ASCII digits.
fn connect_timeout(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ms))
}

/// The earlier of the client's deadline and the configured one.
fn lowered(client: Option<Duration>, configured: Option<Duration>) -> Option<Duration> {
    match (client, configured) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The deadline the gateway configures for `method`: its own, its service's, or the default.
fn configured(settings: &Settings, method: &str) -> Option<Duration> {
    let timeouts = &settings.method_timeouts;
    if timeouts.is_empty() {
        return settings.timeout;
    }
    let method = method.trim_start_matches('/');
    let service = method.split('/').next().unwrap_or_default();
    timeouts
        .get(method)
        .or_else(|| timeouts.get(service))
        .copied()
        .or(settings.timeout)
}

/// The earlier of `call` and the deadline. The call's future is held once (a `match` with a
/// `timeout` arm would hold it twice), so the future of a request that awaits this stays small.
/// A plain function, not an `async` one: a wrapper would move the call's future once more.
pub(super) fn within<T>(
    deadline: Option<Duration>,
    call: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> impl std::future::Future<Output = Result<T, GatewayError>> {
    within_at(from_now(deadline), call)
}

/// A deadline placed in time from now: `(when, its length)`. One beyond the clock's range is
/// no deadline.
pub(super) fn from_now(deadline: Option<Duration>) -> Option<(Instant, Duration)> {
    let d = deadline?;
    Some((Instant::now().checked_add(d)?, d))
}

/// Like [`within`], for a deadline already placed in time: `(when, the deadline's length)`.
pub(super) async fn within_at<T>(
    deadline: Option<(Instant, Duration)>,
    call: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    let expiry = async {
        match deadline {
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = call => result,
        () = expiry => Err(exceeded(deadline.map_or(Duration::ZERO, |(_, d)| d))),
    }
}

/// The error of a call that outlived its deadline.
pub(super) fn exceeded(deadline: Duration) -> GatewayError {
    GatewayError::upstream(
        crate::grpc::Code::DeadlineExceeded,
        format!("deadline of {deadline:?} exceeded"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut settings = Settings {
            timeout: Some(Duration::from_secs(30)),
            ..Settings::default()
        };
        let timeouts = &mut settings.method_timeouts;
        timeouts.insert("pkg.Svc/Slow".into(), Duration::from_secs(60));
        timeouts.insert("pkg.Fast".into(), Duration::from_secs(1));
        settings
    }

    fn with_client(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(timeout::HEADER, value.parse().unwrap());
        h
    }

    #[test]
    fn method_then_service_then_default_and_the_client_lowers_it() {
        let s = settings();
        let none = HeaderMap::new();
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(deadline(&s, "pkg.Svc/Slow", &none).unwrap(), secs(60));
        assert_eq!(deadline(&s, "/pkg.Fast/Any", &none).unwrap(), secs(1));
        assert_eq!(deadline(&s, "pkg.Svc/Other", &none).unwrap(), secs(30));
        assert_eq!(
            deadline(&s, "pkg.Svc/Slow", &with_client("2S")).unwrap(),
            secs(2)
        );
        assert_eq!(
            deadline(&s, "pkg.Fast/Any", &with_client("2S")).unwrap(),
            secs(1)
        );
        assert!(deadline(&s, "pkg.Svc/Slow", &with_client("soon")).is_err());
        assert_eq!(
            deadline(&Settings::default(), "a.B/C", &none).unwrap(),
            None
        );
    }

    #[test]
    fn connect_timeouts_are_milliseconds_and_lowered_too() {
        let s = settings();
        let header = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONNECT_TIMEOUT, v.parse().unwrap());
            h
        };
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            connect_deadline(&s, "pkg.Svc/Slow", &header("250")).unwrap(),
            ms(250)
        );
        assert_eq!(
            connect_deadline(&s, "pkg.Fast/Any", &header("9999999999")).unwrap(),
            ms(1000)
        );
        for bad in ["", "-1", "1.5", "12345678901", "1s"] {
            assert!(
                connect_deadline(&s, "pkg.Svc/Slow", &header(bad)).is_err(),
                "{bad}"
            );
        }
        // A gRPC header is not a Connect client's deadline.
        assert_eq!(
            connect_deadline(&s, "pkg.Svc/Slow", &with_client("1S")).unwrap(),
            ms(60_000)
        );
    }
}
