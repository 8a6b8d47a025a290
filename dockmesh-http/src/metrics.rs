//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): request counts
//! kept by a middleware, bytes moved by migrations, and gauges read from the store when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the server keeps in memory (since the process started).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    bytes_moved: AtomicU64,
}

impl Metrics {
    /// Count one answered request by method, route template and status.
    pub fn count_request(&self, method: &str, route: &str, status: u16) {
        *self
            .requests
            .lock()
            .expect("metrics poisoned")
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// Count volume bytes that reached a target.
    pub fn add_bytes_moved(&self, n: u64) {
        self.bytes_moved.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes moved so far.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_moved.load(Ordering::Relaxed)
    }

    /// The exposition text: these counters, then `gauges` (name, help, labelled values).
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        out.push_str("# HELP dockmesh_http_requests_total HTTP requests answered, by method, route and status.\n");
        out.push_str("# TYPE dockmesh_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().expect("metrics poisoned").iter() {
            let _ = writeln!(
                out,
                "dockmesh_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        out.push_str(
            "# HELP dockmesh_volume_bytes_moved_total Volume bytes received by migration targets.\n",
        );
        out.push_str("# TYPE dockmesh_volume_bytes_moved_total counter\n");
        let _ = writeln!(
            out,
            "dockmesh_volume_bytes_moved_total {}",
            self.bytes_moved()
        );
        for g in gauges {
            let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
            let _ = writeln!(out, "# TYPE {} gauge", g.name);
            for (labels, v) in &g.values {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                if labels.is_empty() {
                    let _ = writeln!(out, "{} {v}", g.name);
                } else {
                    let _ = writeln!(out, "{}{{{}}} {v}", g.name, labels.join(","));
                }
            }
        }
        out
    }
}

/// A gauge read when scraped.
pub struct Gauge {
    /// The metric name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Label sets and values.
    pub values: Vec<(Vec<(&'static str, String)>, u64)>,
}

/// Escape a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_counts_and_escapes() {
        let m = Metrics::default();
        m.count_request("GET", "/api/v1/stacks", 200);
        m.count_request("GET", "/api/v1/stacks", 200);
        m.count_request("POST", "/a\"b", 401);
        m.add_bytes_moved(10);
        m.add_bytes_moved(5);
        let text = m.render(&[Gauge {
            name: "dockmesh_migrations",
            help: "Migrations by phase.",
            values: vec![(vec![("phase", "committed".into())], 3)],
        }]);
        assert!(text.contains(
            "dockmesh_http_requests_total{method=\"GET\",route=\"/api/v1/stacks\",status=\"200\"} 2\n"
        ));
        assert!(
            text.contains("route=\"/a\\\"b\",status=\"401\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("dockmesh_volume_bytes_moved_total 15\n"));
        assert!(text.contains(
            "# TYPE dockmesh_migrations gauge\ndockmesh_migrations{phase=\"committed\"} 3\n"
        ));
    }
}
