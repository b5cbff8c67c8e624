//! The route table: every binding of every loaded method, in a matcher, built once per
//! snapshot. Every problem with a rule stops the build with the file, method and rule.

use std::sync::Arc;

use http::uri::PathAndQuery;
use prost_reflect::{DescriptorPool, Kind, MethodDescriptor, ServiceDescriptor};

use super::field_path::FieldPath;
use super::matcher::{Lookup, Matcher, MethodSel, Unescape};
use super::plan::{
    check_path_leaf, fast_body_type, holds_any, is_http_body, single_field_mask, BodyPlan,
    RoutePlan,
};
use super::rule::{rules_of, HttpRule};
use super::template;

/// A rule that cannot be served, with where it is.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: method {method}, rule `{rule}`: {reason}")]
pub struct RouteError {
    pub file: String,
    pub method: String,
    pub rule: String,
    pub reason: String,
}

/// Choices that change which routes exist.
#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    /// Serve methods without an http rule as `POST /package.Service/Method` with `body: "*"`.
    pub expose_unannotated: bool,
    /// How multi-segment path variables are percent-decoded.
    pub unescape: Unescape,
}

/// All bindings, ready for lookup.
pub struct RouteTable {
    matcher: Matcher<Arc<RoutePlan>>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.matcher.len())
            .finish()
    }
}

impl RouteTable {
    /// Builds the table; `upstream_of` gives the upstream index serving a service.
    pub fn build(
        pool: &DescriptorPool,
        options: &RouteOptions,
        upstream_of: &dyn Fn(&ServiceDescriptor) -> usize,
    ) -> Result<RouteTable, RouteError> {
        let mut matcher = Matcher::new();
        matcher.set_unescape(options.unescape);
        let http = pool.get_extension_by_name("google.api.http");
        for service in pool.services() {
            let upstream = upstream_of(&service);
            for method in service.methods() {
                let rules = match &http {
                    Some(ext) => rules_of(&method, ext).map_err(|reason| RouteError {
                        file: method.parent_file().name().to_string(),
                        method: method.full_name().to_string(),
                        rule: "google.api.http".into(),
                        reason,
                    })?,
                    None => Vec::new(),
                };
                let rules = if rules.is_empty() && options.expose_unannotated {
                    vec![unannotated_rule(&method)]
                } else {
                    rules
                };
                for rule in rules {
                    insert(&mut matcher, &method, rule, upstream)?;
                }
            }
        }
        Ok(RouteTable { matcher })
    }

    /// Finds the binding for a request.
    pub fn lookup(&self, method: &http::Method, path: &str) -> Lookup<'_, Arc<RoutePlan>> {
        self.matcher.lookup(method, path)
    }

    /// Every plan, for `protogate routes`.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<RoutePlan>> {
        self.matcher.iter().map(|(_, _, plan)| plan)
    }

    pub fn len(&self) -> usize {
        self.matcher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_empty()
    }
}

fn unannotated_rule(method: &MethodDescriptor) -> HttpRule {
    HttpRule {
        method: MethodSel::Method(http::Method::POST),
        path: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        body: "*".into(),
        response_body: String::new(),
    }
}

fn insert(
    matcher: &mut Matcher<Arc<RoutePlan>>,
    method: &MethodDescriptor,
    rule: HttpRule,
    upstream: usize,
) -> Result<(), RouteError> {
    let fail = |rule: &HttpRule, reason: String| RouteError {
        file: method.parent_file().name().to_string(),
        method: method.full_name().to_string(),
        rule: rule.to_string(),
        reason,
    };
    let plan = compile(method, rule.clone(), upstream).map_err(|r| fail(&rule, r))?;
    let plan = Arc::new(plan);
    let template = plan.template.clone();
    matcher
        .insert(rule.method.clone(), &template, plan)
        .map_err(|conflict| {
            let reason = format!(
                "it can match the same requests as `{}` of method {}",
                conflict.existing.rule,
                conflict.existing.method_name()
            );
            fail(&rule, reason)
        })
}

fn compile(
    method: &MethodDescriptor,
    rule: HttpRule,
    upstream: usize,
) -> Result<RoutePlan, String> {
    let template = template::parse(&rule.path).map_err(|e| e.to_string())?;
    let input = method.input();
    let output = method.output();
    let path_vars = template
        .variables
        .iter()
        .map(|v| {
            let path = FieldPath::resolve(&input, &v.field_path.join("."))?;
            check_path_leaf(path.leaf())?;
            Ok(path)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let string_path_vars = path_vars.iter().all(|path| {
        let leaf = path.leaf();
        path.fields.len() == 1 && leaf.kind() == Kind::String && !leaf.is_list()
    });
    let body = body_plan(&rule, method)?;
    let response_body = match rule.response_body.as_str() {
        "" => None,
        name => Some(top_level(&output, name, "response_body")?),
    };
    let mut bound: Vec<Vec<u32>> = path_vars.iter().map(FieldPath::numbers).collect();
    if let BodyPlan::Field(f) = &body {
        bound.push(f.numbers());
    }
    let grpc_path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let grpc_path = PathAndQuery::try_from(grpc_path).map_err(|e| e.to_string())?;
    let is_patch = rule.method == MethodSel::Method(http::Method::PATCH);
    let patch_mask = match (&body, is_patch) {
        (BodyPlan::Field(_), true) => single_field_mask(&input),
        _ => None,
    };
    let mut plan = RoutePlan {
        label: rule.path.to_string().into(),
        patch_mask,
        input_holds_any: holds_any(&input),
        method: method.clone(),
        http_body_request: match &body {
            BodyPlan::Message => is_http_body(&input),
            BodyPlan::Field(f) => {
                matches!(f.leaf().kind(), Kind::Message(m) if is_http_body(&m))
                    && !f.leaf().is_list()
            }
            BodyPlan::None => false,
        },
        http_body_response: match &response_body {
            None => is_http_body(&output),
            Some(f) => {
                matches!(f.leaf().kind(), Kind::Message(m) if is_http_body(&m))
                    && !f.leaf().is_list()
            }
        },
        rule,
        template,
        grpc_path,
        input,
        output,
        body,
        response_body,
        path_vars,
        string_path_vars,
        bound,
        upstream,
        fast_body: None,
    };
    plan.fast_body = fast_body_type(&plan);
    Ok(plan)
}

fn body_plan(rule: &HttpRule, method: &MethodDescriptor) -> Result<BodyPlan, String> {
    match rule.body.as_str() {
        "" => Ok(BodyPlan::None),
        "*" => Ok(BodyPlan::Message),
        name => Ok(BodyPlan::Field(top_level(&method.input(), name, "body")?)),
    }
}

/// `body` and `response_body` name a top-level field of their message.
fn top_level(
    message: &prost_reflect::MessageDescriptor,
    name: &str,
    what: &str,
) -> Result<FieldPath, String> {
    if name.contains('.') {
        return Err(format!("{what} {name:?} must name a top-level field"));
    }
    FieldPath::resolve(message, name).map_err(|e| format!("{what} {name:?}: {e}"))
}
