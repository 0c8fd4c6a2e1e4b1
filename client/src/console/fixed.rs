//! Decimals for the labels without core's float formatting.
//!
//! `format!("{x:.1}")` links core's float-to-decimal code (Grisu with its
//! Dragon fallback and their tables) into the wasm bundle: the console uses
//! it for a handful of labels only, so an integer does the work instead.

/// `value` with `decimals` digits after the point, like `format!("{value:.N}")`.
///
/// The scaled value is rounded half to even, as `{:.N}` rounds exact ties.
/// The two can differ in the last digit only when `value * 10^decimals` is
/// within a rounding error of a tie (`0.15` is `0.1499…` in binary, which
/// `{:.1}` shows as `0.1` and this as `0.2`); with `decimals == 0` the
/// product is exact and they agree. Magnitudes beyond `u64::MAX /
/// 10^decimals` saturate: the console's figures (counts, rates,
/// milliseconds, chart coordinates) are far below.
pub fn fixed(value: f64, decimals: u32) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if value.is_infinite() {
        return format!("{sign}inf");
    }
    let scale = 10u64.pow(decimals);
    // A float-to-int `as` saturates, never wraps or panics.
    let scaled = (value.abs() * scale as f64).round_ties_even() as u64;
    let (whole, fraction) = (scaled / scale, scaled % scale);
    if decimals == 0 {
        format!("{sign}{whole}")
    } else {
        let width = decimals as usize;
        format!("{sign}{whole}.{fraction:0width$}")
    }
}

#[cfg(test)]
mod tests {
    use super::fixed;

    #[test]
    fn whole_numbers_agree_with_format_everywhere() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            2.5,
            -0.5,
            -2.5,
            0.49,
            1e12,
            123_456.789,
        ];
        values.extend((-3000..3000).map(|i| f64::from(i) / 7.0));
        values.extend((0..2000).map(|i| f64::from(i) * 37.25));
        for v in values {
            assert_eq!(fixed(v, 0), format!("{v:.0}"), "{v}");
        }
    }

    #[test]
    fn decimals_agree_with_format_away_from_ties() {
        // Tenths (the countdown's seconds), sevenths, and the chart's
        // x coordinates (i * 600 / 59).
        let mut values: Vec<f64> = (0..5000).map(|i| f64::from(i) / 10.0).collect();
        values.extend((-3000..3000).map(|i| f64::from(i) / 7.0));
        values.extend((0..60).map(|i| f64::from(i) * (600.0 / 59.0)));
        for v in values {
            assert_eq!(fixed(v, 1), format!("{v:.1}"), "{v}");
            assert_eq!(fixed(v, 3), format!("{v:.3}"), "{v}");
        }
    }

    #[test]
    fn odd_values_are_spelled_like_format() {
        assert_eq!(fixed(-0.04, 1), "-0.0");
        assert_eq!(fixed(0.25, 1), format!("{:.1}", 0.25));
        assert_eq!(fixed(1.0, 3), "1.000");
        assert_eq!(fixed(f64::NAN, 1), "NaN");
        assert_eq!(fixed(f64::INFINITY, 0), "inf");
        assert_eq!(fixed(f64::NEG_INFINITY, 2), "-inf");
    }
}
