//! The two exposition formats Prometheus reads, and which one a scrape asks for.
//!
//! The registry encodes OpenMetrics 1.0. Scrapers that do not ask for it (`Accept` without
//! `application/openmetrics-text`: older Prometheus, curl, most agents) get the Prometheus
//! text format 0.0.4 instead, converted from it: in 0.0.4 a counter's `# HELP` and `# TYPE`
//! name its sample (`protogate_requests_total`), not its family (`protogate_requests`), there
//! is no `# UNIT` nor `# EOF`, and `unknown` is `untyped`. The gateway's metrics have no
//! exemplars, `_created` samples, info or state sets, so nothing else differs.

use std::collections::HashSet;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text004,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (with a non-zero quality), 0.0.4 otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let asks = accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| names_open_metrics(range.trim()))
        });
        match asks {
            true => Format::OpenMetrics,
            false => Format::Text004,
        }
    }

    /// The response's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Whether one media range of `Accept` is OpenMetrics and not refused (`q=0`).
fn names_open_metrics(range: &str) -> bool {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/openmetrics-text") {
        return false;
    }
    !parts.any(|p| {
        p.strip_prefix("q=")
            .and_then(|q| q.parse::<f64>().ok())
            .is_some_and(|q| q <= 0.0)
    })
}

/// OpenMetrics text, as the Prometheus text format 0.0.4.
pub fn to_text_004(open_metrics: &str) -> String {
    let counters: HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        out.push_str(&convert_line(line, &counters));
        out.push('\n');
    }
    out
}

/// One line: a counter's `# HELP`/`# TYPE` renamed to its sample, `unknown` as `untyped`.
fn convert_line(line: &str, counters: &HashSet<&str>) -> String {
    for keyword in ["# HELP ", "# TYPE "] {
        let Some(rest) = line.strip_prefix(keyword) else {
            continue;
        };
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let tail = match (keyword, tail) {
            ("# TYPE ", "unknown") => "untyped",
            _ => tail,
        };
        let suffix = if counters.contains(name) {
            "_total"
        } else {
            ""
        };
        return format!("{keyword}{name}{suffix} {tail}");
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_sample() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
                  a_requests_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n\
                  # TYPE u unknown\nu 1\n# UNIT s seconds\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\n\
             a_requests_total{x=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 2\n\
             # TYPE u untyped\nu 1\n"
        );
    }

    #[test]
    fn accept_decides_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text004);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text004);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Format::Text004
        );
        assert_eq!(Format::negotiate(None), Format::Text004);
    }
}
