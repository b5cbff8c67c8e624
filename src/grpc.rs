//! The gRPC protocol pieces the gateway owns: message framing, status codes and trailers,
//! `grpc-timeout`, and the mapping between HTTP headers and gRPC metadata.

pub mod frame;
pub mod metadata;
mod raw_codec;
pub mod reflection;
pub mod status;
pub mod timeout;

pub use raw_codec::RawCodec;
pub use status::Code;
