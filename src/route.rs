//! Routes: the `google.api.http` rules of the loaded methods, parsed into templates, checked
//! against the descriptors, and compiled into one [`RoutePlan`] per binding.

pub mod field_path;
pub mod matcher;
mod plan;
mod rule;
mod table;
pub mod template;

pub use field_path::FieldPath;
pub use matcher::{Lookup, MethodSel, Unescape};
pub use plan::{BodyPlan, RoutePlan};
pub use rule::HttpRule;
pub use table::{RouteError, RouteOptions, RouteTable};
