//! The FHIRPath subset used by the R4 search-parameter expressions (and, through
//! `fhir::locate`, by FHIRPath Patch paths): dotted paths, `|` union, `[n]`, `where(...)`,
//! `resolve() is T`, the `as`/`is` operators and `.as()`/`.is()`/`.ofType()`, `exists()`,
//! `first()`, `last()`, `extension(url)`, `=`/`!=` against literals and `and`/`or`. Choice
//! elements (`value[x]`) are first class: `Observation.value` finds `valueQuantity`,
//! `valueString`, … and remembers the type, so `value as Quantity` keeps only the quantity.
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

const CHOICE_JSON: &str = include_str!("../../fhir-profiles/r4/choice-elements.json");

/// Choice element names and their allowed type codes (generated from the R4 structures).
fn choices() -> &'static BTreeMap<String, Vec<String>> {
    static C: OnceLock<BTreeMap<String, Vec<String>>> = OnceLock::new();
    C.get_or_init(|| serde_json::from_str(CHOICE_JSON).expect("embedded choice-elements.json"))
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// The evaluation context (`$this`, or the resource at the start of a path).
    This,
    /// Navigate to a child element (or, at the root, test the resource type).
    Member(Box<Expr>, String),
    /// A root identifier: a resource type name (or `Resource`/`DomainResource`).
    Root(String),
    /// `%resource`: the resource the expression is evaluated on, whatever the focus.
    Resource,
    Call(Box<Expr>, String, Vec<Expr>),
    Union(Box<Expr>, Box<Expr>),
    As(Box<Expr>, String),
    Is(Box<Expr>, String),
    Eq(Box<Expr>, Box<Expr>, bool),
    /// `x[n]`
    Index(Box<Expr>, usize),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Str(String),
    Bool(bool),
    Num(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Sym(char),
    Ne,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' || c == '$' || c == '%' {
            let st = i;
            i += usize::from(c == '%');
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_' || cs[i] == '$') {
                i += 1;
            }
            out.push(Tok::Ident(cs[st..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let st = i;
            while i < cs.len() && (cs[i].is_ascii_digit() || cs[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(cs[st..i].iter().collect()));
        } else if c == '\'' {
            let mut v = String::new();
            i += 1;
            while i < cs.len() && cs[i] != '\'' {
                if cs[i] == '\\' && i + 1 < cs.len() {
                    i += 1;
                }
                v.push(cs[i]);
                i += 1;
            }
            if i >= cs.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            out.push(Tok::Str(v));
        } else if c == '!' && cs.get(i + 1) == Some(&'=') {
            out.push(Tok::Ne);
            i += 2;
        } else if "().|=,[]".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(out)
}

struct Parser {
    t: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn is_sym(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Sym(c))
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == w)
    }
    fn expect_sym(&mut self, c: char) -> Result<(), String> {
        if self.is_sym(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{c}' at token {}", self.i))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.i += 1;
                Ok(s)
            }
            other => Err(format!("expected a name, found {other:?}")),
        }
    }
    /// A type specifier, optionally qualified (`FHIR.Quantity`).
    fn type_name(&mut self) -> Result<String, String> {
        let mut n = self.ident()?;
        while self.is_sym('.') {
            self.i += 1;
            n = self.ident()?;
        }
        Ok(n)
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.and_expr()?;
        while self.is_word("or") {
            self.i += 1;
            let r = self.and_expr()?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.eq_expr()?;
        while self.is_word("and") {
            self.i += 1;
            let r = self.eq_expr()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn eq_expr(&mut self) -> Result<Expr, String> {
        let l = self.union_expr()?;
        if self.is_sym('=') {
            self.i += 1;
            let r = self.union_expr()?;
            return Ok(Expr::Eq(Box::new(l), Box::new(r), true));
        }
        if self.peek() == Some(&Tok::Ne) {
            self.i += 1;
            let r = self.union_expr()?;
            return Ok(Expr::Eq(Box::new(l), Box::new(r), false));
        }
        Ok(l)
    }
    fn union_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.type_expr()?;
        while self.is_sym('|') {
            self.i += 1;
            let r = self.type_expr()?;
            l = Expr::Union(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn type_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.term()?;
        loop {
            if self.is_word("as") {
                self.i += 1;
                l = Expr::As(Box::new(l), self.type_name()?);
            } else if self.is_word("is") {
                self.i += 1;
                l = Expr::Is(Box::new(l), self.type_name()?);
            } else {
                return Ok(l);
            }
        }
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut e = match self.peek().cloned() {
            Some(Tok::Sym('(')) => {
                self.i += 1;
                let e = self.or_expr()?;
                self.expect_sym(')')?;
                e
            }
            Some(Tok::Str(s)) => {
                self.i += 1;
                Expr::Str(s)
            }
            Some(Tok::Num(n)) => {
                self.i += 1;
                Expr::Num(n)
            }
            Some(Tok::Ident(w)) if w == "true" || w == "false" => {
                self.i += 1;
                Expr::Bool(w == "true")
            }
            Some(Tok::Ident(w)) if w == "$this" => {
                self.i += 1;
                Expr::This
            }
            Some(Tok::Ident(w)) if w == "%resource" => {
                self.i += 1;
                Expr::Resource
            }
            Some(Tok::Ident(w)) if w.starts_with('%') => {
                return Err(format!("environment variable {w} is not supported"))
            }
            Some(Tok::Ident(_)) => self.invocation(Expr::This, true)?,
            other => return Err(format!("unexpected {other:?}")),
        };
        loop {
            if self.is_sym('.') {
                self.i += 1;
                e = self.invocation(e, false)?;
            } else if self.is_sym('[') {
                self.i += 1;
                let n = match self.peek().cloned() {
                    Some(Tok::Num(n)) => {
                        n.parse::<usize>().map_err(|_| format!("bad index {n}"))?
                    }
                    other => return Err(format!("expected an index, found {other:?}")),
                };
                self.i += 1;
                self.expect_sym(']')?;
                e = Expr::Index(Box::new(e), n);
            } else {
                return Ok(e);
            }
        }
    }
    fn invocation(&mut self, on: Expr, first: bool) -> Result<Expr, String> {
        let name = self.ident()?;
        if self.is_sym('(') {
            self.i += 1;
            let mut args = Vec::new();
            if !self.is_sym(')') {
                if matches!(name.as_str(), "as" | "is" | "ofType") {
                    let t = self.type_name()?;
                    args.push(Expr::Str(t));
                } else {
                    args.push(self.or_expr()?);
                    while self.is_sym(',') {
                        self.i += 1;
                        args.push(self.or_expr()?);
                    }
                }
            }
            self.expect_sym(')')?;
            return match name.as_str() {
                "where" | "exists" | "as" | "is" | "ofType" | "resolve" | "first" | "last"
                | "empty" | "not" | "extension" => Ok(Expr::Call(Box::new(on), name, args)),
                _ => Err(format!("function {name}() is not supported")),
            };
        }
        if first && name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Ok(Expr::Root(name));
        }
        Ok(Expr::Member(Box::new(on), name))
    }
}

/// Parse an expression of the supported subset.
pub fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser { t: lex(s)?, i: 0 };
    let e = p.or_expr()?;
    if p.i != p.t.len() {
        return Err(format!("unexpected trailing input at token {}", p.i));
    }
    Ok(e)
}

/// Split a top-level union into its branches.
pub fn union_branches(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::Union(a, b) => {
            let mut v = union_branches(a);
            v.extend(union_branches(b));
            v
        }
        other => vec![other],
    }
}

