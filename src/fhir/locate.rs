//! Where the elements a FHIRPath expression selects are in a resource's JSON. FHIRPath Patch
//! (fhir::fhirpatch) needs places to change, not values: this walks the same expressions as
//! fhir::fhirpath (parsed by it; `where(...)` conditions are evaluated by it) and answers with
//! JSON locations and what the R4 definitions say about each element (its definition and type).
//! Supported: the resource type at the root, dotted paths with choice elements (`Observation.value`
//! finds `valueQuantity`), `[n]`, `first()`, `last()`, `where(...)`, `ofType(T)` / `as T`,
//! `extension(url)`, `|`, and the `id`/`extension` of primitives (held in `_name` in JSON).
use std::borrow::Cow;

use serde_json::Value;

use super::definitions::{Content, Definitions, ElemDef, Kind, NodeId};
use super::fhirpath::{self, Expr, Node};

/// One step from a JSON value to one of its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// An element definition: the definitions node holding it and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElemRef {
    pub node: NodeId,
    pub elem: usize,
}

impl ElemRef {
    pub fn def(self) -> &'static ElemDef {
        &Definitions::get().node(self.node).elems[self.elem]
    }
}

/// A located element.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Steps from the resource root (none: the resource itself).
    pub steps: Vec<Step>,
    /// Its definition, when the definitions know it.
    pub elem: Option<ElemRef>,
    /// Its FHIR type when known (for a choice element, from the JSON property name).
    pub ty: Option<String>,
}

