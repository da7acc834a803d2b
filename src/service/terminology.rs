//! The terminology service over what the server holds (the R4 required value sets, the
//! program's CodeSystems and ValueSets, and stored CodeSystem/ValueSet resources read with the
//! caller's access): CodeSystem/$lookup, ValueSet/$expand, ValueSet/$validate-code and
//! CodeSystem/$subsumes. Search's `:in`/`:below` use the same `fhir::terminology`.
use serde_json::{json, Map, Value};

use super::context::RequestContext;
use crate::error::{ApiError, ApiResult};
use crate::fhir::terminology::{self, CodeSystem, Concept};
use crate::fhir::validate::profiles;
use crate::store::DbConn;

/// One operation argument: a primitive (from the URL or a `value[x]`), a Coding, a
/// CodeableConcept or a resource (from a Parameters body).
#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    Coding(Value),
    Concept(Value),
    Resource(Value),
}

/// The arguments of one call, in order.
#[derive(Debug, Default, Clone)]
pub struct Args(pub Vec<(String, Arg)>);

impl Args {
    /// Arguments from a query string (all primitives).
    pub fn from_query(pairs: Vec<(String, String)>) -> Args {
        Args(pairs.into_iter().map(|(k, v)| (k, Arg::Text(v))).collect())
    }

    /// Arguments from a Parameters resource (400 for anything else).
    pub fn from_parameters(body: &Value) -> ApiResult<Args> {
        if body["resourceType"] != "Parameters" {
            return Err(ApiError::structure(
                "the body of a terminology operation must be a Parameters resource",
            ));
        }
        let mut out = Vec::new();
        for p in body["parameter"].as_array().into_iter().flatten() {
            let Some(name) = p["name"].as_str() else {
                return Err(ApiError::invalid_at(
                    "every parameter needs a name",
                    "Parameters.parameter.name",
                ));
            };
            let obj = p.as_object().cloned().unwrap_or_default();
            let arg = if let Some(r) = obj.get("resource") {
                Arg::Resource(r.clone())
            } else if let Some(c) = obj.get("valueCoding") {
                Arg::Coding(c.clone())
            } else if let Some(c) = obj.get("valueCodeableConcept") {
                Arg::Concept(c.clone())
            } else if let Some((_, v)) = obj.iter().find(|(k, _)| k.starts_with("value")) {
                Arg::Text(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            } else {
                continue;
            };
            out.push((name.to_string(), arg));
        }
        Ok(Args(out))
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|(k, v)| match v {
            Arg::Text(s) if k == name => Some(s.as_str()),
            _ => None,
        })
    }
    fn coding(&self, name: &str) -> Option<&Value> {
        self.0.iter().find_map(|(k, v)| match v {
            Arg::Coding(c) if k == name => Some(c),
            _ => None,
        })
    }
    fn concept(&self, name: &str) -> Option<&Value> {
        self.0.iter().find_map(|(k, v)| match v {
            Arg::Concept(c) if k == name => Some(c),
            _ => None,
        })
    }
    fn resource(&self, name: &str) -> Option<&Value> {
        self.0.iter().find_map(|(k, v)| match v {
            Arg::Resource(r) if k == name => Some(r),
            _ => None,
        })
    }
    fn count(&self, name: &str, max: usize) -> ApiResult<Option<usize>> {
        match self.text(name) {
            None => Ok(None),
            Some(s) => s.parse::<usize>().map(|n| Some(n.min(max))).map_err(|_| {
                ApiError::invalid_at(
                    format!("parameter '{name}' must be a non-negative integer, not '{s}'"),
                    name,
                )
            }),
        }
    }
}

/// A conformance resource by id: the embedded ones first, then the stored ones (read with the
/// caller's access, so a hidden or unknown id is a 404 either way).
fn instance(conn: &mut DbConn, ctx: &RequestContext, ty: &str, id: &str) -> ApiResult<Value> {
    if let Some(text) = profiles::resource(ty, id) {
        return serde_json::from_str(text).map_err(ApiError::internal);
    }
    let row = super::read::read(conn, ctx, ty, id)?;
    let text = row
        .content
        .ok_or_else(|| ApiError::NotFound(format!("{ty}/{id} is not known")))?;
    serde_json::from_str(&text).map_err(ApiError::internal)
}

/// The code system an operation works on: instance, or `system` / a Coding's system.
enum System {
    Held(&'static CodeSystem, String),
    Own(CodeSystem, String),
}

impl System {
    fn cs(&self) -> &CodeSystem {
        match self {
            System::Held(c, _) => c,
            System::Own(c, _) => c,
        }
    }
    fn url(&self) -> &str {
        match self {
            System::Held(_, u) | System::Own(_, u) => u,
        }
    }
}

fn held_system(url: &str) -> ApiResult<System> {
    terminology::code_system(url)
        .map(|c| System::Held(c, url.split('|').next().unwrap_or(url).to_string()))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "code system {url} is not held by this server (it holds the FHIR R4 required value sets' systems and the program's own)"
            ))
        })
}

