//! Formats of the R4 primitive data types (the regular expressions of the spec, written out by hand).
use serde_json::Value;

/// Check a JSON value against a primitive type; `Err` carries a readable reason.
pub fn check(ty: &str, v: &Value) -> Result<(), String> {
    match ty {
        "boolean" => match v {
            Value::Bool(_) => Ok(()),
            _ => Err("must be a JSON boolean (true or false)".into()),
        },
        "integer" | "positiveInt" | "unsignedInt" => {
            let Value::Number(n) = v else {
                return Err(format!("must be a JSON number ({ty})"));
            };
            let text = n.to_string();
            let i: i64 = text
                .parse()
                .map_err(|_| format!("'{text}' is not an integer"))?;
            if i < i32::MIN as i64 || i > i32::MAX as i64 {
                return Err(format!("{i} is outside the 32-bit integer range"));
            }
            match ty {
                "positiveInt" if i < 1 => Err(format!("{i} is not a positiveInt (>= 1)")),
                "unsignedInt" if i < 0 => Err(format!("{i} is not an unsignedInt (>= 0)")),
                _ => Ok(()),
            }
        }
        "decimal" => match v {
            Value::Number(_) => Ok(()),
            _ => Err("must be a JSON number (decimal)".into()),
        },
        _ => {
            let Value::String(s) = v else {
                return Err(format!("must be a JSON string ({ty})"));
            };
            check_str(ty, s)
        }
    }
}

fn check_str(ty: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty strings are not allowed; omit the element instead".into());
    }
    let ok = match ty {
        "string" | "markdown" => {
            if s.trim().is_empty() {
                return Err("must contain non-whitespace characters".into());
            }
            if s.chars()
                .any(|c| (c as u32) < 32 && !matches!(c, '\t' | '\r' | '\n'))
            {
                return Err("contains control characters".into());
            }
            true
        }
        "id" => crate::fhir::resource::is_valid_id(s),
        "code" => {
            !s.starts_with(char::is_whitespace)
                && !s.ends_with(char::is_whitespace)
                && !s.contains("  ")
                && !s.contains(['\t', '\r', '\n'])
        }
        "uri" | "url" | "canonical" => {
            if let Some(problem) = super::bundle::urn_problem(s) {
                return Err(problem);
            }
            !s.chars().any(char::is_whitespace)
        }
        "oid" => is_oid(s),
        "uuid" => is_uuid(s),
        "date" => is_date(s),
        "dateTime" => is_date_time(s, false),
        "instant" => is_date_time(s, true),
        "time" => is_time(s),
        "base64Binary" => is_base64(s),
        "xhtml" => return super::xhtml::check(s),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("'{}' is not a valid {ty}", shorten(s)))
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// YYYY, YYYY-MM or YYYY-MM-DD with real months and days.
pub fn is_date(s: &str) -> bool {
    let mut parts = s.split('-');
    let Some(y) = parts.next().and_then(|p| digits(p, 4)) else {
        return false;
    };
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => true,
        (Some(m), None, _) => digits(m, 2).is_some_and(|m| (1..=12).contains(&m)),
        (Some(m), Some(d), None) => match (digits(m, 2), digits(d, 2)) {
            (Some(m), Some(d)) if (1..=12).contains(&m) => d >= 1 && d <= days_in_month(y, m),
            _ => false,
        },
        _ => false,
    }
}

/// hh:mm:ss(.fraction)? with hours 00-23 and seconds up to 60 (leap second).
pub fn is_time(s: &str) -> bool {
    let (main, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let p: Vec<&str> = main.split(':').collect();
    p.len() == 3
        && digits(p[0], 2).is_some_and(|h| h <= 23)
        && digits(p[1], 2).is_some_and(|m| m <= 59)
        && digits(p[2], 2).is_some_and(|s| s <= 60)
}

fn is_tz(s: &str) -> bool {
    if s == "Z" {
        return true;
    }
    let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) else {
        return false;
    };
    match rest.split_once(':') {
        Some((h, m)) => {
            digits(h, 2).is_some_and(|h| h <= 14) && digits(m, 2).is_some_and(|m| m <= 59)
        }
        None => false,
    }
}

