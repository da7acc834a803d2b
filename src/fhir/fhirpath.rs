//! The one FHIRPath engine (pure, over serde_json values): the R4 search-parameter
//! expressions, FHIRPath Patch paths (through `fhir::locate`) and every error-level R4
//! invariant (through `validate::invariant`). Collections semantics, three-valued boolean
//! logic, `=`/`!=`/`~`/`!~`/`<`/`>`/`<=`/`>=` (dates and times with the precision rule: values
//! of different precision compare as empty; quantities of the same unit), `in`/`contains`,
//! `|`, arithmetic and string concatenation, `is`/`as`, `%resource`/`%rootResource`/
//! `%context`/`%ucum`/`$this`/`$index`/`$total`, and the functions the invariants and search
//! parameters use (`where`, `select`, `all`, `exists`, `iif`, `ofType`, `resolve`, string,
//! math, tree and utility functions). Choice elements (`value[x]`) are first class:
//! `Observation.value` finds `valueQuantity`, `valueString`, … and remembers the type.
//! Evaluation errors (a string function on several items, a bad regex) yield empty.
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{OnceLock, RwLock};

use serde_json::{Number, Value};

const CHOICE_JSON: &str = include_str!("../../fhir-profiles/r4/choice-elements.json");

/// Choice element names and their allowed type codes (generated from the R4 structures).
fn choices() -> &'static BTreeMap<String, Vec<String>> {
    static C: OnceLock<BTreeMap<String, Vec<String>>> = OnceLock::new();
    C.get_or_init(|| serde_json::from_str(CHOICE_JSON).expect("embedded choice-elements.json"))
}

/// Binary operators other than `=`/`!=`, `and`, `or` and `|` (which have their own variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Xor,
    Implies,
    Equiv,
    NotEquiv,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Contains,
    Add,
    Sub,
    Mul,
    Div,
    IntDiv,
    Mod,
    Concat,
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
    /// Another environment variable (`%rootResource`, `%context`, `%ucum`, `$index`, …).
    Var(String),
    Call(Box<Expr>, String, Vec<Expr>),
    Union(Box<Expr>, Box<Expr>),
    As(Box<Expr>, String),
    Is(Box<Expr>, String),
    Eq(Box<Expr>, Box<Expr>, bool),
    /// `x[n]`
    Index(Box<Expr>, usize),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Bin(Op, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    Str(String),
    Bool(bool),
    Num(String),
    /// `@2020-01-01`, `@2020-01-01T10:00:00Z`, `@T10:00`.
    Temporal(String),
    /// `5 'mg'`, `3 days`.
    Quantity(String, String),
    /// `{}`
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A backtick-delimited identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(String),
    Temporal(String),
    Sym(&'static str),
}

const SYMS: &[&str] = &[
    "!=", "!~", "<=", ">=", "(", ")", ".", "|", "=", ",", "[", "]", "~", "<", ">", "+", "-", "*",
    "/", "&", "{", "}",
];

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && cs.get(i + 1) == Some(&'/') {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && cs.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < cs.len() && !(cs[i] == '*' && cs[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c.is_alphabetic() || c == '_' || c == '$' || c == '%' {
            let st = i;
            i += 1;
            if c == '%' && cs.get(i) == Some(&'`') {
                // %`vs-name`
                let end = cs[i + 1..]
                    .iter()
                    .position(|x| *x == '`')
                    .ok_or("unterminated `")?;
                out.push(Tok::Ident(
                    std::iter::once('%')
                        .chain(cs[i + 1..i + 1 + end].iter().copied())
                        .collect(),
                ));
                i += end + 2;
                continue;
            }
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(cs[st..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let st = i;
            while i < cs.len() && cs[i].is_ascii_digit() {
                i += 1;
            }
            if cs.get(i) == Some(&'.') && cs.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < cs.len() && cs[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push(Tok::Num(cs[st..i].iter().collect()));
        } else if c == '@' {
            let st = i + 1;
            i += 1;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || "-:.+".contains(cs[i])) {
                i += 1;
            }
            out.push(Tok::Temporal(cs[st..i].iter().collect()));
        } else if c == '\'' || c == '`' {
            let mut v = String::new();
            i += 1;
            while i < cs.len() && cs[i] != c {
                if cs[i] == '\\' && i + 1 < cs.len() {
                    i += 1;
                    match cs[i] {
                        'n' => v.push('\n'),
                        't' => v.push('\t'),
                        'r' => v.push('\r'),
                        'f' => v.push('\u{c}'),
                        'u' if i + 4 < cs.len() => {
                            let hex: String = cs[i + 1..i + 5].iter().collect();
                            let code = u32::from_str_radix(&hex, 16)
                                .map_err(|_| format!("bad escape \\u{hex}"))?;
                            v.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                            i += 4;
                        }
                        other => v.push(other),
                    }
                } else {
                    v.push(cs[i]);
                }
                i += 1;
            }
            if i >= cs.len() {
                return Err("unterminated string".into());
            }
            i += 1;
            out.push(if c == '`' {
                Tok::Quoted(v)
            } else {
                Tok::Str(v)
            });
        } else {
            let rest: String = cs[i..cs.len().min(i + 2)].iter().collect();
            let Some(sym) = SYMS.iter().find(|s| rest.starts_with(**s)) else {
                return Err(format!("unexpected character '{c}'"));
            };
            out.push(Tok::Sym(sym));
            i += sym.len();
        }
    }
    Ok(out)
}

struct Parser {
    t: Vec<Tok>,
    i: usize,
    /// Nesting of parentheses and function arguments (bounded: the parser is recursive and
    /// FHIRPath Patch paths come from clients).
    depth: usize,
}

/// The deepest nesting the parser accepts.
const MAX_DEPTH: usize = 64;

fn bin(op: Op, l: Expr, r: Expr) -> Expr {
    Expr::Bin(op, Box::new(l), Box::new(r))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn is_sym(&self, c: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(s)) if *s == c)
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == w)
    }
    fn eat_sym(&mut self, c: &str) -> bool {
        let y = self.is_sym(c);
        self.i += usize::from(y);
        y
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let y = self.is_word(w);
        self.i += usize::from(y);
        y
    }
    fn expect_sym(&mut self, c: &str) -> Result<(), String> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at token {}", self.i))
        }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s) | Tok::Quoted(s)) => {
                self.i += 1;
                Ok(s)
            }
            other => Err(format!("expected a name, found {other:?}")),
        }
    }
    /// A type specifier, optionally qualified (`FHIR.Quantity`, `System.Boolean`).
    fn type_name(&mut self) -> Result<String, String> {
        let mut n = self.ident()?;
        while self.is_sym(".") {
            self.i += 1;
            n = self.ident()?;
        }
        Ok(n)
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nested deeper than {MAX_DEPTH}"));
        }
        let e = self.implies_expr();
        self.depth -= 1;
        e
    }
    fn implies_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.or_expr()?;
        while self.eat_word("implies") {
            let r = self.or_expr()?;
            l = bin(Op::Implies, l, r);
        }
        Ok(l)
    }
    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.and_expr()?;
        loop {
            if self.eat_word("or") {
                let r = self.and_expr()?;
                l = Expr::Or(Box::new(l), Box::new(r));
            } else if self.eat_word("xor") {
                let r = self.and_expr()?;
                l = bin(Op::Xor, l, r);
            } else {
                return Ok(l);
            }
        }
    }
    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.membership()?;
        while self.eat_word("and") {
            let r = self.membership()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn membership(&mut self) -> Result<Expr, String> {
        let mut l = self.eq_expr()?;
        loop {
            if self.eat_word("in") {
                let r = self.eq_expr()?;
                l = bin(Op::In, l, r);
            } else if self.eat_word("contains") {
                let r = self.eq_expr()?;
                l = bin(Op::Contains, l, r);
            } else {
                return Ok(l);
            }
        }
    }
    fn eq_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.ineq_expr()?;
        loop {
            if self.eat_sym("=") {
                l = Expr::Eq(Box::new(l), Box::new(self.ineq_expr()?), true);
            } else if self.eat_sym("!=") {
                l = Expr::Eq(Box::new(l), Box::new(self.ineq_expr()?), false);
            } else if self.eat_sym("~") {
                l = bin(Op::Equiv, l, self.ineq_expr()?);
            } else if self.eat_sym("!~") {
                l = bin(Op::NotEquiv, l, self.ineq_expr()?);
            } else {
                return Ok(l);
            }
        }
    }
    fn ineq_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.union_expr()?;
        loop {
            let op = if self.eat_sym("<=") {
                Op::Le
            } else if self.eat_sym(">=") {
                Op::Ge
            } else if self.eat_sym("<") {
                Op::Lt
            } else if self.eat_sym(">") {
                Op::Gt
            } else {
                return Ok(l);
            };
            l = bin(op, l, self.union_expr()?);
        }
    }
    fn union_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.type_expr()?;
        while self.eat_sym("|") {
            let r = self.type_expr()?;
            l = Expr::Union(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn type_expr(&mut self) -> Result<Expr, String> {
        let mut l = self.additive()?;
        loop {
            if self.eat_word("as") {
                l = Expr::As(Box::new(l), self.type_name()?);
            } else if self.eat_word("is") {
                l = Expr::Is(Box::new(l), self.type_name()?);
            } else {
                return Ok(l);
            }
        }
    }
    fn additive(&mut self) -> Result<Expr, String> {
        let mut l = self.multiplicative()?;
        loop {
            let op = if self.eat_sym("+") {
                Op::Add
            } else if self.eat_sym("-") {
                Op::Sub
            } else if self.eat_sym("&") {
                Op::Concat
            } else {
                return Ok(l);
            };
            l = bin(op, l, self.multiplicative()?);
        }
    }
    fn multiplicative(&mut self) -> Result<Expr, String> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                Op::Mul
            } else if self.eat_sym("/") {
                Op::Div
            } else if self.eat_word("div") {
                Op::IntDiv
            } else if self.eat_word("mod") {
                Op::Mod
            } else {
                return Ok(l);
            };
            l = bin(op, l, self.unary()?);
        }
    }
    fn unary(&mut self) -> Result<Expr, String> {
        let mut neg = false;
        loop {
            if self.eat_sym("-") {
                neg = !neg;
            } else if !self.eat_sym("+") {
                break;
            }
        }
        let t = self.term()?;
        Ok(if neg { Expr::Neg(Box::new(t)) } else { t })
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut e = match self.peek().cloned() {
            Some(Tok::Sym("(")) => {
                self.i += 1;
                let e = self.expr()?;
                self.expect_sym(")")?;
                e
            }
            Some(Tok::Sym("{")) => {
                self.i += 1;
                self.expect_sym("}")?;
                Expr::Empty
            }
            Some(Tok::Str(s)) => {
                self.i += 1;
                Expr::Str(s)
            }
            Some(Tok::Temporal(s)) => {
                self.i += 1;
                Expr::Temporal(s)
            }
            Some(Tok::Num(n)) => {
                self.i += 1;
                match self.peek().cloned() {
                    Some(Tok::Str(u)) => {
                        self.i += 1;
                        Expr::Quantity(n, u)
                    }
                    Some(Tok::Ident(u)) if is_calendar_unit(&u) => {
                        self.i += 1;
                        Expr::Quantity(n, u)
                    }
                    _ => Expr::Num(n),
                }
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
            Some(Tok::Ident(w)) if w.starts_with('%') || w.starts_with('$') => {
                self.i += 1;
                Expr::Var(w)
            }
            Some(Tok::Ident(_) | Tok::Quoted(_)) => self.invocation(Expr::This, true)?,
            other => return Err(format!("unexpected {other:?}")),
        };
        loop {
            if self.eat_sym(".") {
                e = self.invocation(e, false)?;
            } else if self.eat_sym("[") {
                let n = match self.peek().cloned() {
                    Some(Tok::Num(n)) => {
                        n.parse::<usize>().map_err(|_| format!("bad index {n}"))?
                    }
                    other => return Err(format!("expected an index, found {other:?}")),
                };
                self.i += 1;
                self.expect_sym("]")?;
                e = Expr::Index(Box::new(e), n);
            } else {
                return Ok(e);
            }
        }
    }
    fn invocation(&mut self, on: Expr, first: bool) -> Result<Expr, String> {
        let quoted = matches!(self.peek(), Some(Tok::Quoted(_)));
        let name = self.ident()?;
        if !quoted && self.is_sym("(") {
            self.i += 1;
            let mut args = Vec::new();
            if !self.is_sym(")") {
                if matches!(name.as_str(), "as" | "is" | "ofType") {
                    args.push(Expr::Str(self.type_name()?));
                } else {
                    args.push(self.expr()?);
                    while self.eat_sym(",") {
                        args.push(self.expr()?);
                    }
                }
            }
            self.expect_sym(")")?;
            if !FUNCTIONS.contains(&name.as_str()) {
                return Err(format!("function {name}() is not supported"));
            }
            return Ok(Expr::Call(Box::new(on), name, args));
        }
        if first && !quoted && name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Ok(Expr::Root(name));
        }
        Ok(Expr::Member(Box::new(on), name))
    }
}