/// The resource type a path starts at (`Patient.name` → Patient), if any.
pub fn root_type(e: &Expr) -> Option<&str> {
    match e {
        Expr::Root(t) => Some(t),
        Expr::Member(x, _)
        | Expr::Call(x, _, _)
        | Expr::As(x, _)
        | Expr::Is(x, _)
        | Expr::Index(x, _) => root_type(x),
        Expr::Union(a, _) | Expr::And(a, _) | Expr::Or(a, _) | Expr::Eq(a, _, _) => root_type(a),
        _ => None,
    }
}

/// One item of a result collection: a JSON value and, when known, its FHIR type code.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub value: Cow<'a, Value>,
    pub ty: Option<String>,
}

impl<'a> Node<'a> {
    fn borrowed(v: &'a Value, ty: Option<String>) -> Self {
        Node {
            value: Cow::Borrowed(v),
            ty,
        }
    }
    fn owned(v: Value, ty: Option<&str>) -> Self {
        Node {
            value: Cow::Owned(v),
            ty: ty.map(str::to_string),
        }
    }
}

fn boolean<'a>(b: bool) -> Vec<Node<'a>> {
    vec![Node::owned(Value::Bool(b), Some("boolean"))]
}

fn truthy(c: &[Node]) -> Option<bool> {
    match c {
        [] => None,
        [n] => match n.value.as_ref() {
            Value::Bool(b) => Some(*b),
            _ => Some(true),
        },
        _ => Some(true),
    }
}