fn system_for(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: Option<&str>,
    url: Option<&str>,
) -> ApiResult<System> {
    if let Some(id) = id {
        let cs = instance(conn, ctx, "CodeSystem", id)?;
        let url = cs["url"].as_str().unwrap_or_default().to_string();
        if let Some(held) = terminology::code_system(&url) {
            return Ok(System::Held(held, url));
        }
        return Ok(System::Own(CodeSystem::from_resource(&cs), url));
    }
    match url {
        Some(u) => held_system(u),
        None => Err(ApiError::invalid_at(
            "a 'system' (or a Coding with one) is required",
            "system",
        )),
    }
}

fn parameters(parts: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": parts})
}

fn code_of<'a>(args: &'a Args, code: &str, coding: &str) -> (Option<&'a str>, Option<&'a str>) {
    match args.coding(coding) {
        Some(c) => (c["code"].as_str(), c["system"].as_str()),
        None => (args.text(code), args.text("system")),
    }
}

/// CodeSystem/$lookup (type level with `system`+`code` or `coding`; instance level with `code`).
pub fn lookup(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: Option<&str>,
    args: &Args,
) -> ApiResult<Value> {
    let (code, system) = code_of(args, "code", "coding");
    let code = code.ok_or_else(|| {
        ApiError::invalid_at("a 'code' (or a Coding with one) is required", "code")
    })?;
    let sys = system_for(conn, ctx, id, system)?;
    let cs = sys.cs();
    let Some(code) = cs.canonical(code) else {
        return Err(ApiError::NotFound(format!(
            "code '{code}' is not in code system {}",
            sys.url()
        )));
    };
    let mut out = vec![
        json!({"name": "name", "valueString": cs.name}),
        json!({"name": "display", "valueString": cs.display(code).unwrap_or(code)}),
    ];
    if let Some(p) = cs.parent(code) {
        out.push(json!({"name": "property", "part": [
            {"name": "code", "valueCode": "parent"}, {"name": "value", "valueCode": p}]}));
    }
    for c in cs.children(code) {
        out.push(json!({"name": "property", "part": [
            {"name": "code", "valueCode": "child"}, {"name": "value", "valueCode": c}]}));
    }
    Ok(parameters(out))
}

/// CodeSystem/$subsumes: `codeA`/`codeB` with `system`, or `codingA`/`codingB`.
pub fn subsumes(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: Option<&str>,
    args: &Args,
) -> ApiResult<Value> {
    let (a, sa) = code_of(args, "codeA", "codingA");
    let (b, sb) = code_of(args, "codeB", "codingB");
    let (Some(a), Some(b)) = (a, b) else {
        return Err(ApiError::invalid_at(
            "both 'codeA' and 'codeB' (or 'codingA' and 'codingB') are required",
            "codeA",
        ));
    };
    if let (Some(x), Some(y)) = (sa, sb) {
        if x != y {
            return Err(ApiError::invalid_at(
                format!("codingA ({x}) and codingB ({y}) are from different code systems"),
                "codingB",
            ));
        }
    }
    let sys = system_for(conn, ctx, id, sa.or(sb))?;
    let mut canonical = Vec::with_capacity(2);
    for (name, c) in [("codeA", a), ("codeB", b)] {
        match sys.cs().canonical(c) {
            Some(c) => canonical.push(c),
            None => {
                return Err(ApiError::invalid_at(
                    format!("{name} '{c}' is not in code system {}", sys.url()),
                    name,
                ))
            }
        }
    }
    let (a, b) = (canonical[0], canonical[1]);
    let outcome = sys.cs().subsumes(a, b);
    Ok(parameters(vec![
        json!({"name": "outcome", "valueCode": outcome.as_str()}),
    ]))
}

/// The value set an operation works on: instance, `url` (held, or a stored ValueSet with that
/// url is not looked up: only held ones), or a `valueSet` resource in the body.
fn valueset_for(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: Option<&str>,
    args: &Args,
) -> ApiResult<(Option<String>, Vec<Concept>)> {
    let compose = |vs: &Value| {
        terminology::expand_compose(vs)
            .map_err(|e| ApiError::invalid_at(e.to_string(), "ValueSet.compose"))
    };
    if let Some(id) = id {
        let vs = instance(conn, ctx, "ValueSet", id)?;
        let url = vs["url"].as_str().map(String::from);
        if let Some(held) = url.as_deref().and_then(terminology::expand_concepts) {
            return Ok((url, held));
        }
        return Ok((url, compose(&vs)?));
    }
    if let Some(vs) = args.resource("valueSet") {
        if vs["resourceType"] != "ValueSet" {
            return Err(ApiError::invalid_at(
                "parameter 'valueSet' must be a ValueSet resource",
                "valueSet",
            ));
        }
        return Ok((vs["url"].as_str().map(String::from), compose(vs)?));
    }
    let url = args.text("url").or(args.text("context")).ok_or_else(|| {
        ApiError::invalid_at(
            "a 'url' (or a 'valueSet' resource in a POST) is required at type level",
            "url",
        )
    })?;
    let held = terminology::expand_concepts(url)
        .ok_or_else(|| ApiError::NotFound(format!("value set {url} is not held by this server")))?;
    Ok((Some(url.to_string()), held))
}

