//! Validation of a resource against the R4 definitions (fhir-profiles/r4/definitions.json):
//! unknown elements, cardinality, JSON shape, choice types, primitive formats, primitive
//! extensions, contained resources, extensions, required bindings, reference targets and every
//! error-level invariant (FHIRPath, through `invariant.rs`). Pure: a JSON value in, every
//! problem out.
pub mod bundle;
mod codes;
pub mod extensions;
pub mod invariant;
pub mod minimal;
pub mod primitive;
pub mod profiles;
pub mod xhtml;

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::fhir::definitions::{Content, Definitions, ElemDef, Invariant, Kind, NodeId};
use crate::fhir::fhirpath;
use crate::fhir::outcome::{Issue, IssueType, Severity};

/// A literal local reference (`Patient/123`) found in a resource, for referential integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRef {
    pub ty: String,
    pub id: String,
    /// Where it was found, e.g. `CarePlan.subject.reference`.
    pub expression: String,
}

/// Everything validation found: the problems, and the local references seen.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub issues: Vec<Issue>,
    pub references: Vec<LocalRef>,
}

impl Report {
    /// Whether any issue is an error (or fatal).
    pub fn has_errors(&self) -> bool {
        self.issues
            .iter()
            .any(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
    }
}

/// Validate a resource (a JSON object with `resourceType`) against the base R4 definitions.
pub fn validate(resource: &Value) -> Report {
    let root = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource");
    let mut v = Walker {
        defs: Definitions::get(),
        report: Report::default(),
        contained: Vec::new(),
        resources: Vec::new(),
        path: String::with_capacity(128),
    };
    v.path.push_str(root);
    v.resource(resource, false);
    if root == "Bundle" {
        v.report.issues.extend(bundle::check(resource, "Bundle"));
    }
    v.report
}

struct Walker<'d> {
    defs: &'d Definitions,
    report: Report,
    /// For each enclosing (non-contained) resource: its contained resources, id → type.
    contained: Vec<(String, HashMap<String, String>)>,
    /// The resources being walked, outermost first, and whether each is contained: the
    /// FHIRPath environment of invariants (`%resource`, `%rootResource`, the Bundle).
    resources: Vec<(&'d Value, bool)>,
    /// Expression of the element being checked (`CarePlan.activity[2].detail`); segments are
    /// pushed and truncated as the walk goes, and copied only into issues.
    path: String,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'d> Walker<'d> {
    /// An issue at the current path.
    fn issue(&mut self, code: IssueType, msg: String) {
        let at = self.path.clone();
        self.report.issues.push(Issue::error(code, msg).at(at));
    }

    /// An issue at the current path plus a suffix (`.reference`).
    fn issue_sub(&mut self, suffix: &str, code: IssueType, msg: String) {
        let at = format!("{}{suffix}", self.path);
        self.report.issues.push(Issue::error(code, msg).at(at));
    }

    /// A resource: at the top, in `contained`, or in Bundle.entry.resource / Parameters.
    fn resource(&mut self, v: &'d Value, is_contained: bool) {
        let Value::Object(obj) = v else {
            self.issue(
                IssueType::Structure,
                format!("a resource must be a JSON object, found {}", json_kind(v)),
            );
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) if self.defs.is_resource_type(s) => s.as_str(),
            Some(Value::String(s)) => {
                self.issue(
                    IssueType::Invalid,
                    format!("'{s}' is not a known R4 resource type"),
                );
                return;
            }
            _ => {
                self.issue(
                    IssueType::Required,
                    "the resource has no resourceType".into(),
                );
                return;
            }
        };
        let td = self.defs.type_def(rt).expect("known type");
        let root = td.root;
        if !is_contained {
            let mut ids = HashMap::new();
            if let Some(Value::Array(list)) = obj.get("contained") {
                for c in list {
                    if let (Some(id), Some(t)) = (
                        c.get("id").and_then(Value::as_str),
                        c.get("resourceType").and_then(Value::as_str),
                    ) {
                        ids.insert(id.to_string(), t.to_string());
                    }
                }
            }
            self.contained.push((rt.to_string(), ids));
        }
        self.resources.push((v, is_contained));
        self.object(root, obj, true);
        self.invariants_of_type(rt, v);
        self.resources.pop();
        if matches!(rt, "CodeSystem" | "ValueSet") {
            self.canonicals(rt, obj);
        }
        if !is_contained {
            self.contained.pop();
        }
    }

    /// CodeSystem.url, ValueSet.url and ValueSet.compose.include/exclude.system are absolute.
    fn canonicals(&mut self, rt: &str, obj: &Map<String, Value>) {
        let check = |w: &mut Self, suffix: String, v: Option<&Value>| {
            if let Some(u) = v.and_then(Value::as_str) {
                if !bundle::is_absolute_uri(u) {
                    w.issue_sub(
                        &suffix,
                        IssueType::Value,
                        format!("{rt}{suffix} '{u}' must be an absolute URI"),
                    );
                }
            }
        };
        check(self, ".url".into(), obj.get("url"));
        if rt == "ValueSet" {
            for part in ["include", "exclude"] {
                let list = obj
                    .get("compose")
                    .and_then(|c| c.get(part))
                    .and_then(Value::as_array);
                for (i, inc) in list.into_iter().flatten().enumerate() {
                    check(
                        self,
                        format!(".compose.{part}[{i}].system"),
                        inc.get("system"),
                    );
                }
            }
        }
    }

    fn invariants_of_type(&mut self, ty: &str, v: &'d Value) {
        let Some(td) = self.defs.type_def(ty) else {
            return;
        };
        self.invariants(&td.invariants, v, Some(ty));
    }

    /// The FHIRPath environment at this point of the walk.
    fn env(&self) -> fhirpath::Env<'d> {
        let resource = self.resources.last().map_or(&Value::Null, |r| r.0);
        // %rootResource: the container of a contained resource, else the resource itself.
        let root = match self.resources.as_slice() {
            [.., (container, false), (_, true)] => container,
            _ => &resource,
        };
        let bundle = self
            .resources
            .iter()
            .rev()
            .map(|r| r.0)
            .find(|r| r.get("resourceType").and_then(Value::as_str) == Some("Bundle"));
        fhirpath::Env {
            resource,
            root,
            context: None,
            bundle,
        }
    }