fn is_calendar_unit(u: &str) -> bool {
    matches!(
        u.trim_end_matches('s'),
        "year" | "month" | "week" | "day" | "hour" | "minute" | "second" | "millisecond"
    )
}

/// The functions the engine implements.
const FUNCTIONS: &[&str] = &[
    "empty",
    "exists",
    "all",
    "allTrue",
    "anyTrue",
    "allFalse",
    "anyFalse",
    "subsetOf",
    "supersetOf",
    "count",
    "distinct",
    "isDistinct",
    "where",
    "select",
    "repeat",
    "ofType",
    "as",
    "is",
    "single",
    "first",
    "last",
    "tail",
    "skip",
    "take",
    "intersect",
    "exclude",
    "union",
    "combine",
    "iif",
    "toBoolean",
    "convertsToBoolean",
    "toInteger",
    "convertsToInteger",
    "toDecimal",
    "convertsToDecimal",
    "toString",
    "convertsToString",
    "toDate",
    "toDateTime",
    "indexOf",
    "substring",
    "startsWith",
    "endsWith",
    "contains",
    "upper",
    "lower",
    "replace",
    "matches",
    "replaceMatches",
    "length",
    "toChars",
    "abs",
    "ceiling",
    "floor",
    "round",
    "truncate",
    "children",
    "descendants",
    "trace",
    "now",
    "today",
    "timeOfDay",
    "not",
    "hasValue",
    "extension",
    "resolve",
    "htmlChecks",
    "getValue",
];

