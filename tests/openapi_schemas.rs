//! The typed component schemas of the OpenAPI document (src/fhir/schema.rs), checked with an
//! independent JSON Schema validator (the `jsonschema` crate, draft 2020-12 = OpenAPI 3.1):
//! every official R4 example under tests/data/examples/ validates against the component of its
//! resourceType, hand-made invalid resources (bad code, bad date, missing required element, an
//! array where one value is allowed…) are rejected, and named components have the expected shape.
#[path = "common/examples.rs"]
mod official;
use official::examples;
use std::collections::BTreeMap;

use serde_json::{json, Value};

fn document() -> Value {
    icm_fhir::http::openapi::document(icm_fhir::fhir::registry::Registry::get())
}

/// A validator for the component `name`, resolving `#/components/schemas/...` in the document.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": {"schemas": doc["components"]["schemas"].clone()},
    });
    jsonschema::draft202012::options()
        .should_validate_formats(false)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema for {name} compiles: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Validators by component name, each compiled once (compiling one walks most of the document).
struct Validators {
    doc: Value,
    by_name: BTreeMap<String, jsonschema::Validator>,
}

impl Validators {
    fn new() -> Self {
        Validators {
            doc: document(),
            by_name: BTreeMap::new(),
        }
    }
    fn get(&mut self, name: &str) -> &jsonschema::Validator {
        let doc = &self.doc;
        self.by_name
            .entry(name.to_string())
            .or_insert_with(|| validator(doc, name))
    }
}

#[test]
fn official_examples_validate_against_their_component() {
    // Every example, including the three the server's validator rejects for rules a schema does
    // not carry (a reference target type, txt-2: see src/fhir/validate/tests.rs).
    let mut vs = Validators::new();
    let mut failures = Vec::new();
    let all = examples();
    let mut types = std::collections::BTreeSet::new();
    for (name, res) in &all {
        let ty = res["resourceType"].as_str().unwrap().to_string();
        types.insert(ty.clone());
        // Through the Resource union (how Bundle.entry.resource and contained see it), and when
        // that fails, against the type's own component for a readable error.
        if !vs.get("Resource").is_valid(res) {
            failures.push(format!("{name}: {}", errors(vs.get(&ty), res).join("; ")));
        }
    }
    println!(
        "{} of {} official examples valid against their component ({} types)",
        all.len() - failures.len(),
        all.len(),
        types.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(all.len() >= 290, "{}", all.len());
    // The union does tell types apart: an example is valid as its own type only.
    let (name, patient) = all
        .iter()
        .find(|(_, r)| r["resourceType"] == "Patient")
        .unwrap();
    assert!(vs.get("Patient").is_valid(patient), "{name}");
    assert!(!vs.get("Practitioner").is_valid(patient), "{name}");
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "active": true,
        "name": [{"use": "official", "text": "Peter\u{202f}James Chalmers", "family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}], "name": {"family": "du Marché"}}],
    })
}

fn task() -> Value {
    json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "restriction": {"repetitions": 1, "period": {"end": "2026-12-01"}},
        "input": [{"type": {"text": "note"}, "valueString": "call twice"}],
    })
}

fn care_plan() -> Value {
    json!({
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "activity": [{"detail": {"status": "scheduled", "scheduledTiming": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}}}}],
        "contained": [{"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active", "description": {"text": "walk"}, "subject": {"reference": "Patient/p1"}}],
    })
}

/// `mutate` applied to a valid resource makes it invalid for the component (the unmutated
/// resource is checked valid first, so the failure is the mutation's).
fn assert_rejected(vs: &mut Validators, base: Value, what: &str, mutate: impl FnOnce(&mut Value)) {
    let ty = base["resourceType"].as_str().unwrap().to_string();
    let v = vs.get(&ty);
    assert!(
        v.is_valid(&base),
        "{ty} base for '{what}' is valid: {:?}",
        errors(v, &base)
    );
    let mut bad = base;
    mutate(&mut bad);
    assert!(
        !v.is_valid(&bad),
        "{what}: accepted {}",
        serde_json::to_string(&bad).unwrap()
    );
}

