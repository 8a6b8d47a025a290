//! Small line charts of a series over time: a host's memory, disk and running containers, a
//! volume's transfer rate. Each is a line over a fixed time window, scaled to its own top (or
//! a given one, like 100 %), with moments marked on the same axis (a cut and the resume of a
//! transfer, a host's events).

use super::{Scale, escape, num};
use jiff::Timestamp;
use std::fmt::Write;

/// A moment marked on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// When.
    pub at: Timestamp,
    /// Its class (`cut`, `resume`, `event`).
    pub class: &'static str,
    /// What happened, for the tooltip.
    pub title: String,
}

/// A marker laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkAt {
    /// Where.
    pub x: f64,
    /// Its class.
    pub class: &'static str,
    /// What happened.
    pub title: String,
}

/// A sparkline as plain numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Spark {
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// The line's points, left to right in time.
    pub points: Vec<(f64, f64)>,
    /// The markers.
    pub marks: Vec<MarkAt>,
}

/// Room kept above and below the line so that it is not cut off.
const PAD: f64 = 2.0;

impl Spark {
    /// The sparkline of `points` (time, value) over the window `from`..`to`, scaled so that
    /// `top` (or the largest value when `None`, or 1 when all are 0) is at the top and 0 at
    /// the bottom; points are taken in time order and those outside the window are clamped to
    /// its edges. Values below 0 or not finite count as 0.
    pub fn of(
        points: &[(Timestamp, f64)],
        from: Timestamp,
        to: Timestamp,
        top: Option<f64>,
        markers: &[Marker],
        w: f64,
        h: f64,
    ) -> Spark {
        let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let mut sorted: Vec<(Timestamp, f64)> =
            points.iter().map(|(t, v)| (*t, clean(*v))).collect();
        sorted.sort_by_key(|(t, _)| *t);
        let top = top
            .map(clean)
            .filter(|t| *t > 0.0)
            .or_else(|| sorted.iter().map(|(_, v)| *v).reduce(f64::max))
            .filter(|t| *t > 0.0)
            .unwrap_or(1.0);
        let span = to.duration_since(from).as_millis().max(0) as f64;
        let xs = Scale {
            v0: 0.0,
            v1: span,
            x0: PAD,
            x1: w - PAD,
        };
        let ys = Scale {
            v0: 0.0,
            v1: top,
            x0: h - PAD,
            x1: PAD,
        };
        let ms = |t: Timestamp| t.duration_since(from).as_millis() as f64;
        Spark {
            w,
            h,
            points: sorted
                .iter()
                .map(|(t, v)| (xs.at(ms(*t)), ys.at(*v)))
                .collect(),
            marks: markers
                .iter()
                .map(|m| MarkAt {
                    x: xs.at(ms(m.at)),
                    class: m.class,
                    title: m.title.clone(),
                })
                .collect(),
        }
    }

    /// The sparkline as inline SVG, an image whose label is `label` (its facts in words).
    pub fn svg(&self, class: &str, label: &str) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart spark {class}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}"><title>{label}</title>"#,
            class = escape(class),
            w = num(self.w),
            h = num(self.h),
            label = escape(label),
        );
        let _ = write!(
            out,
            r#"<line class="spark-base" x1="0" x2="{w}" y1="{y}" y2="{y}"/>"#,
            w = num(self.w),
            y = num(self.h - PAD),
        );
        for m in &self.marks {
            let _ = write!(
                out,
                r#"<line class="spark-mark {class}" x1="{x}" x2="{x}" y1="0" y2="{h}"><title>{title}</title></line>"#,
                class = escape(m.class),
                x = num(m.x),
                h = num(self.h),
                title = escape(&m.title),
            );
        }
        match self.points.as_slice() {
            [] => {}
            [(x, y)] => {
                let _ = write!(
                    out,
                    r#"<circle class="spark-dot" cx="{}" cy="{}" r="1.5"/>"#,
                    num(*x),
                    num(*y)
                );
            }
            pts => {
                let d: Vec<String> = pts
                    .iter()
                    .map(|(x, y)| format!("{},{}", num(*x), num(*y)))
                    .collect();
                let _ = write!(
                    out,
                    r#"<polyline class="spark-line" points="{}"/>"#,
                    d.join(" ")
                );
            }
        }
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn the_line_spans_the_window_scaled_to_its_top() {
        let s = Spark::of(
            &[(t(10), 50.0), (t(0), 0.0), (t(20), 100.0)],
            t(0),
            t(20),
            Some(100.0),
            &[Marker {
                at: t(5),
                class: "cut",
                title: "cut".into(),
            }],
            104.0,
            24.0,
        );
        assert_eq!(s.points, vec![(2.0, 22.0), (52.0, 12.0), (102.0, 2.0)]);
        assert_eq!(s.marks[0].x, 27.0);
        let svg = s.svg("memory", "memory <50%>");
        assert!(
            svg.contains(r#"role="img" aria-label="memory &lt;50%&gt;""#),
            "{svg}"
        );
        assert!(svg.contains("<title>memory &lt;50%&gt;</title>"), "{svg}");
        assert!(
            svg.contains(r#"<polyline class="spark-line" points="2,22 52,12 102,2"/>"#),
            "{svg}"
        );
        assert!(svg.contains(r#"class="spark-mark cut" x1="27""#), "{svg}");
    }

    #[test]
    fn no_points_one_point_and_all_zero_draw_without_nan() {
        let one = Spark::of(&[(t(3), 0.0)], t(3), t(3), None, &[], 60.0, 16.0);
        assert_eq!(one.points, vec![(2.0, 14.0)]);
        assert!(one.svg("x", "x").contains("<circle"));
        let none = Spark::of(&[], t(0), t(10), None, &[], 60.0, 16.0);
        assert!(!none.svg("x", "x").contains("polyline"));
    }

    proptest! {
        #[test]
        fn every_point_lies_inside_the_picture(
            pts in proptest::collection::vec((-100i64..100, prop_oneof![any::<f64>(), 0.0..1e12f64]), 0..30),
            from in -50i64..50, len in -10i64..100, top in proptest::option::of(any::<f64>()),
        ) {
            let pts: Vec<_> = pts.into_iter().map(|(s, v)| (t(s), v)).collect();
            let s = Spark::of(&pts, t(from), t(from + len), top, &[], 120.0, 20.0);
            for (x, y) in &s.points {
                prop_assert!((0.0..=120.0).contains(x) && (0.0..=20.0).contains(y), "{x} {y}");
            }
            prop_assert!(s.points.windows(2).all(|w| w[0].0 <= w[1].0));
            let svg = s.svg("c", "l");
            prop_assert!(!svg.contains("NaN") && !svg.contains("inf"));
        }
    }
}
