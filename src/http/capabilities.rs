//! GET /fhir/metadata: the CapabilityStatement, generated from the registry and the route table.
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::response::{base_url, fhir_json};
use super::routes::{
    type_interactions, SYSTEM_INTERACTIONS, TERMINOLOGY_OPERATIONS, TYPE_OPERATIONS,
};
use super::State;
use crate::fhir::registry::Registry;

pub fn capability_statement(registry: &Registry, base: &str) -> Value {
    let operations: Vec<Value> = TYPE_OPERATIONS
        .iter()
        .map(|(name, def)| json!({"name": name, "definition": def}))
        .collect();
    let resources: Vec<Value> = registry
        .type_names()
        .map(|t| {
            let interactions: Vec<Value> = type_interactions(t)
                .iter()
                .map(|c| json!({"code": c}))
                .collect();
            let mut r = json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "multiple",
                "operation": operations,
                "searchParam": super::search::capability_search_params(t),
            });
            let supported: Vec<&str> = crate::fhir::validate::profiles::all()
                .filter(|p| p.ty == t)
                .map(|p| p.url.as_str())
                .collect();
            if !supported.is_empty() {
                r["supportedProfile"] = json!(supported);
            }
            if crate::store::audit::is_audit_log(t) {
                // Written by the server only, one version each (store::audit).
                r["versioning"] = json!("versioned");
                for k in ["updateCreate", "conditionalCreate", "conditionalUpdate"] {
                    r[k] = json!(false);
                }
                r["conditionalDelete"] = json!("not-supported");
            }
            if t == "Subscription" {
                r["documentation"] = json!(SUBSCRIPTION_DOC);
            }
            crate::care::capability(t, &mut r);
            for (_, name, def) in TERMINOLOGY_OPERATIONS.iter().filter(|(ty, _, _)| *ty == t) {
                if let Some(ops) = r["operation"].as_array_mut() {
                    ops.push(json!({"name": name, "definition": def}));
                }
            }
            document_operations(t, &mut r);
            r
        })
        .collect();
    let system: Vec<Value> = SYSTEM_INTERACTIONS
        .iter()
        .map(|c| json!({"code": c}))
        .collect();
    // System-level operations, with the query parameters of the route table's OperationDoc.
    let system_operations: Vec<Value> = crate::care::SYSTEM_OPERATIONS
        .iter()
        .map(|(name, def)| {
            let mut op = json!({"name": name, "definition": def});
            let path = format!("/fhir/${name}");
            if let Some(doc) = super::routes::OPERATIONS
                .iter()
                .find(|d| d.path == path && !d.query.is_empty())
            {
                let list: Vec<String> = doc
                    .query
                    .iter()
                    .map(|(p, what)| format!("`{p}`: {what}"))
                    .collect();
                op["documentation"] = json!(format!("Parameters: {}.", list.join("; ")));
            }
            op
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": env!("ICM_BUILD_DATE"),
        "publisher": "icm-fhir",
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": {"name": "icm-fhir", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "icm-fhir: FHIR R4 server for Integrated Care Management", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": crate::http::patch::PATCH_FORMATS,
        "rest": [{
            "mode": "server",
            // R4: where Subscription websocket clients connect (README: Subscriptions).
            "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
                "valueUri": format!("{}/$subscription-ws", base.replacen("http", "ws", 1)),
            }],
            "security": crate::http::auth::smart::capability_security(),
            "resource": resources,
            "interaction": system,
            "operation": system_operations,
        }],
    })
}

/// What the server does with Subscriptions (R4, criteria-based).
const SUBSCRIPTION_DOC: &str = "R4 Subscriptions: criteria is a search URL on one type (the same search rules and the subscriber's own access apply); channel rest-hook (POST with no body, or with payload application/fhir+json PUT [endpoint]/[type]/[id] with the resource; channel.header sent with each request) or websocket (bind <id> on the websocket of the rest extension; ping <id> per notification). The server sets status: requested becomes active; error after ICM_SUBSCRIPTION_MAX_ATTEMPTS failed deliveries of one notification. Notifications are written with the change (outbox) and delivered at least once, retried with exponential backoff.";

/// `documentation` of each extended operation of a type: the query parameters it takes, from the
/// route table's OperationDoc (the one the OpenAPI document is made of).
fn document_operations(ty: &str, resource: &mut Value) {
    let Some(ops) = resource.get_mut("operation").and_then(Value::as_array_mut) else {
        return;
    };
    for op in ops {
        let Some(name) = op["name"].as_str() else {
            continue;
        };
        let path = format!("/fhir/{ty}/{{id}}/${name}");
        let Some(doc) = super::routes::OPERATIONS
            .iter()
            .find(|d| d.path == path && !d.query.is_empty())
        else {
            continue;
        };
        let list: Vec<String> = doc
            .query
            .iter()
            .map(|(p, what)| format!("`{p}`: {what}"))
            .collect();
        op["documentation"] = json!(format!("Parameters: {}.", list.join("; ")));
    }
}

pub async fn metadata(req: HttpRequest, state: State) -> HttpResponse {
    let base = base_url(&req, &state);
    fhir_json(
        &req,
        StatusCode::OK,
        &capability_statement(state.registry, &base),
    )
}
