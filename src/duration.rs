//! Durations as people type them on a command line: `10s`, `500ms`, `5m`, `1h`, `2d`, or a bare
//! number of seconds.

use std::time::Duration;

use crate::error::ParseError;

/// Parses `500ms`, `10s`, `5m`, `1h`, `2d` or `30` (seconds).
pub fn parse(text: &str) -> Result<Duration, ParseError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        ParseError::new(format!(
            "'{text}' is not a duration (expected e.g. 500ms, 10s, 5m, 1h, 2d)"
        ))
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(ParseError::new(format!(
                "unknown unit '{other}' in '{text}' (use ms, s, m, h or d)"
            )))
        }
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(ParseError::new(format!(
            "duration '{text}' is out of range"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way [`parse`] reads it back (`1.5s`, `250ms`).
pub fn format(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(parse("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse("10").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2d").ok(), Some(Duration::from_secs(172800)));
        assert_eq!(parse("0.5s").ok(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("ten").is_err());
        assert!(parse("10y").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1e99").is_err());
    }
}
