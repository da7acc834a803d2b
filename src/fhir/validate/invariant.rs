//! Invariants without a FHIRPath engine: a tiny evaluator for the existence-logic subset of
//! FHIRPath (`a.b.exists()`, `.empty()`, `.hasValue()`, `.not()`, `and`/`or`/`xor`/`implies`,
//! `!=`/`=` between two such tests, parentheses), plus a few invariants checked by key
//! (`per-1`, `Task inv-1`). Any other expression is skipped (not reported), and listed by
//! `unsupported_keys` for the README.
use serde_json::Value;

/// A compiled invariant condition over one element value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Exists(Vec<String>),
    Empty(Vec<String>),
    HasValue(Vec<String>),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Xor(Box<Cond>, Box<Cond>),
    Implies(Box<Cond>, Box<Cond>),
    Eq(Box<Cond>, Box<Cond>),
    /// `path = 'literal'`: some selected value is that string.
    ValueEq(Vec<String>, String),
    /// A bare path (only valid as the left side of `= 'literal'`).
    Path(Vec<String>),
    /// Checked by key with hand code (date comparisons).
    Keyed(&'static str),
}

/// Invariants with comparisons the subset cannot express, checked by dedicated code.
const KEYED: &[&str] = &["per-1", "inv-1"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Dot,
    Open,
    Close,
    Ne,
    Eq,
    Str(String),
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'.' => {
                out.push(Tok::Dot);
                i += 1
            }
            b'(' => {
                out.push(Tok::Open);
                i += 1
            }
            b')' => {
                out.push(Tok::Close);
                i += 1
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Ne);
                i += 2
            }
            b'=' => {
                out.push(Tok::Eq);
                i += 1
            }
            b'\'' => {
                let st = i + 1;
                let end = s[st..].find('\'')? + st;
                if s[st..end].contains('\\') {
                    return None;
                }
                out.push(Tok::Str(s[st..end].to_string()));
                i = end + 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let st = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(s[st..i].to_string()));
            }
            _ => return None,
        }
    }
    Some(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == k)
    }
    fn implies(&mut self) -> Option<Cond> {
        let mut l = self.or()?;
        while self.keyword("implies") {
            self.pos += 1;
            let r = self.or()?;
            l = Cond::Implies(Box::new(l), Box::new(r));
        }
        Some(l)
    }
    fn or(&mut self) -> Option<Cond> {
        let mut l = self.and()?;
        loop {
            if self.keyword("or") {
                self.pos += 1;
                l = Cond::Or(Box::new(l), Box::new(self.and()?));
            } else if self.keyword("xor") {
                self.pos += 1;
                l = Cond::Xor(Box::new(l), Box::new(self.and()?));
            } else {
                return Some(l);
            }
        }
    }
    fn and(&mut self) -> Option<Cond> {
        let mut l = self.cmp()?;
        while self.keyword("and") {
            self.pos += 1;
            l = Cond::And(Box::new(l), Box::new(self.cmp()?));
        }
        Some(l)
    }
    fn cmp(&mut self) -> Option<Cond> {
        let l = self.unary()?;
        if let Cond::Path(p) = l {
            let negate = match self.next()? {
                Tok::Eq => false,
                Tok::Ne => true,
                _ => return None,
            };
            let Tok::Str(lit) = self.next()? else {
                return None;
            };
            let c = Cond::ValueEq(p, lit);
            return Some(if negate { Cond::Not(Box::new(c)) } else { c });
        }
        match self.peek() {
            Some(Tok::Ne) => {
                self.pos += 1;
                let r = self.unary()?;
                Some(Cond::Not(Box::new(Cond::Eq(Box::new(l), Box::new(r)))))
            }
            Some(Tok::Eq) => {
                self.pos += 1;
                let r = self.unary()?;
                Some(Cond::Eq(Box::new(l), Box::new(r)))
            }
            _ => Some(l),
        }
    }
    /// `.not()` suffixes after a condition.
    fn nots(&mut self, mut c: Cond) -> Option<Cond> {
        while self.peek() == Some(&Tok::Dot) {
            self.pos += 1;
            match self.next()? {
                Tok::Ident(f) if f == "not" => {
                    self.call_parens()?;
                    c = Cond::Not(Box::new(c));
                }
                _ => return None,
            }
        }
        Some(c)
    }
    fn call_parens(&mut self) -> Option<()> {
        (self.next()? == Tok::Open && self.next()? == Tok::Close).then_some(())
    }
    fn unary(&mut self) -> Option<Cond> {
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let c = self.implies()?;
            if self.next()? != Tok::Close {
                return None;
            }
            return self.nots(c);
        }
        let mut path = Vec::new();
        loop {
            let Tok::Ident(name) = self.next()? else {
                return None;
            };
            if matches!(name.as_str(), "and" | "or" | "xor" | "implies") {
                return None;
            }
            if self.peek() == Some(&Tok::Open) {
                self.call_parens()?;
                let c = match name.as_str() {
                    "exists" => Cond::Exists(path),
                    "empty" => Cond::Empty(path),
                    "hasValue" => Cond::HasValue(path),
                    _ => return None,
                };
                return self.nots(c);
            }
            path.push(name);
            match self.peek() {
                Some(Tok::Dot) => self.pos += 1,
                Some(Tok::Eq | Tok::Ne) => return Some(Cond::Path(path)),
                _ => return None,
            }
        }
    }
}

