//! The small downtime bar of the migrations list: each migration's downtime as a bar whose
//! length is its share of the longest downtime on the page, so that the slow ones stand out.

use super::{escape, num};
use dockmesh_core::migration::duration_words;

/// The bar's width in SVG units.
pub const WIDTH: f64 = 100.0;
/// Its height.
pub const HEIGHT: f64 = 8.0;

/// The length of a bar for `ms` when the longest on the page is `max_ms`: within
/// `[0, WIDTH]`, at least 1 for any downtime at all, 0 for none.
pub fn length(ms: u64, max_ms: u64) -> f64 {
    if ms == 0 || max_ms == 0 {
        return 0.0;
    }
    let f = (ms as f64 / max_ms as f64).clamp(0.0, 1.0);
    (f * WIDTH).max(1.0)
}

/// The bar of a downtime of `ms` on a page whose longest is `max_ms`, with its length in
/// words beside it; a dash when the migration has no closed downtime.
pub fn downtime(ms: Option<u64>, max_ms: u64) -> String {
    let Some(ms) = ms else {
        return r#"<span class="muted">–</span>"#.to_owned();
    };
    let words = duration_words(jiff::SignedDuration::from_millis(
        i64::try_from(ms).unwrap_or(i64::MAX),
    ));
    let label = format!("down for {words}");
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart downbar" viewBox="0 0 {w} {h}" role="img" aria-label="{label}"><title>{label}</title><rect class="downbar-track" x="0" y="0" width="{w}" height="{h}" rx="2"/><rect class="downbar-fill" x="0" y="0" width="{len}" height="{h}" rx="2"/></svg> <span class="small">{words}</span>"#,
        w = num(WIDTH),
        h = num(HEIGHT),
        len = num(length(ms, max_ms)),
        label = escape(&label),
        words = escape(&words),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_longest_fills_the_bar_and_none_draws_a_dash() {
        assert_eq!(length(8_000, 8_000), WIDTH);
        assert_eq!(length(2_000, 8_000), 25.0);
        assert_eq!(length(1, 1_000_000), 1.0);
        assert_eq!(length(0, 8_000), 0.0);
        assert_eq!(length(5, 0), 0.0);
        let html = downtime(Some(8_300), 16_600);
        assert!(
            html.contains(r#"role="img" aria-label="down for 8.3 s""#),
            "{html}"
        );
        assert!(
            html.contains(r#"class="downbar-fill" x="0" y="0" width="50""#),
            "{html}"
        );
        assert!(
            html.ends_with(r#"<span class="small">8.3 s</span>"#),
            "{html}"
        );
        assert_eq!(downtime(None, 5), r#"<span class="muted">–</span>"#);
    }

    proptest! {
        #[test]
        fn a_bar_is_always_within_its_track(ms in any::<u64>(), max in any::<u64>()) {
            let l = length(ms, max);
            prop_assert!(l.is_finite() && (0.0..=WIDTH).contains(&l));
            prop_assert!(!downtime(Some(ms), max).contains("NaN"));
        }
    }
}
