//! FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): a `Parameters` resource with one
//! `operation` parameter per change — add, insert, delete, replace, move — whose parts name the
//! element by FHIRPath (`path`, located by fhir::locate) and carry the new content as `value`
//! (a `value[x]`, a `resource`, or nested parts for complex and backbone values). All operations
//! apply, in order, or none do. The result is validated by the write path like any update.
//!
//! Choices where the specification leaves room: `delete` of a path that selects nothing is a
//! no-op; `insert` and `move` take a path that selects a whole list (an empty list may be named
//! by its path when its parent exists); a primitive's `id`/`extension` (JSON `_name`) go with it
//! when it is replaced, moved or deleted; elements left empty by a delete are removed.
use serde_json::{Map, Value};

use super::definitions::{Content, Definitions, Kind, NodeId};
use super::fhirpath::{self, Expr};
use super::locate::{
    self, choice_key, content_node, find_elem, get, get_mut, ElemRef, Location, Step,
};
use super::patch::PatchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpType {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

/// One operation, as parsed from its parts.
struct Op<'a> {
    n: usize,
    ty: OpType,
    path: &'a str,
    expr: Expr,
    name: Option<&'a str>,
    value: Option<&'a Value>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

impl Op<'_> {
    fn label(&self) -> String {
        let t = match self.ty {
            OpType::Add => "add",
            OpType::Insert => "insert",
            OpType::Delete => "delete",
            OpType::Replace => "replace",
            OpType::Move => "move",
        };
        format!("operation {} ({t} at '{}')", self.n, self.path)
    }
    fn fail(&self, m: impl std::fmt::Display) -> PatchError {
        PatchError::Failed(format!("{}: {m}", self.label()))
    }
}

fn malformed(n: usize, m: impl std::fmt::Display) -> PatchError {
    PatchError::Malformed(format!("FHIRPath Patch operation {n}: {m}"))
}

/// The value[x] of a part, whatever its type: (type suffix as written, value).
fn typed_value(part: &Value) -> Option<(&str, &Value)> {
    part.as_object()?.iter().find_map(|(k, v)| {
        k.strip_prefix("value")
            .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|t| (t, v))
    })
}

fn string_part<'a>(part: &'a Value, n: usize, name: &str) -> Result<&'a str, PatchError> {
    part.get("valueString")
        .or_else(|| part.get("valueCode"))
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(n, format!("part '{name}' needs a valueString")))
}

fn integer_part(part: &Value, n: usize, name: &str) -> Result<usize, PatchError> {
    let v = typed_value(part)
        .filter(|(t, _)| matches!(*t, "Integer" | "UnsignedInt" | "PositiveInt"))
        .map(|(_, v)| v)
        .ok_or_else(|| malformed(n, format!("part '{name}' needs a valueInteger")))?;
    v.as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| {
            malformed(
                n,
                format!("'{name}' must be an integer of 0 or more, not {v}"),
            )
        })
}

fn parse_ops(params: &Value) -> Result<Vec<Op<'_>>, PatchError> {
    if params.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(PatchError::Malformed(
            "a FHIRPath Patch is a Parameters resource".into(),
        ));
    }
    let list = match params.get("parameter") {
        None => return Ok(vec![]),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(PatchError::Malformed(
                "Parameters.parameter must be an array".into(),
            ))
        }
    };
    let mut ops = Vec::with_capacity(list.len());
    for (n, p) in list.iter().enumerate() {
        if p.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(malformed(
                n,
                "every parameter of a FHIRPath Patch is named 'operation'",
            ));
        }
        let parts = p
            .get("part")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(n, "the operation has no parts"))?;
        let (mut ty, mut path, mut name, mut value) = (None, None, None, None);
        let (mut index, mut source, mut destination) = (None, None, None);
        for part in parts {
            let pname = part
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(n, "a part has no name"))?;
            let dup = |set: bool| {
                if set {
                    Err(malformed(n, format!("part '{pname}' is given twice")))
                } else {
                    Ok(())
                }
            };
            match pname {
                "type" => {
                    dup(ty.is_some())?;
                    ty = Some(match string_part(part, n, pname)? {
                        "add" => OpType::Add,
                        "insert" => OpType::Insert,
                        "delete" => OpType::Delete,
                        "replace" => OpType::Replace,
                        "move" => OpType::Move,
                        other => {
                            return Err(malformed(
                                n,
                                format!("type '{other}' is not add, insert, delete, replace or move"),
                            ))
                        }
                    });
                }
                "path" => {
                    dup(path.is_some())?;
                    path = Some(string_part(part, n, pname)?);
                }
                "name" => {
                    dup(name.is_some())?;
                    name = Some(string_part(part, n, pname)?);
                }
                "value" => {
                    dup(value.is_some())?;
                    let kinds = part.as_object().map_or(0, |o| {
                        o.keys()
                            .filter(|k| {
                                *k == "resource"
                                    || *k == "part"
                                    || k.strip_prefix("value").is_some_and(|t| {
                                        t.starts_with(|c: char| c.is_ascii_uppercase())
                                    })
                            })
                            .count()
                    });
                    if kinds != 1 {
                        return Err(malformed(
                            n,
                            "the value part needs exactly one of a value[x], a resource or parts",
                        ));
                    }
                    value = Some(part);
                }
                "index" => {
                    dup(index.is_some())?;
                    index = Some(integer_part(part, n, pname)?);
                }
                "source" => {
                    dup(source.is_some())?;
                    source = Some(integer_part(part, n, pname)?);
                }
                "destination" => {
                    dup(destination.is_some())?;
                    destination = Some(integer_part(part, n, pname)?);
                }
                other => {
                    return Err(malformed(
                        n,
                        format!("unknown part '{other}' (type, path, name, value, index, source, destination)"),
                    ))
                }
            }
        }
        let ty = ty.ok_or_else(|| malformed(n, "the operation has no 'type' part"))?;
        let path = path.ok_or_else(|| malformed(n, "the operation has no 'path' part"))?;
        let expr = fhirpath::parse(path)
            .map_err(|m| malformed(n, format!("path '{path}' is not a supported FHIRPath: {m}")))?;
        let needs: &[(&str, bool)] = match ty {
            OpType::Add => &[("name", name.is_some()), ("value", value.is_some())],
            OpType::Insert => &[("index", index.is_some()), ("value", value.is_some())],
            OpType::Replace => &[("value", value.is_some())],
            OpType::Move => &[
                ("source", source.is_some()),
                ("destination", destination.is_some()),
            ],
            OpType::Delete => &[],
        };
        if let Some((missing, _)) = needs.iter().find(|(_, present)| !present) {
            return Err(malformed(
                n,
                format!("this operation needs a '{missing}' part"),
            ));
        }
        ops.push(Op {
            n,
            ty,
            path,
            expr,
            name,
            value,
            index,
            source,
            destination,
        });
    }
    Ok(ops)
}

