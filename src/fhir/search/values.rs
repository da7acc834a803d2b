//! Value normalisation shared by indexing and searching: folded text, date ranges, decimals.
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Lower-case and remove accents (Latin scripts), so `Zoë`, `ZOE` and `zoe` compare equal.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        for l in c.to_lowercase() {
            match strip_accent(l) {
                Some(rep) => out.push_str(rep),
                None => out.push(l),
            }
        }
    }
    out
}

fn strip_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'þ' => "th",
        // Combining diacritical marks (text already decomposed).
        '\u{0300}'..='\u{036f}' => "",
        _ => return None,
    })
}

/// Bounds used for open ends of ranges.
pub const MIN_INSTANT: i64 = i64::MIN;
pub const MAX_INSTANT: i64 = i64::MAX;

fn micros(d: NaiveDateTime) -> i64 {
    d.and_utc().timestamp_micros()
}

fn add_months(d: NaiveDate, months: u32) -> Option<NaiveDate> {
    let total = d.year() * 12 + d.month0() as i32 + months as i32;
    NaiveDate::from_ymd_opt(total.div_euclid(12), total.rem_euclid(12) as u32 + 1, 1)
}

/// The range `[low, high)` in microseconds that a FHIR date, dateTime or instant denotes:
/// a year, month or day is the whole period (UTC when no zone is given), a time the precision it
/// is written with (minute, second or fraction). `None` for text that is not a date.
pub fn date_range(s: &str) -> Option<(i64, i64)> {
    // An unencoded `+` of a zone offset arrives as a space after URL decoding.
    let fixed = s.trim().replace(' ', "+");
    let s = fixed.as_str();
    let b = s.as_bytes();
    if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match b.len() {
        4 => {
            let d = NaiveDate::from_ymd_opt(s.parse().ok()?, 1, 1)?;
            let e = NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)?;
            return Some((
                micros(d.and_time(NaiveTime::MIN)),
                micros(e.and_time(NaiveTime::MIN)),
            ));
        }
        7 => {
            let d = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?;
            let e = add_months(d, 1)?;
            return Some((
                micros(d.and_time(NaiveTime::MIN)),
                micros(e.and_time(NaiveTime::MIN)),
            ));
        }
        10 => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let e = d.succ_opt()?;
            return Some((
                micros(d.and_time(NaiveTime::MIN)),
                micros(e.and_time(NaiveTime::MIN)),
            ));
        }
        _ => {}
    }
    // A time: split the zone off, measure the precision of what remains.
    let t_pos = s.find('T')?;
    let (body, zone) = match s[t_pos..].find(['Z', '+', '-']) {
        Some(i) => (&s[..t_pos + i], &s[t_pos + i..]),
        None => (s, ""),
    };
    let time = &body[t_pos + 1..];
    let (fmt, step) = match time.len() {
        5 => ("%Y-%m-%dT%H:%M", 60_000_000),
        8 => ("%Y-%m-%dT%H:%M:%S", 1_000_000),
        n if n > 9 && time.as_bytes()[8] == b'.' => {
            let digits = (n - 9).min(6) as u32;
            ("%Y-%m-%dT%H:%M:%S%.f", 10_i64.pow(6 - digits))
        }
        _ => return None,
    };
    let naive = NaiveDateTime::parse_from_str(body, fmt).ok()?;
    let low = if zone.is_empty() || zone == "Z" {
        micros(naive)
    } else {
        let off = DateTime::parse_from_str(
            &format!("2000-01-01T00:00:00{zone}"),
            "%Y-%m-%dT%H:%M:%S%:z",
        )
        .ok()?;
        let off: FixedOffset = *off.offset();
        off.from_local_datetime(&naive)
            .single()?
            .with_timezone(&Utc)
            .timestamp_micros()
    };
    Some((low, low + step))
}

/// A decimal as written, with the range its precision implies (`100` → [99.5, 100.5),
/// `1.50` → [1.495, 1.505)).
pub fn decimal_range(s: &str) -> Option<(f64, f64, f64)> {
    let s = s.trim();
    let v: f64 = s.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let decimals = mant.find('.').map_or(0, |i| (mant.len() - i - 1) as i32);
    let half = 0.5 * 10f64.powi(exp - decimals);
    Some((v, v - half, v + half))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::datetime::parse_lower_bound;

    #[test]
    fn folding() {
        assert_eq!(fold("Zoë ÅSA Müller-Łukasz"), "zoe asa muller-lukasz");
        assert_eq!(fold("e\u{0301}"), "e");
    }

    #[test]
    fn date_ranges() {
        let at = |s: &str| parse_lower_bound(s).unwrap();
        assert_eq!(
            date_range("2020"),
            Some((at("2020-01-01T00:00:00Z"), at("2021-01-01T00:00:00Z")))
        );
        assert_eq!(
            date_range("2020-12"),
            Some((at("2020-12-01T00:00:00Z"), at("2021-01-01T00:00:00Z")))
        );
        assert_eq!(
            date_range("2020-02-29"),
            Some((at("2020-02-29T00:00:00Z"), at("2020-03-01T00:00:00Z")))
        );
        assert_eq!(
            date_range("2020-01-01T01:30:00+02:00"),
            Some((at("2019-12-31T23:30:00Z"), at("2019-12-31T23:30:01Z")))
        );
        assert_eq!(
            date_range("2020-01-01T00:00:00.123Z").map(|(l, h)| h - l),
            Some(1000)
        );
        assert_eq!(
            date_range("2020-01-01T10:00Z").map(|(l, h)| h - l),
            Some(60_000_000)
        );
        assert_eq!(date_range("2020-13"), None);
        assert_eq!(date_range("soon"), None);
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal_range("100"), Some((100.0, 99.5, 100.5)));
        let (v, l, h) = decimal_range("1.50").unwrap();
        assert_eq!(v, 1.5);
        assert!((l - 1.495).abs() < 1e-12 && (h - 1.505).abs() < 1e-12);
        assert_eq!(decimal_range("x"), None);
    }
}