/// Compile an invariant: `None` when it is outside what this module can check.
pub fn compile(key: &str, expr: &str) -> Option<Cond> {
    if let Some(k) = KEYED.iter().find(|k| **k == key) {
        return Some(Cond::Keyed(k));
    }
    let toks = tokenize(expr)?;
    let mut p = Parser { toks, pos: 0 };
    let c = p.implies()?;
    (p.pos == p.toks.len()).then_some(c)
}

/// The values a dotted path selects from `v` (choice elements `value` match `valueX`).
fn select<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>, has_ext: &mut bool) {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    let Value::Object(m) = v else { return };
    let mut visit = |x: &'a Value| match x {
        Value::Array(a) => a
            .iter()
            .filter(|i| !i.is_null())
            .for_each(|i| select(i, rest, out, has_ext)),
        Value::Null => {}
        x => select(x, rest, out, has_ext),
    };
    if let Some(x) = m.get(first.as_str()) {
        visit(x);
    } else {
        for (k, x) in m {
            if k.len() > first.len()
                && k.starts_with(first.as_str())
                && k[first.len()..].starts_with(|c: char| c.is_ascii_uppercase())
            {
                visit(x);
            }
        }
    }
    if rest.is_empty() && m.contains_key(&format!("_{first}")) {
        *has_ext = true;
    }
}

fn values<'a>(v: &'a Value, path: &[String]) -> (Vec<&'a Value>, bool) {
    let mut out = Vec::new();
    let mut ext = false;
    select(v, path, &mut out, &mut ext);
    (out, ext)
}

/// Evaluate a compiled condition against an element value.
pub fn eval(c: &Cond, v: &Value) -> bool {
    match c {
        Cond::Exists(p) => {
            let (vals, ext) = values(v, p);
            !vals.is_empty() || ext
        }
        Cond::Empty(p) => {
            let (vals, ext) = values(v, p);
            vals.is_empty() && !ext
        }
        Cond::HasValue(p) => {
            let (vals, _) = values(v, p);
            vals.len() == 1 && !vals[0].is_object()
        }
        Cond::Not(c) => !eval(c, v),
        Cond::And(a, b) => eval(a, v) && eval(b, v),
        Cond::Or(a, b) => eval(a, v) || eval(b, v),
        Cond::Xor(a, b) => eval(a, v) != eval(b, v),
        Cond::Implies(a, b) => !eval(a, v) || eval(b, v),
        Cond::Eq(a, b) => eval(a, v) == eval(b, v),
        Cond::ValueEq(p, lit) => values(v, p).0.iter().any(|x| x.as_str() == Some(lit)),
        Cond::Path(_) => true,
        Cond::Keyed(k) => keyed(k, v),
    }
}

/// Whether `a <= b` for two FHIR date/dateTime strings; `None` when not comparable
/// (different precision, as in FHIRPath).
pub fn date_le(a: &str, b: &str) -> Option<bool> {
    let full = |s: &str| s.contains('T');
    if full(a) && full(b) {
        let (x, y) = (
            crate::fhir::datetime::parse_lower_bound(a)?,
            crate::fhir::datetime::parse_lower_bound(b)?,
        );
        Some(x <= y)
    } else if !full(a) && !full(b) && a.len() == b.len() {
        Some(a <= b)
    } else {
        // Compare the common date prefix: a later day/month is still an error. Bytes, not
        // `&str` slices: a malformed value may hold multi-byte characters (byte order is the
        // same as string order in UTF-8), and slicing inside one panicked.
        let n = a.len().min(b.len()).min(10);
        if a.as_bytes()[..n] > b.as_bytes()[..n] {
            Some(false)
        } else {
            None
        }
    }
}