/// New content for an element: its JSON, its type when given as value[x] or resource, and for
/// a primitive the `_name` content (id, extension) given as `_value[x]`.
struct NewValue {
    json: Value,
    ty: Option<String>,
    shadow: Option<Value>,
}

/// `Code` → `code` for primitives, `HumanName` stays.
fn type_from_suffix(suffix: &str) -> String {
    let mut c = suffix.chars();
    let lower = match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    };
    if Definitions::get().is_primitive(&lower) {
        lower
    } else {
        suffix.to_string()
    }
}

/// The content a `value` part (or a nested part) carries; `node` describes the children of the
/// place it goes to (used for values given as nested parts).
fn part_value(part: &Value, node: Option<NodeId>, at: &str) -> Result<NewValue, PatchError> {
    let obj = part
        .as_object()
        .ok_or_else(|| PatchError::Malformed(format!("{at}: a part must be an object")))?;
    let mut found: Vec<NewValue> = Vec::new();
    let mut shadow = None;
    for (k, v) in obj {
        if let Some(t) = k.strip_prefix("_value") {
            if t.starts_with(|c: char| c.is_ascii_uppercase()) {
                shadow = Some(v.clone());
            }
        } else if let Some(t) = k
            .strip_prefix("value")
            .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
        {
            found.push(NewValue {
                json: v.clone(),
                ty: Some(type_from_suffix(t)),
                shadow: None,
            });
        } else if k == "resource" {
            found.push(NewValue {
                json: v.clone(),
                ty: v
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                shadow: None,
            });
        } else if k == "part" {
            let parts = v
                .as_array()
                .ok_or_else(|| PatchError::Malformed(format!("{at}: 'part' must be an array")))?;
            found.push(NewValue {
                json: build_complex(parts, node, at)?,
                ty: None,
                shadow: None,
            });
        }
    }
    match found.len() {
        1 => {
            let mut v = found.pop().expect("one value");
            if v.ty.as_deref().is_some_and(locate::is_primitive) {
                v.shadow = shadow;
            }
            Ok(v)
        }
        0 => Err(PatchError::Malformed(format!(
            "{at}: the value needs a value[x], a resource or parts"
        ))),
        _ => Err(PatchError::Malformed(format!(
            "{at}: the value has more than one of value[x], resource and part"
        ))),
    }
}

/// The JSON kind of a primitive type's values.
fn json_kind(ty: &str) -> &'static str {
    match ty {
        "boolean" => "boolean",
        "integer" | "decimal" | "positiveInt" | "unsignedInt" => "number",
        _ => "string",
    }
}

const QUANTITIES: &[&str] = &[
    "Quantity",
    "Age",
    "Count",
    "Distance",
    "Duration",
    "SimpleQuantity",
    "MoneyQuantity",
];

/// Whether a value of type `given` may stand where the element's types are allowed: the same
/// type; a primitive of the same JSON kind (a valueString for a `code` or `xhtml`, whose format
/// validation then checks); a Quantity for a Quantity profile; a resource for `Resource`.
fn compatible(types: &[String], given: &str) -> bool {
    let d = Definitions::get();
    types.iter().any(|t| {
        t == given
            || (d.is_primitive(t) && d.is_primitive(given) && json_kind(t) == json_kind(given))
            || (QUANTITIES.contains(&t.as_str()) && QUANTITIES.contains(&given))
            || (t == "Resource" && d.is_resource_type(given))
    })
}

/// The JSON property for element `name` (of the node's element `elem`) holding a value of type
/// `ty`: the choice's typed name for `value[x]`.
fn json_key(
    elem: Option<ElemRef>,
    name: &str,
    ty: Option<&str>,
    at: &str,
) -> Result<String, PatchError> {
    let Some(e) = elem else {
        return Ok(name.to_string());
    };
    let d = e.def();
    let fail = |m: String| PatchError::Failed(format!("{at}: {m}"));
    if d.is_choice {
        if name == d.base_name {
            let t = ty.ok_or_else(|| {
                fail(format!(
                    "'{name}' is a choice of types: give the value as a typed value[x]"
                ))
            })?;
            let t = d
                .types
                .iter()
                .find(|x| x.eq_ignore_ascii_case(t))
                .ok_or_else(|| {
                    fail(format!(
                        "'{}' does not allow the type {t} (allowed: {})",
                        d.path,
                        d.types.join(", ")
                    ))
                })?;
            return Ok(choice_key(&d.base_name, t));
        }
        // The typed name itself (valueQuantity): the value must be of that type.
        let node = Definitions::get().node(e.node);
        let (_, ti) = node.keys.get(name).copied().unwrap_or((e.elem, 0));
        if let Some(t) = ty {
            if !compatible(std::slice::from_ref(&d.types[ti]), t) {
                return Err(fail(format!("'{name}' takes a {}, not a {t}", d.types[ti])));
            }
        }
        return Ok(name.to_string());
    }
    if let Some(t) = ty {
        if !d.types.is_empty() && !compatible(&d.types, t) {
            return Err(fail(format!(
                "'{}' takes {}, not {t}",
                d.path,
                d.types.join(" | ")
            )));
        }
    }
    Ok(name.to_string())
}

/// The node describing the children of a value placed in element `elem` (complex or backbone).
fn child_node(elem: Option<ElemRef>, ty: Option<&str>) -> Option<NodeId> {
    let d = Definitions::get();
    if let Some(t) = ty.and_then(|t| d.type_def(t)) {
        return (t.kind != Kind::Primitive).then_some(t.root);
    }
    let def = elem?.def();
    match (&def.content, def.types.as_slice()) {
        (Content::Node(n), _) => Some(*n),
        (Content::Types, [t]) => d.type_def(t).map(|t| t.root),
        _ => None,
    }
}