impl Location {
    /// The resource itself.
    pub fn root(resource: &Value) -> Location {
        Location {
            steps: vec![],
            elem: None,
            ty: resource
                .get("resourceType")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// (steps of the object holding the element, its JSON property name, its position when the
    /// property is an array); None for the resource itself.
    pub fn split(&self) -> Option<(&[Step], &str, Option<usize>)> {
        match self.steps.as_slice() {
            [rest @ .., Step::Key(k), Step::Index(i)] => Some((rest, k, Some(*i))),
            [rest @ .., Step::Key(k)] => Some((rest, k, None)),
            _ => None,
        }
    }

    /// A readable form for messages: `contact[0].name`.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for st in &self.steps {
            match st {
                Step::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Step::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

/// The value at `steps` (None when absent).
pub fn get<'a>(doc: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    let mut cur = doc;
    for s in steps {
        cur = match (s, cur) {
            (Step::Key(k), Value::Object(o)) => o.get(k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The value at `steps`, mutable.
pub fn get_mut<'a>(doc: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for s in steps {
        cur = match (s, cur) {
            (Step::Key(k), Value::Object(o)) => o.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Where a primitive's `id` and `extension` live: `_name` (or `_name[i]`) beside it.
pub fn shadow_steps(loc: &Location) -> Option<Vec<Step>> {
    let (parent, key, idx) = loc.split()?;
    if key.starts_with('_') {
        return None;
    }
    let mut s = parent.to_vec();
    s.push(Step::Key(format!("_{key}")));
    s.extend(idx.map(Step::Index));
    Some(s)
}

/// Is this FHIR type a primitive?
pub fn is_primitive(ty: &str) -> bool {
    Definitions::get().is_primitive(ty)
}

/// The definitions node describing the children of the element at `loc` (holding `value`).
pub fn content_node(loc: &Location, value: Option<&Value>) -> Option<NodeId> {
    let d = Definitions::get();
    if let Some(rt) = value
        .and_then(|v| v.get("resourceType"))
        .and_then(Value::as_str)
    {
        if let Some(t) = d.type_def(rt).filter(|t| t.kind == Kind::Resource) {
            return Some(t.root);
        }
    }
    if let Some(Content::Node(n)) = loc.elem.map(|e| e.def().content.clone()) {
        return Some(n);
    }
    let ty = loc.ty.as_deref()?;
    let t = d.type_def(ty)?;
    if t.kind == Kind::Primitive {
        return d.type_def("Element").map(|e| e.root);
    }
    Some(t.root)
}

/// The element named `name` (`value` or `valueQuantity` for `value[x]`) of a definitions node.
pub fn find_elem(node: NodeId, name: &str) -> Option<ElemRef> {
    let n = Definitions::get().node(node);
    let i = n
        .elems
        .iter()
        .position(|e| e.base_name == name)
        .or_else(|| n.keys.get(name).map(|(ei, _)| *ei))?;
    Some(ElemRef { node, elem: i })
}

fn capitalized(t: &str) -> String {
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The JSON property of a choice element for one of its types: `value` + `Quantity`.
pub fn choice_key(base: &str, ty: &str) -> String {
    format!("{base}{}", capitalized(ty))
}

/// How many items the property `key` of `obj` holds (with `_key`), and whether it is an array.
fn extent(obj: &serde_json::Map<String, Value>, key: &str) -> Option<(usize, bool)> {
    let (v, s) = (obj.get(key), obj.get(&format!("_{key}")));
    if v.is_none() && s.is_none() {
        return None;
    }
    let len = |x: Option<&Value>| match x {
        Some(Value::Array(a)) => Some(a.len()),
        _ => None,
    };
    match (len(v), len(s)) {
        (None, None) => Some((1, false)),
        (a, b) => Some((a.unwrap_or(0).max(b.unwrap_or(0)), true)),
    }
}

/// The children named `name` of the elements at `base`.
fn member(doc: &Value, base: &[Location], name: &str) -> Vec<Location> {
    let mut out = Vec::new();
    for loc in base {
        let value = get(doc, &loc.steps);
        let (steps, node) = match value {
            Some(Value::Object(_)) => (loc.steps.clone(), content_node(loc, value)),
            // A primitive: its id and extensions are in the `_name` object beside it.
            _ => {
                let Some(sh) = shadow_steps(loc) else {
                    continue;
                };
                if !matches!(get(doc, &sh), Some(Value::Object(_))) {
                    continue;
                }
                let element = Definitions::get().type_def("Element").map(|t| t.root);
                (sh, element)
            }
        };
        let Some(Value::Object(obj)) = get(doc, &steps) else {
            continue;
        };
        // (JSON property, definition, type) of each property holding this element.
        let mut keys: Vec<(String, Option<ElemRef>, Option<String>)> = Vec::new();
        match node.and_then(|n| find_elem(n, name).map(|e| (n, e))) {
            Some((n, e)) if e.def().is_choice => {
                let nd = Definitions::get().node(n);
                for k in obj.keys() {
                    let k = k.strip_prefix('_').unwrap_or(k);
                    if let Some((ei, ti)) = nd.keys.get(k) {
                        if *ei == e.elem && !keys.iter().any(|(x, _, _)| x == k) {
                            keys.push((k.to_string(), Some(e), Some(e.def().types[*ti].clone())));
                        }
                    }
                }
            }
            Some((_, e)) => {
                let d = e.def();
                let ty = match (&d.content, d.types.as_slice()) {
                    (Content::Types, [t]) => Some(t.clone()),
                    _ => None,
                };
                keys.push((d.base_name.clone(), Some(e), ty));
            }
            None if node.is_none() => keys.push((name.to_string(), None, None)),
            None => {}
        }
        for (key, elem, ty) in keys {
            let Some((n, is_array)) = extent(obj, &key) else {
                continue;
            };
            let mut at = |i: Option<usize>| {
                let mut s = steps.clone();
                s.push(Step::Key(key.clone()));
                s.extend(i.map(Step::Index));
                let mut l = Location {
                    steps: s,
                    elem,
                    ty: ty.clone(),
                };
                // A resource in an element of type Resource has its own type.
                if let Some(rt) = get(doc, &l.steps)
                    .and_then(|v| v.get("resourceType"))
                    .and_then(Value::as_str)
                {
                    l.ty = Some(rt.to_string());
                }
                out.push(l);
            };
            if is_array {
                (0..n).for_each(|i| at(Some(i)));
            } else {
                at(None);
            }
        }
    }
    out
}

fn node_of<'a>(doc: &'a Value, loc: &Location) -> Option<Node<'a>> {
    get(doc, &loc.steps).map(|v| Node {
        value: Cow::Borrowed(v),
        ty: loc.ty.clone(),
    })
}

fn type_arg(args: &[Expr]) -> Result<&str, String> {
    match args.first() {
        Some(Expr::Str(s)) => Ok(s),
        _ => Err("a type argument is needed".into()),
    }
}

fn of_type(doc: &Value, locs: Vec<Location>, t: &str) -> Vec<Location> {
    locs.into_iter()
        .filter(|l| node_of(doc, l).is_some_and(|n| fhirpath::has_type(&n, t)))
        .collect()
}

fn eval(doc: &Value, e: &Expr, focus: &[Location]) -> Result<Vec<Location>, String> {
    Ok(match e {
        Expr::This => focus.to_vec(),
        Expr::Root(t) => {
            let rt = doc.get("resourceType").and_then(Value::as_str);
            if rt == Some(t.as_str()) || t == "Resource" || t == "DomainResource" {
                vec![Location::root(doc)]
            } else {
                vec![]
            }
        }
        Expr::Member(on, name) => member(doc, &eval(doc, on, focus)?, name),
        Expr::Index(x, n) => eval(doc, x, focus)?.into_iter().skip(*n).take(1).collect(),
        Expr::Union(a, b) => {
            let mut v = eval(doc, a, focus)?;
            for l in eval(doc, b, focus)? {
                if !v.contains(&l) {
                    v.push(l);
                }
            }
            v
        }
        Expr::As(x, t) => of_type(doc, eval(doc, x, focus)?, t),
        Expr::Call(on, name, args) => {
            let base = eval(doc, on, focus)?;
            match name.as_str() {
                "first" => base.into_iter().take(1).collect(),
                "last" => base.into_iter().last().into_iter().collect(),
                "ofType" | "as" => of_type(doc, base, type_arg(args)?),
                "where" => {
                    let cond = args.first().ok_or("where() needs a condition")?;
                    base.into_iter()
                        .filter(|l| {
                            let Some(n) = node_of(doc, l) else {
                                return false;
                            };
                            let r = fhirpath::eval(cond, doc, std::slice::from_ref(&n));
                            match r.as_slice() {
                                [] => false,
                                [one] => one.value.as_ref() != &Value::Bool(false),
                                _ => true,
                            }
                        })
                        .collect()
                }
                "extension" => {
                    let Some(Expr::Str(url)) = args.first() else {
                        return Err("extension() needs a url string".into());
                    };
                    member(doc, &base, "extension")
                        .into_iter()
                        .filter(|l| {
                            get(doc, &l.steps)
                                .and_then(|v| v.get("url"))
                                .and_then(Value::as_str)
                                == Some(url.as_str())
                        })
                        .collect()
                }
                other => {
                    return Err(format!(
                        "{other}() does not select elements of the resource (supported: where, first, last, ofType, as, extension)"
                    ))
                }
            }
        }
        _ => return Err("the expression does not select elements of the resource".into()),
    })
}

/// The locations of the elements `expr` selects in `doc`, in document order of evaluation.
/// Err for an expression that selects values rather than elements (a comparison, a literal,
/// `exists()`, `resolve()`).
pub fn locate(doc: &Value, expr: &Expr) -> Result<Vec<Location>, String> {
    eval(doc, expr, &[Location::root(doc)])
}

/// Parse `path` and locate it.
pub fn locate_path(doc: &Value, path: &str) -> Result<Vec<Location>, String> {
    let e = fhirpath::parse(path).map_err(|m| format!("'{path}' is not a FHIRPath: {m}"))?;
    locate(doc, &e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(doc: &Value, path: &str) -> Vec<String> {
        locate_path(doc, path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_iter()
            .map(|l| l.display())
            .collect()
    }

    #[test]
    fn paths_indexes_and_functions() {
        let p = json!({"resourceType": "Patient",
            "name": [{"use": "official", "family": "A", "given": ["X", "Y"]}, {"use": "usual", "given": ["Z"]}],
            "birthDate": "1970-01-01",
            "_birthDate": {"extension": [{"url": "u1", "valueString": "a"}, {"url": "u2", "valueString": "b"}]},
            "extension": [{"url": "e1", "valueBoolean": true}]});
        assert_eq!(at(&p, "Patient"), vec![""]);
        assert_eq!(at(&p, "Patient.name"), vec!["name[0]", "name[1]"]);
        assert_eq!(
            at(&p, "name.given"),
            vec!["name[0].given[0]", "name[0].given[1]", "name[1].given[0]"]
        );
        assert_eq!(at(&p, "Patient.name[1].given[0]"), vec!["name[1].given[0]"]);
        assert_eq!(
            at(&p, "Patient.name.first().family"),
            vec!["name[0].family"]
        );
        assert_eq!(at(&p, "Patient.name.last()"), vec!["name[1]"]);
        assert_eq!(
            at(&p, "Patient.name.where(use = 'usual').given"),
            vec!["name[1].given[0]"]
        );
        assert_eq!(
            at(&p, "Patient.name.where(given = 'Y')"),
            Vec::<String>::new()
        );
        assert_eq!(
            at(&p, "Patient.name.where(family.exists())"),
            vec!["name[0]"]
        );
        assert_eq!(at(&p, "Patient.birthDate"), vec!["birthDate"]);
        assert_eq!(
            at(&p, "Patient.birthDate.extension"),
            vec!["_birthDate.extension[0]", "_birthDate.extension[1]"]
        );
        assert_eq!(
            at(&p, "Patient.birthDate.extension('u2')"),
            vec!["_birthDate.extension[1]"]
        );
        assert_eq!(
            at(&p, "Patient.extension('e1').value"),
            vec!["extension[0].valueBoolean"]
        );
        assert_eq!(at(&p, "Practitioner.name"), Vec::<String>::new());
        assert_eq!(at(&p, "Patient.nothing"), Vec::<String>::new());
        assert!(locate_path(&p, "Patient.name.exists()").is_err());
        assert!(locate_path(&p, "Patient.name = 'x'").is_err());
        assert!(locate_path(&p, "Patient.name.(").is_err());
    }

    #[test]
    fn choice_elements_and_types() {
        let o = json!({"resourceType": "Observation", "status": "final",
            "valueQuantity": {"value": 1}, "effectiveDateTime": "2020",
            "component": [{"code": {"text": "a"}, "valueString": "s"}, {"code": {"text": "b"}, "valueQuantity": {"value": 2}}]});
        let l = locate_path(&o, "Observation.value").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].display(), "valueQuantity");
        assert_eq!(l[0].ty.as_deref(), Some("Quantity"));
        assert!(l[0].elem.unwrap().def().is_choice);
        assert_eq!(
            at(&o, "Observation.value.ofType(Quantity).value"),
            vec!["valueQuantity.value"]
        );
        assert_eq!(
            at(&o, "Observation.value.ofType(string)"),
            Vec::<String>::new()
        );
        assert_eq!(
            at(&o, "(Observation.value as Quantity)"),
            vec!["valueQuantity"]
        );
        assert_eq!(
            at(&o, "Observation.component.value.ofType(Quantity)"),
            vec!["component[1].valueQuantity"]
        );
        assert_eq!(
            at(&o, "Observation.component.where(code.text = 'a').value"),
            vec!["component[0].valueString"]
        );
        // A backbone element knows its definition: cardinality for later additions.
        let c = locate_path(&o, "Observation.component[0]").unwrap();
        assert_eq!(c[0].elem.unwrap().def().path, "Observation.component");
        assert!(c[0].elem.unwrap().def().is_array());
        assert_eq!(
            c[0].split().map(|(p, k, i)| (p.len(), k.to_string(), i)),
            Some((0, "component".into(), Some(0)))
        );
    }

    #[test]
    fn contained_resources_have_their_own_type() {
        let p = json!({"resourceType": "Patient", "contained": [
            {"resourceType": "Practitioner", "id": "a", "name": [{"family": "P"}]},
            {"resourceType": "Organization", "id": "b", "name": "O"}]});
        assert_eq!(
            at(&p, "Patient.contained.ofType(Organization).name"),
            vec!["contained[1].name"]
        );
        assert_eq!(
            at(&p, "Patient.contained.where(id = 'a').name.family"),
            vec!["contained[0].name[0].family"]
        );
    }
}