    /// Evaluate invariants on a value at the current path (the Bundle rules excepted: those
    /// are checked whole by validate::bundle).
    fn invariants(&mut self, invs: &'d [Invariant], v: &'d Value, ty: Option<&str>) {
        if invs.is_empty() {
            return;
        }
        let env = self.env();
        for inv in invs {
            if inv.key.starts_with("bdl-") {
                continue;
            }
            if let Some(c) = &inv.cond {
                if !invariant::holds(c, &env, v, ty) {
                    self.issue(
                        IssueType::Invariant,
                        format!("constraint {} failed: {}", inv.key, inv.expression),
                    );
                }
            }
        }
    }

    /// The properties of an object against a node (type root or backbone element).
    fn object(&mut self, node_id: NodeId, obj: &'d Map<String, Value>, is_resource: bool) {
        let defs = self.defs;
        let node = defs.node(node_id);
        if !is_resource && obj.keys().all(|k| k == "id") {
            self.issue(
                IssueType::Structure,
                "constraint ele-1 failed: an element must have a value or children".into(),
            );
            return;
        }
        let mut counts = [0usize; 64];
        let mut choice: [Option<&str>; 64] = [None; 64];
        let mut big_counts = Vec::new();
        let mut big_choice = Vec::new();
        let (counts, choice): (&mut [usize], &mut [Option<&str>]) = if node.elems.len() <= 64 {
            (&mut counts[..], &mut choice[..])
        } else {
            big_counts.resize(node.elems.len(), 0);
            big_choice.resize(node.elems.len(), None);
            (&mut big_counts[..], &mut big_choice[..])
        };
        let base_len = self.path.len();
        for (key, val) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            let (is_ext, name) = match key.strip_prefix('_') {
                Some(n) => (true, n),
                None => (false, key.as_str()),
            };
            let Some(&(ei, ti)) = node.keys.get(name) else {
                self.issue_sub(
                    &format!(".{key}"),
                    IssueType::Structure,
                    format!("unknown element '{key}' in {}", node.path),
                );
                continue;
            };
            let elem = &node.elems[ei];
            let ty = elem.types.get(ti).map(String::as_str).unwrap_or("");
            let primitive = elem.content == Content::Types && defs.is_primitive(ty);
            if is_ext && !primitive {
                self.issue_sub(
                    &format!(".{key}"),
                    IssueType::Structure,
                    format!("'{key}' is only allowed for primitive elements"),
                );
                continue;
            }
            if elem.is_choice {
                match choice[ei] {
                    Some(prev) if prev != name => self.issue_sub(
                        &format!(".{}", elem.base_name),
                        IssueType::Structure,
                        format!(
                            "only one of the choices of {} may be present ('{prev}' and '{name}')",
                            elem.name
                        ),
                    ),
                    _ => choice[ei] = Some(name),
                }
            }
            self.path.push('.');
            self.path.push_str(&elem.base_name);
            if elem.is_choice {
                self.path.push_str(".ofType(");
                self.path.push_str(ty);
                self.path.push(')');
            }
            // The sibling (value or `_` extension) for primitive arrays with nulls.
            let has_null = val.as_array().is_some_and(|a| a.iter().any(Value::is_null));
            let sibling = if primitive && has_null {
                if is_ext {
                    obj.get(name)
                } else {
                    obj.get(&format!("_{name}"))
                }
            } else {
                None
            };
            let n = self.element_values(elem, ti, val, is_ext, sibling);
            self.path.truncate(base_len);
            counts[ei] = counts[ei].max(n);
        }
        for (ei, elem) in node.elems.iter().enumerate() {
            if (counts[ei] as u32) < elem.min {
                self.issue_sub(
                    &format!(".{}", elem.base_name),
                    IssueType::Required,
                    format!(
                        "{} is required (minimum cardinality {})",
                        elem.path, elem.min
                    ),
                );
            }
            if let Some(max) = elem.max {
                if max > 1 && counts[ei] as u32 > max {
                    self.issue_sub(
                        &format!(".{}", elem.base_name),
                        IssueType::Structure,
                        format!("{} allows at most {max} values", elem.path),
                    );
                }
            }
        }
    }

    /// The value(s) of one property (at the current path); returns how many there are.
    fn element_values(
        &mut self,
        elem: &'d ElemDef,
        ti: usize,
        val: &'d Value,
        is_ext: bool,
        sibling: Option<&'d Value>,
    ) -> usize {
        if elem.is_array() {
            let Value::Array(items) = val else {
                self.issue(
                    IssueType::Structure,
                    format!(
                        "{} can repeat and must be a JSON array, found {}",
                        elem.path,
                        json_kind(val)
                    ),
                );
                return 0;
            };
            if items.is_empty() {
                self.issue(
                    IssueType::Structure,
                    "arrays must not be empty; omit the element instead".into(),
                );
            }
            let len = self.path.len();
            for (i, item) in items.iter().enumerate() {
                use std::fmt::Write;
                let _ = write!(self.path, "[{i}]");
                if item.is_null() {
                    let partner = sibling
                        .and_then(|s| s.as_array())
                        .and_then(|a| a.get(i))
                        .is_some_and(|p| !p.is_null());
                    if !partner {
                        self.issue(
                            IssueType::Structure,
                            "null is only allowed in a primitive array whose '_' sibling has a value at the same position".into(),
                        );
                    }
                } else if is_ext {
                    self.primitive_extension(item);
                } else {
                    self.value(elem, ti, item);
                }
                self.path.truncate(len);
            }
            items.len()
        } else {
            if val.is_array() {
                self.issue(
                    IssueType::Structure,
                    format!("{} is a single value, not an array", elem.path),
                );
                return 0;
            }
            if val.is_null() {
                self.issue(
                    IssueType::Structure,
                    "null is not a valid value; omit the element instead".into(),
                );
                return 0;
            }
            if is_ext {
                self.primitive_extension(val);
            } else {
                self.value(elem, ti, val);
            }
            1
        }
    }

    /// `_element`: an object with only `id` and `extension`.
    fn primitive_extension(&mut self, v: &'d Value) {
        let Value::Object(m) = v else {
            self.issue(
                IssueType::Structure,
                format!(
                    "a primitive's '_' element must be an object, found {}",
                    json_kind(v)
                ),
            );
            return;
        };
        let Some(elem_td) = self.defs.type_def("Element") else {
            return;
        };
        self.object(elem_td.root, m, false);
    }

    /// One value of an element, of the element's type number `ti`.
    fn value(&mut self, elem: &'d ElemDef, ti: usize, v: &'d Value) {
        let defs = self.defs;
        if let Content::Node(n) = elem.content {
            match v {
                Value::Object(m) => {
                    self.object(n, m, false);
                    self.invariants(&elem.invariants, v, None);
                }
                _ => self.issue(
                    IssueType::Structure,
                    format!(
                        "{} must be a JSON object, found {}",
                        elem.path,
                        json_kind(v)
                    ),
                ),
            }
            return;
        }
        let Some(ty) = elem.types.get(ti) else {
            return;
        };
        if ty == "Resource" {
            self.resource(v, elem.base_name == "contained");
            return;
        }
        let Some(td) = defs.type_def(ty) else {
            return;
        };
        if td.kind == Kind::Primitive {
            if let Err(e) = primitive::check(ty, v) {
                self.issue(IssueType::Value, format!("{}: {e}", elem.path));
                return;
            }
            if let (Some(url), Value::String(code)) = (&elem.binding, v) {
                if let Some(vs) = defs.valueset(url).filter(|vs| !vs.codes.is_empty()) {
                    if !vs.has_code(code) {
                        self.issue(
                            IssueType::CodeInvalid,
                            format!("'{code}' is not in the required value set {url}"),
                        );
                    }
                }
            }
            self.invariants(&elem.invariants, v, Some(ty));
            return;
        }
        let Value::Object(m) = v else {
            self.issue(
                IssueType::Structure,
                format!(
                    "{} ({ty}) must be a JSON object, found {}",
                    elem.path,
                    json_kind(v)
                ),
            );
            return;
        };
        self.object(td.root, m, false);
        self.invariants(&td.invariants, v, Some(ty));
        self.invariants(&elem.invariants, v, Some(ty));
        if ty == "Coding" {
            if let Some(sys) = m.get("system").and_then(Value::as_str) {
                if !bundle::is_absolute_uri(sys) {
                    self.issue_sub(
                        ".system",
                        IssueType::Value,
                        format!("Coding.system '{sys}' must be an absolute URI"),
                    );
                }
            }
            self.held_code(m);
        }
        match ty.as_str() {
            "Reference" => self.reference(elem, m),
            "Attachment" => self.attachment(m),
            "Coding" | "CodeableConcept" if elem.binding.is_some() => self.coded(elem, ty, m),
            "Coding" | "CodeableConcept" => self.extensible(elem, ty, m),
            "Extension" => self.extension(m),
            _ => {}
        }
    }

    /// An Attachment's inline data agrees with what it says of itself: `size` is the number of
    /// decoded bytes, `hash` their base64 SHA-1, and `contentType` a MIME type. (`data` being
    /// base64 at all is the primitive check.)
    fn attachment(&mut self, m: &Map<String, Value>) {
        use base64::Engine;
        if let Some(ct) = m.get("contentType").and_then(Value::as_str) {
            if !is_mime_type(ct) {
                self.issue_sub(
                    ".contentType",
                    IssueType::Value,
                    format!("'{ct}' is not a MIME type (type/subtype[; parameter=value])"),
                );
            }
        }
        let Some(data) = m.get("data").and_then(Value::as_str) else {
            return;
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.trim()) else {
            return;
        };
        if let Some(size) = m.get("size") {
            if size.as_u64() != Some(bytes.len() as u64) {
                self.issue_sub(
                    ".size",
                    IssueType::Value,
                    format!(
                        "size {size} does not match the {} bytes of data",
                        bytes.len()
                    ),
                );
            }
        }
        if let Some(hash) = m.get("hash").and_then(Value::as_str) {
            use sha1::Digest;
            let want = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&bytes));
            if hash.trim() != want {
                self.issue_sub(
                    ".hash",
                    IssueType::Value,
                    format!("hash does not match the SHA-1 of data (expected {want})"),
                );
            }
        }
    }

    /// Required binding on a Coding or CodeableConcept.
    fn coded(&mut self, elem: &ElemDef, ty: &str, m: &Map<String, Value>) {
        let url = elem.binding.as_deref().unwrap_or_default();
        let Some(vs) = self.defs.valueset(url).filter(|vs| !vs.codes.is_empty()) else {
            return;
        };
        let list: Vec<(String, &Map<String, Value>)> = if ty == "Coding" {
            vec![(String::new(), m)]
        } else {
            match m.get("coding") {
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_object().map(|o| (format!(".coding[{i}]"), o)))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut from_vs = false;
        for (sub, c) in &list {
            let system = c.get("system").and_then(Value::as_str);
            let Some(code) = c.get("code").and_then(Value::as_str) else {
                continue;
            };
            match system {
                Some(s) if vs.systems.contains(s) => {
                    from_vs = true;
                    if !vs.has(s, code) && !self.reported_code(sub) {
                        self.issue_sub(
                            &format!("{sub}.code"),
                            IssueType::CodeInvalid,
                            format!(
                                "'{code}' is not a code of {s} in the required value set {url}"
                            ),
                        );
                    }
                }
                None if vs.has_code(code) => from_vs = true,
                _ => {}
            }
        }
        if !from_vs {
            self.issue(
                IssueType::CodeInvalid,
                format!(
                    "{} must have a code from the required value set {url}",
                    elem.path
                ),
            );
        }
    }

    /// Whether `validate::codes` already reported the code at the current path + `sub` +
    /// `.code` as unknown in its (held) system: one issue per bad code.
    fn reported_code(&self, sub: &str) -> bool {
        let at = format!("{}{sub}.code", self.path);
        self.report.issues.iter().rev().any(|i| {
            i.code == IssueType::CodeInvalid
                && i.severity == Severity::Error
                && i.expression.first() == Some(&at)
        })
    }

    /// Reference: the type of a literal or contained reference must be an allowed target.
    fn reference(&mut self, elem: &ElemDef, m: &Map<String, Value>) {
        let declared = m.get("type").and_then(Value::as_str);
        if let Some(t) = declared {
            if self.defs.is_resource_type(t) && !elem.allows_target(t) {
                self.issue_sub(
                    ".type",
                    IssueType::Invalid,
                    format!(
                        "{} may not refer to a {t} (allowed: {})",
                        elem.path,
                        elem.targets.join(", ")
                    ),
                );
            }
        }
        let Some(r) = m.get("reference").and_then(Value::as_str) else {
            return;
        };
        let target: Option<String> = if let Some(id) = r.strip_prefix('#') {
            let Some((container, ids)) = self.contained.last() else {
                return;
            };
            if id.is_empty() {
                Some(container.clone())
            } else if let Some(t) = ids.get(id) {
                Some(t.clone())
            } else {
                return; // ref-1, evaluated with the other invariants
            }
        } else {
            // One reference parser (fhir::reference): only relative Type/id is local.
            use crate::fhir::reference::Reference;
            let parsed = Reference::parse(r);
            let absolute = matches!(parsed, Reference::Absolute(_));
            let local = parsed.local();
            match (parsed, parsed.target_type()) {
                (Reference::Urn(_) | Reference::Conditional { .. }, _) => None,
                (_, Some(t)) if self.defs.is_resource_type(t) => {
                    if let Some((_, id)) = local {
                        if !crate::fhir::resource::is_valid_id(id) {
                            self.issue_sub(
                                ".reference",
                                IssueType::Value,
                                format!("'{id}' in reference '{r}' is not a valid id"),
                            );
                            return;
                        }
                        // Inside a Bundle's entries, references resolve within the Bundle
                        // (against the entries' fullUrls), not on this server.
                        if !self.contained.iter().any(|(t, _)| t == "Bundle") {
                            self.report.references.push(LocalRef {
                                ty: t.to_string(),
                                id: id.to_string(),
                                expression: format!("{}.reference", self.path),
                            });
                        }
                    }
                    Some(t.to_string())
                }
                _ if absolute => None,
                _ => {
                    self.issue_sub(
                        ".reference",
                        IssueType::Value,
                        format!("'{r}' is not a valid reference (expected Type/id, an absolute URL, #id or urn:uuid:)"),
                    );
                    return;
                }
            }
        };
        if let Some(t) = target {
            if !elem.allows_target(&t) {
                self.issue_sub(
                    ".reference",
                    IssueType::Invalid,
                    format!(
                        "{} may not refer to a {t} (allowed: {})",
                        elem.path,
                        elem.targets.join(", ")
                    ),
                );
            } else if let Some(d) = declared {
                if d != t {
                    self.issue_sub(
                        ".type",
                        IssueType::Invalid,
                        format!("type '{d}' does not match the reference '{r}'"),
                    );
                }
            }
        }
    }
}

/// `type/subtype` with optional `; name=value` parameters (RFC 2045 tokens).
fn is_mime_type(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let mut parts = s.split(';');
    let Some((ty, sub)) = parts.next().and_then(|m| m.trim().split_once('/')) else {
        return false;
    };
    token(ty)
        && token(sub)
        && parts.all(|p| {
            p.trim()
                .split_once('=')
                .is_some_and(|(k, v)| token(k.trim()) && !v.trim().is_empty())
        })
}

#[cfg(test)]
mod tests;