#[test]
fn hand_made_invalid_resources_are_rejected() {
    let mut vs = Validators::new();
    let doc = &mut vs;
    // Wrong code for a required binding.
    assert_rejected(doc, task(), "Task.status 'done'", |r| {
        r["status"] = json!("done")
    });
    assert_rejected(doc, patient(), "Patient.gender 'M'", |r| {
        r["gender"] = json!("M")
    });
    assert_rejected(doc, care_plan(), "CarePlan.activity.detail.status", |r| {
        r["activity"][0]["detail"]["status"] = json!("booked")
    });
    assert_rejected(doc, care_plan(), "contained Goal lifecycleStatus", |r| {
        r["contained"][0]["lifecycleStatus"] = json!("ongoing")
    });
    assert_rejected(
        doc,
        care_plan(),
        "Timing.repeat.periodUnit (units-of-time)",
        |r| r["activity"][0]["detail"]["scheduledTiming"]["repeat"]["periodUnit"] = json!("week"),
    );
    // Bad date patterns.
    assert_rejected(doc, patient(), "birthDate 25/12/1974", |r| {
        r["birthDate"] = json!("25/12/1974")
    });
    assert_rejected(doc, patient(), "birthDate month 13", |r| {
        r["birthDate"] = json!("1974-13-01")
    });
    assert_rejected(doc, task(), "dateTime with hours but no offset", |r| {
        r["restriction"]["period"]["end"] = json!("2026-12-01T10:00:00")
    });
    assert_rejected(doc, patient(), "a vertical tab in a string", |r| {
        r["name"][0]["family"] = json!("Chal\u{000b}mers")
    });
    assert_rejected(doc, patient(), "an empty string", |r| {
        r["name"][0]["family"] = json!("")
    });
    assert_rejected(doc, patient(), "a code with a double space", |r| {
        r["contact"][0]["relationship"][0]["coding"][0]["code"] = json!("N  X")
    });
    assert_rejected(doc, patient(), "id with a space", |r| {
        r["id"] = json!("p 1")
    });
    // Missing required elements.
    assert_rejected(doc, task(), "Task without intent", |r| {
        r.as_object_mut().unwrap().remove("intent");
    });
    assert_rejected(doc, care_plan(), "CarePlan without subject", |r| {
        r.as_object_mut().unwrap().remove("subject");
    });
    assert_rejected(doc, patient(), "Patient without resourceType", |r| {
        r.as_object_mut().unwrap().remove("resourceType");
    });
    assert_rejected(doc, patient(), "Extension without url", |r| {
        r["_birthDate"]["extension"][0]
            .as_object_mut()
            .unwrap()
            .remove("url");
    });
    // An array where one value is allowed, and one value where an array is required.
    assert_rejected(doc, patient(), "two birthDates", |r| {
        r["birthDate"] = json!(["1974-12-25"])
    });
    assert_rejected(doc, patient(), "gender as array", |r| {
        r["gender"] = json!(["male"])
    });
    assert_rejected(doc, patient(), "name as one object", |r| {
        r["name"] = json!({"family": "Chalmers"})
    });
    assert_rejected(doc, patient(), "empty name array", |r| {
        r["name"] = json!([])
    });
    // Wrong JSON types, unknown elements, a string where a Reference is required.
    assert_rejected(doc, task(), "Task.for as a string", |r| {
        r["for"] = json!("Patient/p1")
    });
    assert_rejected(doc, patient(), "active as a string", |r| {
        r["active"] = json!("true")
    });
    assert_rejected(doc, task(), "repetitions 0 (positiveInt)", |r| {
        r["restriction"]["repetitions"] = json!(0)
    });
    assert_rejected(doc, patient(), "unknown element", |r| {
        r["nickname"] = json!("Pete")
    });
    assert_rejected(doc, task(), "unknown choice variant", |r| {
        r["input"][0]["valueFoo"] = json!("x")
    });
    assert_rejected(doc, patient(), "resourceType of another type", |r| {
        r["resourceType"] = json!("Practitioner")
    });
    // Deep: a Bundle entry whose resource breaks its own type's rules.
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": task()}]});
    assert_rejected(doc, bundle.clone(), "Bundle entry Task.status", |r| {
        r["entry"][0]["resource"]["status"] = json!("done")
    });
    assert_rejected(
        doc,
        bundle.clone(),
        "Bundle entry of an unknown type",
        |r| r["entry"][0]["resource"]["resourceType"] = json!("Taskk"),
    );
    assert_rejected(doc, bundle, "Bundle.type", |r| r["type"] = json!("bag"));
}

