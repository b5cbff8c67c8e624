//! How traces are exported, from `--otlp-endpoint` and the standard `OTEL_*` environment
//! variables: the protocol, the service name, the sampler and the export queue's bounds.
//!
//! Pure: the variables are read through the lookup the caller passes.

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`), to the endpoint itself.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), to the endpoint's `/v1/traces`.
    HttpProtobuf,
}

/// Everything the exporter needs.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The collector's base URL (`http://collector:4317`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    pub sampler: Sampler,
    /// Spans waiting to be exported at most; more are dropped and counted.
    pub max_queue_size: usize,
    /// Spans sent in one export at most.
    pub max_export_batch_size: usize,
    /// How long a span waits for its batch to fill before the batch is sent anyway.
    pub schedule_delay: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
    /// `url.scheme` of server spans: `https` when the gateway serves TLS.
    pub scheme: &'static str,
}

impl TraceConfig {
    /// The configuration for `endpoint`, the rest from the variables `env` looks up.
    pub fn from_env(
        endpoint: &str,
        tls: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<TraceConfig, String> {
        let endpoint = endpoint.trim();
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "--otlp-endpoint {endpoint:?} is not an http:// URL (the exporter speaks plain \
                 HTTP to a collector beside the gateway, which may go on over TLS)"
            ));
        }
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let protocol = match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref().map(str::trim) {
            None | Some("" | "grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not grpc or http/protobuf"
                ))
            }
        };
        let service_name = env("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "protogate".to_string());
        let sampler = sampler(
            env("OTEL_TRACES_SAMPLER").as_deref(),
            env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        let max_queue_size = number(&env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.clamp(1, MAX_QUEUE);
        let max_export_batch_size =
            number(&env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.clamp(1, max_queue_size);
        let millis = |name, default| {
            number(&env, name, default).map(|n| (n as u64).min(MAX_WAIT.as_millis() as u64))
        };
        Ok(TraceConfig {
            endpoint,
            protocol,
            service_name,
            sampler,
            max_queue_size,
            max_export_batch_size,
            schedule_delay: Duration::from_millis(millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            export_timeout: Duration::from_millis(millis("OTEL_BSP_EXPORT_TIMEOUT", 30000)?),
            scheme: if tls { "https" } else { "http" },
        })
    }

    /// The URL spans are sent to: the endpoint for gRPC, its `/v1/traces` for HTTP.
    pub fn export_url(&self) -> String {
        match self.protocol {
            Protocol::Grpc => self.endpoint.clone(),
            Protocol::HttpProtobuf => format!("{}/v1/traces", self.endpoint),
        }
    }
}

/// The largest export queue taken (a larger `OTEL_BSP_MAX_QUEUE_SIZE` is cut to it).
const MAX_QUEUE: usize = 1 << 20;
/// The longest schedule delay or export timeout taken.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A whole number variable, or `default` when it is unset or empty.
fn number(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: usize,
) -> Result<usize, String> {
    match env(name).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("{name} {text:?} is not a whole number")),
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` names (default `parentbased_always_on`), with the ratio
/// of `OTEL_TRACES_SAMPLER_ARG` for the `traceidratio` ones (default 1).
fn sampler(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, String> {
    let ratio = || -> Result<f64, String> {
        match arg.map(str::trim) {
            None | Some("") => Ok(1.0),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG {text:?} is not a ratio from 0 to 1")
                }),
        }
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match name.map(str::trim).unwrap_or("") {
        "" | "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER {other:?} is not one of always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off, \
                 parentbased_traceidratio"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<TraceConfig, String> {
        TraceConfig::from_env("http://collector:4317/", false, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.endpoint, "http://collector:4317");
        assert_eq!(c.export_url(), "http://collector:4317");
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.service_name, "protogate");
        assert_eq!(format!("{:?}", c.sampler), "ParentBased(AlwaysOn)");
        assert_eq!((c.max_queue_size, c.max_export_batch_size), (2048, 512));
        assert_eq!(c.schedule_delay, Duration::from_secs(5));
        assert_eq!(c.scheme, "http");
    }

    #[test]
    fn variables() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ])
        .unwrap();
        assert_eq!(c.export_url(), "http://collector:4317/v1/traces");
        assert_eq!(c.service_name, "edge");
        assert!(matches!(c.sampler, Sampler::TraceIdRatioBased(r) if r == 0.25));
        assert_eq!((c.max_queue_size, c.max_export_batch_size), (4, 4));
        assert_eq!(c.schedule_delay, Duration::from_millis(50));
        let c = config(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1000000000000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "18446744073709551615"),
        ])
        .unwrap();
        assert_eq!(c.max_queue_size, MAX_QUEUE);
        assert_eq!(c.schedule_delay, MAX_WAIT);
    }

    #[test]
    fn refusals() {
        for vars in [
            [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            [("OTEL_TRACES_SAMPLER", "sometimes")],
            [("OTEL_BSP_MAX_QUEUE_SIZE", "-1")],
        ] {
            assert!(config(&vars).is_err(), "{vars:?}");
        }
        assert!(config(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ])
        .is_err());
        assert!(TraceConfig::from_env("collector:4317", false, |_| None).is_err());
        assert!(TraceConfig::from_env("https://collector:4317", false, |_| None).is_err());
    }

    #[test]
    fn every_sampler_name() {
        for name in [
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ] {
            assert!(sampler(Some(name), Some("0.5")).is_ok(), "{name}");
        }
    }
}