/// Parse an expression.
pub fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        t: lex(s)?,
        i: 0,
        depth: 0,
    };
    let e = p.expr()?;
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
        Expr::Union(a, _)
        | Expr::And(a, _)
        | Expr::Or(a, _)
        | Expr::Eq(a, _, _)
        | Expr::Bin(_, a, _) => root_type(a),
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
    fn v(&self) -> &Value {
        self.value.as_ref()
    }
    fn same_item(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            (Cow::Borrowed(a), Cow::Borrowed(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

type Coll<'a> = Vec<Node<'a>>;

// Computed booleans, numbers and strings carry no type name (it is inferred from the JSON
// value), so producing one allocates nothing but its collection.

fn boolean<'a>(b: bool) -> Coll<'a> {
    vec![Node::owned(Value::Bool(b), None)]
}
fn integer<'a>(i: i64) -> Coll<'a> {
    vec![Node::owned(Value::Number(i.into()), None)]
}
fn decimal<'a>(f: f64) -> Coll<'a> {
    Number::from_f64(f)
        .map(|n| vec![Node::owned(Value::Number(n), None)])
        .unwrap_or_default()
}
fn string<'a>(s: String) -> Coll<'a> {
    vec![Node::owned(Value::String(s), None)]
}

/// The boolean value of a collection where one is expected: empty is unknown; a single
/// boolean is itself; any other single item (or several) counts as true.
fn truthy(c: &[Node]) -> Option<bool> {
    match c {
        [] => None,
        [n] => match n.v() {
            Value::Bool(b) => Some(*b),
            _ => Some(true),
        },
        _ => Some(true),
    }
}

fn tri<'a>(b: Option<bool>) -> Coll<'a> {
    b.map(boolean).unwrap_or_default()
}

/// Does a node's (known) type satisfy a type test? Unknown types are inferred from the JSON.
pub fn has_type(n: &Node, t: &str) -> bool {
    if let Some(ty) = &n.ty {
        if ty.eq_ignore_ascii_case(t) {
            return true;
        }
        // FHIR primitive specialisations and System types.
        return match t {
            "Resource" | "DomainResource" => n.v().get("resourceType").is_some(),
            "string" | "String" => matches!(
                ty.as_str(),
                "code" | "id" | "markdown" | "uri" | "url" | "canonical" | "oid" | "uuid"
            ),
            "uri" => matches!(ty.as_str(), "url" | "canonical" | "oid" | "uuid"),
            "integer" | "Integer" => matches!(ty.as_str(), "positiveInt" | "unsignedInt"),
            "Quantity" => matches!(
                ty.as_str(),
                "SimpleQuantity" | "Age" | "Distance" | "Duration" | "Count" | "MoneyQuantity"
            ),
            "DateTime" => ty == "instant",
            _ => false,
        };
    }
    match n.v() {
        Value::Object(o) => match o.get("resourceType").and_then(Value::as_str) {
            Some(rt) => rt == t || t == "Resource" || t == "DomainResource",
            None => true,
        },
        Value::Bool(_) => t.eq_ignore_ascii_case("boolean"),
        Value::String(_) => {
            !matches!(t, "boolean" | "integer" | "decimal")
                && (t.starts_with(|c: char| c.is_ascii_lowercase())
                    || matches!(t, "String" | "Date" | "DateTime" | "Time"))
        }
        Value::Number(_) => matches!(
            t,
            "integer"
                | "decimal"
                | "positiveInt"
                | "unsignedInt"
                | "integer64"
                | "Integer"
                | "Decimal"
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

/// What an expression is evaluated against: `%resource`, `%rootResource` (the container of a
/// contained resource, else the resource), `%context` (the element an invariant is on) and the
/// Bundle whose entries `resolve()` looks in.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub resource: &'a Value,
    pub root: &'a Value,
    pub context: Option<&'a Value>,
    pub bundle: Option<&'a Value>,
}

impl<'a> Env<'a> {
    /// A standalone resource.
    pub fn new(resource: &'a Value) -> Self {
        Env {
            resource,
            root: resource,
            context: None,
            bundle: None,
        }
    }
}

/// Evaluate `e` with `focus` as the context collection; `resource` is the root resource.
pub fn eval<'a>(e: &Expr, resource: &'a Value, focus: &[Node<'a>]) -> Vec<Node<'a>> {
    eval_in(e, &Env::new(resource), focus)
}

/// Evaluate against a resource.
pub fn evaluate<'a>(e: &Expr, resource: &'a Value) -> Vec<Node<'a>> {
    eval(e, resource, &[Node::borrowed(resource, None)])
}

/// Evaluate `e` in an environment, with `focus` as the context collection (`$this`).
pub fn eval_in<'a>(e: &Expr, env: &Env<'a>, focus: &[Node<'a>]) -> Vec<Node<'a>> {
    Eval { env, index: None }.ev(e, focus)
}

/// A node for a value whose type is known (`%context` of an invariant).
pub fn typed<'a>(v: &'a Value, ty: Option<&str>) -> Node<'a> {
    Node::borrowed(v, ty.map(str::to_string))
}

struct Eval<'e, 'a> {
    env: &'e Env<'a>,
    /// `$index` inside an iterating function.
    index: Option<usize>,
}

impl<'a> Eval<'_, 'a> {
    fn ev(&self, e: &Expr, focus: &[Node<'a>]) -> Coll<'a> {
        match e {
            Expr::This => focus.to_vec(),
            Expr::Resource => vec![resource_node(self.env.resource)],
            Expr::Var(v) => self.var(v),
            Expr::Root(t) => {
                // A type name at the start of a path: the focus when it is a resource
                // (`Patient.name` on a Patient), else the resource the expression is about.
                let n = match focus {
                    [n] if n.v().get("resourceType").is_some() => Node {
                        value: n.value.clone(),
                        ty: n
                            .v()
                            .get("resourceType")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    },
                    _ => resource_node(self.env.resource),
                };
                let rt = n.v().get("resourceType").and_then(Value::as_str);
                if rt == Some(t.as_str()) || t == "Resource" || t == "DomainResource" {
                    vec![n]
                } else {
                    vec![]
                }
            }
            Expr::Member(on, name) => match on.as_ref() {
                Expr::This => member(focus, name),
                on => member(&self.ev(on, focus), name),
            },
            Expr::Index(x, n) => self.ev(x, focus).into_iter().skip(*n).take(1).collect(),
            Expr::Union(a, b) => union(self.ev(a, focus), self.ev(b, focus)),
            Expr::As(x, t) => match self.ev(x, focus).as_slice() {
                [n] if has_type(n, t) => vec![n.clone()],
                [_] | [] => vec![],
                many => many.iter().filter(|n| has_type(n, t)).cloned().collect(),
            },
            Expr::Is(x, t) => match self.ev(x, focus).as_slice() {
                [n] => boolean(has_type(n, t)),
                // As the HL7 reference validator: `is` on an empty collection is false.
                [] => boolean(false),
                _ => vec![],
            },
            Expr::Eq(a, b, want) => {
                let (l, r) = (self.ev(a, focus), self.ev(b, focus));
                match coll_eq(&l, &r) {
                    Some(same) => boolean(same == *want),
                    None => vec![],
                }
            }
            Expr::And(a, b) => {
                let l = truthy(&self.ev(a, focus));
                if l == Some(false) {
                    return boolean(false);
                }
                match (l, truthy(&self.ev(b, focus))) {
                    (_, Some(false)) => boolean(false),
                    (Some(true), Some(true)) => boolean(true),
                    _ => vec![],
                }
            }
            Expr::Or(a, b) => {
                let l = truthy(&self.ev(a, focus));
                if l == Some(true) {
                    return boolean(true);
                }
                match (l, truthy(&self.ev(b, focus))) {
                    (_, Some(true)) => boolean(true),
                    (Some(false), Some(false)) => boolean(false),
                    _ => vec![],
                }
            }
            Expr::Bin(op, a, b) => self.binary(*op, a, b, focus),
            Expr::Neg(x) => match self.ev(x, focus).as_slice() {
                [n] => match num(n.v()) {
                    Some(Num::I(i)) => i.checked_neg().map(integer).unwrap_or_default(),
                    Some(Num::F(f)) => decimal(-f),
                    None => match quantity(n) {
                        Some(q) => vec![Node::owned(
                            quantity_value(-q.value, q.unit, q.code),
                            Some("Quantity"),
                        )],
                        None => vec![],
                    },
                },
                _ => vec![],
            },
            Expr::Str(s) => string(s.clone()),
            Expr::Bool(b) => boolean(*b),
            Expr::Num(n) => match serde_json::from_str::<Value>(n) {
                Ok(v) => vec![Node::owned(v, None)],
                Err(_) => vec![],
            },
            Expr::Temporal(s) => {
                let (s, ty) = match s.strip_prefix('T') {
                    Some(t) => (t, "time"),
                    None if s.contains('T') => (s.as_str(), "dateTime"),
                    None => (s.as_str(), "date"),
                };
                vec![Node::owned(Value::String(s.to_string()), Some(ty))]
            }
            Expr::Quantity(n, u) => match serde_json::from_str::<Value>(n) {
                Ok(v) => vec![Node::owned(
                    serde_json::json!({"value": v, "unit": u, "system": UCUM, "code": u}),
                    Some("Quantity"),
                )],
                Err(_) => vec![],
            },
            Expr::Empty => vec![],
            Expr::Call(on, name, args) => self.call(on, name, args, focus),
        }
    }

    fn var(&self, v: &str) -> Coll<'a> {
        match v {
            "%rootResource" => vec![resource_node(self.env.root)],
            "%context" => match self.env.context {
                Some(c) => vec![Node::borrowed(c, None)],
                None => vec![resource_node(self.env.resource)],
            },
            "%ucum" => string(UCUM.into()),
            "%sct" => string("http://snomed.info/sct".into()),
            "%loinc" => string("http://loinc.org".into()),
            "$index" => self.index.map(|i| integer(i as i64)).unwrap_or_default(),
            _ => vec![],
        }
    }

    fn binary(&self, op: Op, a: &Expr, b: &Expr, focus: &[Node<'a>]) -> Coll<'a> {
        let l = self.ev(a, focus);
        match op {
            Op::Implies => {
                let lt = truthy(&l);
                if lt == Some(false) {
                    return boolean(true);
                }
                let rt = truthy(&self.ev(b, focus));
                return match (lt, rt) {
                    (_, Some(true)) => boolean(true),
                    (Some(true), r) => tri(r),
                    _ => vec![],
                };
            }
            Op::Xor => {
                let (x, y) = (truthy(&l), truthy(&self.ev(b, focus)));
                return match (x, y) {
                    (Some(x), Some(y)) => boolean(x != y),
                    _ => vec![],
                };
            }
            _ => {}
        }
        let r = self.ev(b, focus);
        match op {
            Op::Equiv | Op::NotEquiv => {
                let same = l.len() == r.len()
                    && (l.is_empty() || {
                        let mut used = vec![false; r.len()];
                        l.iter().all(|x| {
                            let hit = r
                                .iter()
                                .enumerate()
                                .find(|(j, y)| !used[*j] && equivalent(x, y));
                            if let Some((j, _)) = hit {
                                used[j] = true;
                            }
                            hit.is_some()
                        })
                    });
                boolean(same == (op == Op::Equiv))
            }
            Op::Lt | Op::Gt | Op::Le | Op::Ge => match (l.as_slice(), r.as_slice()) {
                ([x], [y]) => match compare(x, y) {
                    Some(o) => boolean(match op {
                        Op::Lt => o == Ordering::Less,
                        Op::Gt => o == Ordering::Greater,
                        Op::Le => o != Ordering::Greater,
                        _ => o != Ordering::Less,
                    }),
                    None => vec![],
                },
                _ => vec![],
            },
            Op::In | Op::Contains => {
                let (item, list) = if op == Op::In { (l, r) } else { (r, l) };
                match item.as_slice() {
                    [x] => boolean(list.iter().any(|y| item_eq(x, y) == Some(true))),
                    _ => vec![],
                }
            }
            Op::Concat => {
                let s = |c: &Coll| match c.as_slice() {
                    [n] => Some(to_string(n).unwrap_or_default()),
                    [] => Some(String::new()),
                    _ => None,
                };
                match (s(&l), s(&r)) {
                    (Some(x), Some(y)) => string(x + &y),
                    _ => vec![],
                }
            }
            _ => match (l.as_slice(), r.as_slice()) {
                ([x], [y]) => arithmetic(op, x, y),
                _ => vec![],
            },
        }
    }

    fn call(&self, on: &Expr, name: &str, args: &[Expr], focus: &[Node<'a>]) -> Coll<'a> {
        let base = self.ev(on, focus);
        // Arguments of non-iterating functions are evaluated against the outer focus.
        let arg = |i: usize| args.get(i).map(|a| self.ev(a, focus));
        let type_arg = || match args.first() {
            Some(Expr::Str(s)) => s.as_str(),
            _ => "",
        };
        let per_item = |i: usize, n: &Node<'a>, e: &Expr| {
            Eval {
                env: self.env,
                index: Some(i),
            }
            .ev(e, std::slice::from_ref(n))
        };
        let single_str = || match base.as_slice() {
            [n] => to_string(n),
            _ => None,
        };
        let str_arg = |i: usize| match arg(i).as_deref() {
            Some([n]) => to_string(n),
            _ => None,
        };
        match name {
            "empty" => boolean(base.is_empty()),
            "exists" => match args.first() {
                None => boolean(!base.is_empty()),
                Some(c) => boolean(
                    base.iter()
                        .enumerate()
                        .any(|(i, n)| truthy(&per_item(i, n, c)) == Some(true)),
                ),
            },
            "all" => match args.first() {
                None => boolean(true),
                Some(c) => boolean(
                    base.iter()
                        .enumerate()
                        .all(|(i, n)| truthy(&per_item(i, n, c)) == Some(true)),
                ),
            },
            "allTrue" => boolean(base.iter().all(|n| n.v() == &Value::Bool(true))),
            "anyTrue" => boolean(base.iter().any(|n| n.v() == &Value::Bool(true))),
            "allFalse" => boolean(base.iter().all(|n| n.v() == &Value::Bool(false))),
            "anyFalse" => boolean(base.iter().any(|n| n.v() == &Value::Bool(false))),
            "subsetOf" | "supersetOf" => {
                let other = arg(0).unwrap_or_default();
                let (small, big) = if name == "subsetOf" {
                    (&base, &other)
                } else {
                    (&other, &base)
                };
                boolean(small.iter().all(|x| contains_item(big, x)))
            }
            "count" => integer(base.len() as i64),
            "distinct" => distinct(base),
            "isDistinct" => {
                let n = base.len();
                boolean(distinct(base).len() == n)
            }
            "where" => {
                let Some(c) = args.first() else {
                    return vec![];
                };
                base.iter()
                    .enumerate()
                    .filter(|(i, n)| truthy(&per_item(*i, n, c)) == Some(true))
                    .map(|(_, n)| n.clone())
                    .collect()
            }
            "select" => {
                let Some(c) = args.first() else {
                    return vec![];
                };
                base.iter()
                    .enumerate()
                    .flat_map(|(i, n)| per_item(i, n, c))
                    .collect()
            }
            "repeat" => {
                let Some(c) = args.first() else {
                    return vec![];
                };
                let mut out: Coll<'a> = Vec::new();
                let mut todo = base;
                while !todo.is_empty() && out.len() < 10_000 {
                    let mut next = Vec::new();
                    for (i, n) in todo.iter().enumerate() {
                        for x in per_item(i, n, c) {
                            if !contains_item(&out, &x) {
                                out.push(x.clone());
                                next.push(x);
                            }
                        }
                    }
                    todo = next;
                }
                out
            }
            // `as()` on several items filters them, as the HL7 engine does (dom-3 relies on
            // `descendants().as(canonical)`).
            "ofType" | "as" => base
                .into_iter()
                .filter(|n| has_type(n, type_arg()))
                .collect(),
            "is" => match base.as_slice() {
                [n] => boolean(has_type(n, type_arg())),
                [] => boolean(false),
                _ => vec![],
            },
            "single" => match base.len() {
                1 => base,
                _ => vec![],
            },
            "first" => base.into_iter().take(1).collect(),
            "last" => base.into_iter().last().into_iter().collect(),
            "tail" => base.into_iter().skip(1).collect(),
            "skip" | "take" => {
                let n = match arg(0).as_deref() {
                    Some([n]) => n.v().as_i64().unwrap_or(0).max(0) as usize,
                    _ => return vec![],
                };
                if name == "skip" {
                    base.into_iter().skip(n).collect()
                } else {
                    base.into_iter().take(n).collect()
                }
            }
            "intersect" => {
                let other = arg(0).unwrap_or_default();
                distinct(
                    base.into_iter()
                        .filter(|x| contains_item(&other, x))
                        .collect(),
                )
            }
            "exclude" => {
                let other = arg(0).unwrap_or_default();
                base.into_iter()
                    .filter(|x| !contains_item(&other, x))
                    .collect()
            }
            "union" => union(base, arg(0).unwrap_or_default()),
            "combine" => {
                let mut v = base;
                v.extend(arg(0).unwrap_or_default());
                v
            }
            "iif" => {
                // The criterion and results are evaluated on the function's input.
                let sub = |e: &Expr| self.ev(e, &base);
                let Some(c) = args.first() else {
                    return vec![];
                };
                if truthy(&sub(c)) == Some(true) {
                    args.get(1).map(sub).unwrap_or_default()
                } else {
                    args.get(2).map(sub).unwrap_or_default()
                }
            }
            "toBoolean" | "convertsToBoolean" => {
                let b = match base.as_slice() {
                    [n] => match n.v() {
                        Value::Bool(b) => Some(*b),
                        Value::String(s) => match s.to_ascii_lowercase().as_str() {
                            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
                            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
                            _ => None,
                        },
                        Value::Number(x) => match x.to_string().as_str() {
                            "1" | "1.0" => Some(true),
                            "0" | "0.0" => Some(false),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => return vec![],
                };
                if name == "convertsToBoolean" {
                    boolean(b.is_some())
                } else {
                    tri(b)
                }
            }
            "toInteger" | "convertsToInteger" => {
                let i = match base.as_slice() {
                    [n] => match n.v() {
                        Value::Bool(b) => Some(i64::from(*b)),
                        Value::String(s) => s.trim().parse::<i64>().ok(),
                        Value::Number(x) => x.as_i64(),
                        _ => None,
                    },
                    _ => return vec![],
                };
                if name == "convertsToInteger" {
                    boolean(i.is_some())
                } else {
                    i.map(integer).unwrap_or_default()
                }
            }
            "toDecimal" | "convertsToDecimal" => {
                let f = match base.as_slice() {
                    [n] => match n.v() {
                        Value::Bool(b) => Some(f64::from(u8::from(*b))),
                        Value::String(s) => s.trim().parse::<f64>().ok(),
                        Value::Number(x) => x.as_f64(),
                        _ => None,
                    },
                    _ => return vec![],
                };
                if name == "convertsToDecimal" {
                    boolean(f.is_some())
                } else {
                    f.map(decimal).unwrap_or_default()
                }
            }
            "toString" | "convertsToString" => match base.as_slice() {
                [n] => match (to_string(n), name) {
                    (s, "convertsToString") => boolean(s.is_some()),
                    (Some(s), _) => string(s),
                    (None, _) => vec![],
                },
                _ => vec![],
            },
            "toDate" | "toDateTime" => match single_str() {
                Some(s) if Temporal::parse(&s).is_some() => vec![Node::owned(
                    Value::String(s),
                    Some(if name == "toDate" { "date" } else { "dateTime" }),
                )],
                _ => vec![],
            },
            "indexOf" => match (single_str(), str_arg(0)) {
                (Some(s), Some(sub)) => {
                    integer(s.find(&sub).map_or(-1, |b| s[..b].chars().count() as i64))
                }
                _ => vec![],
            },
            "substring" => {
                let Some(s) = single_str() else {
                    return vec![];
                };
                let start = match arg(0).as_deref() {
                    Some([n]) => n.v().as_i64().unwrap_or(-1),
                    _ => return vec![],
                };
                let len = s.chars().count() as i64;
                if start < 0 || start >= len {
                    return vec![];
                }
                let take = match arg(1).as_deref() {
                    Some([n]) => n.v().as_i64().unwrap_or(0).max(0) as usize,
                    _ => usize::MAX,
                };
                string(s.chars().skip(start as usize).take(take).collect())
            }
            "startsWith" | "endsWith" | "contains" => match (single_str(), str_arg(0)) {
                (Some(s), Some(x)) => boolean(match name {
                    "startsWith" => s.starts_with(&x),
                    "endsWith" => s.ends_with(&x),
                    _ => s.contains(&x),
                }),
                _ => vec![],
            },
            "upper" => single_str()
                .map(|s| string(s.to_uppercase()))
                .unwrap_or_default(),
            "lower" => single_str()
                .map(|s| string(s.to_lowercase()))
                .unwrap_or_default(),
            "replace" => match (single_str(), str_arg(0), str_arg(1)) {
                (Some(s), Some(p), Some(r)) => string(s.replace(&p, &r)),
                _ => vec![],
            },
            "matches" => match (single_str(), str_arg(0)) {
                (Some(s), Some(p)) => match regex(&p) {
                    Some(re) => boolean(re.is_match(&s)),
                    None => vec![],
                },
                _ => vec![],
            },
            "replaceMatches" => match (single_str(), str_arg(0), str_arg(1)) {
                (Some(s), Some(p), Some(r)) => match regex(&p) {
                    Some(re) => string(re.replace_all(&s, r.as_str()).into_owned()),
                    None => vec![],
                },
                _ => vec![],
            },
            "length" => single_str()
                .map(|s| integer(s.chars().count() as i64))
                .unwrap_or_default(),
            "toChars" => single_str()
                .map(|s| s.chars().flat_map(|c| string(c.to_string())).collect())
                .unwrap_or_default(),
            "abs" | "ceiling" | "floor" | "round" | "truncate" => match base.as_slice() {
                [n] => match num(n.v()) {
                    Some(Num::I(i)) if name == "abs" => {
                        i.checked_abs().map(integer).unwrap_or_default()
                    }
                    Some(Num::I(i)) => integer(i),
                    Some(Num::F(f)) => match name {
                        "abs" => decimal(f.abs()),
                        "ceiling" => integer(f.ceil() as i64),
                        "floor" => integer(f.floor() as i64),
                        "truncate" => integer(f.trunc() as i64),
                        _ => {
                            let p = match arg(0).as_deref() {
                                Some([n]) => n.v().as_i64().unwrap_or(0) as i32,
                                _ => 0,
                            };
                            let m = 10f64.powi(p);
                            decimal((f * m).round() / m)
                        }
                    },
                    None => vec![],
                },
                _ => vec![],
            },
            "children" => children(&base),
            "descendants" => {
                let mut out = Vec::new();
                let mut todo = children(&base);
                while !todo.is_empty() {
                    let next = children(&todo);
                    out.append(&mut todo);
                    todo = next;
                }
                out
            }
            "trace" => base,
            "now" => vec![Node::owned(
                Value::String(crate::fhir::datetime::format_instant(
                    crate::fhir::datetime::now_micros(),
                )),
                Some("dateTime"),
            )],
            "today" => vec![Node::owned(
                Value::String(chrono::Utc::now().format("%Y-%m-%d").to_string()),
                Some("date"),
            )],
            "timeOfDay" => vec![Node::owned(
                Value::String(chrono::Utc::now().format("%H:%M:%S").to_string()),
                Some("time"),
            )],
            "not" => match truthy(&base) {
                Some(b) => boolean(!b),
                None => vec![],
            },
            "hasValue" => boolean(matches!(base.as_slice(), [n] if !n.v().is_object())),
            "getValue" => match base.as_slice() {
                [n] if !n.v().is_object() => base,
                _ => vec![],
            },
            // The narrative rules (txt-1, txt-2) are the xhtml checker's (validate::xhtml),
            // run on every Narrative.div as its primitive check.
            "htmlChecks" => boolean(true),
            "extension" => {
                let Some(url) = str_arg(0) else {
                    return vec![];
                };
                member(&base, "extension")
                    .into_iter()
                    .filter(|n| n.v().get("url").and_then(Value::as_str) == Some(url.as_str()))
                    .collect()
            }
            "resolve" => base.iter().filter_map(|n| self.resolve(n)).collect(),
            _ => vec![],
        }
    }

    /// A reference (a Reference element or a canonical/uri string) resolved: `#id` to a
    /// contained resource of `%rootResource`, a `fullUrl` (or `Type/id`) to an entry of the
    /// enclosing Bundle; otherwise a stub of the target's type (`{"resourceType": T}`), so
    /// that `resolve() is T` still answers.
    fn resolve(&self, n: &Node<'a>) -> Option<Node<'a>> {
        let r = match n.v() {
            Value::String(s) => s.as_str(),
            v => v.get("reference").and_then(Value::as_str).unwrap_or(""),
        };
        let root = self.env.root;
        let borrowed = |v: &'a Value| Some(resource_node(v));
        if let Some(id) = r.strip_prefix('#') {
            if id.is_empty() {
                return borrowed(root);
            }
            let found = root
                .get("contained")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
                });
            return found.and_then(borrowed);
        }
        if !r.is_empty() {
            if let Some(entries) = self
                .env
                .bundle
                .and_then(|b| b.get("entry"))
                .and_then(Value::as_array)
            {
                let by_url = entries.iter().find(|e| {
                    e.get("fullUrl").and_then(Value::as_str).is_some_and(|f| {
                        f == r || (!r.contains(':') && f.ends_with(&format!("/{r}")))
                    })
                });
                let by_id = || {
                    let (t, id) = r.split_once('/')?;
                    entries.iter().find(|e| {
                        let res = e.get("resource");
                        res.and_then(|x| x.get("resourceType"))
                            .and_then(Value::as_str)
                            == Some(t)
                            && res.and_then(|x| x.get("id")).and_then(Value::as_str) == Some(id)
                    })
                };
                if let Some(res) = by_url.or_else(by_id).and_then(|e| e.get("resource")) {
                    return borrowed(res);
                }
            }
        }
        let t = match n.v() {
            Value::String(s) => crate::fhir::reference::Reference::parse(s)
                .target_type()
                .map(str::to_string),
            v => reference_target_type(v),
        }?;
        Some(Node::owned(
            serde_json::json!({ "resourceType": t }),
            Some(&t),
        ))
    }
}

const UCUM: &str = "http://unitsofmeasure.org";

fn resource_node(v: &Value) -> Node<'_> {
    Node::borrowed(
        v,
        v.get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

fn regex(p: &str) -> Option<regex::Regex> {
    static CACHE: OnceLock<RwLock<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.read().ok()?.get(p) {
        return r.clone();
    }
    let re = regex::Regex::new(p).ok();
    if let Ok(mut w) = cache.write() {
        if w.len() < 1024 {
            w.insert(p.to_string(), re.clone());
        }
    }
    re
}

/// Push the values of one property: arrays flattened; a primitive that has only an extension
/// (`_name` without `name`, or a null at that position) is its `_name` object, so that it
/// `exists()` but has no value.
fn push_values<'a>(out: &mut Coll<'a>, v: &'a Value, ext: Option<&'a Value>, ty: Option<&str>) {
    let ty = || ty.map(str::to_string);
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                if x.is_null() {
                    if let Some(e) = ext.and_then(|e| e.get(i)).filter(|e| !e.is_null()) {
                        out.push(Node::borrowed(e, ty()));
                    }
                } else {
                    out.push(Node::borrowed(x, ty()));
                }
            }
        }
        Value::Null => {}
        x => out.push(Node::borrowed(x, ty())),
    }
}

/// Whether `s` is `t` with its first letter upper-cased (`Quantity` for `Quantity`, `DateTime`
/// for `dateTime`).
fn is_capitalized(t: &str, s: &str) -> bool {
    let (mut a, mut b) = (t.chars(), s.chars());
    match (a.next(), b.next()) {
        (Some(x), Some(y)) => x.to_ascii_uppercase() == y && a.as_str() == b.as_str(),
        _ => false,
    }
}

/// `o["_" + name]`, without allocating for the usual short names.
fn get_ext<'v>(o: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v Value> {
    let mut buf = [0u8; 64];
    let n = name.len();
    if n < buf.len() {
        buf[0] = b'_';
        buf[1..=n].copy_from_slice(name.as_bytes());
        o.get(std::str::from_utf8(&buf[..=n]).ok()?)
    } else {
        o.get(&format!("_{name}"))
    }
}

fn member<'a>(base: &[Node<'a>], name: &str) -> Coll<'a> {
    let mut out = Vec::new();
    for n in base {
        let v = match &n.value {
            Cow::Borrowed(v) => *v,
            Cow::Owned(v) => {
                // A computed value (a quantity sum, a resolve() stub): its children are copies.
                if let Some(child) = v.get(name) {
                    match child {
                        Value::Array(a) => {
                            out.extend(a.iter().map(|x| Node::owned(x.clone(), None)))
                        }
                        Value::Null => {}
                        x => out.push(Node::owned(x.clone(), None)),
                    }
                }
                continue;
            }
        };
        let Some(o) = v.as_object() else { continue };
        if let Some(child) = o.get(name) {
            let ext = if child.is_array() {
                get_ext(o, name)
            } else {
                None
            };
            push_values(&mut out, child, ext, None);
            continue;
        }
        if let Some(types) = choices().get(name) {
            // `value` finds `valueQuantity` (or, for a primitive with only an extension,
            // `_valueString`); the object's few keys are scanned rather than every type tried.
            let mut found = false;
            for (k, child) in o {
                let (plain, is_ext) = match k.strip_prefix('_') {
                    Some(p) => (p, true),
                    None => (k.as_str(), false),
                };
                let Some(suffix) = plain.strip_prefix(name) else {
                    continue;
                };
                let Some(t) = types.iter().find(|t| is_capitalized(t, suffix)) else {
                    continue;
                };
                if is_ext && o.contains_key(plain) {
                    continue; // the value itself is found under its own key
                }
                push_values(&mut out, child, None, Some(t));
                found = true;
                break;
            }
            if found {
                continue;
            }
        }
        if let Some(ext) = get_ext(o, name) {
            push_values(&mut out, ext, None, None);
        }
    }
    out
}

