//! The OpenAPI 3.1 document, generated from the type registry, the route table and the search
//! parameter definitions, so it cannot drift from what the server serves. It is assembled as JSON
//! and loaded into utoipa's typed model, which serves it (GET /openapi.json) and the Swagger UI.
use serde_json::{json, Map, Value};

use super::routes::{
    type_interactions, OPERATIONS, SYSTEM_INTERACTIONS, TYPE_INTERACTIONS, TYPE_OPERATIONS,
};
use crate::fhir::registry::{Registry, TypeInfo};

const FHIR_JSON: &str = "application/fhir+json";

/// Whether any type is served `i` (for shared components).
fn has(i: &str) -> bool {
    TYPE_INTERACTIONS.contains(&i)
}

fn content(schema: Value) -> Value {
    json!({ FHIR_JSON: {"schema": schema} })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn param_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn resp_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

/// JSON Schema of one element type (primitive types as JSON primitives, the rest by reference or open object).
fn element_schema(fhir_type: &str) -> Value {
    match fhir_type {
        "boolean" => json!({"type": "boolean"}),
        "integer" | "positiveInt" | "unsignedInt" => json!({"type": "integer"}),
        "decimal" => json!({"type": "number"}),
        "Resource" => {
            json!({"type": "object", "properties": {"resourceType": {"type": "string"}}, "required": ["resourceType"]})
        }
        t if t.starts_with("http://hl7.org/fhirpath/") => json!({"type": "string"}),
        t if t.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => json!({"type": "string"}),
        t => json!({"type": "object", "description": format!("FHIR {t}")}),
    }
}

/// Schema of a resource type: its top-level elements (choice elements expanded) and required ones.
fn resource_schema(t: &TypeInfo) -> Value {
    let mut props = Map::new();
    props.insert(
        "resourceType".into(),
        json!({"type": "string", "const": t.name}),
    );
    for e in &t.elements {
        let names: Vec<(String, &str)> = if let Some(stem) = e.name.strip_suffix("[x]") {
            e.types
                .iter()
                .map(|ty| {
                    let mut c = ty.chars();
                    let cap: String = c
                        .next()
                        .map(|f| f.to_ascii_uppercase())
                        .into_iter()
                        .chain(c)
                        .collect();
                    (format!("{stem}{cap}"), ty.as_str())
                })
                .collect()
        } else {
            vec![(
                e.name.clone(),
                e.types.first().map_or("string", |s| s.as_str()),
            )]
        };
        for (name, ty) in names {
            let s = element_schema(ty);
            let s = if e.max == "1" {
                s
            } else {
                json!({"type": "array", "items": s})
            };
            props.insert(name, s);
        }
    }
    let mut required = vec![json!("resourceType")];
    required.extend(
        t.mandatory
            .iter()
            .filter(|m| !m.ends_with("[x]"))
            .map(|m| json!(m)),
    );
    json!({
        "type": "object",
        "description": format!("FHIR R4 {} (http://hl7.org/fhir/R4/{}.html)", t.name, t.name.to_ascii_lowercase()),
        "properties": props,
        "required": required,
    })
}

fn op(
    id: String,
    tag: &str,
    summary: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    let mut o = Map::new();
    o.insert("operationId".into(), json!(id));
    o.insert("tags".into(), json!([tag]));
    o.insert("summary".into(), json!(summary));
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    if let Some(b) = body {
        o.insert("requestBody".into(), b);
    }
    o.insert("responses".into(), responses);
    Value::Object(o)
}

fn resource_ok(ty: &str, status: &str, description: &str) -> Value {
    json!({ status: {
        "description": description,
        "headers": {"ETag": {"$ref": "#/components/headers/ETag"}, "Last-Modified": {"$ref": "#/components/headers/Last-Modified"}},
        "content": content(schema_ref(ty)),
    }})
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(am), Value::Object(bm)) = (a.as_object_mut(), b) {
        am.extend(bm);
    }
    a
}

