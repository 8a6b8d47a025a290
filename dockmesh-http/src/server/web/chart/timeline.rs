//! A migration's timeline as a picture: one bar per step on a real time axis (the API's
//! [`TimelineView`]), the downtime window as a band across every row with its length written
//! on it, the cuts of a transfer marked on its bar, and a failed step and the compensation in
//! their own colours.

use super::{Scale, Tick, escape, num, open_svg, text, time_ticks};
use crate::server::ops::timeline::TimelineView;
use dockmesh_core::migration::{Stage, duration_words};
use std::fmt::Write;

/// The picture's width in SVG units (it scales to the page's width).
pub const WIDTH: f64 = 800.0;
/// Where the bars begin: the row labels are on their left.
const LEFT: f64 = 150.0;
/// Right margin.
const RIGHT: f64 = 12.0;
/// The band above the rows holding the downtime's label.
const TOP: f64 = 22.0;
/// One row's height, and its bar's.
const ROW: f64 = 20.0;
const BAR: f64 = 14.0;
/// Room under the rows for the axis.
const AXIS: f64 = 22.0;
/// The narrowest bar drawn, so that an instant step stays visible.
const MIN_BAR: f64 = 2.0;

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The row's label (`transfer shop_db`).
    pub label: String,
    /// Left edge, top edge, width, height.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width (at least `MIN_BAR`, so that an instant step stays visible).
    pub w: f64,
    /// Height.
    pub h: f64,
    /// Its classes: `tl-bar step-transfer`, with `failed` or `running`.
    pub class: String,
    /// What it is with its duration, for the tooltip.
    pub title: String,
}

/// The downtime band.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Left edge.
    pub x: f64,
    /// Width (never negative).
    pub w: f64,
    /// `down 8.3 s` (`down 8.3 s so far` while it lasts).
    pub label: String,
}

/// A cut of a transfer, marked on its bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Where.
    pub x: f64,
    /// The top of the row.
    pub y: f64,
    /// What happened.
    pub title: String,
}

/// The whole picture as plain numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Its width.
    pub width: f64,
    /// Its height.
    pub height: f64,
    /// One bar per step, in order, one row each.
    pub bars: Vec<Bar>,
    /// The downtime window, once the source stopped.
    pub downtime: Option<Band>,
    /// Cuts of transfers.
    pub cuts: Vec<Mark>,
    /// The time axis.
    pub ticks: Vec<Tick>,
}

/// The words of a step's row.
fn label(step: &str, volume: Option<&str>) -> String {
    let words = Stage::ALL
        .into_iter()
        .find(|s| s.name() == step)
        .map_or(step, |s| s.words());
    match volume {
        Some(v) => format!("{words} {v}"),
        None => words.to_owned(),
    }
}

