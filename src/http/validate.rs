//! `$validate` (type and instance level) and the ICM conformance resources
//! (`GET /fhir/StructureDefinition/{id}`, CodeSystem, ValueSet) served from the embedded files.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::negotiate::FhirBody;
use super::response::fhir_json;
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueType, OperationOutcome};
use crate::fhir::resource;
use crate::fhir::validate::{self, profiles};
use crate::service::context::RequestContext;

/// What a `$validate` request asks for.
struct Request {
    resource: Option<Value>,
    mode: Option<String>,
    profile: Option<String>,
}

/// The body is a resource, or Parameters with `resource`, `mode` and `profile`.
fn parse_request(body: Value) -> ApiResult<Request> {
    if body["resourceType"] != "Parameters" {
        return Ok(Request {
            resource: Some(body),
            mode: None,
            profile: None,
        });
    }
    let mut r = Request {
        resource: None,
        mode: None,
        profile: None,
    };
    for p in body["parameter"].as_array().into_iter().flatten() {
        match p["name"].as_str() {
            Some("resource") => r.resource = Some(p["resource"].clone()),
            Some("mode") => r.mode = p["valueCode"].as_str().map(String::from),
            Some("profile") => {
                r.profile = p["valueUri"]
                    .as_str()
                    .or(p["valueCanonical"].as_str())
                    .map(String::from)
            }
            _ => {}
        }
    }
    if let Some(m) = &r.mode {
        if !matches!(m.as_str(), "create" | "update" | "delete" | "profile") {
            return Err(ApiError::invalid_at(
                format!("mode '{m}' is not one of create, update, delete, profile"),
                "Parameters.parameter.where(name='mode')",
            ));
        }
    }
    Ok(r)
}

/// Every problem of `body` as a resource of type `ty` (instance id `id` for update).
fn check(
    state: &State,
    ctx: &RequestContext,
    ty: &str,
    id: Option<&str>,
    req: &Request,
) -> ApiResult<Vec<Issue>> {
    let mode = req
        .mode
        .as_deref()
        .unwrap_or(if id.is_some() { "update" } else { "create" });
    if mode == "delete" {
        // Would a delete of this instance be refused because current resources refer to it?
        let Some(id) = id else {
            return Err(ApiError::bad_request(
                "mode 'delete' needs an instance: POST /fhir/{type}/{id}/$validate",
            ));
        };
        let mut conn = state.store.conn()?;
        return Ok(
            match crate::service::operations::validate_delete(&mut conn, ctx, ty, id)? {
                Some(msg) => vec![Issue::error(IssueType::Conflict, msg)],
                None => Vec::new(),
            },
        );
    }
    let Some(body) = req.resource.as_ref().filter(|v| !v.is_null()) else {
        return Err(ApiError::invalid_at(
            "no resource to validate: send a resource, or Parameters with a 'resource' parameter",
            "Parameters.parameter.where(name='resource')",
        ));
    };
    if !body.is_object() {
        return Err(ApiError::structure(
            "the resource to validate must be a JSON object",
        ));
    }
    let mut issues = Vec::new();
    if let Err(e) = resource::check_resource_type(body, Some(ty))
        .and_then(|_| resource::body_id(body).map(|_| ()))
    {
        return Ok(e.outcome().issues);
    }
    if mode == "update" {
        if let (Some(id), Some(bid)) = (id, body["id"].as_str()) {
            if id != bid {
                issues.push(
                    Issue::error(
                        IssueType::Invalid,
                        format!("resource id '{bid}' does not match the id '{id}' in the URL"),
                    )
                    .at("id"),
                );
            }
        }
    }
    let policy = ctx.policy.clone();
    let mut report = validate::validate(body);
    report
        .issues
        .extend(profiles::check(body, &policy.enforce_profiles));
    if let Some(url) = &req.profile {
        match profiles::by_url(url) {
            Some(p) if p.ty == ty => {
                let claimed = body["meta"]["profile"].as_array().is_some_and(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .any(|x| profiles::by_url(x).is_some_and(|q| q.url == p.url))
                });
                if !claimed && !policy.enforce_profiles.iter().any(|t| t == ty) {
                    report.issues.extend(profiles::check_profile(body, p));
                }
            }
            Some(p) => issues.push(
                Issue::error(
                    IssueType::Invalid,
                    format!("profile {} constrains {}, not {ty}", p.url, p.ty),
                )
                .at("Parameters.parameter.where(name='profile')"),
            ),
            None if url.starts_with("http://hl7.org/fhir/StructureDefinition/") => {}
            None => issues.push(Issue::warning(
                IssueType::NotSupported,
                format!("profile {url} is not known to this server; validated against the base definition only"),
            )),
        }
    }
    issues.extend(report.issues);
    if mode != "profile" && policy.referential_integrity && !report.references.is_empty() {
        let own = (ty.to_string(), id.map(String::from));
        let refs = report.references;
        let mut conn = state.store.conn()?;
        let mut u = crate::service::write::UnitOfWork::new(&mut conn, ctx);
        if let Err(ApiError::Unprocessable(more)) =
            u.check_references((&own.0, own.1.as_deref()), &refs)
        {
            issues.extend(more);
        }
    }
    Ok(issues)
}

async fn run(
    req: HttpRequest,
    state: State,
    ty: String,
    id: Option<String>,
    body: Value,
) -> ApiResult<HttpResponse> {
    state.resource_type(&ty)?;
    let mut request = parse_request(body)?;
    if request.mode.is_none() {
        // Operation parameters of simple types may also travel in the URL.
        request.mode = super::negotiate::query_param(&req, "mode");
        if let Some(m) = &request.mode {
            if !matches!(m.as_str(), "create" | "update" | "delete" | "profile") {
                return Err(ApiError::invalid_at(
                    format!("mode '{m}' is not one of create, update, delete, profile"),
                    "mode",
                ));
            }
        }
    }
    let ctx = super::auth::ctx(&req)?;
    let st = state.clone();
    let issues = blocking(move || check(&st, &ctx, &ty, id.as_deref(), &request)).await?;
    Ok(fhir_json(
        &req,
        StatusCode::OK,
        &OperationOutcome { issues }.to_json(),
    ))
}

/// POST /fhir/{type}/$validate
pub async fn type_level(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    run(req, state, path.into_inner(), None, body.0).await
}

/// POST /fhir/{type}/{id}/$validate
pub async fn instance_level(
    req: HttpRequest,
    state: State,
    path: web::Path<(String, String)>,
    body: FhirBody,
) -> ApiResult<HttpResponse> {
    let (ty, id) = path.into_inner();
    resource::check_id(&id)?;
    run(req, state, ty, Some(id), body.0).await
}