/// The child elements of each node (properties of objects, `resourceType` excepted).
fn children<'a>(base: &[Node<'a>]) -> Coll<'a> {
    let mut out = Vec::new();
    for n in base {
        let Cow::Borrowed(v) = &n.value else { continue };
        let Some(o) = v.as_object() else { continue };
        for (k, child) in o {
            if k == "resourceType" {
                continue;
            }
            if let Some(plain) = k.strip_prefix('_') {
                // An extension-only primitive (its value absent) is still a child.
                if !o.contains_key(plain) {
                    push_values(&mut out, child, None, None);
                }
                continue;
            }
            let ext = if child.is_array() {
                get_ext(o, k)
            } else {
                None
            };
            push_values(&mut out, child, ext, choice_type_of_key(k));
        }
    }
    out
}

/// The type a choice property name carries (`valueQuantity` → Quantity), if it is one.
fn choice_type_of_key(k: &str) -> Option<&'static str> {
    let at = k.find(|c: char| c.is_ascii_uppercase())?;
    let (base, t) = k.split_at(at);
    choices().get(base)?.iter().find_map(|x| {
        let mut c = x.chars();
        let first = c.next()?;
        (first.to_ascii_uppercase() == t.chars().next()? && c.as_str() == &t[1..])
            .then_some(x.as_str())
    })
}

