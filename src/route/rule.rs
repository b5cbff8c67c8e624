//! Reading `google.api.http` rules (and their `additional_bindings`) from method options.

use prost_reflect::{DynamicMessage, ExtensionDescriptor, MethodDescriptor, Value};

use super::matcher::MethodSel;

/// One binding of a method: an HTTP method, a path template, and the body mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    pub method: MethodSel,
    pub path: String,
    pub body: String,
    pub response_body: String,
}

impl std::fmt::Display for HttpRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match &self.method {
            MethodSel::Any => "custom *".to_string(),
            MethodSel::Method(m) => m.as_str().to_ascii_lowercase(),
        };
        write!(f, "{verb}: {:?}", self.path)?;
        if !self.body.is_empty() {
            write!(f, " body: {:?}", self.body)?;
        }
        if !self.response_body.is_empty() {
            write!(f, " response_body: {:?}", self.response_body)?;
        }
        Ok(())
    }
}

/// The bindings of `method`: the rule itself, then its additional bindings (one level, as
/// the spec allows). `Err` describes a rule without a pattern or with a bad custom method.
pub(super) fn rules_of(
    method: &MethodDescriptor,
    http: &ExtensionDescriptor,
) -> Result<Vec<HttpRule>, String> {
    let options = method.options();
    if !options.has_extension(http) {
        return Ok(Vec::new());
    }
    let value = options.get_extension(http);
    let Some(rule) = value.as_message() else {
        return Ok(Vec::new());
    };
    let mut rules = vec![binding(rule)?];
    if let Some(Value::List(extra)) = rule.get_field_by_name("additional_bindings").as_deref() {
        for item in extra {
            if let Some(m) = item.as_message() {
                rules.push(binding(m)?);
            }
        }
    }
    Ok(rules)
}

fn string_field(rule: &DynamicMessage, name: &str) -> String {
    rule.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn binding(rule: &DynamicMessage) -> Result<HttpRule, String> {
    let (method, path) = pattern(rule)?;
    Ok(HttpRule {
        method,
        path,
        body: string_field(rule, "body"),
        response_body: string_field(rule, "response_body"),
    })
}

fn pattern(rule: &DynamicMessage) -> Result<(MethodSel, String), String> {
    for (name, method) in [
        ("get", http::Method::GET),
        ("put", http::Method::PUT),
        ("post", http::Method::POST),
        ("delete", http::Method::DELETE),
        ("patch", http::Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            return Ok((MethodSel::Method(method), string_field(rule, name)));
        }
    }
    if rule.has_field_by_name("custom") {
        return custom(rule);
    }
    Err("the rule has no pattern (get, put, post, delete, patch or custom)".into())
}

fn custom(rule: &DynamicMessage) -> Result<(MethodSel, String), String> {
    let value = rule.get_field_by_name("custom");
    let Some(custom) = value.as_deref().and_then(Value::as_message) else {
        return Err("custom pattern is not a message".into());
    };
    let kind = string_field(custom, "kind");
    let path = string_field(custom, "path");
    if kind == "*" {
        return Ok((MethodSel::Any, path));
    }
    let method = http::Method::from_bytes(kind.as_bytes())
        .map_err(|_| format!("custom kind {kind:?} is not an HTTP method"))?;
    Ok((MethodSel::Method(method), path))
}