/// The error responses of a FHIR operation: `codes`, 406, which every `/fhir` route answers
/// when `_format` or `Accept` asks for something other than JSON (routes.rs checks it first),
/// and 503, which every route that reaches the database answers while it is unavailable (or,
/// on SQLite, locked by another process for longer than the busy timeout).
fn errors(codes: &[&str]) -> Value {
    let mut m = Map::new();
    for c in codes.iter().chain(&["406", "503"]) {
        m.insert((*c).to_string(), resp_ref(&format!("E{c}")));
    }
    Value::Object(m)
}

fn search_params(ty: &str) -> Vec<Value> {
    let Some(defs) = crate::fhir::search::SearchParams::get().for_type(ty) else {
        return Vec::new();
    };
    defs.values()
        .filter(|d| d.supported())
        .map(|d| {
            json!({
                "name": d.code,
                "in": "query",
                "required": false,
                "description": match d.code.as_str() {
                    "_text" => format!("full-text search of the narrative: words (all must match, stemmed), \"a phrase\", OR between terms ({})", d.url),
                    "_content" => format!("full-text search of the whole resource (every string value): words (all must match, stemmed), \"a phrase\", OR between terms ({})", d.url),
                    _ => format!("{} search parameter ({})", d.ptype.as_str(), d.url),
                },
                "schema": {"type": "string"},
            })
        })
        .collect()
}

/// The body of PATCH: the three patch formats.
fn patch_body() -> Value {
    json!({"required": true, "content": {
        "application/json-patch+json": {"schema": schema_ref("JsonPatch")},
        "application/merge-patch+json": {"schema": {"type": "object", "description": "JSON Merge Patch (RFC 7386): null removes an element, arrays are replaced whole"}},
        "application/fhir+json": {"schema": {"allOf": [schema_ref("Parameters")], "description": "FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): one 'operation' parameter per change with parts type (add | insert | delete | replace | move), path (FHIRPath), name, value (value[x], resource, or parts for complex values), index, source, destination"}},
    }})
}