fn union<'a>(a: Coll<'a>, b: Coll<'a>) -> Coll<'a> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    for x in a.into_iter().chain(b) {
        if !contains_item(&out, &x) {
            out.push(x);
        }
    }
    out
}

fn distinct(c: Coll) -> Coll {
    let mut out: Coll = Vec::with_capacity(c.len());
    for x in c {
        if !contains_item(&out, &x) {
            out.push(x);
        }
    }
    out
}

fn contains_item(c: &[Node], x: &Node) -> bool {
    c.iter()
        .any(|y| y.same_item(x) || item_eq(x, y) == Some(true))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

fn num(v: &Value) -> Option<Num> {
    let Value::Number(n) = v else { return None };
    match n.as_i64() {
        Some(i) => Some(Num::I(i)),
        None => n.as_f64().map(Num::F),
    }
}

fn to_string(n: &Node) -> Option<String> {
    match n.v() {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(x) => Some(x.to_string()),
        Value::Object(_) => quantity(n).map(|q| {
            format!(
                "{} '{}'",
                Number::from_f64(q.value).map_or_else(String::new, |x| x.to_string()),
                q.code.or(q.unit).unwrap_or("1")
            )
        }),
        _ => None,
    }
}

/// A Quantity-like object: a numeric `value` with its unit.
struct Qty<'v> {
    value: f64,
    unit: Option<&'v str>,
    code: Option<&'v str>,
    system: Option<&'v str>,
}