fn str_at<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn keyed(key: &str, v: &Value) -> bool {
    let (a, b) = match key {
        "per-1" => (str_at(v, "start"), str_at(v, "end")),
        // Task: lastModified >= authoredOn
        "inv-1" => (str_at(v, "authoredOn"), str_at(v, "lastModified")),
        _ => return true,
    };
    match (a, b) {
        (Some(a), Some(b)) if a.len() >= 4 && b.len() >= 4 => date_le(a, b).unwrap_or(true),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn date_le_never_cuts_inside_a_character() {
        // Found by schemathesis: the prefix cut used to panic inside a multi-byte character.
        assert_eq!(date_le("àÔ½", "2026-"), Some(false));
        assert_eq!(date_le("2026", "é\u{a61f3}x"), None);
        assert_eq!(date_le("2026-01-0½T", "2026-01-01"), Some(false));
        assert_eq!(date_le("2026-01-01", "2026-01-02T10:00:00Z"), None);
        assert_eq!(date_le("2026-01-03", "2026-01-02T10:00:00Z"), Some(false));
    }

    fn check(expr: &str, v: Value) -> bool {
        eval(&compile("x", expr).expect(expr), &v)
    }

    #[test]
    fn existence_logic() {
        let pat1 = "name.exists() or telecom.exists() or address.exists() or organization.exists()";
        assert!(check(pat1, json!({"name": {"family": "X"}})));
        assert!(!check(pat1, json!({"gender": "male"})));
        let ext1 = "extension.exists() != value.exists()";
        assert!(check(ext1, json!({"url": "u", "valueString": "x"})));
        assert!(!check(ext1, json!({"url": "u"})));
        assert!(!check(
            ext1,
            json!({"url": "u", "valueString": "x", "extension": [{}]})
        ));
        let dom2 = "contained.contained.empty()";
        assert!(check(dom2, json!({"contained": [{"id": "a"}]})));
        assert!(!check(dom2, json!({"contained": [{"contained": [{}]}]})));
        assert!(check(
            "code.empty() or system.exists()",
            json!({"value": 1})
        ));
        assert!(!check(
            "code.empty() or system.exists()",
            json!({"code": "mg"})
        ));
        assert!(check(
            "(numerator.empty() xor denominator.exists()) and (numerator.exists() or extension.exists())",
            json!({"numerator": {}, "denominator": {}})
        ));
        assert!(check("a.exists() implies b.exists()", json!({})));
        assert!(check("start.hasValue().not() or (b.exists())", json!({})));
        let cp1 = "status = 'active' implies period.start.exists()";
        assert!(check(cp1, json!({"status": "draft"})));
        assert!(!check(cp1, json!({"status": "active"})));
        assert!(check(
            cp1,
            json!({"status": "active", "period": {"start": "2024"}})
        ));
        assert!(check(
            "(status = 'a' or status = 'b').not() implies x.exists()",
            json!({"status": "b"})
        ));
        assert!(!check("status != 'a'", json!({"status": "a"})));
        assert!(compile("x", "status = other").is_none());
    }

    #[test]
    fn unsupported_expressions_are_skipped() {
        assert!(compile("x", "value.empty() or value > 0").is_none());
        assert!(compile("x", "reference.startsWith('#').not()").is_none());
        assert!(compile("per-1", "start <= end").is_some());
    }

    #[test]
    fn periods() {
        let per1 = compile("per-1", "").unwrap();
        assert!(eval(
            &per1,
            &json!({"start": "2024-01-01", "end": "2024-02-01"})
        ));
        assert!(!eval(
            &per1,
            &json!({"start": "2024-03-01", "end": "2024-02-01"})
        ));
        assert!(!eval(
            &per1,
            &json!({"start": "2024-02-01T10:00:00Z", "end": "2024-02-01T09:00:00Z"})
        ));
        assert!(eval(
            &per1,
            &json!({"start": "2024-02-10", "end": "2024-02"})
        ));
        assert!(!eval(
            &per1,
            &json!({"start": "2024-03-10", "end": "2024-02"})
        ));
        assert!(eval(&per1, &json!({"start": "2024-02-10"})));
    }
}
