//! The immutable unit of (re)loading: the descriptor pool and the route table built from it.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, ServiceDescriptor};

use crate::descriptor::{self, Sources};
use crate::route::{RouteOptions, RouteTable};

/// Everything a request needs from the descriptors, built once and then only read.
#[derive(Debug)]
pub struct Snapshot {
    pub pool: DescriptorPool,
    pub routes: RouteTable,
    /// Every loaded service and the index of the upstream serving it, for native gRPC.
    pub services: HashMap<String, usize>,
    /// `/package.Service/Method` of every method of those services: the route labels of
    /// native gRPC calls in metrics.
    pub grpc_methods: HashMap<String, GrpcMethod>,
    /// The compiled schemas of the message types, for every transcoding protocol.
    pub schemas: crate::transcode::Schemas,
    /// The `buf.validate` rules of the message types, compiled, for `--validate`.
    pub rules: crate::validate::Rules,
}

pub use crate::upstream::UpstreamMap;

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Descriptor(#[from] descriptor::DescriptorError),
    #[error(transparent)]
    Route(#[from] crate::route::RouteError),
    #[error(
        "service {0} has routes but no upstream: give --upstream or --service-upstream {0}=URL"
    )]
    NoUpstream(String),
    #[error("--service-upstream names {0}, which the descriptors do not define")]
    UnknownService(String),
    #[error("{0}")]
    Build(String),
}

impl Snapshot {
    /// The upstream index serving `service` (fully qualified), if it is loaded and routed.
    pub fn upstream_of_service(&self, service: &str) -> Option<usize> {
        self.services.get(service).copied()
    }

    /// Loads descriptors and builds the routes. With `upstreams: None` (for `protogate
    /// routes`) every service maps to upstream 0 and nothing about upstreams is checked.
    pub fn build(
        sources: &Sources,
        options: &RouteOptions,
        upstreams: Option<&UpstreamMap>,
    ) -> Result<Snapshot, SnapshotError> {
        let pool = descriptor::load(sources)?;
        if let Some(map) = upstreams {
            check_services(&pool, map)?;
        }
        let lookup = |s: &ServiceDescriptor| upstreams.and_then(|m| m.index_of(s)).unwrap_or(0);
        let routes = RouteTable::build(&pool, options, &lookup)?;
        if let Some(map) = upstreams {
            check_routed_services(&routes, map)?;
        }
        let services = pool
            .services()
            .filter_map(|s| Some((s.full_name().to_string(), upstreams?.index_of(&s)?)))
            .collect();
        let grpc_methods = grpc_methods(&pool, &services);
        let schemas = crate::transcode::Schemas::build(&pool);
        let rules = crate::validate::Rules::build(&pool);
        Ok(Snapshot {
            pool,
            routes,
            services,
            grpc_methods,
            schemas,
            rules,
        })
    }
}

/// A method of a served service, as native gRPC and gRPC-Web calls see it.
#[derive(Debug, Clone)]
pub struct GrpcMethod {
    /// Its `/package.Service/Method` path, shared by every call's metrics labels.
    pub label: std::sync::Arc<str>,
    /// Whether the client sends a stream of messages (else exactly one).
    pub client_streaming: bool,
    /// The request message type (checked against its rules with `--validate`).
    pub input: prost_reflect::MessageDescriptor,
}

fn grpc_methods(
    pool: &DescriptorPool,
    services: &HashMap<String, usize>,
) -> HashMap<String, GrpcMethod> {
    pool.services()
        .filter(|s| services.contains_key(s.full_name()))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .map(|m| {
            let path = format!("/{}/{}", m.parent_service().full_name(), m.name());
            let method = GrpcMethod {
                label: std::sync::Arc::from(path.as_str()),
                client_streaming: m.is_client_streaming(),
                input: m.input(),
            };
            (path, method)
        })
        .collect()
}

fn check_services(pool: &DescriptorPool, map: &UpstreamMap) -> Result<(), SnapshotError> {
    for name in map.by_service.keys() {
        if pool.get_service_by_name(name).is_none() {
            return Err(SnapshotError::UnknownService(name.clone()));
        }
    }
    Ok(())
}

fn check_routed_services(routes: &RouteTable, map: &UpstreamMap) -> Result<(), SnapshotError> {
    for plan in routes.plans() {
        let service = plan.method.parent_service();
        if map.index_of(service).is_none() {
            return Err(SnapshotError::NoUpstream(service.full_name().to_string()));
        }
    }
    Ok(())
}
