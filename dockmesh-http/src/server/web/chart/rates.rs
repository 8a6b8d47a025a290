//! The transfer rate of each volume as small multiples: one sparkline per volume on a shared
//! time axis and a shared top, so that the volumes compare at a glance, with the cuts the log
//! records and the points the transfer went on from marked; each labelled by its facts in
//! words.

use super::escape;
use super::spark::{Marker, Spark};
use crate::server::ops::timeline::CutView;
use crate::server::rates::RateHistory;
use crate::server::web::human_bytes;
use dockmesh_core::migration::duration_words;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// One volume's chart and words.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRate {
    /// The volume.
    pub volume: String,
    /// Its sparkline.
    pub spark: Spark,
    /// Its facts in words.
    pub words: String,
}

/// The small multiples of `rates` (by volume) with the `cuts` of the log; empty when no
/// transfer was seen by this server process.
pub fn layout(rates: &BTreeMap<String, RateHistory>, cuts: &[CutView]) -> Vec<VolumeRate> {
    let series: BTreeMap<&str, Vec<(Timestamp, f64)>> =
        rates.iter().map(|(v, h)| (v.as_str(), h.rates())).collect();
    let times = rates
        .values()
        .flat_map(|h| h.samples().into_iter().map(|(t, _)| t));
    let (Some(from), Some(to)) = (times.clone().min(), times.max()) else {
        return vec![];
    };
    let top = series
        .values()
        .flatten()
        .map(|(_, r)| *r)
        .fold(0.0f64, f64::max);
    rates
        .iter()
        .map(|(volume, h)| {
            let rs = &series[volume.as_str()];
            let since = |t: Timestamp| duration_words(t.duration_since(from));
            let mut markers: Vec<Marker> = cuts
                .iter()
                .filter(|c| c.volume == *volume)
                .map(|c| Marker {
                    at: c.at,
                    class: "cut",
                    title: format!("cut after {}: {}", since(c.at), c.reason),
                })
                .collect();
            markers.extend(h.resumes.iter().map(|r| Marker {
                at: r.at,
                class: "resume",
                title: if r.offset == 0 {
                    format!("sent again from its start after {}", since(r.at))
                } else {
                    format!(
                        "went on from {} after {}",
                        human_bytes(r.offset),
                        since(r.at)
                    )
                },
            }));
            let mut words = match rs.as_slice() {
                [] => format!("{volume}: no rate measured yet"),
                rs => {
                    let samples = h.samples();
                    let (first, last) = (samples[0], samples[samples.len() - 1]);
                    let secs = last.0.duration_since(first.0).as_secs_f64();
                    let sent = last.1.saturating_sub(first.1);
                    let peak = rs.iter().map(|(_, r)| *r).fold(0.0f64, f64::max);
                    let mean = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
                    format!(
                        "{volume}: {}/s on average, peak {}/s",
                        human_bytes(mean as u64),
                        human_bytes(peak as u64)
                    )
                }
            };
            for m in &markers {
                words.push_str("; ");
                words.push_str(&m.title);
            }
            VolumeRate {
                volume: volume.clone(),
                spark: Spark::of(rs, from, to, Some(top), &markers, 240.0, 40.0),
                words,
            }
        })
        .collect()
}

/// The small multiples as HTML, or nothing when there is no rate to draw.
pub fn figure(rates: &BTreeMap<String, RateHistory>, cuts: &[CutView]) -> Option<String> {
    let charts = layout(rates, cuts);
    if charts.is_empty() {
        return None;
    }
    let mut out = String::from(r#"<div class="small-multiples" id="rates">"#);
    for c in &charts {
        out.push_str(r#"<figure class="chart-figure rate">"#);
        out.push_str(&c.spark.svg("wide", &c.words));
        out.push_str("<figcaption>");
        out.push_str(&escape(&c.words));
        out.push_str("</figcaption></figure>");
    }
    out.push_str("</div>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn each_volume_gets_a_chart_on_a_shared_axis_with_its_cut_and_resume() {
        let mut db = RateHistory::default();
        db.record(t(0), 0);
        db.record(t(1_000), 4 << 20);
        db.resumed(t(3_000), 3 << 20);
        db.record(t(4_000), 8 << 20);
        let mut files = RateHistory::default();
        files.record(t(4_000), 0);
        files.record(t(6_000), 2 << 20);
        let rates = BTreeMap::from([("db".to_owned(), db), ("<files>".to_owned(), files)]);
        let cuts = vec![CutView {
            volume: "db".into(),
            at: t(2_000),
            reason: "agent went away".into(),
        }];
        let l = layout(&rates, &cuts);
        assert_eq!(l.len(), 2);
        let db = l.iter().find(|c| c.volume == "db").unwrap();
        assert_eq!(
            db.words,
            "db: 2.0 MiB/s on average, peak 5.0 MiB/s; cut after 2.0 s: agent went away; \
             went on from 3.0 MiB after 3.0 s"
        );
        // Shared axis: the cut at 2 s of 6 s is a third of the way.
        let cut = &db.spark.marks[0];
        assert_eq!(cut.class, "cut");
        assert!((cut.x - (2.0 + 236.0 / 3.0)).abs() < 1e-9, "{cut:?}");
        assert_eq!(db.spark.marks[1].class, "resume");
        // Shared top: db's peak (5 MiB/s) is at the top; files' 1 MiB/s a fifth of the way.
        assert_eq!(db.spark.points[1].1, 2.0);
        let files = l.iter().find(|c| c.volume == "<files>").unwrap();
        assert!((files.spark.points[0].1 - (38.0 - 36.0 / 5.0)).abs() < 1e-9);
        let html = figure(&rates, &cuts).unwrap();
        assert!(
            html.contains("&lt;files&gt;: 1.0 MiB/s on average"),
            "{html}"
        );
        assert!(!html.contains("<files>"));
        assert_eq!(html.matches(r#"role="img""#).count(), 2);
    }

    #[test]
    fn no_history_draws_nothing() {
        assert!(figure(&BTreeMap::new(), &[]).is_none());
        let one = BTreeMap::from([("v".to_owned(), {
            let mut h = RateHistory::default();
            h.record(t(0), 5);
            h
        })]);
        let l = layout(&one, &[]);
        assert_eq!(l[0].words, "v: no rate measured yet");
    }
}
