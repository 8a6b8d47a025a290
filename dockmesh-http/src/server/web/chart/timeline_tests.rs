//! The timeline's layout from event logs: bars in order on the time axis, the downtime band
//! exactly over `source_stopped` → `target_healthy`, a failure in its own colour, and finite,
//! non-negative numbers whatever the log.

use super::*;
use dockmesh_core::migration::{MigrationEvent, Timeline};
use dockmesh_core::testing::{MIGRATION_EVENT_KINDS, migration_event};
use jiff::Timestamp;
use proptest::prelude::*;

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
}

fn view(events: &[MigrationEvent], now: i64) -> TimelineView {
    TimelineView::from(&Timeline::of(t(0), events, t(now)))
}

fn event(k: usize, ms: i64, volume: &str) -> MigrationEvent {
    migration_event(k, t(ms), volume)
}

/// Pre-flight, stop at 1 s, `shop_db` cut at 2 s and verified at 5 s, ship, start, healthy at
/// 9.3 s, committed at 10 s.
fn committed() -> Vec<MigrationEvent> {
    [
        (0, 400),
        (1, 1_000),
        (2, 1_100),
        (3, 2_000),
        (4, 5_000),
        (5, 6_300),
        (6, 7_000),
        (7, 9_300),
        (8, 10_000),
    ]
    .into_iter()
    .map(|(k, ms)| event(k, ms, "shop_db"))
    .collect()
}

fn x_of(ms: f64) -> f64 {
    LEFT + ms / 10_000.0 * (WIDTH - RIGHT - LEFT)
}

#[test]
fn the_bars_follow_the_steps_and_the_band_covers_the_downtime_exactly() {
    let l = Layout::of(&view(&committed(), 60_000));
    let labels: Vec<_> = l.bars.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "pre-flight",
            "stop",
            "transfer shop_db",
            "ship",
            "start",
            "health wait",
            "commit"
        ]
    );
    // One row each, top to bottom; left to right in time.
    assert!(
        l.bars
            .windows(2)
            .all(|w| w[0].y < w[1].y && w[0].x <= w[1].x)
    );
    let db = &l.bars[2];
    assert!((db.x - x_of(1_100.0)).abs() < 1e-9);
    assert!((db.x + db.w - x_of(5_000.0)).abs() < 1e-9);
    assert_eq!(db.class, "tl-bar step-transfer");
    let band = l.downtime.unwrap();
    assert!((band.x - x_of(1_000.0)).abs() < 1e-9);
    assert!((band.x + band.w - x_of(9_300.0)).abs() < 1e-9);
    assert_eq!(band.label, "down 8.3 s");
    assert_eq!(l.cuts.len(), 1);
    assert!((l.cuts[0].x - x_of(2_000.0)).abs() < 1e-9);
    assert_eq!(l.cuts[0].y, l.bars[2].y - (ROW - BAR) / 2.0);
    assert_eq!(l.ticks.first().unwrap().label, "0 s");
}

#[test]
fn a_failure_and_its_compensation_have_their_own_classes() {
    let log: Vec<_> = [
        (0, 100),
        (1, 200),
        (5, 300),
        (10, 900),
        (11, 950),
        (12, 990),
        (13, 1_000),
    ]
    .into_iter()
    .map(|(k, ms)| event(k, ms, "v"))
    .collect();
    let l = Layout::of(&view(&log, 5_000));
    let classes: Vec<_> = l.bars.iter().map(|b| b.class.as_str()).collect();
    assert_eq!(
        classes,
        [
            "tl-bar step-preflight",
            "tl-bar step-stop_source",
            "tl-bar step-ship_files",
            "tl-bar step-start_target failed",
            "tl-bar step-compensation"
        ]
    );
    assert_eq!(l.bars[3].title, "start: 600 ms, failed");
    assert_eq!(l.downtime.unwrap().label, "down 790 ms");
}

#[test]
fn the_figure_is_an_image_labelled_by_its_words_with_everything_escaped() {
    let log = vec![
        event(0, 100, ""),
        event(1, 200, ""),
        event(2, 300, "<script>alert('x')</script>"),
    ];
    let html = figure(&view(&log, 1_000));
    assert!(
        html.contains(r#"role="img" aria-labelledby="timeline-words""#),
        "{html}"
    );
    assert!(html.contains(r#"<figcaption id="timeline-words">Down so far for 800 ms: 700 ms transfer; 1.0 s in all.</figcaption>"#), "{html}");
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)"), "{html}");
    assert!(!html.contains("style="), "{html}");
    assert!(html.contains("tl-bar step-transfer running"), "{html}");
    assert_eq!(
        html.matches("<rect").count(),
        html.matches("</rect>").count()
    );
}

#[test]
fn a_log_of_one_event_or_of_equal_times_draws_visible_bars_without_nan() {
    for log in [
        vec![event(0, 0, "")],
        committed()
            .into_iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e).unwrap();
                v["at"] = serde_json::json!(t(0));
                serde_json::from_value(v).unwrap()
            })
            .collect(),
    ] {
        let l = Layout::of(&view(&log, 0));
        assert!(!l.bars.is_empty());
        for b in &l.bars {
            assert!(
                b.w >= MIN_BAR && b.x >= LEFT && b.x + b.w <= WIDTH - RIGHT + 1e-9,
                "{b:?}"
            );
        }
        let svg = l.svg("a");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}

proptest! {
    /// Whatever the log (out of order, equal times, before the request), every number is
    /// finite, every width positive, every bar within the axis, and the SVG well-formed.
    #[test]
    fn any_log_lays_out_within_the_picture(
        log in proptest::collection::vec((0..MIGRATION_EVENT_KINDS, -1_000i64..20_000, 0usize..3), 0..14),
        now in -1_000i64..30_000,
    ) {
        let log: Vec<_> = log.into_iter().map(|(k, ms, v)| event(k, ms, ["a", "b", "c&d"][v])).collect();
        let tv = view(&log, now);
        let l = Layout::of(&tv);
        prop_assert_eq!(l.bars.len(), tv.steps.len());
        for b in &l.bars {
            prop_assert!(b.x.is_finite() && b.w.is_finite() && b.y.is_finite());
            prop_assert!(b.w >= MIN_BAR && b.x >= LEFT && b.x + b.w <= WIDTH - RIGHT + 1e-9, "{:?}", b);
        }
        if let Some(d) = &l.downtime {
            prop_assert!(d.x.is_finite() && d.w >= 0.0 && d.x >= LEFT && d.x + d.w <= WIDTH - RIGHT + 1e-9);
        }
        for c in &l.cuts {
            prop_assert!(c.x >= LEFT && c.x <= WIDTH - RIGHT);
        }
        prop_assert!(l.height > 0.0);
        let svg = l.svg("alt");
        prop_assert!(!svg.contains("NaN") && !svg.contains("inf") && !svg.contains("c&d"));
        prop_assert_eq!(svg.matches("<svg").count(), 1);
        prop_assert!(svg.ends_with("</svg>"));
    }
}
