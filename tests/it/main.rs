//! Every integration test, in one binary: each file here is a module (`cargo test --test it
//! hostile::` runs one of them), `support` is what they share. The conformance corpus is the
//! other test binary (`tests/conformance.rs`).
//!
//! The tests run in parallel in one process, so none changes what the others depend on: no
//! environment variables are set (child processes get theirs through `Command`), the one
//! process-wide limit raised (open descriptors, by the slowloris test) only ever goes up, and
//! nothing measures the process as a whole to pass or fail.

mod support;

mod architecture;
mod balancing;
mod bounds;
mod cli;
mod clients;
mod compression;
mod connect;
mod docs;
mod docs_page;
mod downstream_tls;
mod errors;
mod fast_paths;
mod faults;
mod fuzz_targets;
mod grpc_web;
mod hostile;
mod openapi;
mod operations;
mod passthrough;
mod prometheus;
mod reflection;
mod reflection_source;
mod rest_streaming;
mod routing;
mod traces;
mod upstream_tls;
mod validate;
mod vps;
mod websocket;
