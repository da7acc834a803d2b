//! Parsing a search request (`Patient?name=eve&_sort=-birthdate…`) into a `SearchQuery`: the
//! filters to AND, their OR'ed values, and the result parameters. Unknown or malformed parameters
//! are not errors here: they are listed in `issues` (the HTTP layer reports them, or answers
//! 400 under `Prefer: handling=strict`).
use super::params::{ParamDef, ParamType, SearchParams};
use super::values::{date_range, decimal_range, fold};
use crate::error::{ApiError, ApiResult};
use crate::fhir::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    None,
    Exact,
    Contains,
    Not,
    Text,
    Below,
    Above,
    /// Token `:in` / `:not-in` a value set the server holds.
    In,
    NotIn,
    /// Identifier `:of-type=typeSystem|typeCode|value`.
    OfType,
    /// Reference `:identifier=system|value` (matches `Reference.identifier`).
    Identifier,
    /// `subject:Patient=…`
    Type(String),
}

/// One value of a parameter (several are OR'ed).
#[derive(Debug, Clone, PartialEq)]
pub enum SearchValue {
    /// Folded prefix (or exact text under `:exact`).
    String(String),
    /// `system`: None = any system, Some(None) = no system (`|code`).
    Token {
        system: Option<Option<String>>,
        code: Option<String>,
    },
    /// `:text` on a token: folded prefix of display/text.
    Text(String),
    Date {
        prefix: Prefix,
        low: i64,
        high: i64,
    },
    Number {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
    },
    Quantity {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Reference {
        ty: Option<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Uri(String),
    /// Token codes from a value set (`:in`, `:not-in`) or a hierarchy (`:below`, `:above`),
    /// grouped by system. `implicit_system`: a code stored without a system also matches (a
    /// `code` element bound to the value set carries its system implicitly).
    Codes {
        systems: Vec<(String, Vec<String>)>,
        implicit_system: bool,
    },
    /// Parts that must match within one repetition (a composite parameter, `:of-type`), each
    /// with the type of its part.
    Composite(Vec<(ParamType, SearchValue)>),
}

/// The index `param` names of the parts of a grouped value (`SearchValue::Composite`) of
/// parameter `param`: `code$0`, `code$1`… for a composite parameter, the identifier's type
/// rows and its value rows for `:of-type`.
pub fn part_params(param: &str, modifier: &Modifier, n: usize) -> Vec<String> {
    if *modifier == Modifier::OfType {
        return vec![super::extract::of_type_param(param), param.to_string()];
    }
    (0..n)
        .map(|i| super::params::component_param(param, i))
        .collect()
}

/// One AND'ed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Param {
        param: String,
        ptype: ParamType,
        modifier: Modifier,
        values: Vec<SearchValue>,
    },
    Missing {
        param: String,
        ptype: ParamType,
        missing: bool,
    },
    Id {
        ids: Vec<String>,
        negate: bool,
    },
    LastUpdated(Vec<SearchValue>),
    /// `subject:Patient.name=x`: the reference param points to a resource matching the inner filter
    /// (one inner filter per candidate target type).
    Chain {
        param: String,
        targets: Vec<(String, Filter)>,
    },
    /// `_has:CarePlan:subject:status=active`: some CarePlan whose `subject` points here matches.
    Has {
        source_type: String,
        param: String,
        inner: Box<Filter>,
    },
    /// `_text` (`narrative`: the resource's narrative) or `_content` (the whole resource):
    /// full-text search (fulltext.rs).
    FullText {
        narrative: bool,
        query: super::fulltext::TextQuery,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub param: String,
    pub ptype: ParamType,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Count,
    Data,
    Text,
    False,
}

/// `_include` / `_revinclude`: resources of `source_type` pointing through `param`
/// (optionally only to `target_type`); `param` None means every reference parameter (`*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source_type: String,
    pub param: Option<String>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub ty: String,
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    pub count: Option<i64>,
    pub total: Option<Total>,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    /// Opaque page token from a previous link (`_page`).
    pub page: Option<String>,
    /// Parameters that were applied, in request order (for the `self` link).
    pub applied: Vec<(String, String)>,
    /// Why a parameter was ignored, one message each.
    pub issues: Vec<String>,
    /// Malformed values of known search parameters (a date that is not a date, an unknown
    /// prefix or modifier…): such a search is refused (400), whatever `Prefer: handling` says,
    /// since ignoring the parameter would answer with more than was asked for.
    pub invalid: Vec<String>,
}