impl Layout {
    /// The layout of timeline `tl`.
    pub fn of(tl: &TimelineView) -> Layout {
        let span_ms = tl.ended_at.duration_since(tl.started_at).as_millis().max(0) as i64;
        let ms = |t: jiff::Timestamp| t.duration_since(tl.started_at).as_millis() as f64;
        let scale = Scale {
            v0: 0.0,
            v1: span_ms as f64,
            x0: LEFT,
            x1: WIDTH - RIGHT,
        };
        let bars: Vec<Bar> = tl
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let x0 = scale.at(ms(s.started_at));
                let x1 = scale.at(ms(s.ended_at)).max(x0);
                let x = x0.min(WIDTH - RIGHT - MIN_BAR);
                let mut class = format!("tl-bar step-{}", super::id_part(&s.step));
                let mut state = "";
                if s.failed {
                    class.push_str(" failed");
                    state = ", failed";
                } else if s.running {
                    class.push_str(" running");
                    state = ", running";
                }
                let label = label(&s.step, s.volume.as_deref());
                Bar {
                    title: format!(
                        "{label}: {}{state}",
                        duration_words(jiff::SignedDuration::from_millis(s.duration_ms as i64))
                    ),
                    label,
                    x,
                    y: TOP + i as f64 * ROW + (ROW - BAR) / 2.0,
                    w: (x1 - x0).max(MIN_BAR),
                    h: BAR,
                    class,
                }
            })
            .collect();
        let rows_end = TOP + bars.len() as f64 * ROW;
        let downtime = tl.downtime.as_ref().map(|d| {
            let x0 = scale.at(ms(d.from));
            let x1 = scale.at(ms(d.to)).max(x0);
            let words = duration_words(jiff::SignedDuration::from_millis(d.duration_ms as i64));
            Band {
                x: x0,
                w: x1 - x0,
                label: if d.open {
                    format!("down {words} so far")
                } else {
                    format!("down {words}")
                },
            }
        });
        let cuts = tl
            .cuts
            .iter()
            .map(|c| {
                let row = tl
                    .steps
                    .iter()
                    .position(|s| s.volume.as_deref() == Some(c.volume.as_str()))
                    .unwrap_or(0);
                Mark {
                    x: scale.at(ms(c.at)),
                    y: TOP + row as f64 * ROW,
                    title: format!("{} cut: {}", c.volume, c.reason),
                }
            })
            .collect();
        Layout {
            width: WIDTH,
            height: rows_end + AXIS,
            bars,
            downtime,
            cuts,
            ticks: time_ticks(span_ms, LEFT, WIDTH - RIGHT, 9),
        }
    }

    /// The picture as inline SVG, labelled by the element `alt_id` (the text alternative).
    pub fn svg(&self, alt_id: &str) -> String {
        let mut out = String::new();
        open_svg(
            &mut out,
            "chart timeline",
            self.width,
            self.height,
            alt_id,
            "Timeline of the migration",
        );
        let rows_end = self.height - AXIS;
        if let Some(d) = &self.downtime {
            let _ = write!(
                out,
                r#"<rect class="tl-down" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>"#,
                num(d.x),
                num(TOP - 4.0),
                num(d.w),
                num(rows_end - TOP + 4.0),
                escape(&d.label)
            );
            // The label sits over the band, kept inside the picture.
            let x = (d.x + d.w / 2.0).clamp(LEFT + 40.0, self.width - RIGHT - 40.0);
            let _ = write!(
                out,
                r#"<text class="tl-down-label" x="{}" y="{}" text-anchor="middle">{}</text>"#,
                num(x),
                num(TOP - 8.0),
                escape(&d.label)
            );
        }
        for t in &self.ticks {
            let _ = write!(
                out,
                r#"<line class="tl-grid" x1="{0}" x2="{0}" y1="{1}" y2="{2}"/>"#,
                num(t.x),
                num(TOP - 4.0),
                num(rows_end + 4.0)
            );
            let _ = write!(
                out,
                r#"<text class="tl-tick" x="{}" y="{}" text-anchor="middle">{}</text>"#,
                num(t.x),
                num(rows_end + 16.0),
                escape(&t.label)
            );
        }
        for b in &self.bars {
            let _ = write!(
                out,
                r#"<text class="tl-label" x="{}" y="{}" text-anchor="end">{}</text>"#,
                num(LEFT - 6.0),
                num(b.y + b.h - 3.0),
                escape(&b.label)
            );
            let _ = write!(
                out,
                r#"<rect class="{}" x="{}" y="{}" width="{}" height="{}" rx="2"><title>{}</title></rect>"#,
                escape(&b.class),
                num(b.x),
                num(b.y),
                num(b.w),
                num(b.h),
                escape(&b.title)
            );
        }
        for c in &self.cuts {
            let _ = write!(
                out,
                r#"<path class="tl-cut" d="M{} {}l-4 -5h8z"><title>{}</title></path>"#,
                num(c.x),
                num(c.y + (ROW - BAR) / 2.0),
                escape(&c.title)
            );
        }
        text(
            &mut out,
            "tl-axis",
            4.0,
            rows_end + 16.0,
            "time from the request",
        );
        out.push_str("</svg>");
        out
    }
}

/// The timeline's figure: the picture and, beside it, its facts in words (the text the
/// picture is labelled by).
pub fn figure(tl: &TimelineView) -> String {
    let alt = "timeline-words";
    format!(
        r#"<figure class="chart-figure" id="timeline">{}<figcaption id="{alt}">{}</figcaption></figure>"#,
        Layout::of(tl).svg(alt),
        escape(&capitalised(&tl.summary))
    )
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