fn type_paths(paths: &mut Map<String, Value>, t: &TypeInfo) {
    let ty = t.name.as_str();
    let has = |i: &str| type_interactions(ty).contains(&i);
    let body = json!({"required": true, "content": content(schema_ref(ty))});
    let common = [param_ref("_format"), param_ref("_pretty")];
    let id = param_ref("id");

    let mut type_item = Map::new();
    if has("search-type") {
        let mut ps = search_params(ty);
        ps.extend([
            param_ref("_count"),
            param_ref("_sort"),
            param_ref("_include"),
            param_ref("_revinclude"),
            param_ref("_summary"),
            param_ref("_elements"),
            param_ref("_total"),
        ]);
        ps.extend(common.clone());
        type_item.insert(
            "get".into(),
            op(format!("search-{ty}"), ty, format!("Search {ty}"), ps, None,
               merge(json!({"200": {"description": "searchset Bundle", "content": content(schema_ref("Bundle"))}}), errors(&["400", "401", "403"]))),
        );
    }
    if has("create") {
        let mut ps = vec![param_ref("Prefer")];
        ps.extend(common.clone());
        type_item.insert(
            "post".into(),
            op(format!("create-{ty}"), ty, format!("Create a {ty}"), ps, Some(body.clone()),
               merge(merge(resource_ok(ty, "201", "created; Location names the new version"), json!({"201": {"description": "created", "headers": {"Location": {"$ref": "#/components/headers/Location"}, "ETag": {"$ref": "#/components/headers/ETag"}}, "content": content(schema_ref(ty))}})), errors(&["400", "401", "403", "404", "413", "415", "422", "507"]))),
        );
    }
    if has("update") {
        let mut ps = search_params(ty);
        ps.extend([param_ref("If-Match"), param_ref("Prefer")]);
        type_item.insert(
            "put".into(),
            op(
                format!("conditional-update-{ty}"),
                ty,
                format!("Conditional update of a {ty} (search criteria in the query)"),
                ps,
                Some(body.clone()),
                merge(
                    merge(
                        resource_ok(ty, "200", "the single match was updated"),
                        resource_ok(ty, "201", "no match: created"),
                    ),
                    errors(&[
                        "400", "401", "403", "404", "405", "409", "412", "422", "507",
                    ]),
                ),
            ),
        );
    }
    if has("patch") {
        let mut ps = search_params(ty);
        ps.extend([param_ref("If-Match"), param_ref("Prefer")]);
        type_item.insert(
            "patch".into(),
            op(
                format!("conditional-patch-{ty}"),
                ty,
                format!("Conditional patch of the one {ty} the search criteria in the query select (JSON Patch, JSON Merge Patch or FHIRPath Patch)"),
                ps,
                Some(patch_body()),
                merge(
                    resource_ok(ty, "200", "the single match was patched"),
                    errors(&["400", "401", "403", "404", "405", "409", "412", "415", "422", "507"]),
                ),
            ),
        );
    }
    if has("delete") {
        type_item.insert(
            "delete".into(),
            op(format!("conditional-delete-{ty}"), ty, format!("Conditional delete of every matching {ty}"), search_params(ty), None,
               merge(json!({"204": {"description": "every match deleted (or none matched)"}, "200": {"description": "Prefer: return=OperationOutcome", "content": content(schema_ref("OperationOutcome"))}}), errors(&["400", "401", "403", "405", "409"]))),
        );
    }
    if !type_item.is_empty() {
        paths.insert(format!("/fhir/{ty}"), Value::Object(type_item));
    }

    let mut inst = Map::new();
    if has("read") {
        let mut ps = vec![id.clone(), param_ref("If-None-Match")];
        ps.extend(common.clone());
        inst.insert(
            "get".into(),
            op(
                format!("read-{ty}"),
                ty,
                format!("Read a {ty}"),
                ps,
                None,
                merge(
                    merge(
                        resource_ok(ty, "200", "the current version"),
                        json!({"304": {"description": "not modified"}}),
                    ),
                    errors(&["400", "401", "403", "404", "410"]),
                ),
            ),
        );
    }
    if has("update") {
        let mut ps = vec![id.clone(), param_ref("If-Match"), param_ref("Prefer")];
        ps.extend(common.clone());
        inst.insert(
            "put".into(),
            op(
                format!("update-{ty}"),
                ty,
                format!("Update (or create with this id) a {ty}"),
                ps,
                Some(body.clone()),
                merge(
                    merge(
                        resource_ok(ty, "200", "updated"),
                        resource_ok(ty, "201", "created with the client's id"),
                    ),
                    errors(&[
                        "400", "401", "403", "404", "409", "412", "413", "415", "422", "507",
                    ]),
                ),
            ),
        );
    }
    if has("patch") {
        let mut ps = vec![id.clone(), param_ref("If-Match"), param_ref("Prefer")];
        ps.extend(common.clone());
        inst.insert(
            "patch".into(),
            op(
                format!("patch-{ty}"),
                ty,
                format!("Patch a {ty} with JSON Patch, JSON Merge Patch or FHIRPath Patch (a Parameters resource)"),
                ps,
                Some(patch_body()),
                merge(
                    resource_ok(ty, "200", "patched"),
                    errors(&["400", "401", "403", "404", "409", "410", "412", "415", "422", "507"]),
                ),
            ),
        );
    }
    if has("delete") {
        inst.insert("delete".into(), op(format!("delete-{ty}"), ty, format!("Delete a {ty}"), vec![id.clone(), param_ref("If-Match")], None,
            merge(json!({"204": {"description": "deleted, or did not exist"}, "200": {"description": "deleted (Prefer: return=OperationOutcome)", "content": content(schema_ref("OperationOutcome"))}}), errors(&["400", "401", "403", "404", "409", "412"]))));
    }
    if !inst.is_empty() {
        paths.insert(format!("/fhir/{ty}/{{id}}"), Value::Object(inst));
    }
    let history_params = || {
        let mut ps = vec![
            param_ref("_count"),
            param_ref("_since"),
            param_ref("_at"),
            param_ref("_page"),
        ];
        ps.extend(common.clone());
        ps
    };
    let history_ok = || {
        merge(
            json!({"200": {"description": "history Bundle, newest first", "content": content(schema_ref("Bundle"))}}),
            errors(&["400", "401", "403", "404"]),
        )
    };
    if has("history-instance") {
        let mut ps = vec![id.clone()];
        ps.extend(history_params());
        paths.insert(format!("/fhir/{ty}/{{id}}/_history"), json!({"get": op(format!("history-instance-{ty}"), ty, format!("History of one {ty}"), ps, None, history_ok())}));
    }
    if has("history-type") {
        paths.insert(format!("/fhir/{ty}/_history"), json!({"get": op(format!("history-type-{ty}"), ty, format!("History of all {ty} resources"), history_params(), None, history_ok())}));
    }
    for (name, _) in TYPE_OPERATIONS {
        let body = json!({"required": false, "content": content(json!({"type": "object", "description": format!("a {ty}, or Parameters with resource, mode and profile")}))});
        let ok = merge(
            json!({"200": {"description": "OperationOutcome", "content": content(schema_ref("OperationOutcome"))}}),
            errors(&["400", "401", "403", "404", "415"]),
        );
        let mut ps = vec![param_ref("_format"), param_ref("_pretty")];
        paths.insert(format!("/fhir/{ty}/${name}"), json!({"post": op(format!("{name}-{ty}"), ty, format!("${name} a {ty}"), ps.clone(), Some(body.clone()), ok.clone())}));
        ps.insert(0, id.clone());
        paths.insert(format!("/fhir/{ty}/{{id}}/${name}"), json!({"post": op(format!("{name}-instance-{ty}"), ty, format!("${name} a {ty} against the stored one"), ps, Some(body), ok)}));
    }
    if has("vread") {
        let mut ps = vec![id.clone(), param_ref("vid")];
        ps.extend(common.clone());
        paths.insert(format!("/fhir/{ty}/{{id}}/_history/{{vid}}"), json!({"get": op(format!("vread-{ty}"), ty, format!("Read one version of a {ty}"), ps, None,
            merge(resource_ok(ty, "200", "that version"), errors(&["400", "401", "403", "404", "410"])))}));
    }
}