/// A complex or backbone value given as parts (one part per child element; repeated names make
/// a list).
fn build_complex(parts: &[Value], node: Option<NodeId>, at: &str) -> Result<Value, PatchError> {
    let mut obj = Map::new();
    for p in parts {
        let name = p.get("name").and_then(Value::as_str).ok_or_else(|| {
            PatchError::Malformed(format!("{at}: a part of the value has no name"))
        })?;
        let elem = match node {
            Some(n) => Some(find_elem(n, name).ok_or_else(|| {
                PatchError::Failed(format!(
                    "{at}: {} has no element '{name}'",
                    Definitions::get().node(n).path
                ))
            })?),
            None => None,
        };
        let inner = format!("{at}.{name}");
        let v = part_value(p, child_node(elem, None), &inner)?;
        let key = json_key(elem, name, v.ty.as_deref(), &inner)?;
        let repeats = elem.map(|e| e.def().is_array());
        put_value(&mut obj, &key, v, repeats, &inner)?;
    }
    Ok(Value::Object(obj))
}

/// Add `v` as property `key` of `obj`: appended when the element repeats (or, unknown to the
/// definitions, is already a list), set when it does not and is absent.
fn put_value(
    obj: &mut Map<String, Value>,
    key: &str,
    v: NewValue,
    repeats: Option<bool>,
    at: &str,
) -> Result<(), PatchError> {
    let skey = format!("_{key}");
    let present = obj.contains_key(key) || obj.contains_key(&skey);
    let repeats = repeats.unwrap_or_else(|| obj.get(key).is_some_and(Value::is_array));
    if !repeats {
        if present {
            return Err(PatchError::Failed(format!(
                "{at}: '{key}' is already present and does not repeat (use replace)"
            )));
        }
        obj.insert(key.to_string(), v.json);
        if let Some(s) = v.shadow {
            obj.insert(skey, s);
        }
        return Ok(());
    }
    let len = obj.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    insert_item(obj, key, len, v);
    Ok(())
}

/// Insert into the list `key` of `obj` at `i` (≤ its length), keeping `_key` aligned.
fn insert_item(obj: &mut Map<String, Value>, key: &str, i: usize, v: NewValue) {
    let skey = format!("_{key}");
    let list = obj
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(vec![]));
    if !list.is_array() {
        *list = Value::Array(vec![list.take()]);
    }
    let len_before = list.as_array().map_or(0, Vec::len);
    if let Value::Array(a) = list {
        a.insert(i.min(a.len()), v.json);
    }
    if v.shadow.is_some() || obj.contains_key(&skey) {
        let sh = obj
            .entry(skey.clone())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(s) = sh {
            s.resize(len_before.max(s.len()), Value::Null);
            s.insert(i.min(s.len()), v.shadow.unwrap_or(Value::Null));
        }
        drop_empty_shadow(obj, &skey);
    }
}

/// Remove item `i` of the list `key` of `obj` (and of `_key`); the property goes when empty.
fn remove_item(obj: &mut Map<String, Value>, key: &str, i: usize) -> Option<(Value, Value)> {
    let skey = format!("_{key}");
    let a = obj.get_mut(key)?.as_array_mut()?;
    if i >= a.len() {
        return None;
    }
    let item = a.remove(i);
    let empty = a.is_empty();
    let mut sh = Value::Null;
    if let Some(Value::Array(s)) = obj.get_mut(&skey) {
        if i < s.len() {
            sh = s.remove(i);
        }
    }
    if empty {
        obj.shift_remove(key);
        obj.shift_remove(&skey);
    } else {
        drop_empty_shadow(obj, &skey);
    }
    Some((item, sh))
}

/// A `_key` list holding nothing but nulls says nothing: drop it.
fn drop_empty_shadow(obj: &mut Map<String, Value>, skey: &str) {
    if obj
        .get(skey)
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().all(Value::is_null))
    {
        obj.shift_remove(skey);
    }
}

fn object_at<'a>(
    doc: &'a mut Value,
    steps: &[Step],
    op: &Op,
) -> Result<&'a mut Map<String, Value>, PatchError> {
    get_mut(doc, steps)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| op.fail("the element is not where the path said"))
}

/// Remove the element at `loc` with its `_name` content.
fn remove_at(doc: &mut Value, loc: &Location, op: &Op) -> Result<(), PatchError> {
    let (parent, key, idx) = loc
        .split()
        .ok_or_else(|| op.fail("the resource itself cannot be deleted or moved"))?;
    let (parent, key) = (parent.to_vec(), key.to_string());
    let obj = object_at(doc, &parent, op)?;
    match idx {
        Some(i) => {
            remove_item(obj, &key, i);
        }
        None => {
            obj.shift_remove(&key);
            obj.shift_remove(&format!("_{key}"));
        }
    }
    prune(doc, parent);
    Ok(())
}

/// Remove the objects and lists a removal left empty, up to (not including) the resource.
fn prune(doc: &mut Value, mut steps: Vec<Step>) {
    loop {
        let empty = match get(doc, &steps) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty || steps.is_empty() {
            return;
        }
        let loc = Location {
            steps: steps.clone(),
            elem: None,
            ty: None,
        };
        let Some((parent, key, idx)) = loc.split() else {
            return;
        };
        let (parent, key) = (parent.to_vec(), key.to_string());
        let Some(obj) = get_mut(doc, &parent).and_then(Value::as_object_mut) else {
            return;
        };
        match idx {
            Some(i) => {
                remove_item(obj, &key, i);
            }
            None => {
                obj.shift_remove(&key);
            }
        }
        steps = parent;
    }
}

fn single<'a>(locs: &'a [Location], op: &Op) -> Result<&'a Location, PatchError> {
    match locs {
        [one] => Ok(one),
        [] => Err(op.fail("the path selects no element")),
        many => Err(op.fail(format!(
            "the path selects {} elements; it must select exactly one",
            many.len()
        ))),
    }
}

/// The list a path names for insert and move: (steps of the object holding it, its property,
/// its definition, its length). The path must select all of one list, or nothing with a parent
/// that exists (an empty list).
fn list_of(
    doc: &Value,
    locs: &[Location],
    op: &Op,
) -> Result<(Vec<Step>, String, Option<ElemRef>, usize), PatchError> {
    if let Some(first) = locs.first() {
        let (parent, key, idx) = first
            .split()
            .ok_or_else(|| op.fail("the path must select a list, not the resource"))?;
        if idx.is_none() {
            return Err(op.fail(format!("'{}' is not a list", first.display())));
        }
        let same = locs.iter().all(|l| {
            l.split()
                .is_some_and(|(p, k, i)| p == parent && k == key && i.is_some())
        });
        let len = get(doc, parent)
            .and_then(|o| o.get(key))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if !same || locs.len() != len {
            return Err(op.fail(
                "the path must select one whole list (e.g. Patient.identifier), not a part of one",
            ));
        }
        return Ok((parent.to_vec(), key.to_string(), first.elem, len));
    }
    // Nothing selected: an absent list whose parent is there.
    let Expr::Member(on, name) = &op.expr else {
        return Err(op.fail("the path selects no element"));
    };
    let parents = locate::locate(doc, on).map_err(|m| op.fail(m))?;
    let parent = single(&parents, op)?;
    if !matches!(get(doc, &parent.steps), Some(Value::Object(_))) {
        return Err(op.fail("the path selects no element"));
    }
    let elem = content_node(parent, get(doc, &parent.steps)).and_then(|n| find_elem(n, name));
    if let Some(e) = elem {
        if e.def().is_choice || !e.def().is_array() {
            return Err(op.fail(format!("'{}' is not a list", e.def().path)));
        }
    }
    Ok((parent.steps.clone(), name.clone(), elem, 0))
}

