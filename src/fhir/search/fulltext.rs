//! Full-text search, the pure part: the text a resource is searched by (`_text`: its narrative,
//! tags stripped and entities decoded; `_content`: every string value of the resource) and the
//! query syntax both parameters take — words are AND'ed, `"a quoted phrase"` matches the words
//! in sequence, `OR` between terms makes alternatives (`a b OR c` is `(a AND b) OR c`).
//! Text and terms are folded alike (lower case, accents removed: values::fold); stemming is the
//! database's (PostgreSQL `english`, SQLite FTS5 `porter`), see store::fulltext.
use serde_json::Value;

use super::query::Filter;
use super::values::fold;

/// Most bytes of text indexed per resource and column (a PostgreSQL tsvector holds at most
/// 1 MB; the rest of a longer text is not searchable).
pub const MAX_TEXT: usize = 200_000;
/// Longest query accepted, in characters, and most terms in it.
const MAX_QUERY: usize = 1000;
const MAX_TERMS: usize = 32;

/// One term of a query, folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A word (the database may split it further: `blood-pressure`).
    Word(String),
    /// Words that must appear in this order (`"heart failure"`).
    Phrase(String),
}

impl Term {
    pub fn text(&self) -> &str {
        match self {
            Term::Word(s) | Term::Phrase(s) => s,
        }
    }
}

/// A full-text query: alternatives (OR'ed), each a list of terms that must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQuery {
    pub any: Vec<Vec<Term>>,
}

/// Whether `code` is one of the full-text parameters.
pub fn is_fulltext(code: &str) -> bool {
    matches!(code, "_text" | "_content")
}

/// The filter of a full-text parameter (`None` when `code` is not one): `value` is the raw
/// parameter value, whose comma-separated parts are alternatives as for any FHIR parameter.
pub fn filter(code: &str, modifier: Option<&str>, value: &str) -> Option<Result<Filter, String>> {
    if !is_fulltext(code) {
        return None;
    }
    if let Some(m) = modifier {
        return Some(Err(format!("modifier :{m} is not supported on {code}")));
    }
    let mut any = Vec::new();
    for part in super::query::split_values(value) {
        match parse(&part) {
            Ok(q) => any.extend(q.any),
            Err(e) => return Some(Err(format!("{code}: {e}"))),
        }
    }
    Some(Ok(Filter::FullText {
        narrative: code == "_text",
        query: TextQuery { any },
    }))
}

enum Token {
    Or,
    Word(String),
    Phrase(String),
}

