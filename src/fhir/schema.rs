//! JSON Schema (OpenAPI 3.1 components) for the R4 types, generated from the element definitions
//! (fhir-profiles/r4/): one component per complex data type, backbone element and resource type,
//! choice elements spelled out, required bindings as enums, the spec's primitive regexes as patterns.
//!
//! Shape (close to the official `fhir.schema.json`, flattened so client generators get plain
//! classes/interfaces):
//! - a complex type or resource is an object with `additionalProperties: false`; a resource has
//!   `resourceType` as a required single-value enum;
//! - a backbone element is its own component named after its path: `Patient.contact` →
//!   `Patient_Contact`, `CarePlan.activity.detail` → `CarePlan_Activity_Detail`; a
//!   `contentReference` (Questionnaire.item.item) refers to the component it names;
//! - `value[x]` becomes `valueQuantity`, `valueString`… (the choice's "only one" and a required
//!   choice's "at least one" are not expressed: generators would turn them into unions of every
//!   combination);
//! - a primitive element is an inline JSON type (pattern for string formats) with its `_name`
//!   companion (`Element`: id and extensions; `null` allowed in a companion array). A `null` in the
//!   value array itself (an item with extensions only) is not allowed, as in the official
//!   `fhir.schema.json`: typed clients get `string[]`, not `(string | null)[]`;
//! - max `*` is an array with `minItems` (at least 1: FHIR JSON has no empty arrays), max n > 1 adds
//!   `maxItems`; min ≥ 1 lists the element in `required`;
//! - an element of type `Resource` (contained, Bundle.entry.resource, Parameters.parameter.resource)
//!   refers to `Resource`: a `oneOf` of the given resource types with a `resourceType` discriminator.
use serde_json::{json, Map, Value};

use super::definitions::{Content, Definitions, ElemDef, Kind, NodeId};

/// Component name of the union of every resource type.
pub const RESOURCE: &str = "Resource";

/// The R4 regular expression of a string-valued primitive type (http://hl7.org/fhir/R4/datatypes.html),
/// anchored for JSON Schema; None for types without one (xhtml; markdown's `\s*(\S|\s)*` matches
/// anything) or carried as JSON numbers/booleans. The spec's expressions are Java-flavoured: `\s` is
/// ASCII whitespace only (space, tab, LF, VT, FF, CR), while in JavaScript, Python and Rust it is
/// Unicode-aware (U+202F, a narrow no-break space, would stop "Acme\u{202f}Healthcare" from being a
/// string), so `\s`/`\S` are written out as those six characters.
pub fn primitive_pattern(ty: &str) -> Option<&'static str> {
    Some(match ty {
        // [ \r\n\t\S]+: anything but VT and FF.
        "string" => r"^[^\x0B\x0C]+$",
        // [^\s]+(\s[^\s]+)*
        "code" => r"^[^ \t\n\x0B\x0C\r]+([ \t\n\x0B\x0C\r][^ \t\n\x0B\x0C\r]+)*$",
        "id" => r"^[A-Za-z0-9\-\.]{1,64}$",
        // \S*
        "uri" | "url" | "canonical" => r"^[^ \t\n\x0B\x0C\r]*$",
        "oid" => r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$",
        "uuid" => r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        // (\s*([0-9a-zA-Z\+/=]){4}\s*)+
        "base64Binary" => r"^([ \t\n\x0B\x0C\r]*([0-9a-zA-Z\+/=]){4}[ \t\n\x0B\x0C\r]*)+$",
        "date" => {
            r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$"
        }
        "dateTime" => {
            r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$"
        }
        "instant" => {
            r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$"
        }
        "time" => r"^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?$",
        _ => return None,
    })
}