fn value_for(op: &Op, elem: Option<ElemRef>) -> Result<NewValue, PatchError> {
    let part = op.value.expect("checked when parsed");
    let ty = part
        .get("part")
        .is_none()
        .then_some(())
        .and_then(|_| typed_value(part).map(|(t, _)| type_from_suffix(t)));
    part_value(part, child_node(elem, ty.as_deref()), &op.label())
}

fn check_type(op: &Op, elem: Option<ElemRef>, v: &NewValue) -> Result<(), PatchError> {
    if let (Some(e), Some(t)) = (elem, v.ty.as_deref()) {
        let d = e.def();
        if !d.types.is_empty() && !compatible(&d.types, t) {
            return Err(op.fail(format!(
                "'{}' takes {}, not {t}",
                d.path,
                d.types.join(" | ")
            )));
        }
    }
    Ok(())
}

fn add(doc: &mut Value, op: &Op) -> Result<(), PatchError> {
    let locs = locate::locate(doc, &op.expr).map_err(|m| op.fail(m))?;
    let parent = single(&locs, op)?;
    let name = op.name.expect("checked when parsed");
    let value = get(doc, &parent.steps);
    // The children of a primitive (its id, extensions) live in `_name` beside it.
    let (steps, node) = match value {
        Some(Value::Object(_)) => (parent.steps.clone(), content_node(parent, value)),
        _ => {
            let sh = locate::shadow_steps(parent).ok_or_else(|| {
                op.fail("the path does not select an element that can have children")
            })?;
            let element = Definitions::get().type_def("Element").map(|t| t.root);
            (sh, element)
        }
    };
    let elem = match node {
        Some(n) => Some(find_elem(n, name).ok_or_else(|| {
            op.fail(format!(
                "{} has no element '{name}'",
                Definitions::get().node(n).path
            ))
        })?),
        None => None,
    };
    let v = value_for(op, elem)?;
    let key = json_key(elem, name, v.ty.as_deref(), &op.label())?;
    // A choice element is present under any of its typed names.
    if let Some(e) = elem.filter(|e| e.def().is_choice) {
        let nd = Definitions::get().node(e.node);
        if let Some(Value::Object(o)) = get(doc, &steps) {
            if let Some(k) = o.keys().find(|k| {
                nd.keys
                    .get(k.trim_start_matches('_'))
                    .is_some_and(|(ei, _)| *ei == e.elem)
            }) {
                return Err(op.fail(format!("'{k}' is already present (use replace)")));
            }
        }
    }
    if !matches!(get(doc, &steps), Some(Value::Object(_))) {
        create_shadow(doc, &steps, op)?;
    }
    let obj = object_at(doc, &steps, op)?;
    put_value(obj, &key, v, elem.map(|e| e.def().is_array()), &op.label())
}

/// Create the `_name` object (or `_name[i]`) of a primitive so that it can take children.
fn create_shadow(doc: &mut Value, steps: &[Step], op: &Op) -> Result<(), PatchError> {
    let loc = Location {
        steps: steps.to_vec(),
        elem: None,
        ty: None,
    };
    let (parent, skey, idx) = loc.split().ok_or_else(|| op.fail("nowhere to add"))?;
    let obj = object_at(doc, parent, op)?;
    match idx {
        None => {
            obj.insert(skey.to_string(), Value::Object(Map::new()));
        }
        Some(i) => {
            let len = obj
                .get(skey.trim_start_matches('_'))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let sh = obj
                .entry(skey.to_string())
                .or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(s) = sh {
                s.resize(len.max(s.len()).max(i + 1), Value::Null);
                s[i] = Value::Object(Map::new());
            }
        }
    }
    Ok(())
}

fn insert(doc: &mut Value, op: &Op) -> Result<(), PatchError> {
    let locs = locate::locate(doc, &op.expr).map_err(|m| op.fail(m))?;
    let (parent, key, elem, len) = list_of(doc, &locs, op)?;
    let index = op.index.expect("checked when parsed");
    if index > len {
        return Err(op.fail(format!(
            "index {index} is out of range: the list has {len} item(s), so at most {len}"
        )));
    }
    let v = value_for(op, elem)?;
    check_type(op, elem, &v)?;
    let obj = object_at(doc, &parent, op)?;
    insert_item(obj, &key, index, v);
    Ok(())
}

fn replace(doc: &mut Value, op: &Op) -> Result<(), PatchError> {
    let locs = locate::locate(doc, &op.expr).map_err(|m| op.fail(m))?;
    let loc = single(&locs, op)?.clone();
    let (parent, key, idx) = loc
        .split()
        .ok_or_else(|| op.fail("the resource itself cannot be replaced"))?;
    let (parent, key) = (parent.to_vec(), key.to_string());
    let v = value_for(op, loc.elem)?;
    // A choice element may change type: valueQuantity → valueString.
    let new_key = match loc.elem.filter(|e| e.def().is_choice && idx.is_none()) {
        Some(e) => match v.ty.as_deref() {
            Some(_) => json_key(Some(e), &e.def().base_name, v.ty.as_deref(), &op.label())?,
            None => key.clone(),
        },
        None => {
            check_type(op, loc.elem, &v)?;
            key.clone()
        }
    };
    let obj = object_at(doc, &parent, op)?;
    let skey = format!("_{key}");
    match idx {
        Some(i) => {
            if let Some(slot) = obj
                .get_mut(&key)
                .and_then(Value::as_array_mut)
                .and_then(|a| a.get_mut(i))
            {
                *slot = v.json;
            }
            if v.shadow.is_some() || obj.contains_key(&skey) {
                let len = obj.get(&key).and_then(Value::as_array).map_or(0, Vec::len);
                let sh = obj
                    .entry(skey.clone())
                    .or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(s) = sh {
                    s.resize(len.max(s.len()), Value::Null);
                    s[i] = v.shadow.unwrap_or(Value::Null);
                }
                drop_empty_shadow(obj, &skey);
            }
        }
        None => {
            let pos = obj.keys().position(|k| *k == key).unwrap_or(obj.len());
            obj.shift_remove(&key);
            obj.shift_remove(&skey);
            let pos = pos.min(obj.len());
            obj.shift_insert(pos, new_key.clone(), v.json);
            if let Some(s) = v.shadow {
                obj.shift_insert(pos + 1, format!("_{new_key}"), s);
            }
        }
    }
    Ok(())
}

