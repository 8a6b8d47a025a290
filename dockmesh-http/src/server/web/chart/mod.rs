//! Pictures for the dashboard, drawn by the server as inline SVG: a migration's timeline
//! ([`timeline`]), small line charts for a series over time ([`spark`]: a host's memory, disk
//! and containers in [`host`], each volume's transfer rate in [`rates`]) and the small
//! downtime bar of the migrations list ([`bar`]).
//!
//! Each picture is laid out first by a pure function (data in, a layout of plain numbers out,
//! checked by tests) and then written as SVG. The SVG carries `role="img"` and is labelled by
//! a text alternative that states the same facts in words, visible beside it. Colours and
//! fonts come from classes in `dashboard.css`: no `style` attribute, no script, nothing
//! loaded, so the dashboard's Content-Security-Policy stays as it is. Every text is escaped.

pub mod bar;
pub mod host;
pub mod rates;
pub mod spark;
pub mod timeline;

use std::fmt::Write;

/// Text for SVG (and HTML): `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate as SVG takes it: one decimal, never NaN or infinite (those become 0).
pub fn num(x: f64) -> String {
    if x.is_finite() {
        let r = (x * 10.0).round() / 10.0;
        if r == r.trunc() {
            format!("{}", r as i64)
        } else {
            format!("{r:.1}")
        }
    } else {
        "0".to_owned()
    }
}

/// A linear map from a range of values onto a range of coordinates, clamped at both ends.
/// An empty or inverted value range maps everything to the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// The first value.
    pub v0: f64,
    /// The last value.
    pub v1: f64,
    /// The coordinate of the first value.
    pub x0: f64,
    /// The coordinate of the last value.
    pub x1: f64,
}

impl Scale {
    /// The coordinate of `v`, within `[x0, x1]` (or `[x1, x0]`), always finite.
    pub fn at(&self, v: f64) -> f64 {
        let span = self.v1 - self.v0;
        let usable = span.is_finite() && span > 0.0 && v.is_finite();
        if !usable {
            return self.x0;
        }
        let f = ((v - self.v0) / span).clamp(0.0, 1.0);
        self.x0 + f * (self.x1 - self.x0)
    }
}

/// `part` of `whole` in per cent, within `[0, 100]`; 0 of nothing.
pub fn percent_of(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 100.0).clamp(0.0, 100.0)
    }
}

/// A tick of a time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Its coordinate.
    pub x: f64,
    /// Its label (`0 s`, `2 s`, `1 min`, …).
    pub label: String,
}

/// Ticks for a time axis of `span_ms` milliseconds drawn from `x0` to `x1`: at round offsets
/// from its start, at most `max` of them (the start included).
pub fn time_ticks(span_ms: i64, x0: f64, x1: f64, max: usize) -> Vec<Tick> {
    const STEPS: [i64; 22] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
    ];
    let span = span_ms.max(0);
    let max = max.max(2) as i64;
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s < max)
        .unwrap_or_else(|| {
            let hours = (span / 3_600_000 / (max - 1)).max(1) + 1;
            hours * 3_600_000
        });
    let scale = Scale {
        v0: 0.0,
        v1: span as f64,
        x0,
        x1,
    };
    (0..)
        .map(|i| i * step)
        .take_while(|ms| *ms <= span)
        .map(|ms| Tick {
            x: scale.at(ms as f64),
            label: offset_words(ms, step),
        })
        .collect()
}

/// An offset on an axis whose ticks are `step` ms apart, as short as it reads.
fn offset_words(ms: i64, step: i64) -> String {
    match step {
        ..1_000 if ms < 1_000 => format!("{ms} ms"),
        ..1_000 => format!("{:.1} s", ms as f64 / 1_000.0),
        1_000..60_000 => format!("{} s", ms / 1_000),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// The opening of an SVG picture `w` × `h` labelled by the element `labelled_by` (the text
/// alternative), with a `<title>`.
pub fn open_svg(out: &mut String, class: &str, w: f64, h: f64, labelled_by: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="{}" viewBox="0 0 {} {}" role="img" aria-labelledby="{}" preserveAspectRatio="xMinYMin meet"><title>{}</title>"#,
        escape(class),
        num(w),
        num(h),
        escape(labelled_by),
        escape(title)
    );
}

/// A text element at `(x, y)` with a class.
pub fn text(out: &mut String, class: &str, x: f64, y: f64, s: &str) {
    let _ = write!(
        out,
        r#"<text class="{}" x="{}" y="{}">{}</text>"#,
        escape(class),
        num(x),
        num(y),
        escape(s)
    );
}

/// An id or class usable in HTML from any text: letters, digits, `-` and `_`, others as `-`.
pub fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_numbers_are_always_finite() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(f64::INFINITY), "0");
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(id_part("shop_db\"><x"), "shop_db---x");
    }

    #[test]
    fn a_scale_clamps_and_survives_an_empty_range() {
        let s = Scale {
            v0: 10.0,
            v1: 20.0,
            x0: 100.0,
            x1: 200.0,
        };
        assert_eq!(s.at(15.0), 150.0);
        assert_eq!(s.at(-5.0), 100.0);
        assert_eq!(s.at(99.0), 200.0);
        assert_eq!(s.at(f64::NAN), 100.0);
        let empty = Scale { v1: 10.0, ..s };
        assert_eq!(empty.at(10.0), 100.0);
    }

    #[test]
    fn ticks_fall_on_round_offsets() {
        let t = time_ticks(9_350, 0.0, 935.0, 8);
        let labels: Vec<_> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0 s", "2 s", "4 s", "6 s", "8 s"]);
        assert_eq!(t[1].x, 200.0);
        let t = time_ticks(0, 0.0, 100.0, 8);
        assert_eq!(t.len(), 1);
        assert_eq!(time_ticks(450, 0.0, 100.0, 6)[1].label, "100 ms");
        assert_eq!(time_ticks(3 * 3_600_000, 0.0, 100.0, 6)[1].label, "1 h");
        assert!(time_ticks(500 * 3_600_000, 0.0, 100.0, 6).len() <= 6);
    }
}
