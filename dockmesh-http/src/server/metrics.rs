//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4): request counts
//! kept by a middleware, bytes moved by migrations, migrations by phase (kept as each event is
//! recorded, read from the store once), and gauges read from the store when scraped.

use dockmesh_core::types::MigrationId;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters the server keeps in memory (since the process started).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    bytes_moved: AtomicU64,
    migrations: Mutex<Phases>,
    migrations_loaded: AtomicBool,
}

/// Each migration's phase (by its wire name) and how many migrations are in each.
#[derive(Default)]
struct Phases {
    of: HashMap<MigrationId, String>,
    count: BTreeMap<String, u64>,
}

impl Phases {
    /// `id` is in `phase`; `replace` says whether a phase already known is overwritten.
    fn set(&mut self, id: MigrationId, phase: &str, replace: bool) {
        if let Some(old) = self.of.get(&id) {
            if !replace || old == phase {
                return;
            }
            if let Some(n) = self.count.get_mut(old) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.count.remove(old);
                }
            }
        }
        self.of.insert(id, phase.to_owned());
        *self.count.entry(phase.to_owned()).or_default() += 1;
    }
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

    /// A migration was created or its log grew: it is in `phase` (its wire name) now.
    pub fn migration_phase(&self, id: MigrationId, phase: &str) {
        self.migrations
            .lock()
            .expect("metrics poisoned")
            .set(id, phase, true);
    }

    /// The phases read from the store: each migration not already followed through its
    /// events is counted in the phase given (a phase recorded since is newer and kept), so
    /// loading more than once changes nothing.
    pub fn load_migration_phases(&self, phases: impl IntoIterator<Item = (MigrationId, String)>) {
        let mut m = self.migrations.lock().expect("metrics poisoned");
        for (id, phase) in phases {
            m.set(id, &phase, false);
        }
        self.migrations_loaded.store(true, Ordering::SeqCst);
    }

    /// Whether the phases were read from the store yet.
    pub fn migration_phases_loaded(&self) -> bool {
        self.migrations_loaded.load(Ordering::SeqCst)
    }

    /// How many migrations are in each phase.
    pub fn migrations_by_phase(&self) -> BTreeMap<String, u64> {
        self.migrations
            .lock()
            .expect("metrics poisoned")
            .count
            .clone()
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

    #[test]
    fn phases_follow_events_and_a_load_never_overrides_them() {
        let m = Metrics::default();
        let id = |n: u128| MigrationId(uuid::Uuid::from_u128(n));
        m.migration_phase(id(1), "requested");
        m.migration_phase(id(1), "transferring");
        m.migration_phase(id(2), "requested");
        // The store read before 1 moved on: its older phase is not taken.
        m.load_migration_phases([(id(1), "requested".into()), (id(3), "committed".into())]);
        m.load_migration_phases([(id(3), "committed".into())]);
        m.migration_phase(id(2), "failed");
        let want: BTreeMap<String, u64> = [("committed", 1), ("failed", 1), ("transferring", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(m.migrations_by_phase(), want);
        assert!(m.migration_phases_loaded());
    }
}