/// Inline schema of a primitive type's JSON value.
pub fn primitive_schema(ty: &str) -> Value {
    match ty {
        "boolean" => json!({"type": "boolean"}),
        "integer" => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
        "unsignedInt" => json!({"type": "integer", "minimum": 0, "maximum": i32::MAX}),
        "positiveInt" => json!({"type": "integer", "minimum": 1, "maximum": i32::MAX}),
        "decimal" => json!({"type": "number"}),
        t => match primitive_pattern(t) {
            Some(p) => json!({"type": "string", "pattern": p}),
            None => json!({"type": "string"}),
        },
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Component name of a backbone element (or type root) by its path: `Patient.contact` → `Patient_Contact`.
pub fn component_name(path: &str) -> String {
    let mut parts = path.split('.');
    let mut out = parts.next().unwrap_or_default().to_string();
    for p in parts {
        out.push('_');
        out.push_str(&capitalize(p));
    }
    out
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

struct Builder<'a> {
    defs: &'a Definitions,
    out: Map<String, Value>,
}

impl Builder<'_> {
    /// Schema of one value of type `ty` (`binding`: a required value set for a `code`).
    fn type_schema(&self, ty: &str, binding: Option<&str>) -> Value {
        if ty == "Resource" {
            return schema_ref(RESOURCE);
        }
        if self.defs.is_primitive(ty) {
            let mut s = primitive_schema(ty);
            if ty == "code" {
                if let Some(vs) = binding.and_then(|u| self.defs.valueset(u)) {
                    if !vs.codes.is_empty() {
                        let mut codes: Vec<&String> = vs.codes.iter().collect();
                        codes.sort();
                        s = json!({"type": "string", "enum": codes});
                    }
                }
            }
            return s;
        }
        schema_ref(ty)
    }

    /// Wrap the schema of one value in the element's cardinality.
    fn with_cardinality(e: &ElemDef, item: Value) -> Value {
        if !e.is_array() {
            return item;
        }
        let mut a = json!({"type": "array", "items": item, "minItems": e.min.max(1)});
        if let Some(m) = e.max {
            a["maxItems"] = json!(m);
        }
        a
    }

    /// Emit the component for `node` (and, recursively, its backbone elements).
    fn node(&mut self, id: NodeId, resource_type: Option<&str>, description: String) {
        let node = self.defs.node(id);
        let name = component_name(&node.path);
        if self.out.contains_key(&name) {
            return;
        }
        // Reserve the name first: backbone elements can refer back to their ancestors.
        self.out.insert(name.clone(), Value::Null);
        let mut props = Map::new();
        let mut required = Vec::new();
        if let Some(rt) = resource_type {
            props.insert(
                "resourceType".into(),
                json!({"type": "string", "enum": [rt]}),
            );
            required.push(json!("resourceType"));
        }
        let mut children = Vec::new();
        for e in &node.elems {
            match e.content {
                Content::Node(child) => {
                    children.push(child);
                    let child_name = component_name(&self.defs.node(child).path);
                    props.insert(
                        e.base_name.clone(),
                        Self::with_cardinality(e, schema_ref(&child_name)),
                    );
                    if e.min > 0 {
                        required.push(json!(e.base_name));
                    }
                }
                Content::Types => {
                    for t in &e.types {
                        let key = if e.is_choice {
                            format!("{}{}", e.base_name, capitalize(t))
                        } else {
                            e.base_name.clone()
                        };
                        let s = self.type_schema(t, e.binding.as_deref());
                        props.insert(key.clone(), Self::with_cardinality(e, s));
                        // The primitive's id and extensions (FHIR JSON's `_name` companion); not
                        // for `id` and Extension.url, which are attributes in XML (plain strings).
                        let attribute = (e.base_name == "id" && !e.is_choice)
                            || (node.path == "Extension" && e.base_name == "url");
                        if self.defs.is_primitive(t) && !attribute {
                            // In an array, `null` stands for an item without id or extensions
                            // (`"_given": [null, {"extension": […]}]`).
                            let companion = if e.is_array() {
                                json!({"anyOf": [schema_ref("Element"), {"type": "null"}]})
                            } else {
                                schema_ref("Element")
                            };
                            props.insert(format!("_{key}"), Self::with_cardinality(e, companion));
                        }
                        if !e.is_choice {
                            if e.min > 0 {
                                required.push(json!(key));
                            }
                            break;
                        }
                    }
                }
            }
        }
        let mut s = json!({
            "type": "object",
            "description": description,
            "properties": props,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            s["required"] = Value::Array(required);
        }
        self.out.insert(name, s);
        for child in children {
            let path = self.defs.node(child).path.clone();
            self.node(child, None, format!("{path} (backbone element)"));
        }
    }
}

/// Every component: the complex data types, `Element`, the resource types in `resource_types`
/// with their backbone elements, and the `Resource` union of those resource types. Sorted by name.
pub fn components(defs: &Definitions, resource_types: &[&str]) -> Map<String, Value> {
    let mut b = Builder {
        defs,
        out: Map::new(),
    };
    let mut complex: Vec<&str> = defs
        .types
        .values()
        .filter(|t| t.kind == Kind::Complex && (!t.is_abstract || t.name == "Element"))
        .map(|t| t.name.as_str())
        .collect();
    complex.sort();
    for name in complex {
        let t = defs.type_def(name).expect("listed");
        b.node(
            t.root,
            None,
            format!("FHIR R4 data type {name} (http://hl7.org/fhir/R4/datatypes.html)"),
        );
    }
    let mut mapping = Map::new();
    let mut one_of = Vec::new();
    for &name in resource_types {
        let Some(t) = defs.type_def(name) else {
            continue;
        };
        b.node(
            t.root,
            Some(name),
            format!(
                "FHIR R4 {name} (http://hl7.org/fhir/R4/{}.html)",
                name.to_ascii_lowercase()
            ),
        );
        mapping.insert(
            name.to_string(),
            json!(format!("#/components/schemas/{name}")),
        );
        one_of.push(schema_ref(name));
    }
    b.out.insert(
        RESOURCE.into(),
        json!({
            "description": "Any resource type this server serves, told apart by resourceType",
            "oneOf": one_of,
            "discriminator": {"propertyName": "resourceType", "mapping": mapping},
        }),
    );
    let mut all: Vec<(String, Value)> = b.out.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_anchored_and_names_follow_paths() {
        for t in [
            "string",
            "date",
            "dateTime",
            "instant",
            "code",
            "id",
            "uri",
            "base64Binary",
        ] {
            let p = primitive_pattern(t).unwrap();
            assert!(p.starts_with('^') && p.ends_with('$'), "{t}");
        }
        assert_eq!(component_name("Patient.contact"), "Patient_Contact");
        assert_eq!(
            component_name("CarePlan.activity.detail"),
            "CarePlan_Activity_Detail"
        );
    }
}
