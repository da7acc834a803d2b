//! R4 element definitions and required value sets (fhir-profiles/r4/), indexed once for validation.
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::fhir::validate::invariant::{self, Cond};

const DEFINITIONS_JSON: &str = include_str!("../../fhir-profiles/r4/definitions.json");
const VALUESETS_JSON: &str = include_str!("../../fhir-profiles/r4/required-valuesets.json");

/// Index of a node (a type root or a backbone element) in `Definitions::nodes`.
pub type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Resource,
    Complex,
    Primitive,
}

/// What the value of an element is validated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// One of the element's types (`types`), by name.
    Types,
    /// An inline backbone element (or a contentReference to one): its own node.
    Node(NodeId),
}

/// One element of a type, as defined in the R4 snapshot.
#[derive(Debug, Clone)]
pub struct ElemDef {
    /// Name as it appears in the definition: `given`, `value[x]`.
    pub name: String,
    /// Name used in expressions: `value` for `value[x]`.
    pub base_name: String,
    pub path: String,
    pub min: u32,
    /// None = unbounded (`*`).
    pub max: Option<u32>,
    pub types: Vec<String>,
    /// Allowed target resource types of a Reference (empty or containing `Resource` = any).
    pub targets: Vec<String>,
    /// Required value set URL.
    pub binding: Option<String>,
    pub invariants: Vec<Invariant>,
    pub simple_quantity: bool,
    pub content: Content,
    pub is_choice: bool,
}

impl ElemDef {
    pub fn is_array(&self) -> bool {
        self.max != Some(1)
    }
    /// Whether a reference to a resource of type `ty` is allowed here.
    pub fn allows_target(&self, ty: &str) -> bool {
        self.targets.is_empty() || self.targets.iter().any(|t| t == "Resource" || t == ty)
    }
}

/// A set of elements sharing a parent: a type's root or a backbone element.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub path: String,
    pub elems: Vec<ElemDef>,
    /// JSON property name → (element index, type index). Choice elements have one key per type.
    pub keys: HashMap<String, (usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct TypeDef {
    pub name: String,
    pub kind: Kind,
    pub is_abstract: bool,
    pub root: NodeId,
    /// The type's error-level invariants.
    pub invariants: Vec<Invariant>,
}

/// Codes of one required value set.
#[derive(Debug, Clone, Default)]
pub struct ValueSet {
    pub codes: HashSet<String>,
    pub systems: HashSet<String>,
    pub pairs: HashSet<(String, String)>,
}

impl ValueSet {
    pub fn has_code(&self, code: &str) -> bool {
        self.codes.contains(code)
    }
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.pairs.contains(&(system.to_string(), code.to_string()))
    }
}

#[derive(Debug)]
pub struct Definitions {
    pub types: HashMap<String, TypeDef>,
    pub nodes: Vec<Node>,
    pub valuesets: HashMap<String, ValueSet>,
}

#[derive(Deserialize)]
struct RawFile {
    types: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    #[serde(rename = "abstract", default)]
    is_abstract: bool,
    #[serde(default)]
    invariants: Vec<(String, String)>,
    #[serde(default)]
    elements: Vec<RawElem>,
}

#[derive(Deserialize)]
struct RawElem {
    path: String,
    min: u32,
    max: String,
    #[serde(rename = "type", default)]
    types: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    binding: Option<String>,
    #[serde(default)]
    invariants: Vec<(String, String)>,
    #[serde(rename = "contentReference")]
    content_reference: Option<String>,
    #[serde(rename = "simpleQuantity", default)]
    simple_quantity: bool,
}

#[derive(Deserialize)]
struct RawValueSets {
    #[serde(rename = "valueSet")]
    value_set: HashMap<String, Vec<RawCode>>,
}

#[derive(Deserialize)]
struct RawCode {
    system: Option<String>,
    code: String,
}

/// An invariant (constraint) with its condition when this server can check it.
#[derive(Debug, Clone)]
pub struct Invariant {
    pub key: String,
    pub expression: String,
    pub cond: Option<Cond>,
}

