//! Instants as the server stores them (microseconds since the Unix epoch) and their FHIR text form.
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Now, truncated to milliseconds (the precision shown in meta.lastUpdated).
pub fn now_micros() -> i64 {
    let ms = Utc::now().timestamp_millis();
    ms * 1000
}

/// FHIR instant text for a stored timestamp, e.g. `2026-11-25T13:01:16.123Z`.
pub fn format_instant(micros: i64) -> String {
    let dt = Utc
        .timestamp_micros(micros)
        .single()
        .unwrap_or_else(|| Utc.timestamp_micros(0).unwrap());
    // Hand-formatted: chrono's format string is interpreted on every call, and this runs for
    // every stored resource and every AuditEvent.
    use chrono::{Datelike, Timelike};
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.timestamp_subsec_millis().min(999)
    )
}

/// RFC 7231 HTTP-date for Last-Modified.
pub fn format_http_date(micros: i64) -> String {
    let dt = Utc
        .timestamp_micros(micros)
        .single()
        .unwrap_or_else(|| Utc.timestamp_micros(0).unwrap());
    dt.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Parse an HTTP-date (If-Modified-Since) to microseconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.timestamp_micros())
}

/// Parse a FHIR instant or dateTime (with or without time zone; partial dates allowed) to the
/// first microsecond it can denote. A dateTime without zone is read as UTC.
pub fn parse_lower_bound(s: &str) -> Option<i64> {
    // An unencoded `+` of a zone offset arrives as a space after URL decoding.
    let fixed = s.trim().replace(' ', "+");
    let s = fixed.as_str();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_micros());
    }
    if let Ok(d) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(d.and_utc().timestamp_micros());
    }
    if let Ok(d) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M") {
        return Some(d.and_utc().timestamp_micros());
    }
    let date = match s.len() {
        4 => NaiveDate::from_ymd_opt(s.parse().ok()?, 1, 1),
        7 => {
            let (y, m) = s.split_once('-')?;
            NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
        }
        10 => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        _ => None,
    }?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instant_round_trip() {
        let t = 1_764_075_676_123_000;
        let s = format_instant(t);
        assert_eq!(s, "2025-11-25T13:01:16.123Z");
        assert_eq!(parse_lower_bound(&s), Some(t));
    }

    #[test]
    fn partial_and_zoned() {
        assert_eq!(
            parse_lower_bound("2025-11-25T14:01:16+01:00"),
            parse_lower_bound("2025-11-25T13:01:16Z")
        );
        assert_eq!(parse_lower_bound("2025"), parse_lower_bound("2025-01-01"));
        assert_eq!(
            parse_lower_bound("2025-02"),
            parse_lower_bound("2025-02-01T00:00:00Z")
        );
        assert_eq!(
            parse_lower_bound("2025-11-25T14:01:16 01:00"),
            parse_lower_bound("2025-11-25T13:01:16Z"),
            "a + decoded as a space"
        );
        assert_eq!(parse_lower_bound("yesterday"), None);
        assert_eq!(parse_lower_bound("2025-13"), None);
    }

    #[test]
    fn http_date() {
        let t = 1_764_075_676_000_000;
        let s = format_http_date(t);
        assert_eq!(s, "Tue, 25 Nov 2025 13:01:16 GMT");
        assert_eq!(parse_http_date(&s), Some(t));
    }
}