/// dateTime: a date, or a full date and time with a time zone. instant: seconds and zone required.
pub fn is_date_time(s: &str, instant: bool) -> bool {
    let Some((date, rest)) = s.split_once('T') else {
        return !instant && is_date(s);
    };
    if date.len() != 10 || !is_date(date) {
        return false;
    }
    let tz_at = rest.find(['Z', '+', '-']);
    let Some(i) = tz_at else {
        return false;
    };
    let (time, tz) = rest.split_at(i);
    is_time(time) && is_tz(tz)
}

fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut parts = rest.split('.');
    let first_ok = matches!(parts.next(), Some("0" | "1" | "2"));
    let mut n = 0;
    let rest_ok = parts.all(|p| {
        n += 1;
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
    });
    first_ok && n >= 1 && rest_ok
}

fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups.iter().zip(lens).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn is_base64(s: &str) -> bool {
    let mut n = 0usize;
    let mut pad = 0usize;
    for b in s.bytes() {
        if b.is_ascii_whitespace() {
            continue;
        }
        if b == b'=' {
            pad += 1;
        } else if pad > 0 || !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/') {
            return false;
        }
        n += 1;
    }
    n.is_multiple_of(4) && pad <= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(ty: &str, v: Value) -> bool {
        check(ty, &v).is_ok()
    }

    #[test]
    fn dates_and_times() {
        for good in ["2024", "2024-02", "2024-02-29", "2000-02-29"] {
            assert!(is_date(good), "{good}");
        }
        for bad in [
            "24",
            "2024-2",
            "2023-02-29",
            "2024-13",
            "2024-01-32",
            "2024/01/01",
            "1900-02-29",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(is_date_time("2024-05-01T10:00:00Z", false));
        assert!(is_date_time("2024-05-01T10:00:00.123+05:30", false));
        assert!(is_date_time("2024-05", false));
        assert!(!is_date_time("2024-05-01T10:00:00", false), "zone required");
        assert!(!is_date_time("2024-05-01T25:00:00Z", false));
        assert!(
            !is_date_time("2024-05-01T10:00Z", false),
            "seconds required"
        );
        assert!(!is_date_time("2024-05-01", true), "instant needs a time");
        assert!(is_date_time("2024-05-01T10:00:00.5-07:00", true));
        assert!(is_time("23:59:60") && is_time("08:00:00.25"));
        assert!(!is_time("8:00:00") && !is_time("08:00") && !is_time("24:00:00"));
    }

    #[test]
    fn numbers_and_booleans() {
        assert!(ok("integer", json!(-5)));
        assert!(!ok("integer", json!(1.5)));
        assert!(!ok("integer", json!("5")));
        assert!(!ok("integer", json!(3_000_000_000i64)));
        assert!(ok("positiveInt", json!(1)) && !ok("positiveInt", json!(0)));
        assert!(ok("unsignedInt", json!(0)) && !ok("unsignedInt", json!(-1)));
        assert!(ok("decimal", json!(1.50)) && !ok("decimal", json!("1.5")));
        assert!(ok("boolean", json!(false)) && !ok("boolean", json!("true")));
    }

    #[test]
    fn strings_codes_and_identifiers() {
        assert!(!ok("string", json!("")));
        assert!(!ok("string", json!("   ")));
        assert!(!ok("string", json!(5)));
        assert!(ok("code", json!("in-progress")) && !ok("code", json!(" x")));
        assert!(!ok("code", json!("a  b")));
        assert!(ok("id", json!("a.B-9")) && !ok("id", json!("a_b")));
        assert!(ok("uri", json!("http://x/y")) && !ok("uri", json!("http://x y")));
        assert!(ok("oid", json!("urn:oid:2.16.840.1")) && !ok("oid", json!("urn:oid:3.1")));
        assert!(ok(
            "uuid",
            json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")
        ));
        assert!(!ok("uuid", json!("c757873d-ec9a-4326-a141-556f43239520")));
        assert!(ok("base64Binary", json!("aGVsbG8=")) && !ok("base64Binary", json!("a$b=")));
        assert!(!ok("base64Binary", json!("abc")));
        assert!(ok(
            "xhtml",
            json!("<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>")
        ));
        assert!(!ok("xhtml", json!("plain text")));
    }
}