/// Parameters that are not filters and are not reported as unknown.
const RESULT_PARAMS: &[&str] = &["_format", "_pretty"];

/// Split on commas not escaped with a backslash; unescape `\,`, `\|`, `\$`, `\\`.
pub(super) fn split_values(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ (',' | '\\')) => out.last_mut().unwrap().push(n),
                Some('|') => out.last_mut().unwrap().push_str("\\|"),
                // Kept escaped until a composite value is split into its parts.
                Some('$') => out.last_mut().unwrap().push_str("\\$"),
                Some(n) => {
                    out.last_mut().unwrap().push('\\');
                    out.last_mut().unwrap().push(n);
                }
                None => out.last_mut().unwrap().push('\\'),
            },
            ',' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// Split `system|code` on the first unescaped `|`.
fn split_bar(s: &str) -> (String, Option<String>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b'|' {
            return (unbar(&s[..i]), Some(unbar(&s[i + 1..])));
        }
        i += 1;
    }
    (unbar(s), None)
}

fn unbar(s: &str) -> String {
    s.replace("\\|", "|")
}

fn prefix_of(s: &str) -> (Prefix, &str) {
    let p = match s.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, s),
    };
    (p, &s[2..])
}

fn parse_modifier(m: Option<&str>, ptype: ParamType) -> Result<Modifier, String> {
    let Some(m) = m else {
        return Ok(Modifier::None);
    };
    let ok = |x: Modifier, allowed: bool| {
        if allowed {
            Ok(x)
        } else {
            Err(format!(
                "modifier :{m} does not apply to {} parameters",
                ptype.as_str()
            ))
        }
    };
    match m {
        "exact" => ok(Modifier::Exact, ptype == ParamType::String),
        "contains" => ok(
            Modifier::Contains,
            matches!(ptype, ParamType::String | ParamType::Uri),
        ),
        "not" => ok(Modifier::Not, ptype == ParamType::Token),
        "text" => ok(Modifier::Text, ptype == ParamType::Token),
        "below" => ok(
            Modifier::Below,
            matches!(ptype, ParamType::Uri | ParamType::Token),
        ),
        "above" => ok(
            Modifier::Above,
            matches!(ptype, ParamType::Uri | ParamType::Token),
        ),
        "in" => ok(Modifier::In, ptype == ParamType::Token),
        "not-in" => ok(Modifier::NotIn, ptype == ParamType::Token),
        "of-type" => ok(Modifier::OfType, ptype == ParamType::Token),
        "identifier" => ok(Modifier::Identifier, ptype == ParamType::Reference),
        t if t.starts_with(|c: char| c.is_ascii_uppercase()) => {
            if ptype == ParamType::Reference && Registry::get().is_supported(t) {
                Ok(Modifier::Type(t.to_string()))
            } else {
                Err(format!(
                    "modifier :{t} is not a resource type for a reference"
                ))
            }
        }
        other => Err(format!("modifier :{other} is not supported")),
    }
}

/// Split a composite value on its unescaped `$`s, unescaping each part.
fn split_dollar(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.last_mut().unwrap().push('$'),
                Some(n) => {
                    out.last_mut().unwrap().push('\\');
                    out.last_mut().unwrap().push(n);
                }
                None => out.last_mut().unwrap().push('\\'),
            },
            '$' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// A token value under `:in`/`:not-in` (a value set URL) or `:below`/`:above` (`system|code`