fn quantity<'v>(n: &'v Node) -> Option<Qty<'v>> {
    let o = n.v().as_object()?;
    if o.contains_key("resourceType") {
        return None;
    }
    let value = o.get("value")?.as_f64()?;
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    Some(Qty {
        value,
        unit: s("unit"),
        code: s("code"),
        system: s("system"),
    })
}

fn quantity_value(value: f64, unit: Option<&str>, code: Option<&str>) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(n) = Number::from_f64(value) {
        m.insert("value".into(), Value::Number(n));
    }
    if let Some(u) = unit {
        m.insert("unit".into(), Value::String(u.into()));
    }
    if let Some(c) = code {
        m.insert("code".into(), Value::String(c.into()));
    }
    Value::Object(m)
}

/// Whether two quantities are in the same unit (same code and system when both are coded,
/// else the same unit text, or neither has a unit); `None` when they cannot be compared.
fn same_unit(a: &Qty, b: &Qty) -> bool {
    match (a.code, b.code) {
        (Some(x), Some(y)) => {
            x == y && (a.system.is_none() || b.system.is_none() || a.system == b.system)
        }
        _ => match (a.unit.or(a.code), b.unit.or(b.code)) {
            (Some(x), Some(y)) => x == y,
            (None, None) => true,
            _ => false,
        },
    }
}

