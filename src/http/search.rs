//! search-type: GET /fhir/{type}?… and POST /fhir/{type}/_search (form body) → searchset Bundle.
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::negotiate::{check_content_type, prefer_value, read_body};
use super::response::{base_url, fhir_json};
use super::{blocking, State};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::bundle;
use crate::fhir::outcome::{Issue, IssueType, OperationOutcome};
use crate::fhir::registry::Registry;
use crate::fhir::search::{SearchQuery, Summary, Total};
use crate::store::search::{count, search, Found};

const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

fn pairs(s: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The link for a page: the applied parameters, `_count`, and the page token.
fn link(base: &str, q: &SearchQuery, count: i64, page: Option<&str>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q.applied {
        if k != "_count" {
            ser.append_pair(k, v);
        }
    }
    ser.append_pair("_count", &count.to_string());
    if let Some(p) = page {
        ser.append_pair("_page", p);
    }
    format!("{base}/{}?{}", q.ty, ser.finish())
}

fn mark_subsetted(o: &mut Map<String, Value>) {
    let meta = o
        .entry("meta")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|m| {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(a) = tags.as_array_mut() {
                a.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
            }
        });
    let _ = meta;
}

/// Apply `_summary` / `_elements` to a resource.
pub fn subset(v: Value, summary: Option<Summary>, elements: Option<&[String]>) -> Value {
    let Value::Object(mut o) = v else { return v };
    let ty = o
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let info = Registry::get().type_info(&ty);
    let always = ["resourceType", "id", "meta"];
    let keep: Option<Vec<String>> = match (summary, elements) {
        (Some(Summary::True), _) => info.map(|i| i.summary.clone()),
        (Some(Summary::Text), _) => info.map(|i| {
            let mut k = i.mandatory.clone();
            k.push("text".into());
            k
        }),
        (Some(Summary::Data), _) => {
            o.remove("text");
            mark_subsetted(&mut o);
            return Value::Object(o);
        }
        (_, Some(list)) => {
            let mut k: Vec<String> = list.to_vec();
            if let Some(i) = info {
                k.extend(i.mandatory.iter().cloned());
            }
            Some(k)
        }
        _ => None,
    };
    let Some(keep) = keep else {
        return Value::Object(o);
    };
    o.retain(|k, _| always.contains(&k.as_str()) || keep.iter().any(|x| x == k));
    mark_subsetted(&mut o);
    Value::Object(o)
}

fn entry(base: &str, f: Found, mode: &str, q: &SearchQuery) -> Value {
    let full_url = format!("{base}/{}/{}", f.res_type, f.res_id);
    let resource = serde_json::from_str::<Value>(&f.content).unwrap_or(Value::Null);
    let resource = if q.summary.is_some() || q.elements.is_some() {
        subset(resource, q.summary, q.elements.as_deref())
    } else {
        resource
    };
    json!({"fullUrl": full_url, "resource": resource, "search": {"mode": mode}})
}

async fn run(
    req: HttpRequest,
    state: State,
    ty: String,
    params: Vec<(String, String)>,
) -> ApiResult<HttpResponse> {
    state.resource_type(&ty)?;
    let base = base_url(&req, &state);
    let mut q = SearchQuery::from_pairs(&ty, &params);
    q.set_base(&base);
    // The security layer's patient boundary (never taken from the client).
    q.compartment = super::auth::access(&req)
        .search_compartment(&ty)
        .map(|p| p.iter().cloned().collect());
    let strict = prefer_value(&req, "handling").is_some_and(|v| v.eq_ignore_ascii_case("strict"));
    if strict && !q.issues.is_empty() {
        return Err(ApiError::BadRequest {
            code: IssueType::Invalid,
            msg: format!("search parameters not accepted: {}", q.issues.join("; ")),
            expression: None,
        });
    }
    let count_limit = q
        .count
        .unwrap_or(state.config.default_count)
        .min(state.config.max_count)
        .max(0);
    let st = state.clone();
    let q2 = q.clone();
    let page = blocking(move || {
        let mut conn = st.store.conn()?;
        let only_count = q2.summary == Some(Summary::Count);
        let mut page = if only_count {
            Default::default()
        } else {
            search(&mut conn, &q2, count_limit)?
        };
        let total = match q2.total {
            _ if only_count => Some(count(&mut conn, &q2)?),
            Some(Total::Accurate) | Some(Total::Estimate) => Some(count(&mut conn, &q2)?),
            Some(Total::None) => None,
            // Free when everything fits on the first page.
            None if q2.page.is_none() && page.next.is_none() => Some(page.matches.len() as i64),
            None => None,
        };
        page.total = total;
        Ok(page)
    })
    .await?;
    let mut links = vec![("self", link(&base, &q, count_limit, q.page.as_deref()))];
    if let Some(n) = &page.next {
        links.push(("next", link(&base, &q, count_limit, Some(n))));
    }
    if let Some(p) = &page.previous {
        links.push(("previous", link(&base, &q, count_limit, Some(p))));
    }
    let mut entries: Vec<Value> = Vec::new();
    for f in page.matches {
        entries.push(entry(&base, f, "match", &q));
    }
    for f in page.included {
        entries.push(entry(&base, f, "include", &q));
    }
    if !q.issues.is_empty() {
        let oo = OperationOutcome {
            issues: q
                .issues
                .iter()
                .map(|m| Issue::warning(IssueType::NotSupported, format!("ignored: {m}")))
                .collect(),
        };
        entries.push(json!({"resource": oo.to_json(), "search": {"mode": "outcome"}}));
    }
    let b = bundle(
        "searchset",
        page.total.map(|t| t.max(0) as u64),
        &links,
        entries,
    );
    Ok(fhir_json(&req, StatusCode::OK, &b))
}

/// GET /fhir/{type}?…
pub async fn search_get(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let params = pairs(req.query_string());
    run(req, state, path.into_inner(), params).await
}

/// POST /fhir/{type}/_search with an application/x-www-form-urlencoded body (URL parameters
/// are added to the body's).
pub async fn search_post(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    check_content_type(&req, &["application/x-www-form-urlencoded"])?;
    let mut pl: Payload = payload.into_inner();
    let body = read_body(&req, &mut pl, state.config.max_body).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the form body is not UTF-8"))?;
    let mut params = pairs(req.query_string());
    params.extend(pairs(text));
    run(req, state, path.into_inner(), params).await
}

/// `rest.resource.searchParam` of the CapabilityStatement: every parameter the search code
/// accepts for a type, from the same registry.
pub fn capability_search_params(ty: &str) -> Vec<Value> {
    crate::fhir::search::SearchParams::get()
        .for_type(ty)
        .map(|m| {
            m.values()
                .filter(|d| d.supported())
                .map(|d| json!({"name": d.code, "definition": d.url, "type": d.ptype.as_str()}))
                .collect()
        })
        .unwrap_or_default()
}