fn push_values<'a>(out: &mut Vec<Node<'a>>, v: &'a Value, ty: Option<String>) {
    match v {
        Value::Array(a) => {
            for x in a {
                out.push(Node::borrowed(x, ty.clone()));
            }
        }
        Value::Null => {}
        x => out.push(Node::borrowed(x, ty)),
    }
}

/// Does a node's (known) type satisfy a type test? Unknown types are inferred from the JSON.
pub fn has_type(n: &Node, t: &str) -> bool {
    if let Some(ty) = &n.ty {
        return ty.eq_ignore_ascii_case(t);
    }
    match n.value.as_ref() {
        Value::Object(o) => match o.get("resourceType").and_then(Value::as_str) {
            Some(rt) => rt == t || t == "Resource" || t == "DomainResource",
            None => true,
        },
        Value::Bool(_) => t == "boolean",
        Value::String(_) => {
            !matches!(t, "boolean" | "integer" | "decimal")
                && t.starts_with(|c: char| c.is_ascii_lowercase())
        }
        Value::Number(_) => matches!(
            t,
            "integer" | "decimal" | "positiveInt" | "unsignedInt" | "integer64"
        ),
        _ => false,
    }
}

/// The type a reference points to: from `Type/id`, an absolute URL ending in `Type/id`, or `type`.
pub fn reference_target_type(r: &Value) -> Option<String> {
    if let Some(t) = r.get("type").and_then(Value::as_str) {
        return Some(t.to_string());
    }
    let s = r.get("reference").and_then(Value::as_str)?;
    crate::fhir::reference::Reference::parse(s)
        .target_type()
        .map(str::to_string)
}