fn is_temporal_type(t: &str) -> bool {
    matches!(
        t,
        "date" | "dateTime" | "instant" | "time" | "Date" | "DateTime" | "Time"
    )
}

/// A date, dateTime or time split into its components, normalised to UTC when it has a
/// time and a zone. `prec` counts the components present: year, month, day, hour, minute,
/// second (seconds and milliseconds are one precision, as FHIRPath says).
#[derive(Debug, PartialEq)]
struct Temporal {
    parts: [i64; 6],
    prec: usize,
    time_only: bool,
}

impl Temporal {
    fn parse(s: &str) -> Option<Temporal> {
        let b = s.as_bytes();
        let digits = |from: usize, n: usize| -> Option<i64> {
            let d = b.get(from..from + n)?;
            d.iter()
                .all(u8::is_ascii_digit)
                .then(|| std::str::from_utf8(d).ok()?.parse().ok())
                .flatten()
        };
        if b.len() >= 5 && b[2] == b':' {
            // A time: hh:mm[:ss[.fff]]
            let (t, prec) = Self::time(s)?;
            let mut parts = [0; 6];
            parts[3..].copy_from_slice(&t);
            return Some(Temporal {
                parts,
                prec: prec + 3,
                time_only: true,
            });
        }
        let mut parts = [0i64; 6];
        parts[0] = digits(0, 4)?;
        let mut prec = 1;
        let mut i = 4;
        for part in &mut parts[1..3] {
            if b.get(i) != Some(&b'-') {
                break;
            }
            *part = digits(i + 1, 2)?;
            prec += 1;
            i += 3;
        }
        if i == b.len() {
            return Some(Temporal {
                parts,
                prec,
                time_only: false,
            });
        }
        if prec != 3 || b[i] != b'T' {
            return None;
        }
        let rest = &s[i + 1..];
        let tz_at = rest.find(['Z', '+', '-']);
        let (time, tz) = match tz_at {
            Some(p) => (&rest[..p], Some(&rest[p..])),
            None => (rest, None),
        };
        let (t, tprec) = Self::time(time)?;
        parts[3..].copy_from_slice(&t);
        prec += tprec;
        if let Some(tz) = tz.filter(|z| *z != "Z") {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (h, m) = tz[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let offset = sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?);
            let date =
                chrono::NaiveDate::from_ymd_opt(parts[0] as i32, parts[1] as u32, parts[2] as u32)?;
            let dt = date
                .and_hms_milli_opt(
                    parts[3] as u32,
                    parts[4] as u32,
                    (parts[5] / 1000) as u32,
                    (parts[5] % 1000) as u32,
                )?
                .checked_sub_signed(chrono::Duration::try_minutes(offset)?)?;
            use chrono::{Datelike, Timelike};
            parts = [
                i64::from(dt.year()),
                i64::from(dt.month()),
                i64::from(dt.day()),
                i64::from(dt.hour()),
                i64::from(dt.minute()),
                i64::from(dt.second()) * 1000 + i64::from(dt.nanosecond() / 1_000_000),
            ];
        }
        Some(Temporal {
            parts,
            prec,
            time_only: false,
        })
    }