fn tokens(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            let w = std::mem::take(word);
            out.push(if w.eq_ignore_ascii_case("or") {
                Token::Or
            } else {
                Token::Word(w)
            });
        }
    };
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            flush(&mut word, &mut out);
            let mut phrase = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => phrase.push(c),
                    None => return Err("a quoted phrase is not closed".into()),
                }
            }
            let words: Vec<&str> = phrase.split_whitespace().collect();
            if words.is_empty() {
                return Err("empty quoted phrase".into());
            }
            out.push(Token::Phrase(words.join(" ")));
        } else if c.is_whitespace() {
            flush(&mut word, &mut out);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

/// Parse one query: `walking "heart failure" OR dyspnea`. Terms without a letter or digit are
/// left out. Errors name what is wrong (no word, an unclosed quote, an `OR` without a term on
/// each side, a query over 1000 characters or 32 terms).
pub fn parse(s: &str) -> Result<TextQuery, String> {
    if s.chars().count() > MAX_QUERY {
        return Err(format!("the query is longer than {MAX_QUERY} characters"));
    }
    let toks = tokens(s)?;
    if toks.is_empty() {
        return Err("the query has no word to search".into());
    }
    let mut any: Vec<Vec<Term>> = vec![vec![]];
    let mut n = 0;
    for t in toks {
        let term = match t {
            Token::Or => {
                if any.last().is_some_and(Vec::is_empty) {
                    return Err("OR needs a term on each side".into());
                }
                any.push(vec![]);
                continue;
            }
            Token::Word(w) => Term::Word(fold(&w)),
            Token::Phrase(p) => Term::Phrase(fold(&p)),
        };
        // Punctuation alone is no word on either backend: left out.
        if !term.text().chars().any(char::is_alphanumeric) {
            continue;
        }
        n += 1;
        if n > MAX_TERMS {
            return Err(format!("the query has more than {MAX_TERMS} terms"));
        }
        if let Some(g) = any.last_mut() {
            g.push(term);
        }
    }
    if any.iter().all(Vec::is_empty) {
        return Err("the query has no word to search".into());
    }
    if any.last().is_some_and(Vec::is_empty) {
        return Err("OR needs a term on each side".into());
    }
    Ok(TextQuery { any })
}

/// The text `_text` searches: the resource's narrative (`text.div`), tags stripped, entities
/// decoded, folded; at most [`MAX_TEXT`] bytes.
pub fn narrative_text(resource: &Value) -> String {
    let div = resource
        .get("text")
        .and_then(|t| t.get("div"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = String::new();
    push_text(&mut out, &xhtml_text(div));
    fold(&out)
}

/// The text `_content` searches: every string value of the resource (not the keys; a narrative
/// as its text; base64 `data` left out), space-separated, folded; at most [`MAX_TEXT`] bytes.
pub fn content_text(resource: &Value) -> String {
    fn walk(v: &Value, key: &str, out: &mut String) {
        if out.len() >= MAX_TEXT {
            return;
        }
        match v {
            Value::String(s) => match key {
                // Attachment.data, Binary.data, Signature.data: base64, not words.
                "data" => {}
                "div" => push_text(out, &xhtml_text(s)),
                _ => push_text(out, s),
            },
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| walk(x, k, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(resource, "", &mut out);
    fold(&out)
}

/// Append the words of `s`, single-spaced, while under [`MAX_TEXT`] bytes (control characters
/// separate words: a database text value holds no NUL).
fn push_text(out: &mut String, s: &str) {
    let words = s
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty());
    for word in words {
        if out.len() + 1 + word.len() > MAX_TEXT {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// The text of an XHTML fragment: tags and comments become spaces, character references are
/// decoded (`&amp;`, `&#233;`, `&#xE9;`, the XML and a few common HTML names; an unknown one
/// is kept as written).
pub fn xhtml_text(x: &str) -> String {
    let mut out = String::with_capacity(x.len());
    let mut rest = x;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            out.push(' ');
        } else if rest.starts_with('<') {
            // Skip to the tag's end, minding quoted attribute values.
            let mut quote: Option<char> = None;
            let mut end = rest.len();
            for (j, c) in rest.char_indices().skip(1) {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') => quote = Some(c),
                    (None, '>') => {
                        end = j + 1;
                        break;
                    }
                    _ => {}
                }
            }
            rest = &rest[end..];
            out.push(' ');
        } else {
            match rest.find(';').filter(|&e| e <= 12).and_then(|e| {
                let c = entity(&rest[1..e])?;
                Some((c, e))
            }) {
                Some((c, e)) => {
                    out.push(c);
                    rest = &rest[e + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(n) = name.strip_prefix('#') {
        let code = match n.strip_prefix(['x', 'X']) {
            Some(h) => u32::from_str_radix(h, 16).ok()?,
            None => n.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "deg" => '°',
        "micro" => 'µ',
        "copy" => '©',
        "reg" => '®',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(s: &str) -> Term {
        Term::Word(s.into())
    }

    #[test]
    fn query_syntax() {
        assert_eq!(
            parse("Walking \"Heart   Failure\" OR dyspnée").unwrap().any,
            vec![
                vec![w("walking"), Term::Phrase("heart failure".into())],
                vec![w("dyspnee")]
            ]
        );
        assert_eq!(
            parse("a or b").unwrap().any,
            vec![vec![w("a")], vec![w("b")]]
        );
        // A quote ends a bare word; a phrase may hold FTS5 and tsquery operators as plain text.
        assert_eq!(
            parse("x\"NEAR(a b) & !c\"").unwrap().any,
            vec![vec![w("x"), Term::Phrase("near(a b) & !c".into())]]
        );
        for bad in [
            "",
            "   ",
            "\"open",
            "OR walk",
            "walk OR",
            "a OR OR b",
            "\"  \"",
            "!!",
            "; OR walk",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("walk - ; \"&\"").unwrap().any, vec![vec![w("walk")]]);
        assert!(parse(&"a ".repeat(33)).is_err());
        assert!(parse(&"a".repeat(1001)).is_err());
    }

    #[test]
    fn filter_values_are_alternatives() {
        match filter("_content", None, "walk,\"heart failure\" copd") {
            Some(Ok(Filter::FullText { narrative, query })) => {
                assert!(!narrative);
                assert_eq!(
                    query.any,
                    vec![
                        vec![w("walk")],
                        vec![Term::Phrase("heart failure".into()), w("copd")]
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            filter("_text", None, "x"),
            Some(Ok(Filter::FullText {
                narrative: true,
                ..
            }))
        ));
        assert!(matches!(filter("_text", Some("exact"), "x"), Some(Err(_))));
        assert!(matches!(filter("_text", None, "a,"), Some(Err(_))));
        assert!(filter("name", None, "x").is_none());
    }

    #[test]
    fn narrative_and_content() {
        let r = json!({
            "resourceType": "Communication",
            "id": "c1",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p title=\"a>b\">Call&nbsp;Zoë &amp; her <b>daughter</b></p><!-- hidden --><p>&#233;t&#xE9;</p></div>"},
            "payload": [{"contentString": "Walking daily"}, {"contentAttachment": {"data": "QUJDREVGRw==", "title": "Plan"}}],
            "note": [{"text": "Prefers mornings"}],
            "status": "completed",
            "sent": "2024-05-01"
        });
        assert_eq!(narrative_text(&r), "call zoe & her daughter ete");
        let c = content_text(&r);
        assert!(
            c.starts_with("communication c1 generated call zoe & her"),
            "{c}"
        );
        assert!(c.contains("walking daily plan prefers mornings completed 2024-05-01"));
        assert!(!c.contains("qujd") && !c.contains("xmlns") && !c.contains("hidden"));
        assert_eq!(narrative_text(&json!({"resourceType": "Basic"})), "");
        assert_eq!(
            content_text(&json!({"resourceType": "Basic", "id": "a\u{0}b"})),
            "basic a b"
        );
        assert_eq!(
            xhtml_text("a &bogus; &lt;b&gt; &#99999999;"),
            "a &bogus; <b> &#99999999;"
        );
    }

    #[test]
    fn text_is_capped() {
        let long = "word ".repeat(MAX_TEXT);
        let r = json!({"resourceType": "Basic", "id": "x", "note": [long, "tail"]});
        let c = content_text(&r);
        assert!(
            c.len() <= MAX_TEXT && c.len() > MAX_TEXT - 10,
            "{}",
            c.len()
        );
        assert!(!c.contains("tail"));
        // A word that does not fit is left out whole.
        let r = json!({"resourceType": "Basic", "id": "x", "note": ["é".repeat(MAX_TEXT), "tail"]});
        assert_eq!(content_text(&r), "basic x tail");
    }
}
