//! Readiness: whether an upstream can serve, by gRPC health checking where it offers it.

use std::sync::Arc;

use http::Request;
use http_body_util::{BodyExt, Full, Limited};

use super::endpoint::{Endpoint, SendFailure};
use super::{error_chain, Upstream, UpstreamBody};
use crate::grpc::status::Status;
use crate::grpc::Code;

/// `grpc.health.v1.HealthCheckResponse`, decoded statically: only `status` matters.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

impl Upstream {
    /// Whether at least one endpoint is reachable and, when it offers gRPC health checking,
    /// serving. Every endpoint is asked, healthy or not, so that readiness also notices one
    /// that came back; the error names each endpoint's problem.
    pub async fn probe(&self) -> Result<(), String> {
        let endpoints = self.endpoints.current().await.map_err(|e| e.to_string())?;
        let probes = endpoints.iter().map(|e| self.probe_endpoint(e));
        let results = futures_util::future::join_all(probes).await;
        if results.iter().any(Result::is_ok) {
            return Ok(());
        }
        let problems: Vec<String> = endpoints
            .iter()
            .zip(results)
            .filter_map(|(e, r)| r.err().map(|r| (e.addr, r)))
            .map(|(addr, reason)| match endpoints.len() {
                1 => reason,
                _ => format!("{addr}: {reason}"),
            })
            .collect();
        Err(problems.join("; "))
    }

    async fn probe_endpoint(&self, endpoint: &Arc<Endpoint>) -> Result<(), String> {
        let mut request = self.health_request()?;
        // A connection found closed is worth one more try: the check is about the endpoint.
        for _attempt in 0..2 {
            match endpoint.send(request).await {
                Ok(response) => return read_verdict(response).await,
                Err(SendFailure::Sent { error, .. }) => return Err(error_chain(&error)),
                Err(SendFailure::Unsent {
                    request: returned,
                    error,
                    refused,
                }) => {
                    if refused {
                        return Err(error.to_string());
                    }
                    request = *returned;
                }
            }
        }
        Err(format!("connections to {} keep closing", endpoint.addr))
    }

    fn health_request(&self) -> Result<Request<UpstreamBody>, String> {
        let mut request = Request::new(
            Full::new(crate::grpc::frame::encode_raw(&[]))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self
            .uri(&http::uri::PathAndQuery::from_static(
                "/grpc.health.v1.Health/Check",
            ))
            .map_err(|e| e.message)?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        Ok(request)
    }
}

async fn read_verdict(response: http::Response<super::UpstreamResponseBody>) -> Result<(), String> {
    let (parts, body) = response.into_parts();
    let collected = Limited::new(body, 4096)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = Status::from_headers(&parts.headers).or_else(|| Status::from_headers(&trailers));
    health_verdict(status, &collected.to_bytes())
}

fn health_verdict(status: Option<Status>, body: &[u8]) -> Result<(), String> {
    match status.map(|s| s.code) {
        Some(Code::Unimplemented) => Ok(()),
        Some(Code::Ok) => {
            let frames = crate::grpc::frame::decode_all(body, 4096).map_err(|e| e.to_string())?;
            let payload = frames
                .first()
                .map(|f| f.payload.clone())
                .unwrap_or_default();
            let reply = <HealthCheckResponse as prost::Message>::decode(payload)
                .map_err(|e| e.to_string())?;
            match reply.status {
                SERVING => Ok(()),
                other => Err(format!("health check says {}", health_name(other))),
            }
        }
        Some(code) => Err(format!("health check failed with {}", code.name())),
        None => Err("health check got no grpc-status".into()),
    }
}

fn health_name(status: i32) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}
