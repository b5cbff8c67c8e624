//! The gRPC protocol pieces the gateway owns: message framing, status codes and trailers,
//! `grpc-timeout`, and the mapping between HTTP headers and gRPC metadata.

pub mod frame;
pub mod metadata;
pub mod status;
pub mod timeout;

pub use status::Code;