/// Evaluate `e` with `focus` as the context collection; `resource` is the root resource.
pub fn eval<'a>(e: &Expr, resource: &'a Value, focus: &[Node<'a>]) -> Vec<Node<'a>> {
    match e {
        Expr::This => focus.to_vec(),
        Expr::Resource => vec![Node::borrowed(
            resource,
            resource
                .get("resourceType")
                .and_then(Value::as_str)
                .map(str::to_string),
        )],
        Expr::Root(t) => {
            let rt = resource.get("resourceType").and_then(Value::as_str);
            if rt == Some(t.as_str()) || t == "Resource" || t == "DomainResource" {
                vec![Node::borrowed(resource, rt.map(str::to_string))]
            } else {
                vec![]
            }
        }
        Expr::Member(on, name) => {
            let base = eval(on, resource, focus);
            member(&base, name)
        }
        Expr::Index(x, n) => eval(x, resource, focus)
            .into_iter()
            .skip(*n)
            .take(1)
            .collect(),
        Expr::Union(a, b) => {
            let mut v = eval(a, resource, focus);
            v.extend(eval(b, resource, focus));
            v
        }
        Expr::As(x, t) => eval(x, resource, focus)
            .into_iter()
            .filter(|n| has_type(n, t))
            .collect(),
        Expr::Is(x, t) => {
            let v = eval(x, resource, focus);
            match v.as_slice() {
                [n] => boolean(has_type(n, t)),
                _ => vec![],
            }
        }
        Expr::Eq(a, b, want) => {
            let (l, r) = (eval(a, resource, focus), eval(b, resource, focus));
            if l.is_empty() || r.is_empty() {
                return vec![];
            }
            let same = l.len() == r.len()
                && l.iter()
                    .zip(&r)
                    .all(|(x, y)| match (x.value.as_ref(), y.value.as_ref()) {
                        (Value::Number(p), Value::Number(q)) => p.to_string() == q.to_string(),
                        (p, q) => p == q,
                    });
            boolean(same == *want)
        }
        Expr::And(a, b) => {
            let (l, r) = (
                truthy(&eval(a, resource, focus)),
                truthy(&eval(b, resource, focus)),
            );
            match (l, r) {
                (Some(false), _) | (_, Some(false)) => boolean(false),
                (Some(true), Some(true)) => boolean(true),
                _ => vec![],
            }
        }
        Expr::Or(a, b) => {
            let (l, r) = (
                truthy(&eval(a, resource, focus)),
                truthy(&eval(b, resource, focus)),
            );
            match (l, r) {
                (Some(true), _) | (_, Some(true)) => boolean(true),
                (Some(false), Some(false)) => boolean(false),
                _ => vec![],
            }
        }
        Expr::Str(s) => vec![Node::owned(Value::String(s.clone()), Some("string"))],
        Expr::Bool(b) => boolean(*b),
        Expr::Num(n) => match serde_json::from_str::<Value>(n) {
            Ok(v) => vec![Node::owned(v, Some("decimal"))],
            Err(_) => vec![],
        },
        Expr::Call(on, name, args) => {
            let base = eval(on, resource, focus);
            call(&base, name, args, resource)
        }
    }
}

fn member<'a>(base: &[Node<'a>], name: &str) -> Vec<Node<'a>> {
    let mut out = Vec::new();
    for n in base {
        // Only borrowed nodes are navigated; owned ones are literals and resolve() stubs.
        let Cow::Borrowed(v) = &n.value else { continue };
        let Some(o_b) = v.as_object() else { continue };
        if let Some(child) = o_b.get(name) {
            push_values(&mut out, child, None);
            continue;
        }
        if let Some(types) = choices().get(name) {
            for t in types {
                let mut key = String::with_capacity(name.len() + t.len());
                key.push_str(name);
                let mut cs = t.chars();
                if let Some(f) = cs.next() {
                    key.extend(f.to_uppercase());
                    key.push_str(cs.as_str());
                }
                if let Some(child) = o_b.get(&key) {
                    push_values(&mut out, child, Some(t.clone()));
                }
            }
        }
    }
    out
}

fn call<'a>(base: &[Node<'a>], name: &str, args: &[Expr], resource: &'a Value) -> Vec<Node<'a>> {
    let type_arg = || match args.first() {
        Some(Expr::Str(s)) => s.clone(),
        _ => String::new(),
    };
    match name {
        "where" => {
            let Some(cond) = args.first() else {
                return vec![];
            };
            base.iter()
                .filter(|n| {
                    let r = eval(cond, resource, std::slice::from_ref(*n));
                    truthy(&r) == Some(true)
                })
                .cloned()
                .collect()
        }
        "exists" => match args.first() {
            None => boolean(!base.is_empty()),
            Some(cond) => boolean(
                base.iter()
                    .any(|n| truthy(&eval(cond, resource, std::slice::from_ref(n))) == Some(true)),
            ),
        },
        "empty" => boolean(base.is_empty()),
        "not" => match truthy(base) {
            Some(b) => boolean(!b),
            None => vec![],
        },
        "first" => base.iter().take(1).cloned().collect(),
        "last" => base.last().cloned().into_iter().collect(),
        "extension" => {
            let Some(Expr::Str(url)) = args.first() else {
                return vec![];
            };
            member(base, "extension")
                .into_iter()
                .filter(|n| n.value.get("url").and_then(Value::as_str) == Some(url.as_str()))
                .collect()
        }
        "as" | "ofType" => {
            let t = type_arg();
            base.iter().filter(|n| has_type(n, &t)).cloned().collect()
        }
        "is" => {
            let t = type_arg();
            match base {
                [n] => boolean(has_type(n, &t)),
                _ => vec![],
            }
        }
        "resolve" => base
            .iter()
            .filter_map(|n| {
                let t = reference_target_type(n.value.as_ref())?;
                Some(Node::owned(
                    serde_json::json!({ "resourceType": t }),
                    Some(&t),
                ))
            })
            .collect(),
        _ => vec![],
    }
}