/// ValueSet/$expand with `filter` (case-insensitive, on code and display), `offset`, `count`.
pub fn expand(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: Option<&str>,
    args: &Args,
) -> ApiResult<Value> {
    let (url, all) = valueset_for(conn, ctx, id, args)?;
    let filter = args.text("filter").map(str::to_lowercase);
    let matching: Vec<&Concept> = all
        .iter()
        .filter(|c| {
            filter.as_deref().is_none_or(|f| {
                c.code.to_lowercase().contains(f)
                    || c.display
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(f))
            })
        })
        .collect();
    let offset = args.count("offset", usize::MAX)?.unwrap_or(0);
    let count = args.count("count", 10_000)?.unwrap_or(10_000);
    let contains: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(count)
        .map(|c| {
            let mut m = Map::new();
            m.insert("system".into(), json!(c.system));
            m.insert("code".into(), json!(c.code));
            if let Some(d) = &c.display {
                m.insert("display".into(), json!(d));
            }
            Value::Object(m)
        })
        .collect();
    let mut params = Vec::new();
    if let Some(f) = args.text("filter") {
        params.push(json!({"name": "filter", "valueString": f}));
    }
    params.push(json!({"name": "offset", "valueInteger": offset}));
    params.push(json!({"name": "count", "valueInteger": count}));
    let mut expansion = json!({
        "identifier": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "total": matching.len(),
        "offset": offset,
        "parameter": params,
    });
    if !contains.is_empty() {
        expansion["contains"] = Value::Array(contains);
    }
    let mut vs = json!({"resourceType": "ValueSet", "status": "active"});
    if let Some(id) = id {
        vs["id"] = json!(id);
    }
    if let Some(u) = url {
        vs["url"] = json!(u);
    }
    vs["expansion"] = expansion;
    Ok(vs)
}

/// ValueSet/$validate-code: `code`+`system`(+`display`), `coding` or `codeableConcept`.
pub fn validate_code(
    conn: &mut DbConn,
    ctx: &RequestContext,
    id: Option<&str>,
    args: &Args,
) -> ApiResult<Value> {
    let candidates: Vec<(Option<String>, String, Option<String>)> =
        if let Some(cc) = args.concept("codeableConcept") {
            cc["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    Some((
                        c["system"].as_str().map(String::from),
                        c["code"].as_str()?.to_string(),
                        c["display"].as_str().map(String::from),
                    ))
                })
                .collect()
        } else if let Some(c) = args.coding("coding") {
            c["code"]
                .as_str()
                .map(|code| {
                    (
                        c["system"].as_str().map(String::from),
                        code.to_string(),
                        c["display"].as_str().map(String::from),
                    )
                })
                .into_iter()
                .collect()
        } else {
            args.text("code")
                .map(|code| {
                    (
                        args.text("system").map(String::from),
                        code.to_string(),
                        args.text("display").map(String::from),
                    )
                })
                .into_iter()
                .collect()
        };
    if candidates.is_empty() {
        return Err(ApiError::invalid_at(
            "a 'code' (with 'system'), a 'coding' or a 'codeableConcept' is required",
            "code",
        ));
    }
    let (url, all) = valueset_for(conn, ctx, id, args)?;
    let name = url.unwrap_or_else(|| "the value set".into());
    let mut messages = Vec::new();
    for (system, code, display) in &candidates {
        let hit = all
            .iter()
            .find(|c| c.code == *code && system.as_deref().is_none_or(|s| s == c.system));
        match (hit, display) {
            (Some(c), Some(d)) if c.display.as_deref().is_some_and(|known| known != d) => messages
                .push(format!(
                    "the display '{d}' is not the display of {}#{code} ('{}')",
                    c.system,
                    c.display.as_deref().unwrap_or_default()
                )),
            (Some(c), _) => {
                let mut out = vec![json!({"name": "result", "valueBoolean": true})];
                if let Some(d) = &c.display {
                    out.push(json!({"name": "display", "valueString": d}));
                }
                return Ok(parameters(out));
            }
            (None, _) => messages.push(format!(
                "{}#{code} is not in {name}",
                system.as_deref().unwrap_or("(no system)")
            )),
        }
    }
    Ok(parameters(vec![
        json!({"name": "result", "valueBoolean": false}),
        json!({"name": "message", "valueString": messages.join("; ")}),
    ]))
}