#[test]
fn components_have_the_expected_shape() {
    let doc = document();
    let s = &doc["components"]["schemas"];
    let schema_ref = |n: &str| json!({"$ref": format!("#/components/schemas/{n}")});
    // Data types and backbone elements are components of their own.
    for name in [
        "HumanName",
        "Reference",
        "CodeableConcept",
        "Coding",
        "Timing",
        "Timing_Repeat",
        "Extension",
        "Element",
        "Meta",
        "Patient_Contact",
        "CarePlan_Activity",
        "CarePlan_Activity_Detail",
        "Bundle_Entry",
        "Questionnaire_Item",
    ] {
        assert_eq!(s[name]["type"], "object", "{name}");
        assert_eq!(s[name]["additionalProperties"], false, "{name}");
    }
    // Resource: resourceType a required single-value enum, elements typed by reference.
    let p = &s["Patient"];
    assert_eq!(p["properties"]["resourceType"]["enum"], json!(["Patient"]));
    assert!(p["required"]
        .as_array()
        .unwrap()
        .contains(&json!("resourceType")));
    assert_eq!(
        p["properties"]["name"],
        json!({"type": "array", "items": schema_ref("HumanName"), "minItems": 1})
    );
    assert_eq!(
        p["properties"]["contact"]["items"],
        schema_ref("Patient_Contact")
    );
    assert_eq!(p["properties"]["_birthDate"], schema_ref("Element"));
    assert_eq!(
        p["properties"]["gender"]["enum"],
        json!(["female", "male", "other", "unknown"])
    );
    assert!(p["properties"]["birthDate"]["pattern"]
        .as_str()
        .unwrap()
        .starts_with("^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"));
    assert_eq!(p["properties"]["multipleBirthBoolean"]["type"], "boolean");
    assert_eq!(
        p["properties"]["multipleBirthInteger"]["type"], "integer",
        "choice elements spelled out"
    );
    assert!(p["properties"].get("multipleBirth[x]").is_none());
    // Task: required elements and codes.
    let t = &s["Task"];
    let req = t["required"].as_array().unwrap();
    for r in ["resourceType", "status", "intent"] {
        assert!(req.contains(&json!(r)), "{r}");
    }
    let status = t["properties"]["status"]["enum"].as_array().unwrap();
    assert!(status.contains(&json!("requested")) && status.contains(&json!("completed")));
    assert!(!status.contains(&json!("done")));
    assert_eq!(t["properties"]["for"], schema_ref("Reference"));
    assert_eq!(
        s["Task_Restriction"]["properties"]["repetitions"]["minimum"],
        1
    );
    // Cardinality: maxItems where max is a number > 1 (ElementDefinition.base? none in R4 base;
    // Timing.repeat.dayOfWeek is *), minItems from min.
    assert_eq!(
        s["CarePlan"]["properties"]["subject"],
        schema_ref("Reference")
    );
    assert_eq!(
        s["Bundle_Entry"]["properties"]["resource"],
        schema_ref("Resource")
    );
    assert_eq!(
        s["Questionnaire_Item"]["properties"]["item"]["items"],
        schema_ref("Questionnaire_Item"),
        "contentReference"
    );
    assert_eq!(
        s["Observation"]["properties"]["valueQuantity"],
        schema_ref("Quantity")
    );
    assert_eq!(
        s["Extension"]["required"],
        json!(["url"]),
        "Extension.url required"
    );
    assert!(s["Extension"]["properties"].get("_url").is_none());
    assert!(s["Extension"]["properties"].get("valueReference").is_some());
    assert!(s["Extension"]["properties"].get("_valueString").is_some());
    assert!(s["Reference"]["properties"].get("_reference").is_some());
    assert!(s["Reference"]["properties"].get("_id").is_none());
    // Resource: a oneOf of every served type with a resourceType discriminator.
    let served: Vec<&str> = icm_fhir::fhir::registry::Registry::get()
        .types()
        .map(|t| t.name.as_str())
        .collect();
    let one_of = s["Resource"]["oneOf"].as_array().unwrap();
    assert_eq!(one_of.len(), served.len());
    assert!(one_of.contains(&schema_ref("CarePlan")));
    assert_eq!(
        s["Resource"]["discriminator"]["mapping"]["Task"],
        "#/components/schemas/Task"
    );
    for ty in &served {
        assert_eq!(
            s[*ty]["properties"]["resourceType"]["enum"],
            json!([ty]),
            "{ty}"
        );
    }
    // Every reference in the document resolves.
    let text = doc.to_string();
    let mut missing = Vec::new();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        if s.get(name).is_none() {
            missing.push(name.to_string());
        }
    }
    assert!(missing.is_empty(), "{missing:?}");
    // Request bodies and responses of the resource paths use the typed components.
    let paths = &doc["paths"];
    assert_eq!(
        paths["/fhir/Task/{id}"]["put"]["requestBody"]["content"]["application/fhir+json"]
            ["schema"],
        schema_ref("Task")
    );
    assert_eq!(
        paths["/fhir/Patient"]["post"]["responses"]["201"]["content"]["application/fhir+json"]
            ["schema"],
        schema_ref("Patient")
    );
}
