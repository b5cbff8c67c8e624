//! The deadline of an upstream call, decided here for every protocol: the client's own
//! (`grpc-timeout`), lowered to what the gateway configures for the method (its own
//! `--method-timeout`, its service's, or `--timeout`).

use std::time::Duration;

use http::HeaderMap;

use super::settings::Settings;
use crate::error::{quoted, GatewayError};
use crate::grpc::timeout;

/// The header that carries a client's deadline.
pub(super) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The deadline for `method` (`package.Service/Method`) given the client's `headers`: `None`
/// when neither sets one. A `grpc-timeout` that does not parse is the client's error.
pub(super) fn deadline(
    settings: &Settings,
    method: &str,
    headers: &HeaderMap,
) -> Result<Option<Duration>, GatewayError> {
    let configured = configured(settings, method);
    let client = match headers.get(GRPC_TIMEOUT) {
        None => None,
        Some(v) => Some(v.to_str().ok().and_then(timeout::parse).ok_or_else(|| {
            let text = String::from_utf8_lossy(v.as_bytes());
            GatewayError::invalid_argument(format!("invalid Grpc-Timeout header {}", quoted(&text)))
        })?),
    };
    Ok(match (client, configured) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// The deadline the gateway configures for `method`: its own, its service's, or the default.
fn configured(settings: &Settings, method: &str) -> Option<Duration> {
    let method = method.trim_start_matches('/');
    let service = method.split('/').next().unwrap_or_default();
    let timeouts = &settings.method_timeouts;
    timeouts
        .get(method)
        .or_else(|| timeouts.get(service))
        .copied()
        .or(settings.timeout)
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
        h.insert(GRPC_TIMEOUT, value.parse().unwrap());
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
}