fn delete(doc: &mut Value, op: &Op) -> Result<(), PatchError> {
    let locs = locate::locate(doc, &op.expr).map_err(|m| op.fail(m))?;
    match locs.as_slice() {
        [] => Ok(()),
        [one] => remove_at(doc, one, op),
        many => Err(op.fail(format!(
            "the path selects {} elements; only one element can be deleted",
            many.len()
        ))),
    }
}

fn move_item(doc: &mut Value, op: &Op) -> Result<(), PatchError> {
    let locs = locate::locate(doc, &op.expr).map_err(|m| op.fail(m))?;
    let (parent, key, _, len) = list_of(doc, &locs, op)?;
    let (src, dst) = (
        op.source.expect("checked when parsed"),
        op.destination.expect("checked when parsed"),
    );
    for (what, i) in [("source", src), ("destination", dst)] {
        if i >= len {
            return Err(op.fail(format!(
                "{what} {i} is out of range: the list has {len} item(s)"
            )));
        }
    }
    let obj = object_at(doc, &parent, op)?;
    let (item, shadow) = remove_item(obj, &key, src).ok_or_else(|| op.fail("nothing to move"))?;
    let shadow = (!shadow.is_null()).then_some(shadow);
    insert_item(
        obj,
        &key,
        dst,
        NewValue {
            json: item,
            ty: None,
            shadow,
        },
    );
    Ok(())
}

/// Apply a FHIRPath Patch (`Parameters`) to `resource`: every operation in order, or an error
/// (Malformed: the patch itself is wrong, 400; Failed: it cannot apply to this resource, 422).
pub fn apply(resource: &Value, params: &Value) -> Result<Value, PatchError> {
    let ops = parse_ops(params)?;
    let mut doc = resource.clone();
    for op in &ops {
        match op.ty {
            OpType::Add => add(&mut doc, op)?,
            OpType::Insert => insert(&mut doc, op)?,
            OpType::Delete => delete(&mut doc, op)?,
            OpType::Replace => replace(&mut doc, op)?,
            OpType::Move => move_item(&mut doc, op)?,
        }
    }
    Ok(doc)
}