/// of a code system the server holds).
fn token_codes(modifier: &Modifier, raw: &str) -> Result<SearchValue, String> {
    use crate::fhir::terminology;
    if matches!(modifier, Modifier::In | Modifier::NotIn) {
        let pairs = terminology::expand(raw).ok_or_else(|| {
            format!(
                "value set '{raw}' is not held by this server (it holds the R4 required value \
                 sets and the program's own, listed in the README)"
            )
        })?;
        let mut systems: Vec<(String, Vec<String>)> = Vec::new();
        for (s, c) in pairs {
            match systems.iter_mut().find(|(x, _)| x == s) {
                Some((_, codes)) => codes.push(c.clone()),
                None => systems.push((s.clone(), vec![c.clone()])),
            }
        }
        return Ok(SearchValue::Codes {
            systems,
            implicit_system: true,
        });
    }
    let (system, code) = match split_bar(raw) {
        (s, Some(c)) if !s.is_empty() && !c.is_empty() => (s, c),
        _ => {
            return Err(format!(
                "'{raw}': :below and :above on a token take system|code"
            ))
        }
    };
    let cs = terminology::code_system(&system).ok_or_else(|| {
        format!("code system '{system}' is not held by this server, so its hierarchy is unknown")
    })?;
    let codes = if *modifier == Modifier::Below {
        cs.descendants_or_self(&code)
    } else {
        cs.ancestors_or_self(&code)
    };
    Ok(SearchValue::Codes {
        systems: vec![(system, codes)],
        implicit_system: false,
    })
}

fn parse_value(
    def: &ParamDef,
    ptype: ParamType,
    modifier: &Modifier,
    raw: &str,
) -> Result<SearchValue, String> {
    if raw.is_empty() {
        return Err("empty value".into());
    }
    if ptype == ParamType::Composite {
        let parts = split_dollar(raw);
        if parts.len() != def.components.len() {
            return Err(format!(
                "'{raw}' has {} part(s); {} takes {} separated by $",
                parts.len(),
                def.code,
                def.components.len()
            ));
        }
        let mut out = Vec::new();
        for (c, part) in def.components.iter().zip(&parts) {
            out.push((c.ptype, parse_value(def, c.ptype, &Modifier::None, part)?));
        }
        return Ok(SearchValue::Composite(out));
    }
    let unescaped = raw.replace("\\$", "$");
    let raw = unescaped.as_str();
    let bad = |what: &str| format!("'{raw}' is not a valid {what}");
    Ok(match ptype {
        ParamType::String => match modifier {
            Modifier::Exact => SearchValue::String(raw.to_string()),
            _ => SearchValue::String(fold(raw)),
        },
        ParamType::Token => {
            match modifier {
                Modifier::Text => return Ok(SearchValue::Text(fold(raw))),
                Modifier::In | Modifier::NotIn | Modifier::Below | Modifier::Above => {
                    return token_codes(modifier, raw)
                }
                Modifier::OfType => {
                    let (sys, rest) = split_bar(raw);
                    let (code, value) = match rest.as_deref().map(split_bar) {
                        Some((c, Some(v))) if !c.is_empty() && !v.is_empty() => (c, v),
                        _ => {
                            return Err(format!(
                                "'{raw}': :of-type takes typeSystem|typeCode|value"
                            ))
                        }
                    };
                    return Ok(SearchValue::Composite(vec![
                        (
                            ParamType::Token,
                            SearchValue::Token {
                                system: Some((!sys.is_empty()).then_some(sys)),
                                code: Some(code),
                            },
                        ),
                        (
                            ParamType::Token,
                            SearchValue::Token {
                                system: None,
                                code: Some(value),
                            },
                        ),
                    ]));
                }
                _ => {}
            }
            match split_bar(raw) {
                (code, None) => SearchValue::Token {
                    system: None,
                    code: Some(code),
                },
                (sys, Some(code)) => SearchValue::Token {
                    system: Some((!sys.is_empty()).then_some(sys)),
                    code: (!code.is_empty()).then_some(code),
                },
            }
        }
        ParamType::Date => {
            let (prefix, v) = prefix_of(raw);
            let (low, high) = date_range(v).ok_or_else(|| bad("date"))?;
            SearchValue::Date { prefix, low, high }
        }
        ParamType::Number => {
            let (prefix, v) = prefix_of(raw);
            let (value, low, high) = decimal_range(v).ok_or_else(|| bad("number"))?;
            SearchValue::Number {
                prefix,
                value,
                low,
                high,
            }
        }
        ParamType::Quantity => {
            let (prefix, v) = prefix_of(raw);
            let mut parts = v.splitn(3, '|');
            let n = parts.next().unwrap_or_default();
            let system = parts.next().filter(|s| !s.is_empty()).map(String::from);
            let code = parts.next().filter(|s| !s.is_empty()).map(String::from);
            let (value, low, high) = decimal_range(n).ok_or_else(|| bad("quantity"))?;
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            }
        }
        ParamType::Reference if *modifier == Modifier::Identifier => {
            return parse_value(def, ParamType::Token, &Modifier::None, raw)
        }
        ParamType::Reference => {
            let forced = match modifier {
                Modifier::Type(t) => Some(t.clone()),
                _ => None,
            };
            if raw.contains("://") || raw.starts_with("urn:") {
                let url = raw.split('|').next().unwrap_or_default().to_string();
                return Ok(SearchValue::Reference {
                    ty: None,
                    id: None,
                    url: Some(url),
                });
            }
            let core = match raw.find("/_history/") {
                Some(i) => &raw[..i],
                None => raw,
            };
            match core.split_once('/') {
                Some((t, id)) => {
                    if !Registry::get().is_supported(t) || id.is_empty() || id.contains('/') {
                        return Err(bad("reference"));
                    }
                    if forced.as_deref().is_some_and(|f| f != t) {
                        return Err(format!("'{raw}' contradicts the type modifier"));
                    }
                    SearchValue::Reference {
                        ty: Some(t.to_string()),
                        id: Some(id.to_string()),
                        url: None,
                    }
                }
                None => SearchValue::Reference {
                    ty: forced,
                    id: Some(core.to_string()),
                    url: None,
                },
            }
        }
        ParamType::Uri => SearchValue::Uri(raw.to_string()),
        ParamType::Composite | ParamType::Special => {
            return Err(format!("{} parameters are not supported", ptype.as_str()))
        }
    })
}

