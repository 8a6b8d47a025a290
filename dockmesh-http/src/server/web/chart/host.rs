//! A host over time: memory, disk and running containers as sparklines over the history the
//! server sampled from its snapshots, with the host's recent events marked on the same axis.

use super::spark::{Marker, Spark};
use super::{escape, percent_of};
use crate::server::snapshots::HostSample;
use dockmesh_core::migration::duration_words;
use jiff::Timestamp;

/// One sparkline with its words.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// What it shows (`memory`, `disk`, `running containers`).
    pub what: &'static str,
    /// The sparkline.
    pub spark: Spark,
    /// Its facts in words: `memory: 42% now, 38–45% over the last 12 min`.
    pub words: String,
}

/// A host event to mark: when and what.
pub type EventMark = (Timestamp, String);

/// The trends of a host with history `samples` (oldest first) and `events`; none before the
/// host first answered.
pub fn trends(samples: &[HostSample], events: &[EventMark]) -> Vec<Trend> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return vec![];
    };
    let (from, to) = (first.at, last.at);
    let over = if samples.len() < 2 {
        "one sample so far".to_owned()
    } else {
        format!("over the last {}", duration_words(to.duration_since(from)))
    };
    let markers: Vec<Marker> = events
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .map(|(at, title)| Marker {
            at: *at,
            class: "event",
            title: title.clone(),
        })
        .collect();
    let line = |what: &'static str, values: Vec<(Timestamp, f64)>, top: Option<f64>, unit: &str| {
        let now = values.last().map_or(0.0, |(_, v)| *v);
        let lo = values.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
        let hi = values.iter().map(|(_, v)| *v).fold(0.0f64, f64::max);
        let range = if lo == hi {
            format!("steady {over}")
        } else {
            format!("{lo:.0}–{hi:.0}{unit} {over}")
        };
        Trend {
            what,
            words: format!("{what}: {now:.0}{unit} now, {range}"),
            spark: Spark::of(&values, from, to, top, &markers, 120.0, 24.0),
        }
    };
    let mut out = vec![
        line(
            "memory",
            samples
                .iter()
                .map(|s| (s.at, percent_of(s.memory_used, s.memory_total)))
                .collect(),
            Some(100.0),
            "%",
        ),
        line(
            "disk",
            samples
                .iter()
                .map(|s| (s.at, percent_of(s.disk_used, s.disk_total)))
                .collect(),
            Some(100.0),
            "%",
        ),
    ];
    let running: Vec<(Timestamp, f64)> = samples
        .iter()
        .filter_map(|s| s.containers_running.map(|n| (s.at, n as f64)))
        .collect();
    if !running.is_empty() {
        out.push(line("running containers", running, None, ""));
    }
    out
}

/// The trends as HTML: each sparkline an image labelled by its words, the words beside it.
pub fn html(trends: &[Trend]) -> String {
    trends
        .iter()
        .map(|t| {
            format!(
                r#"<div class="spark-cell">{}<span class="small muted">{}</span></div>"#,
                t.spark.svg(&super::id_part(t.what), &t.words),
                escape(&t.words)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn sample(s: i64, mem: u64, running: Option<u64>) -> HostSample {
        HostSample {
            at: t(s),
            memory_used: mem,
            memory_total: 100,
            disk_used: 50,
            disk_total: 100,
            containers_running: running,
        }
    }

    #[test]
    fn memory_disk_and_containers_read_as_words_with_events_marked() {
        let h = [
            sample(0, 40, Some(2)),
            sample(300, 45, Some(3)),
            sample(720, 42, Some(3)),
        ];
        let events = [
            (t(310), "shop web die".to_owned()),
            (t(9_999), "later".to_owned()),
        ];
        let tr = trends(&h, &events);
        let words: Vec<_> = tr.iter().map(|t| t.words.as_str()).collect();
        assert_eq!(
            words,
            [
                "memory: 42% now, 40–45% over the last 12 min",
                "disk: 50% now, steady over the last 12 min",
                "running containers: 3 now, 2–3 over the last 12 min",
            ]
        );
        assert_eq!(tr[0].spark.marks.len(), 1, "only events inside the window");
        assert_eq!(tr[0].spark.marks[0].class, "event");
        let html = html(&tr);
        assert_eq!(html.matches(r#"role="img""#).count(), 3);
        assert!(
            html.contains(r#"class="chart spark running-containers""#),
            "{html}"
        );
    }

    #[test]
    fn no_history_no_trend_and_an_old_agent_has_no_container_line() {
        assert!(trends(&[], &[]).is_empty());
        let tr = trends(&[sample(0, 0, None)], &[]);
        assert_eq!(tr.len(), 2);
        assert_eq!(tr[0].words, "memory: 0% now, steady one sample so far");
        let mut zero = sample(0, 5, None);
        zero.memory_total = 0;
        assert_eq!(
            trends(&[zero], &[])[0].words,
            "memory: 0% now, steady one sample so far"
        );
    }
}
