//! The arithmetic of the reports: medians, quantiles, a fit, and reading a
//! figure out of a result.

use serde_json::Value;

/// The median of `values` (sorted in place); NaN when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `q` quantile of `values` (sorted in place), nearest rank: the
/// smallest value with at least `q` of them at or below it; NaN when empty.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() as f64) * q).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

/// The number at `key` in a result, NaN where it is missing.
pub fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// The `q` quantile of a histogram of one bucket per unit (whole
/// milliseconds of lateness); `None` when it is empty.
pub fn percentile(buckets: &[u64], q: f64) -> Option<usize> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    buckets.iter().position(|&n| {
        seen += n;
        seen >= rank
    })
}

/// Least-squares slope and intercept of `y` over `x`.
pub fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let slope = if den > 0.0 { num / den } else { 0.0 };
    (slope, my - slope * mx)
}

/// A list of numbers as `1.0, 2.5, ...` (one decimal).
pub fn list(values: &Value) -> String {
    values
        .as_array()
        .map(|r| {
            r.iter()
                .map(|v| format!("{:.1}", v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_the_fit_are_plain_arithmetic() {
        let late = [0, 5, 4, 0, 1];
        assert_eq!(percentile(&late, 0.5), Some(1));
        assert_eq!(percentile(&late, 1.0), Some(4));
        assert_eq!(percentile(&[0, 0], 0.5), None);
        let (slope, intercept) = fit(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]);
        assert!((slope - 2.0).abs() < 1e-9 && (intercept - 1.0).abs() < 1e-9);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        let mut hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut hundred, 0.5), 50.0);
        assert_eq!(quantile(&mut hundred, 0.99), 99.0);
        assert_eq!(quantile(&mut hundred, 1.0), 100.0);
        assert_eq!(quantile(&mut [7.0], 0.99), 7.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