/// Parse one filter `key=value` for type `ty` (key may carry a modifier, a chain or `_has`).
pub fn parse_filter(ty: &str, key: &str, value: &str) -> Result<Filter, String> {
    let sp = SearchParams::get();
    if let Some(rest) = key.strip_prefix("_has:") {
        // _has:Type:param:rest
        let mut it = rest.splitn(3, ':');
        let (src, param, inner_key) = match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) if !c.is_empty() => (a, b, c),
            _ => return Err(format!("'{key}' is not of the form _has:Type:param:filter")),
        };
        if !Registry::get().is_supported(src) {
            return Err(format!("_has names an unknown type '{src}'"));
        }
        let def = sp
            .param(src, param)
            .filter(|d| d.ptype == ParamType::Reference && d.supported())
            .ok_or_else(|| format!("'{param}' is not a reference parameter of {src}"))?;
        if !def.targets.iter().any(|t| t == ty) {
            return Err(format!("{src}.{param} cannot point to {ty}"));
        }
        let inner = parse_filter(src, inner_key, value)?;
        return Ok(Filter::Has {
            source_type: src.to_string(),
            param: param.to_string(),
            inner: Box::new(inner),
        });
    }
    if let Some((head, tail)) = key.split_once('.') {
        let (pname, m) = match head.split_once(':') {
            Some((p, m)) => (p, Some(m)),
            None => (head, None),
        };
        let def = sp
            .param(ty, pname)
            .filter(|d| d.ptype == ParamType::Reference && d.supported())
            .ok_or_else(|| format!("'{pname}' is not a reference parameter of {ty} to chain on"))?;
        let candidates: Vec<String> = match m {
            Some(t) => {
                if !def.targets.iter().any(|x| x == t) {
                    return Err(format!("{ty}.{pname} cannot point to '{t}'"));
                }
                vec![t.to_string()]
            }
            None => def.targets.clone(),
        };
        if tail.contains('.') {
            return Err("only one level of chaining is supported".into());
        }
        let mut targets = Vec::new();
        let mut last_err = None;
        for t in candidates {
            match parse_filter(&t, tail, value) {
                Ok(f) => targets.push((t, f)),
                Err(e) => last_err = Some(e),
            }
        }
        if targets.is_empty() {
            return Err(last_err
                .unwrap_or_else(|| format!("no target of {ty}.{pname} has parameter '{tail}'")));
        }
        return Ok(Filter::Chain {
            param: pname.to_string(),
            targets,
        });
    }
    let (pname, m) = match key.split_once(':') {
        Some((p, m)) => (p, Some(m)),
        None => (key, None),
    };
    let def = sp
        .param(ty, pname)
        .ok_or_else(|| format!("unknown search parameter '{pname}' for {ty}"))?;
    if !def.supported() {
        return Err(format!("search parameter '{pname}' is not supported"));
    }
    if let Some(f) = super::fulltext::filter(pname, m, value) {
        return f;
    }
    if m == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(format!(":missing takes true or false, not '{value}'")),
        };
        return Ok(Filter::Missing {
            param: pname.to_string(),
            ptype: def.ptype,
            missing,
        });
    }
    let modifier = parse_modifier(m, def.ptype)?;
    if modifier == Modifier::OfType && !def.on_identifiers() {
        return Err(format!(
            "modifier :of-type applies to identifier parameters; '{pname}' is not one"
        ));
    }
    if ty == "AuditEvent"
        && matches!(
            modifier,
            Modifier::In
                | Modifier::NotIn
                | Modifier::Below
                | Modifier::Above
                | Modifier::OfType
                | Modifier::Identifier
        )
    {
        // The audit trail keeps its parameters as plain columns (store::audit).
        return Err(format!(
            "modifier :{} is not supported on AuditEvent",
            m.unwrap_or_default()
        ));
    }
    let mut values = Vec::new();
    for raw in split_values(value) {
        values
            .push(parse_value(def, def.ptype, &modifier, &raw).map_err(|e| format!("{key}: {e}"))?);
    }
    match pname {
        "_id" => {
            if !matches!(modifier, Modifier::None | Modifier::Not) {
                return Err("_id supports only :not and :missing".into());
            }
            let ids = values
                .into_iter()
                .filter_map(|v| match v {
                    SearchValue::Token { code, .. } => code,
                    _ => None,
                })
                .collect();
            Ok(Filter::Id {
                ids,
                negate: modifier == Modifier::Not,
            })
        }
        "_lastUpdated" => Ok(Filter::LastUpdated(values)),
        _ => Ok(Filter::Param {
            param: pname.to_string(),
            ptype: def.ptype,
            modifier,
            values,
        }),
    }
}