fn components(registry: &Registry, detail: Detail) -> Value {
    let mut schemas = match detail {
        Detail::Full => {
            let names: Vec<&str> = registry.types().map(|t| t.name.as_str()).collect();
            crate::fhir::schema::components(crate::fhir::definitions::Definitions::get(), &names)
        }
        Detail::Light => registry
            .types()
            .map(|t| (t.name.clone(), resource_schema(t)))
            .collect(),
    };
    if has("patch") {
        schemas.insert("JsonPatch".into(), json!({"type": "array", "items": {"type": "object", "required": ["op", "path"], "properties": {
        "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]}, "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}}}));
    }
    let str_q = |name: &str, d: &str| json!({"name": name, "in": "query", "required": false, "description": d, "schema": {"type": "string"}});
    let hdr = |name: &str, d: &str| json!({"name": name, "in": "header", "required": false, "description": d, "schema": {"type": "string"}});
    let mut errs = Map::new();
    for (c, d) in [
        (
            "400",
            "bad request (malformed JSON, bad parameter, id mismatch)",
        ),
        ("401", "missing or invalid bearer token"),
        ("403", "the token's scopes do not allow this"),
        ("404", "unknown type, id or version"),
        ("405", "method not supported on this path"),
        ("406", "_format or Accept asks for a format other than FHIR JSON"),
        ("409", "conflict or business rule"),
        ("410", "deleted"),
        ("412", "If-Match names a version that is not current"),
        ("413", "body larger than ICM_MAX_BODY (a transaction or batch Bundle: ICM_MAX_BUNDLE_BODY, or more than ICM_MAX_BUNDLE_ENTRIES entries)"),
        ("415", "unsupported Content-Type"),
        ("422", "the resource is invalid; every problem listed"),
    ] {
        errs.insert(
            format!("E{c}"),
            json!({"description": d, "content": content(schema_ref("OperationOutcome"))}),
        );
    }
    errs.insert("E507".into(), json!({"description": "no space left for the write (SQLite: database or disk full; PostgreSQL: could not extend file); nothing was stored", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": content(schema_ref("OperationOutcome"))}));
    errs.insert("E503".into(), json!({"description": "database unavailable", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": content(schema_ref("OperationOutcome"))}));
    json!({
        "schemas": schemas,
        "parameters": {
            "id": {"name": "id", "in": "path", "required": true, "description": "logical id", "schema": {"type": "string", "pattern": "^[A-Za-z0-9\\-\\.]{1,64}$"}},
            "vid": {"name": "vid", "in": "path", "required": true, "description": "version id", "schema": {"type": "string"}},
            "_format": str_q("_format", "response format: json, application/fhir+json or application/json"),
            "_pretty": {"name": "_pretty", "in": "query", "required": false, "description": "pretty-print the response", "schema": {"type": "boolean"}},
            "_count": {"name": "_count", "in": "query", "required": false, "description": "page size (bounded by ICM_MAX_COUNT)", "schema": {"type": "integer", "minimum": 0}},
            "_since": str_q("_since", "only versions last updated at or after this instant"),
            "_at": str_q("_at", "only versions last updated at or before this instant"),
            "_page": str_q("_page", "page token from a next/previous link"),
            "_sort": str_q("_sort", "sort keys, comma separated; '-' for descending"),
            "_include": str_q("_include", "include referenced resources (Type:param[:target])"),
            "_revinclude": str_q("_revinclude", "include referring resources (Type:param)"),
            "_summary": str_q("_summary", "true | count | data | text | false"),
            "_elements": str_q("_elements", "comma-separated top-level elements to return"),
            "_total": str_q("_total", "none | estimate | accurate"),
            "Prefer": hdr("Prefer", "return=minimal | representation | OperationOutcome; handling=strict | lenient"),
            "If-Match": hdr("If-Match", "version-aware update: W/\"<versionId>\""),
            "If-None-Match": hdr("If-None-Match", "conditional read: W/\"<versionId>\" answers 304 when current"),
        },
        "headers": {
            "ETag": {"description": "W/\"<versionId>\"", "schema": {"type": "string"}},
            "Last-Modified": {"description": "HTTP date of meta.lastUpdated", "schema": {"type": "string"}},
            "Location": {"description": "[base]/Type/id/_history/vid", "schema": {"type": "string"}},
        },
        "responses": errs,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "SMART on FHIR scopes (patient/, user/, system/)"}},
    })
}

/// How deep the component schemas go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every data type, backbone element and resource fully typed (crate::fhir::schema):
    /// /openapi.json, openapi/openapi.json, what client generators read.
    Full,
    /// Resource types with their top-level elements only, data types as plain objects: what the
    /// Swagger UI loads (/docs/openapi.json), which freezes on the full document's deep schemas.
    Light,
}

/// The whole OpenAPI document (fully typed schemas).
pub fn document(registry: &Registry) -> Value {
    document_with(registry, Detail::Full)
}

/// The OpenAPI document with schemas of the given depth; the paths are the same.
pub fn document_with(registry: &Registry, detail: Detail) -> Value {
    let mut paths = Map::new();
    let plain = |id: &str, tag: &str, summary: &str, d: &str| json!({"get": {"operationId": id, "tags": [tag], "summary": summary, "security": [], "responses": {"200": {"description": d}, "405": resp_ref("E405"), "503": resp_ref("E503")}}});
    paths.insert(
        "/healthz".into(),
        plain("healthz", "server", "Process is up", "up"),
    );
    paths.insert(
        "/readyz".into(),
        plain(
            "readyz",
            "server",
            "Database reachable and migrated",
            "ready",
        ),
    );
    paths.insert(
        "/metrics".into(),
        plain(
            "metrics",
            "server",
            "Prometheus metrics",
            "text exposition format",
        ),
    );
    paths.insert(
        "/openapi.json".into(),
        plain(
            "openapi",
            "server",
            "This OpenAPI document, every FHIR data type and backbone element fully typed (for client generators)",
            "OpenAPI 3.1 JSON",
        ),
    );
    paths.insert(
        "/docs/openapi.json".into(),
        plain(
            "openapi-docs",
            "server",
            "The same paths with resource schemas down to their top-level elements only (what Swagger UI at /docs loads)",
            "OpenAPI 3.1 JSON",
        ),
    );
    paths.insert(
        "/console/{file}".into(),
        json!({"get": {"operationId": "console", "tags": ["console"], "security": [],
            "summary": "The reference care-manager console: its page and modules, embedded in the server (no external assets). Open /console/ (GET /console redirects there); every call it makes goes through /fhir with the signed-in user's bearer token",
            "parameters": [{"name": "file", "in": "path", "required": true, "description": "index.html (or empty), app.js, api.js, ui.js, views.js, assess.js, style.css, favicon.svg", "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "the file (text/html, text/javascript, text/css or image/svg+xml)"},
                "404": {"description": "no such file"},
                "405": resp_ref("E405")
            }}}),
    );
    let dev_errors = json!({
        "403": {"description": "the caller is not on a loopback address", "content": content(schema_ref("OperationOutcome"))},
        "404": {"description": "the development sign-in is off: ICM_DEV_CONSOLE is off, ICM_BIND is not a loopback address, or ICM_AUTH=off", "content": content(schema_ref("OperationOutcome"))},
    });
    let mut dev_list = plain(
        "dev-practitioners",
        "console",
        "Development sign-in: the Practitioners a token can be minted for (only with ICM_DEV_CONSOLE=on on a loopback ICM_BIND; never in production)",
        "{\"practitioners\": [{\"id\", \"reference\", \"name\"}]}",
    );
    dev_list["get"]["responses"] = merge(dev_list["get"]["responses"].clone(), dev_errors.clone());
    paths.insert("/auth/dev/practitioners".into(), dev_list);
    paths.insert(
        "/auth/dev/token".into(),
        json!({"post": {
            "operationId": "dev-token",
            "tags": ["console"],
            "summary": "Development sign-in: mint a short-lived bearer token (30 minutes, scope user/*.cruds, fhirUser Practitioner/{id}) for a Practitioner, signed with the server's HS256 secret. Served only with ICM_DEV_CONSOLE=on (serve --dev-console) on a loopback ICM_BIND, to loopback clients; never in production",
            "security": [],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["practitioner"],
                "properties": {"practitioner": {"type": "string", "description": "Practitioner id"}}
            }}}},
            "responses": merge(json!({
                "200": {"description": "the token", "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"type": "string", "const": "Bearer"},
                        "expires_in": {"type": "integer"},
                        "scope": {"type": "string"},
                        "fhirUser": {"type": "string"},
                        "name": {"type": "string"}
                    }
                }}}},
                "400": {"description": "the body is not {\"practitioner\": id}", "content": content(schema_ref("OperationOutcome"))},
                "405": resp_ref("E405"),
                "409": {"description": "the server verifies with a JWKS file only and holds no signing secret", "content": content(schema_ref("OperationOutcome"))}
            }), dev_errors),
        }}),
    );
    let mut meta = plain(
        "capabilities",
        "system",
        "CapabilityStatement",
        "the CapabilityStatement",
    );
    meta["get"]["responses"]["200"]["content"] = content(schema_ref("CapabilityStatement"));
    meta["get"]["responses"]["406"] = resp_ref("E406");
    paths.insert("/fhir/metadata".into(), meta);
    if SYSTEM_INTERACTIONS.contains(&"history-system") {
        paths.insert("/fhir/_history".into(), json!({"get": op("history-system".into(), "system", "History of all resources".into(),
            vec![param_ref("_count"), param_ref("_since"), param_ref("_at"), param_ref("_page"), param_ref("_format"), param_ref("_pretty")], None,
            merge(json!({"200": {"description": "history Bundle", "content": content(schema_ref("Bundle"))}}), errors(&["400", "401", "403"])))}));
    }
    if SYSTEM_INTERACTIONS.contains(&"transaction") || SYSTEM_INTERACTIONS.contains(&"batch") {
        paths.insert("/fhir".into(), json!({"post": op("transaction".into(), "system", "Process a transaction or batch Bundle".into(), vec![param_ref("Prefer")],
            Some(json!({"required": true, "content": content(schema_ref("Bundle"))})),
            merge(json!({"200": {"description": "transaction-response or batch-response Bundle", "content": content(schema_ref("Bundle"))}}), errors(&["400", "401", "403", "404", "409", "412", "413", "415", "422", "507"])))}));
    }
    for t in registry.types() {
        type_paths(&mut paths, t);
    }
    for o in OPERATIONS {
        let mut ps: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        ps.extend(o.query.iter().map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})));
        let body = o
            .body
            .then(|| json!({"required": true, "content": content(json!({"type": "object"}))}));
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method] = op(
            o.id.to_string(),
            o.tag,
            o.summary.to_string(),
            ps,
            body,
            merge(
                json!({"200": {"description": o.returns, "content": content(json!({"type": "object"}))}}),
                // An instance-level operation on a deleted resource is 410 Gone, as its read is.
                if o.path.contains("{id}") {
                    errors(&["400", "401", "403", "404", "410"])
                } else {
                    errors(&["400", "401", "403", "404"])
                },
            ),
        );
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "icm-fhir",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "FHIR R4 (4.0.1) server for Integrated Care Management. Every concrete R4 resource type, with Patient, CarePlan, CareTeam and Task at the centre.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(registry, detail),
    });
    prune_unused_components(&mut doc);
    doc
}

