//! Durations on the command line: `250ms`, `1s`, `2m`, `1h`, bounded. Its
//! own module because both `config` and `cluster::config` parse them, and
//! `config` holds the cluster's flags: one importing the other back would
//! make a cycle.

use std::time::Duration;

/// The longest duration a flag takes: 100 years. Deadlines are `now` plus
/// a flag (`--handshake-timeout`, `--keepalive-timeout`, ...), and `Instant`
/// plus about 2^63 seconds overflows: such a flag panicked the first
/// connection that armed it. Far beyond any useful setting.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `250ms`, `1s`, `2m`, `1h`, `1.5s` or a bare number of seconds, at
/// most [`MAX_DURATION`].
///
/// # Errors
///
/// A message naming the accepted forms, or the bound.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 250ms, 1s, 2m, 1h)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        Ok(_) => Err(format!("{text:?} is too long: at most 100 years (876000h)")),
        Err(err) => Err(format!("{text:?}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        assert!(parse_duration("876001h").is_err());
        assert!(parse_duration("10000000000000000000").is_err());
    }
}
