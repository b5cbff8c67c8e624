//! What a handler tells the edge about its response, for the metrics and the access log: the
//! route it matched and, for an error, its code and whose fault it was.

use std::sync::Arc;

use crate::error::ErrorSource;
use crate::grpc::Code;

/// The route a response was served by.
#[derive(Debug, Clone)]
pub(crate) struct RouteTag(pub(crate) Arc<str>);

/// The gRPC code a response ended with (when it is not OK), and whose fault that was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorTag {
    pub(crate) code: Code,
    pub(crate) source: ErrorSource,
}
