//! protogate: a gRPC gateway driven by protobuf descriptors.
//!
//! At start-up it loads descriptors (binary `FileDescriptorSet`s or `.proto` files compiled
//! in-process), reads every method's `google.api.http` rule, and serves those methods as
//! REST/JSON, forwarding gRPC frames to upstream servers over HTTP/2.
//!
//! # Structure
//! - [`config`]: the command line and its environment variables.
//! - [`descriptor`]: loading descriptors, with `google/api` and `google/rpc` built in.
//! - [`route`]: path templates, the matcher, and one compiled plan per HTTP binding.
//! - [`transcode`]: JSON, path and query into request messages; responses back to JSON.
//! - [`grpc`]: framing, status, `grpc-timeout`, and the header/metadata mapping.
//! - [`error`]: the one table from failures to HTTP status and `google.rpc.Status` bodies.
//! - [`upstream`]: HTTP/2 connections to the gRPC servers: discovery, balancing, TLS.
//! - [`tls`]: certificates and keys, and the serving certificate that follows its files.
//! - [`server`]: serving: listener, edge, dispatch, the protocol handlers, the error edge
//!   (its module docs walk a request's path file by file).
//! - [`snapshot`]: descriptors and routes, built once and swapped whole.
//! - [`reload`]: rebuilding the snapshot on SIGHUP or file changes.
//! - [`reflection_source`]: descriptors from the upstreams' gRPC server reflection.
//! - [`openapi`]: the OpenAPI 3.1 document of the loaded routes.
//! - [`metrics`]: the Prometheus metrics.
//! - [`access`]: what a request's access log line notes from deep in its handling.
//! - [`run`]: a gateway as the process: bind, serve until a signal, drain.
//! - [`workers`]: the serving threads, one event loop per core.
//! - [`app`]: the commands (`serve`, `routes`, `compile`, `demo`).
//! - [`demo`]: the built-in VPS backend.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

pub(crate) mod access;
pub mod app;
pub mod compression;
pub mod config;
pub mod demo;
pub mod descriptor;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod openapi;
pub mod reflection_source;
pub mod reload;
pub mod route;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod trace;
pub mod transcode;
pub mod upstream;
pub mod validate;
pub mod well_known;
pub mod workers;
