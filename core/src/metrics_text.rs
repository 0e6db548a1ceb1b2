//! Metrics as text: the OpenMetrics exposition prometheus-client writes,
//! turned into the Prometheus text format (0.0.4) that scrapers ask for by
//! default. Both binaries serve both.

/// The content type of each.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|v| v.contains("application/openmetrics-text"))
}

/// OpenMetrics to Prometheus 0.0.4: `# HELP` and `# TYPE` name a
/// counter's `_total` series, no `# UNIT`, no `# EOF`.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_series_in_the_prometheus_format() {
        let open = "# HELP portico_connections Connections.\n# TYPE portico_connections counter\nportico_connections_total{listener=\"a\"} 1\n# HELP portico_active Open.\n# TYPE portico_active gauge\nportico_active 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(open),
            "# HELP portico_connections_total Connections.\n# TYPE portico_connections_total counter\nportico_connections_total{listener=\"a\"} 1\n# HELP portico_active Open.\n# TYPE portico_active gauge\nportico_active 2\n"
        );
    }
}