    /// `hh[:mm[:ss[.fff]]]`: hour, minute and millisecond-of-minute, and how many are present.
    fn time(s: &str) -> Option<([i64; 3], usize)> {
        let mut out = [0i64; 3];
        let mut it = s.split(':');
        let mut prec = 0;
        for (k, part) in it.by_ref().take(3).enumerate() {
            if k < 2 {
                if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                out[k] = part.parse().ok()?;
            } else {
                let (sec, frac) = part.split_once('.').unwrap_or((part, ""));
                if sec.len() != 2 || !sec.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
                out[2] = sec.parse::<i64>().ok()? * 1000 + ms;
            }
            prec += 1;
        }
        (prec > 0).then_some((out, prec))
    }

    /// FHIRPath comparison: component by component; stops at the first difference; if one
    /// value runs out of precision before a difference, the answer is unknown (`None`).
    fn cmp(&self, other: &Temporal) -> Option<Ordering> {
        if self.time_only != other.time_only {
            return None;
        }
        let start = if self.time_only { 3 } else { 0 };
        let common = self.prec.min(other.prec);
        for k in start..common {
            match self.parts[k].cmp(&other.parts[k]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        (self.prec == other.prec).then_some(Ordering::Equal)
    }
}

fn temporal(n: &Node) -> Option<Temporal> {
    let s = n.v().as_str()?;
    if let Some(t) = &n.ty {
        if !is_temporal_type(t) && t != "string" {
            return None;
        }
    }
    Temporal::parse(s)
}

/// Whether both nodes are dates/times (by declared type, or both by their form).
fn both_temporal(a: &Node, b: &Node) -> Option<(Temporal, Temporal)> {
    let typed = |n: &Node| n.ty.as_deref().is_some_and(is_temporal_type);
    if !(typed(a) || typed(b) || (a.ty.is_none() && b.ty.is_none())) {
        return None;
    }
    Some((temporal(a)?, temporal(b)?))
}

/// `<`, `>`, `<=`, `>=` between two items: `None` when they are not comparable.
fn compare(a: &Node, b: &Node) -> Option<Ordering> {
    match (a.v(), b.v()) {
        (Value::Number(_), Value::Number(_)) => num(a.v())?.f().partial_cmp(&num(b.v())?.f()),
        (Value::String(x), Value::String(y)) => match both_temporal(a, b) {
            Some((p, q)) => p.cmp(&q),
            // A value typed as a date/time that does not parse as one compares with nothing.
            None if [a, b]
                .iter()
                .any(|n| n.ty.as_deref().is_some_and(is_temporal_type)) =>
            {
                None
            }
            None => Some(x.cmp(y)),
        },
        (Value::Object(_), Value::Object(_)) => {
            let (p, q) = (quantity(a)?, quantity(b)?);
            same_unit(&p, &q).then(|| p.value.partial_cmp(&q.value))?
        }
        _ => None,
    }
}

/// `=` between two items; `None` when unknown (dates of different precision).
fn item_eq(a: &Node, b: &Node) -> Option<bool> {
    match (a.v(), b.v()) {
        (Value::Number(_), Value::Number(_)) => Some(num(a.v())?.f() == num(b.v())?.f()),
        (Value::String(x), Value::String(y)) => {
            if x == y {
                return Some(true);
            }
            let typed = |n: &Node| n.ty.as_deref().is_some_and(is_temporal_type);
            if typed(a) || typed(b) {
                if let (Some(p), Some(q)) = (temporal(a), temporal(b)) {
                    return p.cmp(&q).map(|o| o == Ordering::Equal);
                }
            }
            Some(false)
        }
        (Value::Object(_), Value::Object(_)) => match (quantity(a), quantity(b)) {
            (Some(p), Some(q)) if a.v().get("comparator").is_none() => {
                Some(same_unit(&p, &q) && p.value == q.value)
            }
            _ => Some(json_eq(a.v(), b.v())),
        },
        (x, y) => Some(x == y),
    }
}

/// Deep equality with numbers compared by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a).map(Num::f) == num(b).map(Num::f),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `=` between collections: empty when either is empty; else same length and item-wise equal.
fn coll_eq(l: &[Node], r: &[Node]) -> Option<bool> {
    if l.is_empty() || r.is_empty() {
        return None;
    }
    if l.len() != r.len() {
        return Some(false);
    }
    let mut all = true;
    for (x, y) in l.iter().zip(r) {
        match item_eq(x, y) {
            Some(true) => {}
            Some(false) => return Some(false),
            None => all = false,
        }
    }
    all.then_some(true)
}

/// `~`: strings ignoring case and whitespace differences, decimals by value, dates of
/// different precision not equivalent.
fn equivalent(a: &Node, b: &Node) -> bool {
    match (a.v(), b.v()) {
        (Value::String(x), Value::String(y)) => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(x) == norm(y)
        }
        _ => item_eq(a, b) == Some(true),
    }
}

fn arithmetic<'a>(op: Op, x: &Node, y: &Node) -> Coll<'a> {
    if let (Some(p), Some(q)) = (num(x.v()), num(y.v())) {
        return match (op, p, q) {
            (Op::Add, Num::I(a), Num::I(b)) => a.checked_add(b).map(integer).unwrap_or_default(),
            (Op::Sub, Num::I(a), Num::I(b)) => a.checked_sub(b).map(integer).unwrap_or_default(),
            (Op::Mul, Num::I(a), Num::I(b)) => a.checked_mul(b).map(integer).unwrap_or_default(),
            (Op::IntDiv, Num::I(a), Num::I(b)) => a.checked_div(b).map(integer).unwrap_or_default(),
            (Op::Mod, Num::I(a), Num::I(b)) => a.checked_rem(b).map(integer).unwrap_or_default(),
            (Op::Add, a, b) => decimal(a.f() + b.f()),
            (Op::Sub, a, b) => decimal(a.f() - b.f()),
            (Op::Mul, a, b) => decimal(a.f() * b.f()),
            (Op::Div, a, b) if b.f() != 0.0 => decimal(a.f() / b.f()),
            (Op::IntDiv, a, b) if b.f() != 0.0 => integer((a.f() / b.f()).trunc() as i64),
            (Op::Mod, a, b) if b.f() != 0.0 => decimal(a.f() % b.f()),
            _ => vec![],
        };
    }
    if let (Value::String(a), Value::String(b), Op::Add) = (x.v(), y.v(), op) {
        return string(format!("{a}{b}"));
    }
    if let (Some(p), Some(q)) = (quantity(x), quantity(y)) {
        if matches!(op, Op::Add | Op::Sub) && same_unit(&p, &q) {
            let v = if op == Op::Add {
                p.value + q.value
            } else {
                p.value - q.value
            };
            return vec![Node::owned(
                quantity_value(v, p.unit, p.code),
                Some("Quantity"),
            )];
        }
    }
    vec![]
}

#[cfg(test)]
mod tests;