/// Evaluate against a resource.
pub fn evaluate<'a>(e: &Expr, resource: &'a Value) -> Vec<Node<'a>> {
    eval(e, resource, &[Node::borrowed(resource, None)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vals(expr: &str, r: &Value) -> Vec<Value> {
        let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
        evaluate(&e, r)
            .into_iter()
            .map(|n| n.value.into_owned())
            .collect()
    }

    #[test]
    fn every_r4_search_expression_parses() {
        let v: Value = serde_json::from_str(include_str!(
            "../../fhir-profiles/r4/search-parameters.json"
        ))
        .unwrap();
        let (mut n, mut rootless) = (0, vec![]);
        for p in v["parameter"].as_array().unwrap() {
            if let Some(e) = p["expression"].as_str() {
                let parsed = parse(e).unwrap_or_else(|err| panic!("{e}: {err}"));
                for b in union_branches(&parsed) {
                    if root_type(b).is_none() {
                        rootless.push(e.to_string());
                    }
                }
                n += 1;
            }
        }
        assert!(n > 1300, "{n}");
        // The one spec expression written relative to its resource (InsurancePlan-name).
        assert_eq!(rootless, vec!["name | alias", "name | alias"]);
    }

    #[test]
    fn paths_unions_and_roots() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Ng", "given": ["A", "B"]}, {"family": "Li"}]});
        assert_eq!(
            vals("Patient.name.family", &p),
            vec![json!("Ng"), json!("Li")]
        );
        assert_eq!(
            vals("Patient.name.given | Practitioner.name.given", &p),
            vec![json!("A"), json!("B")]
        );
        assert!(vals("Practitioner.name", &p).is_empty());
        assert_eq!(vals("Resource.resourceType", &p), vec![json!("Patient")]);
    }

    #[test]
    fn choice_types_and_as() {
        let o = json!({"resourceType": "Observation", "valueQuantity": {"value": 5.4, "unit": "mg"}, "effectiveDateTime": "2020-01-01"});
        assert_eq!(
            vals("(Observation.value as Quantity).value", &o),
            vec![json!(5.4)]
        );
        assert!(vals("(Observation.value as CodeableConcept)", &o).is_empty());
        assert_eq!(vals("Observation.effective", &o), vec![json!("2020-01-01")]);
        let c = json!({"resourceType": "Condition", "abatementAge": {"value": 40}});
        assert_eq!(vals("Condition.abatement.as(Age)", &c).len(), 1);
        assert!(vals("Condition.abatement.as(Range)", &c).is_empty());
        // linkId is not a choice of `link`.
        let q = json!({"resourceType": "Patient", "linkId": "x"});
        assert!(vals("Patient.link", &q).is_empty());
    }

    #[test]
    fn where_resolve_and_system() {
        let t = json!({"resourceType": "CarePlan", "subject": {"reference": "Patient/1"}, "activity": [{"reference": {"reference": "Group/9"}}]});
        assert_eq!(
            vals("CarePlan.subject.where(resolve() is Patient)", &t),
            vec![json!({"reference": "Patient/1"})]
        );
        assert!(vals("CarePlan.subject.where(resolve() is Group)", &t).is_empty());
        let p = json!({"resourceType": "Patient", "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]});
        assert_eq!(
            vals("Patient.telecom.where(system='email')", &p),
            vec![json!({"system": "email", "value": "a@b"})]
        );
        let d = json!({"resourceType": "Patient", "deceasedBoolean": false});
        assert_eq!(
            vals(
                "Patient.deceased.exists() and Patient.deceased != false",
                &d
            ),
            vec![json!(false)]
        );
        let d2 = json!({"resourceType": "Patient", "deceasedDateTime": "2020"});
        assert_eq!(
            vals(
                "Patient.deceased.exists() and Patient.deceased != false",
                &d2
            ),
            vec![json!(true)]
        );
    }
}