fn parse_include(v: &str, iterate: bool, reverse: bool, ty: &str) -> Result<Include, String> {
    if v == "*" {
        return Ok(Include {
            source_type: ty.to_string(),
            param: None,
            target_type: None,
            iterate,
        });
    }
    let parts: Vec<&str> = v.split(':').collect();
    let (src, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(t.to_string())),
        _ => return Err(format!("'{v}' is not Type:param[:targetType]")),
    };
    if !Registry::get().is_supported(src) {
        return Err(format!("'{src}' is not a supported type"));
    }
    if !reverse && !iterate && src != ty {
        return Err(format!("_include must start with the searched type {ty}"));
    }
    let param = if param == "*" {
        None
    } else {
        let d = SearchParams::get()
            .param(src, param)
            .filter(|d| d.ptype == ParamType::Reference && d.supported())
            .ok_or_else(|| format!("'{param}' is not a reference parameter of {src}"))?;
        Some(d.code.clone())
    };
    Ok(Include {
        source_type: src.to_string(),
        param,
        target_type: target,
        iterate,
    })
}

impl SearchQuery {
    /// Parse a search on `ty` from an `application/x-www-form-urlencoded` query string.
    /// Errors only for an unknown type; bad parameters are listed in `issues`.
    pub fn parse(ty: &str, query_string: &str) -> ApiResult<SearchQuery> {
        if !Registry::get().is_supported(ty) {
            return Err(ApiError::NotFound(format!(
                "'{ty}' is not a resource type this server supports"
            )));
        }
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query_string.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Self::from_pairs(ty, &pairs))
    }

    /// Parse from already-decoded pairs (query string and form body together).
    pub fn from_pairs(ty: &str, pairs: &[(String, String)]) -> SearchQuery {
        let mut q = SearchQuery {
            ty: ty.to_string(),
            filters: vec![],
            sort: vec![],
            count: None,
            total: None,
            summary: None,
            elements: None,
            includes: vec![],
            revincludes: vec![],
            page: None,
            applied: vec![],
            issues: vec![],
            invalid: vec![],
        };
        let sp = SearchParams::get();
        for (k, v) in pairs {
            if k.contains('\0') || v.contains('\0') {
                q.issues.push(format!(
                    "parameter '{}' contains a NUL character",
                    k.replace('\0', "")
                ));
                continue;
            }
            let mut applied = true;
            match k.as_str() {
                k if RESULT_PARAMS.contains(&k) => applied = false,
                "_page" => {
                    q.page = Some(v.clone());
                    applied = false;
                }
                "_count" => match v.parse::<i64>() {
                    Ok(n) if n >= 0 => q.count = Some(n),
                    _ => {
                        q.issues
                            .push(format!("_count '{v}' is not a non-negative integer"));
                        applied = false
                    }
                },
                "_total" => match v.as_str() {
                    "none" => q.total = Some(Total::None),
                    "estimate" => q.total = Some(Total::Estimate),
                    "accurate" => q.total = Some(Total::Accurate),
                    _ => {
                        q.issues
                            .push(format!("_total '{v}' is not none, estimate or accurate"));
                        applied = false
                    }
                },
                "_summary" => match v.as_str() {
                    "true" => q.summary = Some(Summary::True),
                    "count" => q.summary = Some(Summary::Count),
                    "data" => q.summary = Some(Summary::Data),
                    "text" => q.summary = Some(Summary::Text),
                    "false" => q.summary = Some(Summary::False),
                    _ => {
                        q.issues.push(format!(
                            "_summary '{v}' is not true, count, data, text or false"
                        ));
                        applied = false
                    }
                },
                "_elements" => {
                    let list: Vec<String> = v
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    q.elements = Some(list);
                }
                "_sort" => {
                    let mut keys = Vec::new();
                    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let (desc, name) = match part.strip_prefix('-') {
                            Some(n) => (true, n),
                            None => (false, part),
                        };
                        match sp.param(ty, name).filter(|d| {
                            d.supported()
                                && !matches!(d.ptype, ParamType::Composite | ParamType::Special)
                                && !super::fulltext::is_fulltext(&d.code)
                        }) {
                            Some(d) => keys.push(SortKey {
                                param: d.code.clone(),
                                ptype: d.ptype,
                                descending: desc,
                            }),
                            None => q.issues.push(format!("_sort: unknown parameter '{name}'")),
                        }
                    }
                    if keys.len() > 3 {
                        q.issues
                            .push("_sort: only the first 3 keys are used".into());
                        keys.truncate(3);
                    }
                    if keys.is_empty() {
                        applied = false;
                    } else {
                        q.sort = keys;
                    }
                }
                "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                    let reverse = k.starts_with("_revinclude");
                    let iterate = k.ends_with(":iterate");
                    match parse_include(v, iterate, reverse, ty) {
                        Ok(i) if reverse => q.revincludes.push(i),
                        Ok(i) => q.includes.push(i),
                        Err(e) => {
                            q.issues.push(format!("{k}: {e}"));
                            applied = false
                        }
                    }
                }
                _ => match parse_filter(ty, k, v) {
                    Ok(f) => q.filters.push(f),
                    Err(e) => {
                        // A known, supported parameter with a value or modifier that does not
                        // parse is an error; an unknown parameter is ignored and reported.
                        let name = k.split(':').next().unwrap_or(k);
                        let known = !k.starts_with("_has:")
                            && !k.contains('.')
                            && sp.param(ty, name).is_some_and(|d| d.supported());
                        if known {
                            q.invalid.push(format!("{k}={v}: {e}"));
                        } else {
                            q.issues.push(e);
                        }
                        applied = false;
                    }
                },
            }
            if applied {
                q.applied.push((k.clone(), v.clone()));
            }
        }
        q
    }

    /// Rewrite absolute references to this server (`{base}/Type/id`) as local `Type/id`.
    pub fn set_base(&mut self, base: &str) {
        fn fix(f: &mut Filter, base: &str) {
            match f {
                Filter::Param { values, .. } => {
                    for v in values {
                        if let SearchValue::Reference { ty, id, url } = v {
                            if let Some(rest) = url
                                .as_deref()
                                .and_then(|u| u.strip_prefix(base))
                                .and_then(|r| r.strip_prefix('/'))
                            {
                                if let Some((t, i)) = rest.split_once('/') {
                                    let i = i.split("/_history/").next().unwrap_or(i);
                                    // Local: matches `Type/id` and the absolute URL as stored.
                                    *ty = Some(t.to_string());
                                    *id = Some(i.to_string());
                                }
                            }
                        }
                    }
                }
                Filter::Chain { targets, .. } => {
                    for (_, f) in targets {
                        fix(f, base)
                    }
                }
                Filter::Has { inner, .. } => fix(inner, base),
                _ => {}
            }
        }
        for f in &mut self.filters {
            fix(f, base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_modifiers() {
        let q = SearchQuery::parse(
            "Patient",
            "name=Zo%C3%AB&gender:not=male&identifier=urn:mrn|1,|2&birthdate=ge1950&bogus=1&name:fuzzy=x",
        )
        .unwrap();
        assert_eq!(q.filters.len(), 4);
        // An unknown parameter is reported; an unknown modifier of a known one is invalid.
        assert_eq!(q.issues.len(), 1, "{:?}", q.issues);
        assert_eq!(q.invalid.len(), 1, "{:?}", q.invalid);
        assert!(q.invalid[0].starts_with("name:fuzzy=x"), "{:?}", q.invalid);
        assert_eq!(
            q.filters[0],
            Filter::Param {
                param: "name".into(),
                ptype: ParamType::String,
                modifier: Modifier::None,
                values: vec![SearchValue::String("zoe".into())]
            }
        );
        match &q.filters[2] {
            Filter::Param { values, .. } => assert_eq!(
                values,
                &vec![
                    SearchValue::Token {
                        system: Some(Some("urn:mrn".into())),
                        code: Some("1".into())
                    },
                    SearchValue::Token {
                        system: Some(None),
                        code: Some("2".into())
                    }
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.applied.len(), 4);
    }

    #[test]
    fn chains_has_and_results() {
        let q = SearchQuery::parse(
            "CarePlan",
            "subject:Patient.name=eve&_has:Goal:subject:lifecycle-status=active&_sort=-date,_id&_count=5&_include=CarePlan:subject&_revinclude:iterate=Task:based-on",
        )
        .unwrap();
        assert!(
            q.issues.iter().any(|i| i.contains("Goal.subject")),
            "{:?}",
            q.issues
        );
        assert!(
            matches!(&q.filters[0], Filter::Chain { param, targets } if param == "subject" && targets.len() == 1)
        );
        assert_eq!(q.sort.len(), 2);
        assert!(q.sort[0].descending);
        assert_eq!(q.count, Some(5));
        assert_eq!(q.includes.len(), 1);
        assert!(q.revincludes[0].iterate);
        let p = SearchQuery::parse("Patient", "_has:CarePlan:subject:status=active").unwrap();
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert!(
            matches!(&p.filters[0], Filter::Has { source_type, .. } if source_type == "CarePlan")
        );
        assert!(SearchQuery::parse("Nope", "").is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(split_values("a\\,b,c"), vec!["a,b", "c"]);
        assert_eq!(
            split_bar("a\\|b|c"),
            ("a|b".to_string(), Some("c".to_string()))
        );
    }
}