fn compile_all(raw: Vec<(String, String)>) -> Vec<Invariant> {
    raw.into_iter()
        .map(|(key, expression)| Invariant {
            cond: invariant::compile(&key, &expression),
            key,
            expression,
        })
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

impl Definitions {
    fn load() -> Definitions {
        let raw: RawFile = serde_json::from_str(DEFINITIONS_JSON)
            .expect("fhir-profiles/r4/definitions.json is embedded and valid");
        let mut types = HashMap::new();
        let mut nodes: Vec<Node> = Vec::new();
        for (name, v) in raw.types {
            let rt: RawType = serde_json::from_value(v).expect("definition entry");
            let kind = match rt.kind.as_str() {
                "resource" => Kind::Resource,
                "primitive-type" => Kind::Primitive,
                _ => Kind::Complex,
            };
            // Group the elements by parent path: one node per type root and backbone element.
            let mut by_path: HashMap<String, NodeId> = HashMap::new();
            let root = nodes.len();
            nodes.push(Node {
                path: name.clone(),
                ..Node::default()
            });
            by_path.insert(name.clone(), root);
            let mut pending_refs: Vec<(NodeId, usize, String)> = Vec::new();
            for e in rt.elements {
                let (parent, last) = e.path.rsplit_once('.').expect("element path has a parent");
                let parent_id = match by_path.get(parent) {
                    Some(id) => *id,
                    None => {
                        let id = nodes.len();
                        nodes.push(Node {
                            path: parent.to_string(),
                            ..Node::default()
                        });
                        by_path.insert(parent.to_string(), id);
                        id
                    }
                };
                let is_choice = last.ends_with("[x]");
                let base_name = last.trim_end_matches("[x]").to_string();
                let elem = ElemDef {
                    name: last.to_string(),
                    base_name: base_name.clone(),
                    path: e.path.clone(),
                    min: e.min,
                    max: if e.max == "*" {
                        None
                    } else {
                        Some(e.max.parse().unwrap_or(1))
                    },
                    types: e.types,
                    targets: e.targets,
                    binding: e.binding,
                    invariants: {
                        let mut invs = e.invariants;
                        if e.simple_quantity {
                            let (k, x) = invariant::SQTY_1;
                            invs.push((k.to_string(), x.to_string()));
                        }
                        compile_all(invs)
                    },
                    simple_quantity: e.simple_quantity,
                    content: Content::Types,
                    is_choice,
                };
                let node = &mut nodes[parent_id];
                let ei = node.elems.len();
                if is_choice {
                    for (ti, t) in elem.types.iter().enumerate() {
                        node.keys
                            .insert(format!("{base_name}{}", capitalize(t)), (ei, ti));
                    }
                } else {
                    node.keys.insert(base_name, (ei, 0));
                }
                if let Some(cr) = e.content_reference {
                    pending_refs.push((parent_id, ei, cr));
                }
                node.elems.push(elem);
            }
            // Backbone elements point at their own node; contentReferences at the referenced one.
            let ids: Vec<NodeId> = by_path.values().copied().collect();
            for nid in ids {
                for ei in 0..nodes[nid].elems.len() {
                    let p = nodes[nid].elems[ei].path.clone();
                    if let Some(child) = by_path.get(&p) {
                        if *child != nid {
                            nodes[nid].elems[ei].content = Content::Node(*child);
                        }
                    }
                }
            }
            for (nid, ei, target) in pending_refs {
                if let Some(t) = by_path.get(&target) {
                    nodes[nid].elems[ei].content = Content::Node(*t);
                }
            }
            types.insert(
                name.clone(),
                TypeDef {
                    name,
                    kind,
                    is_abstract: rt.is_abstract,
                    root,
                    invariants: compile_all(rt.invariants),
                },
            );
        }
        let vs: RawValueSets = serde_json::from_str(VALUESETS_JSON)
            .expect("fhir-profiles/r4/required-valuesets.json is embedded and valid");
        let valuesets = vs
            .value_set
            .into_iter()
            .map(|(url, codes)| {
                let mut set = ValueSet::default();
                for c in codes {
                    if let Some(s) = &c.system {
                        set.systems.insert(s.clone());
                        set.pairs.insert((s.clone(), c.code.clone()));
                    }
                    set.codes.insert(c.code);
                }
                (url, set)
            })
            .collect();
        Definitions {
            types,
            nodes,
            valuesets,
        }
    }

    /// The definitions, loaded once per process.
    pub fn get() -> &'static Definitions {
        static DEFS: OnceLock<Definitions> = OnceLock::new();
        DEFS.get_or_init(Definitions::load)
    }

    pub fn type_def(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// A concrete resource type (not Resource/DomainResource).
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_some_and(|t| t.kind == Kind::Resource && !t.is_abstract)
    }

    pub fn is_primitive(&self, name: &str) -> bool {
        self.types
            .get(name)
            .is_some_and(|t| t.kind == Kind::Primitive)
    }

    /// Every required value set, by URL.
    pub fn valuesets(&self) -> impl Iterator<Item = (&String, &ValueSet)> {
        self.valuesets.iter()
    }
    pub fn valueset(&self, url: &str) -> Option<&ValueSet> {
        self.valuesets.get(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_types_backbones_and_content_references() {
        let d = Definitions::get();
        assert!(d.is_resource_type("CarePlan"));
        assert!(!d.is_resource_type("DomainResource"));
        assert!(d.is_primitive("dateTime"));
        let cp = d.node(d.type_def("CarePlan").unwrap().root);
        let (ei, _) = cp.keys["activity"];
        let Content::Node(act) = cp.elems[ei].content else {
            panic!("activity is a backbone element")
        };
        assert!(d.node(act).keys.contains_key("detail"));
        let q = d.node(d.type_def("Questionnaire").unwrap().root);
        let Content::Node(item) = q.elems[q.keys["item"].0].content else {
            panic!()
        };
        let inner = &d.node(item).elems[d.node(item).keys["item"].0];
        assert_eq!(
            inner.content,
            Content::Node(item),
            "item.item refers to item"
        );
        let obs = d.node(d.type_def("Observation").unwrap().root);
        let (ei, ti) = obs.keys["valueQuantity"];
        assert_eq!(obs.elems[ei].types[ti], "Quantity");
        let subj = &cp.elems[cp.keys["subject"].0];
        assert!(subj.allows_target("Patient") && subj.allows_target("Group"));
        assert!(!subj.allows_target("Practitioner"));
        assert!(d
            .valueset("http://hl7.org/fhir/ValueSet/request-intent")
            .unwrap()
            .has_code("order"));
    }
}