/// Drop reusable parameters/responses/headers that no path refers to (they exist for
/// interactions that may not be served, e.g. search parameters before search-type).
fn prune_unused_components(doc: &mut Value) {
    let text = doc["paths"].to_string() + &doc["components"]["responses"].to_string();
    for section in ["parameters", "responses", "headers"] {
        if let Some(m) = doc["components"][section].as_object_mut() {
            m.retain(|name, _| text.contains(&format!("\"#/components/{section}/{name}\"")));
        }
    }
}

/// The document as utoipa's typed model.
pub fn openapi(registry: &Registry) -> utoipa::openapi::OpenApi {
    serde_json::from_value(document(registry))
        .expect("the generated OpenAPI document fits utoipa's model")
}

/// Pretty-printed with a final newline. Printed from the JSON itself, not utoipa's model, which
/// drops JSON Schema keywords it does not model.
fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serializable");
    s.push('\n');
    s
}

/// The committed form of the document (openapi/openapi.json): the full one.
pub fn committed_text(registry: &Registry) -> String {
    pretty(&document(registry))
}

/// The lighter document Swagger UI loads (GET /docs/openapi.json), compact.
pub fn docs_text(registry: &Registry) -> String {
    serde_json::to_string(&document_with(registry, Detail::Light)).expect("serializable")
}