/// Whether a PATCH body is a FHIRPath Patch (a Parameters resource).
pub fn is_fhirpath_patch(body: &Value) -> bool {
    body.get("resourceType").and_then(Value::as_str) == Some("Parameters")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One `operation` parameter: type, path and further parts (name → part object).
    fn op(ty: &str, path: &str, more: &[Value]) -> Value {
        let mut parts = vec![
            json!({"name": "type", "valueCode": ty}),
            json!({"name": "path", "valueString": path}),
        ];
        parts.extend_from_slice(more);
        json!({"name": "operation", "part": parts})
    }
    fn name(n: &str) -> Value {
        json!({"name": "name", "valueString": n})
    }
    fn int(part: &str, i: i64) -> Value {
        json!({"name": part, "valueInteger": i})
    }
    fn value(v: Value) -> Value {
        let mut o = v.as_object().unwrap().clone();
        o.insert("name".into(), json!("value"));
        Value::Object(o)
    }
    fn patch(ops: Vec<Value>) -> Value {
        json!({"resourceType": "Parameters", "parameter": ops})
    }
    #[track_caller]
    fn ok(doc: Value, ops: Vec<Value>, want: Value) {
        let got = apply(&doc, &patch(ops)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(got, want);
    }
    #[track_caller]
    fn failed(doc: Value, ops: Vec<Value>, msg: &str) {
        match apply(&doc, &patch(ops)) {
            Err(PatchError::Failed(m)) => assert!(m.contains(msg), "{m}"),
            other => panic!("expected a failure with '{msg}', got {other:?}"),
        }
    }
    #[track_caller]
    fn malformed(doc: Value, body: Value, msg: &str) {
        match apply(&doc, &body) {
            Err(PatchError::Malformed(m)) => assert!(m.contains(msg), "{m}"),
            other => panic!("expected a malformed patch with '{msg}', got {other:?}"),
        }
    }

    fn identifiers(values: &[&str]) -> Value {
        json!({"resourceType": "Patient", "identifier": values.iter()
            .map(|v| json!({"system": "http://example.org", "value": v})).collect::<Vec<_>>()})
    }

    /// The two examples of the R4 FHIRPath Patch page: adding a primitive (birthDate) and adding
    /// an anonymous (backbone) type given as parts (a contact with a name).
    #[test]
    fn r4_page_examples() {
        ok(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[name("birthDate"), value(json!({"valueDate": "1930-01-01"}))],
            )],
            json!({"resourceType": "Patient", "birthDate": "1930-01-01"}),
        );
        ok(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("contact"),
                    value(json!({"part": [
                {"name": "name", "valueHumanName": {"text": "a name"}}]})),
                ],
            )],
            json!({"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}),
        );
    }

    /// The operations of the R4 test cases linked from the page, one kind of change each.
    #[test]
    fn primitives_and_nested_primitives() {
        let p = || json!({"resourceType": "Patient", "birthDate": "1920-01-01"});
        ok(p(), vec![], p());
        ok(
            p(),
            vec![op(
                "replace",
                "Patient.birthDate",
                &[value(json!({"valueDate": "1930-01-01"}))],
            )],
            json!({"resourceType": "Patient", "birthDate": "1930-01-01"}),
        );
        ok(
            p(),
            vec![op("delete", "Patient.birthDate", &[])],
            json!({"resourceType": "Patient"}),
        );
        let c = || json!({"resourceType": "Patient", "contact": [{"name": {"text": "a name"}, "gender": "male"}]});
        ok(
            c(),
            vec![op(
                "replace",
                "Patient.contact[0].gender",
                &[value(json!({"valueCode": "female"}))],
            )],
            json!({"resourceType": "Patient", "contact": [{"name": {"text": "a name"}, "gender": "female"}]}),
        );
        ok(
            c(),
            vec![op(
                "replace",
                "Patient.contact[0].name.text",
                &[value(json!({"valueString": "the name"}))],
            )],
            json!({"resourceType": "Patient", "contact": [{"name": {"text": "the name"}, "gender": "male"}]}),
        );
        ok(
            c(),
            vec![op("delete", "Patient.contact[0].gender", &[])],
            json!({"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}),
        );
        // Deleting the only child of name leaves name empty: it goes too.
        ok(
            c(),
            vec![op("delete", "Patient.contact[0].name.text", &[])],
            json!({"resourceType": "Patient", "contact": [{"gender": "male"}]}),
        );
        ok(
            json!({"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}),
            vec![op(
                "add",
                "Patient.contact[0]",
                &[name("gender"), value(json!({"valueCode": "male"}))],
            )],
            c(),
        );
    }

    #[test]
    fn complex_and_anonymous_types() {
        ok(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("maritalStatus"),
                    value(json!({"valueCodeableConcept": {"text": "married"}})),
                ],
            )],
            json!({"resourceType": "Patient", "maritalStatus": {"text": "married"}}),
        );
        ok(
            json!({"resourceType": "Patient", "maritalStatus": {"id": "1", "text": "married"}}),
            vec![op(
                "replace",
                "Patient.maritalStatus",
                &[value(
                    json!({"valueCodeableConcept": {"id": "2", "text": "not married"}}),
                )],
            )],
            json!({"resourceType": "Patient", "maritalStatus": {"id": "2", "text": "not married"}}),
        );
        ok(
            json!({"resourceType": "Patient", "maritalStatus": {"text": "married"}}),
            vec![op("delete", "Patient.maritalStatus", &[])],
            json!({"resourceType": "Patient"}),
        );
        ok(
            json!({"resourceType": "Patient", "contact": [{"name": {"text": "a name"}}]}),
            vec![op("delete", "Patient.contact[0]", &[])],
            json!({"resourceType": "Patient"}),
        );
    }

    #[test]
    fn lists() {
        let two = || identifiers(&["value 1", "value 2"]);
        ok(two(), vec![], two());
        let mut swapped = two();
        swapped["identifier"][0]["id"] = json!("a");
        swapped["identifier"][1]["id"] = json!("b");
        let mut want = swapped.clone();
        want["identifier"][0]["value"] = json!("value 2");
        want["identifier"][1]["value"] = json!("value 1");
        ok(
            swapped,
            vec![
                op(
                    "replace",
                    "Patient.identifier[0].value",
                    &[value(json!({"valueString": "value 2"}))],
                ),
                op(
                    "replace",
                    "Patient.identifier[1].value",
                    &[value(json!({"valueString": "value 1"}))],
                ),
            ],
            want,
        );
        let three =
            json!({"valueIdentifier": {"system": "http://example.org", "value": "value 3"}});
        for (at, want) in [
            (2, ["value 1", "value 2", "value 3"]),
            (1, ["value 1", "value 3", "value 2"]),
            (0, ["value 3", "value 1", "value 2"]),
        ] {
            ok(
                two(),
                vec![op(
                    "insert",
                    "Patient.identifier",
                    &[int("index", at), value(three.clone())],
                )],
                identifiers(&want),
            );
        }
        let full = || identifiers(&["value 1", "value 2", "value 3"]);
        ok(
            full(),
            vec![op("delete", "Patient.identifier[0]", &[])],
            identifiers(&["value 2", "value 3"]),
        );
        ok(
            full(),
            vec![op("delete", "Patient.identifier[1]", &[])],
            identifiers(&["value 1", "value 3"]),
        );
        ok(
            full(),
            vec![op("delete", "Patient.identifier[2]", &[])],
            identifiers(&["value 1", "value 2"]),
        );
        let four = || identifiers(&["value 1", "value 2", "value 3", "value 4"]);
        let mv = |s: i64, d: i64| {
            op(
                "move",
                "Patient.identifier",
                &[int("source", s), int("destination", d)],
            )
        };
        ok(
            four(),
            vec![mv(3, 1)],
            identifiers(&["value 1", "value 4", "value 2", "value 3"]),
        );
        ok(
            four(),
            vec![mv(3, 0)],
            identifiers(&["value 4", "value 1", "value 2", "value 3"]),
        );
        ok(
            four(),
            vec![mv(3, 2)],
            identifiers(&["value 1", "value 2", "value 4", "value 3"]),
        );
        ok(
            four(),
            vec![mv(0, 3)],
            identifiers(&["value 2", "value 3", "value 4", "value 1"]),
        );
        ok(
            four(),
            vec![mv(1, 0), mv(2, 1)],
            identifiers(&["value 2", "value 3", "value 1", "value 4"]),
        );
        ok(
            four(),
            vec![mv(3, 0), mv(3, 1), mv(3, 2)],
            identifiers(&["value 4", "value 3", "value 2", "value 1"]),
        );
    }

    #[test]
    fn missing_elements() {
        // Adding below an element that is not there fails; adding a repeating element that is
        // absent makes a list.
        failed(
            json!({"resourceType": "Patient", "identifier": [{"use": "official", "value": "123"}]}),
            vec![op(
                "add",
                "Patient.identifier.where(use = 'official').period",
                &[name("end"), value(json!({"valueDate": "2021-12-01"}))],
            )],
            "selects no element",
        );
        ok(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("identifier"),
                    value(
                        json!({"valueIdentifier": {"system": "http://example.org", "value": "value 3"}}),
                    ),
                ],
            )],
            identifiers(&["value 3"]),
        );
        // Deleting what is not there changes nothing; replacing it fails.
        ok(
            json!({"resourceType": "Patient"}),
            vec![op("delete", "Patient.birthDate", &[])],
            json!({"resourceType": "Patient"}),
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op(
                "replace",
                "Patient.birthDate",
                &[value(json!({"valueDate": "2000"}))],
            )],
            "selects no element",
        );
        // Insert into an absent list (its parent exists) at 0; not at 1.
        ok(
            json!({"resourceType": "Patient"}),
            vec![op(
                "insert",
                "Patient.identifier",
                &[
                    int("index", 0),
                    value(
                        json!({"valueIdentifier": {"system": "http://example.org", "value": "value 1"}}),
                    ),
                ],
            )],
            identifiers(&["value 1"]),
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op(
                "insert",
                "Patient.identifier",
                &[
                    int("index", 1),
                    value(json!({"valueIdentifier": {"value": "x"}})),
                ],
            )],
            "index 1 is out of range",
        );
    }

    #[test]
    fn single_element_rules_and_bounds() {
        let p = || identifiers(&["a", "b"]);
        failed(
            p(),
            vec![op(
                "replace",
                "Patient.identifier.value",
                &[value(json!({"valueString": "x"}))],
            )],
            "selects 2 elements",
        );
        failed(
            p(),
            vec![op("delete", "Patient.identifier", &[])],
            "only one element can be deleted",
        );
        failed(
            p(),
            vec![op(
                "add",
                "Patient.identifier",
                &[name("use"), value(json!({"valueCode": "old"}))],
            )],
            "selects 2 elements",
        );
        failed(
            p(),
            vec![op(
                "insert",
                "Patient.identifier",
                &[
                    int("index", 3),
                    value(json!({"valueIdentifier": {"value": "c"}})),
                ],
            )],
            "index 3 is out of range",
        );
        failed(
            p(),
            vec![op(
                "move",
                "Patient.identifier",
                &[int("source", 2), int("destination", 0)],
            )],
            "source 2 is out of range",
        );
        failed(
            p(),
            vec![op(
                "move",
                "Patient.identifier",
                &[int("source", 0), int("destination", 5)],
            )],
            "destination 5 is out of range",
        );
        failed(
            p(),
            vec![op(
                "insert",
                "Patient.identifier.where(value = 'a')",
                &[
                    int("index", 0),
                    value(json!({"valueIdentifier": {"value": "c"}})),
                ],
            )],
            "whole list",
        );
        failed(
            json!({"resourceType": "Patient", "gender": "male"}),
            vec![op(
                "insert",
                "Patient.gender",
                &[int("index", 0), value(json!({"valueCode": "female"}))],
            )],
            "is not a list",
        );
        // Non-repeating elements are added once.
        failed(
            json!({"resourceType": "Patient", "gender": "male"}),
            vec![op(
                "add",
                "Patient",
                &[name("gender"), value(json!({"valueCode": "female"}))],
            )],
            "already present",
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[name("nickname"), value(json!({"valueString": "x"}))],
            )],
            "has no element 'nickname'",
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op("delete", "Patient", &[])],
            "resource itself",
        );
        // All or nothing: the first operation's change is not kept when the second fails.
        let r = apply(
            &p(),
            &patch(vec![
                op("delete", "Patient.identifier[0]", &[]),
                op(
                    "replace",
                    "Patient.birthDate",
                    &[value(json!({"valueDate": "2000"}))],
                ),
            ]),
        );
        assert!(matches!(r, Err(PatchError::Failed(_))));
    }

    #[test]
    fn choice_elements() {
        let o = || json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1}});
        // Replace across types: the property's name follows the value's type, in place.
        let got = apply(
            &o(),
            &patch(vec![op(
                "replace",
                "Observation.value",
                &[value(json!({"valueString": "high"}))],
            )]),
        )
        .unwrap();
        assert_eq!(
            got.to_string(),
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"high"}"#
        );
        ok(
            o(),
            vec![op(
                "replace",
                "Observation.value.ofType(Quantity).value",
                &[value(json!({"valueDecimal": 2.5}))],
            )],
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 2.5}}),
        );
        ok(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
            vec![op(
                "add",
                "Observation",
                &[name("value"), value(json!({"valueBoolean": true}))],
            )],
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueBoolean": true}),
        );
        failed(
            o(),
            vec![op(
                "add",
                "Observation",
                &[name("value"), value(json!({"valueBoolean": true}))],
            )],
            "'valueQuantity' is already present",
        );
        failed(
            json!({"resourceType": "Observation"}),
            vec![op(
                "add",
                "Observation",
                &[
                    name("value"),
                    value(json!({"valueHumanName": {"text": "x"}})),
                ],
            )],
            "does not allow the type HumanName",
        );
        failed(
            json!({"resourceType": "Observation"}),
            vec![op(
                "add",
                "Observation",
                &[
                    name("effective"),
                    value(json!({"part": [{"name": "start", "valueDateTime": "2020"}]})),
                ],
            )],
            "choice of types",
        );
        // The typed name works too.
        ok(
            json!({"resourceType": "Observation"}),
            vec![op(
                "add",
                "Observation",
                &[
                    name("effectivePeriod"),
                    value(json!({"part": [{"name": "start", "valueDateTime": "2020"}]})),
                ],
            )],
            json!({"resourceType": "Observation", "effectivePeriod": {"start": "2020"}}),
        );
    }

    #[test]
    fn nested_backbone_values_and_wrong_types() {
        // A component (backbone) with a CodeableConcept and a choice value, given as parts.
        ok(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}}),
            vec![op(
                "add",
                "Observation",
                &[
                    name("component"),
                    value(json!({"part": [
                {"name": "code", "valueCodeableConcept": {"text": "systolic"}},
                {"name": "value", "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
                {"name": "interpretation", "valueCodeableConcept": {"text": "normal"}}]})),
                ],
            )],
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "component": [
                {"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}, "interpretation": [{"text": "normal"}]}]}),
        );
        // Two levels of backbone elements: a CarePlan activity with its detail.
        ok(
            json!({"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/1"}}),
            vec![op(
                "add",
                "CarePlan",
                &[
                    name("activity"),
                    value(json!({"part": [
                {"name": "detail", "part": [
                    {"name": "status", "valueCode": "not-started"},
                    {"name": "description", "valueString": "call"},
                    {"name": "scheduled", "valueString": "weekly"}]}]})),
                ],
            )],
            json!({"resourceType": "CarePlan", "status": "draft", "intent": "plan", "subject": {"reference": "Patient/1"},
                "activity": [{"detail": {"status": "not-started", "description": "call", "scheduledString": "weekly"}}]}),
        );
        // A repeated part name makes a list; a repeated non-repeating one fails.
        ok(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("contact"),
                    value(json!({"part": [
                {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
                {"name": "telecom", "valueContactPoint": {"system": "email", "value": "a@b"}}]})),
                ],
            )],
            json!({"resourceType": "Patient", "contact": [{"telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]}]}),
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("contact"),
                    value(json!({"part": [
                {"name": "gender", "valueCode": "male"}, {"name": "gender", "valueCode": "female"}]})),
                ],
            )],
            "does not repeat",
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("contact"),
                    value(json!({"part": [{"name": "nickname", "valueString": "x"}]})),
                ],
            )],
            "Patient.contact has no element 'nickname'",
        );
        failed(
            json!({"resourceType": "Patient"}),
            vec![op(
                "add",
                "Patient",
                &[
                    name("maritalStatus"),
                    value(json!({"valueHumanName": {"text": "x"}})),
                ],
            )],
            "takes CodeableConcept, not HumanName",
        );
        failed(
            json!({"resourceType": "Patient", "active": true}),
            vec![op(
                "replace",
                "Patient.active",
                &[value(json!({"valueString": "yes"}))],
            )],
            "takes boolean, not string",
        );
        // A string value for an xhtml element is allowed (Parameters has no valueXhtml).
        ok(
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">a</div>"}}),
            vec![op(
                "replace",
                "Patient.text.div",
                &[value(
                    json!({"valueString": "<div xmlns=\"http://www.w3.org/1999/xhtml\">b</div>"}),
                )],
            )],
            json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">b</div>"}}),
        );
    }

    #[test]
    fn primitive_extensions_travel_with_their_value() {
        let p = json!({"resourceType": "Patient", "name": [{"given": ["A", "B", "C"]}],
            "_birthDate": {"extension": [{"url": "u", "valueString": "x"}]}, "birthDate": "1970"});
        let mut r = apply(&p, &patch(vec![op("delete", "Patient.birthDate", &[])])).unwrap();
        assert!(r.get("_birthDate").is_none(), "{r}");
        r = apply(
            &p,
            &patch(vec![op("delete", "Patient.birthDate.extension('u')", &[])]),
        )
        .unwrap();
        assert_eq!(r["birthDate"], "1970");
        assert!(r.get("_birthDate").is_none(), "{r}");
        r = apply(
            &p,
            &patch(vec![op(
                "add",
                "Patient.name[0].given[1]",
                &[
                    name("extension"),
                    value(json!({"part": [
            {"name": "url", "valueUri": "v"}, {"name": "value", "valueCode": "IN"}]})),
                ],
            )]),
        )
        .unwrap();
        assert_eq!(
            r["name"][0]["_given"],
            json!([null, {"extension": [{"url": "v", "valueCode": "IN"}]}, null])
        );
        let r2 = apply(
            &r,
            &patch(vec![op(
                "move",
                "Patient.name[0].given",
                &[int("source", 1), int("destination", 0)],
            )]),
        )
        .unwrap();
        assert_eq!(r2["name"][0]["given"], json!(["B", "A", "C"]));
        assert_eq!(
            r2["name"][0]["_given"],
            json!([{"extension": [{"url": "v", "valueCode": "IN"}]}, null, null])
        );
        let r3 = apply(
            &r2,
            &patch(vec![op("delete", "Patient.name[0].given[0]", &[])]),
        )
        .unwrap();
        assert_eq!(r3["name"][0], json!({"given": ["A", "C"]}));
        let r4 = apply(
            &r3,
            &patch(vec![op(
                "replace",
                "Patient.name[0].given[1]",
                &[json!({"name": "value", "valueString": "D", "_valueString": {"id": "d"}})],
            )]),
        )
        .unwrap();
        assert_eq!(
            r4["name"][0],
            json!({"given": ["A", "D"], "_given": [null, {"id": "d"}]})
        );
    }

    #[test]
    fn contained_resources_and_where() {
        let p = json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "name": "Old"}],
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]});
        ok(
            p.clone(),
            vec![
                op(
                    "replace",
                    "Patient.contained.ofType(Organization).name",
                    &[value(json!({"valueString": "New"}))],
                ),
                op(
                    "replace",
                    "Patient.telecom.where(system = 'email').value",
                    &[value(json!({"valueString": "c@d"}))],
                ),
                op("delete", "Patient.telecom.where(system = 'fax')", &[]),
            ],
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "name": "New"}],
                "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "c@d"}]}),
        );
        ok(
            p,
            vec![op(
                "add",
                "Patient",
                &[
                    name("contained"),
                    json!({"name": "value", "resource": {"resourceType": "Practitioner", "id": "pr"}}),
                ],
            )],
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "name": "Old"}, {"resourceType": "Practitioner", "id": "pr"}],
                "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]}),
        );
    }

    #[test]
    fn malformed_patches() {
        let p = json!({"resourceType": "Patient"});
        malformed(p.clone(), json!([{"op": "add"}]), "Parameters resource");
        malformed(
            p.clone(),
            json!({"resourceType": "Parameters", "parameter": [{"name": "op"}]}),
            "named 'operation'",
        );
        malformed(
            p.clone(),
            patch(vec![json!({"name": "operation"})]),
            "has no parts",
        );
        malformed(
            p.clone(),
            patch(vec![op("frob", "Patient", &[])]),
            "type 'frob'",
        );
        malformed(
            p.clone(),
            patch(vec![
                json!({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]}),
            ]),
            "no 'path'",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "add",
                "Patient",
                &[value(json!({"valueString": "x"}))],
            )]),
            "needs a 'name'",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "insert",
                "Patient.identifier",
                &[value(json!({"valueString": "x"}))],
            )]),
            "needs a 'index'",
        );
        malformed(
            p.clone(),
            patch(vec![op("replace", "Patient.birthDate", &[])]),
            "needs a 'value'",
        );
        malformed(
            p.clone(),
            patch(vec![op("move", "Patient.identifier", &[int("source", 0)])]),
            "needs a 'destination'",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "insert",
                "Patient.identifier",
                &[int("index", -1), value(json!({"valueString": "x"}))],
            )]),
            "0 or more",
        );
        malformed(
            p.clone(),
            patch(vec![op("delete", "Patient.name.(", &[])]),
            "not a supported FHIRPath",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "delete",
                "Patient",
                &[json!({"name": "colour", "valueString": "x"})],
            )]),
            "unknown part 'colour'",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "delete",
                "Patient",
                &[json!({"name": "path", "valueString": "x"})],
            )]),
            "given twice",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "replace",
                "Patient.gender",
                &[json!({"name": "value"})],
            )]),
            "exactly one of",
        );
        malformed(
            p.clone(),
            patch(vec![op(
                "replace",
                "Patient.gender",
                &[json!({"name": "value", "valueCode": "a", "valueString": "b"})],
            )]),
            "exactly one of",
        );
        // A path that selects values, not elements, fails on this resource.
        failed(
            p,
            vec![op("delete", "Patient.name.exists()", &[])],
            "does not select elements",
        );
    }
}
