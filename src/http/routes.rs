//! The whole route table on one screen, plus the interaction lists the CapabilityStatement reports.
use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::{ready, Either, LocalBoxFuture};
use futures_util::FutureExt;

use super::{
    auth, bundle, capabilities, console, export, health, history, interactions, metrics, negotiate,
    operations, patch, search, terminology, validate, websocket, State,
};
use crate::error::ApiError;

/// Type-level and instance-level interactions served for every supported type.
pub const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "patch",
    "search-type",
];

/// Interactions on AuditEvent: the audit trail is written by the server and never changed
/// (store::audit), so only the read side is served.
pub const AUDIT_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "history-instance",
    "history-type",
    "search-type",
];

/// The interactions served for a type.
pub fn type_interactions(ty: &str) -> &'static [&'static str] {
    if crate::fhir::registry::Registry::get().storage(ty)
        == crate::fhir::registry::Storage::AuditLog
    {
        AUDIT_INTERACTIONS
    } else {
        TYPE_INTERACTIONS
    }
}

/// Operations served for every supported type (name, canonical OperationDefinition).
pub const TYPE_OPERATIONS: &[(&str, &str)] = &[(
    "validate",
    "http://hl7.org/fhir/OperationDefinition/Resource-validate",
)];

/// The terminology operations: (type, operation, OperationDefinition).
pub const TERMINOLOGY_OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "CodeSystem",
        "lookup",
        "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
    ),
    (
        "CodeSystem",
        "subsumes",
        "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes",
    ),
    (
        "ValueSet",
        "expand",
        "http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
    ),
    (
        "ValueSet",
        "validate-code",
        "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code",
    ),
];

/// System-level interactions.
pub const SYSTEM_INTERACTIONS: &[&str] = &["history-system", "transaction", "batch"];

/// An extended operation ($name) as documented in the OpenAPI document and CapabilityStatement.
pub struct OperationDoc {
    pub id: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: &'static [(&'static str, &'static str)],
    pub body: bool,
    pub returns: &'static str,
}

/// Every extended operation the routes below serve.
pub const OPERATIONS: &[OperationDoc] = &[
    OperationDoc {
        id: "patient-enroll",
        method: "post",
        path: "/fhir/Patient/{id}/$enroll",
        tag: "Patient",
        summary: "Enroll a patient in an ICM program, in one transaction: an EpisodeOfCare (active, type = program, referralRequest, careManager, team), a CareTeam with the care manager as care coordinator, a draft CarePlan linked to both, one intake-assessment Task per shipped Questionnaire (due in ICM_INTAKE_DAYS days); the referral ServiceRequest is marked completed. 409 when the patient already has a current episode of the program",
        query: &[],
        body: true,
        returns: "Parameters in: referral (valueReference ServiceRequest, or resource), careManager (valueReference Practitioner|PractitionerRole; default the calling Practitioner), program (valueCode of http://icm-fhir.org/fhir/CodeSystem/icm-program; default chronic-disease). Out: transaction-response Bundle with each created or changed resource, its status and Location",
    },
    OperationDoc {
        id: "enroll",
        method: "post",
        path: "/fhir/$enroll",
        tag: "Patient",
        summary: "Intake: create a new patient (Parameters 'patient', a Patient resource) with its referral and enroll it, in one transaction, the caller becoming care coordinator unless careManager names someone else. A patient matched by identifier is enrolled only when the caller may already see it (otherwise 403)",
        query: &[],
        body: true,
        returns: "transaction-response Bundle with the Patient and everything Patient/{id}/$enroll creates",
    },
    OperationDoc {
        id: "icm-metrics",
        method: "get",
        path: "/fhir/$icm-metrics",
        tag: "Measure",
        summary: "The program's outcome measures as R4 MeasureReports (one per measure, type summary; with subject, type individual): 30-day readmissions, ED visits per 1,000 enrolled patient-months, HbA1c and blood-pressure control, follow-up within 2 business days of discharge, Tasks on time, days from referral to enrollment, caseload size per care manager, contact of high-risk patients, patient experience, and a cost proxy. Counts only what the caller may see. Each measure is a Measure resource at /fhir/Measure/{id} (README: Outcome measures)",
        query: &[
            ("period-start", "first day of the measurement period (a FHIR date, any precision; required)"),
            ("period-end", "last day of the measurement period (a FHIR date, any precision: 2025 ends on 2025-12-31; required)"),
            ("care-manager", "only enrollments (EpisodeOfCare.careManager) of this Practitioner/id or PractitionerRole/id"),
            ("organization", "only enrollments managed by this Organization/id (EpisodeOfCare.managingOrganization)"),
            ("subject", "Patient/id: individual reports for this patient"),
            ("compare", "pre-post: the utilisation and clinical measures for the patients first enrolled in the period, in the 12 months before enrollment and after"),
            ("measure", "comma-separated Measure ids or canonical URLs (default: all)"),
        ],
        body: false,
        returns: "collection Bundle of MeasureReports (status complete; group.population initial-population, denominator, denominator-exclusion, numerator with their counts; group.measureScore). With compare=pre-post, two reports per measure carrying the extension http://icm-fhir.org/fhir/StructureDefinition/measure-window (valueCode pre | post)",
    },
    OperationDoc {
        id: "subscription-ws",
        method: "get",
        path: "/fhir/$subscription-ws",
        tag: "Subscription",
        summary: "The R4 Subscription websocket (upgrade with a bearer token): send `bind <Subscription id>` (an active websocket Subscription the token may read), receive `bound <id>`, then `ping <id>` for every notification of it, including those waiting when it binds; WebSocket ping frames every 30 s as heartbeat (README: Subscriptions)",
        query: &[],
        body: false,
        returns: "101 Switching Protocols; text frames bound <id>, ping <id>, error <message>",
    },
    OperationDoc {
        id: "patient-stratify",
        method: "post",
        path: "/fhir/Patient/{id}/$stratify",
        tag: "Patient",
        summary: "Risk stratification now: the LACE index (length of stay, acuity, Charlson comorbidity, ED visits) and the program score (chronic conditions, ED visits and admissions in 12 months, HbA1c and blood pressure out of target, PHQ-9 band, positive social-needs domains, age) with configurable weights; stored as a RiskAssessment (qualitativeRisk high | moderate | low, the score, the contribution of each input, basis = every contributing resource) superseding the previous one. Also run after enrollment, a discharge, a Condition write and a scored assessment",
        query: &[],
        body: false,
        returns: "the new RiskAssessment",
    },
    OperationDoc {
        id: "patient-disenroll",
        method: "post",
        path: "/fhir/Patient/{id}/$disenroll",
        tag: "Patient",
        summary: "End a patient's enrollment: the current EpisodeOfCare (of 'program', or every program) becomes finished (cancelled when not yet active) with the reason recorded, its CarePlans completed (goals-met) or revoked — their open Tasks are cancelled — and its CareTeams inactive",
        query: &[],
        body: true,
        returns: "Parameters in: reason (valueCode: goals-met | moved | declined | deceased | transferred), program (valueCode, optional). Out: transaction-response Bundle of the changed resources",
    },
    OperationDoc {
        id: "patient-everything",
        method: "get",
        path: "/fhir/Patient/{id}/$everything",
        tag: "Patient",
        summary: "Patient/$everything: the Patient, its compartment and the Practitioners, PractitionerRoles and Organizations they reference (Patient first, then by type and id)",
        query: &[
            ("start", "care dates from this date (any precision: 2024, 2024-03, 2024-03-05, a dateTime): a compartment resource whose care date (README: the date parameter chosen per type, e.g. Observation date, Condition onset-date else recorded-date, Task authored-on) ends before it is left out; resources without a care date are kept"),
            ("end", "care dates up to the end of this date (any precision)"),
            ("_since", "only resources last updated at or after this instant"),
            ("_type", "comma-separated resource types to include (repeatable)"),
            ("_count", "page size (0: the total only)"),
            ("_page", "page token from a next/previous link"),
        ],
        body: false,
        returns: "searchset Bundle with total and self/next/previous links",
    },
    OperationDoc {
        id: "practitioner-worklist",
        method: "get",
        path: "/fhir/Practitioner/{id}/$worklist",
        tag: "Practitioner",
        summary: "Care-manager worklist: open Tasks the practitioner owns or that are owned by active CareTeams they coordinate; overdue first, then priority stat > asap > urgent > routine, then due date (Task.restriction.period.end)",
        query: &[
            ("status", "comma-separated Task statuses (default: every open status)"),
            ("due-before", "only Tasks due before this date"),
            ("_count", "most entries returned"),
        ],
        body: false,
        returns: "searchset Bundle of Tasks; entry.search.extension marks overdue entries (http://icm-fhir.org/StructureDefinition/task-overdue, valueBoolean true), community referrals the practitioner sent that were rejected or have had no answer for ICM_REFERRAL_RESPONSE_DAYS days (http://icm-fhir.org/StructureDefinition/referral-attention, valueCode rejected | no-response; listed even when not owned by the practitioner) and patients in hospital now (http://icm-fhir.org/StructureDefinition/patient-admitted, valueReference the Encounter)",
    },
    OperationDoc {
        id: "practitioner-caseload",
        method: "get",
        path: "/fhir/Practitioner/{id}/$caseload",
        tag: "Practitioner",
        summary: "Caseload: patients (CareTeam.subject) of the practitioner's active CareTeams with active CarePlans, open and overdue Task counts and the date of the last completed Task",
        query: &[],
        body: false,
        returns: "Parameters, high risk first (then moderate, low, not stratified): one 'patient' parameter per patient with parts patient (Reference), careTeam (Reference, 0..*), activeCarePlan (Reference, 0..*), openTasks (integer), overdueTasks (integer), lastCompletedTask (dateTime, 0..1), riskTier (code, 0..1) and riskAssessment (Reference, 0..1) of the current RiskAssessment, currentAdmission (Reference to an inpatient or emergency Encounter in progress, 0..1)",
    },
    OperationDoc {
        id: "export",
        method: "get",
        path: "/fhir/$export",
        tag: "Bulk Data",
        summary: "Bulk Data export of everything the caller may see (FHIR Bulk Data Access IG v2, asynchronous: requires Prefer: respond-async; needs system/ or user/ scopes). 202 Accepted with Content-Location: the status URL (README: Bulk export)",
        query: &[
            ("_outputFormat", "application/fhir+ndjson (default), application/ndjson or ndjson"),
            ("_since", "only resources last updated at or after this FHIR instant"),
            ("_type", "comma-separated resource types to export (repeatable; default: every type the caller may read)"),
            ("_typeFilter", "ResourceType?search-parameters: export only the resources of that type matching the search (repeatable; several for one type are ORed); result parameters are refused"),
        ],
        body: false,
        returns: "202 Accepted, Content-Location: {base}/$export-status/{job}; 400 OperationOutcome for a missing Prefer: respond-async or a bad parameter",
    },
    OperationDoc {
        id: "patient-export",
        method: "get",
        path: "/fhir/Patient/$export",
        tag: "Bulk Data",
        summary: "Bulk Data export of the Patient compartments the caller may see (every patient for a system token, its own for a patient token), asynchronous (Prefer: respond-async)",
        query: &[
            ("_outputFormat", "application/fhir+ndjson (default), application/ndjson or ndjson"),
            ("_since", "only resources last updated at or after this FHIR instant"),
            ("_type", "comma-separated resource types to export (repeatable; default: every type the caller may read in the Patient compartment)"),
            ("_typeFilter", "ResourceType?search-parameters: export only the resources of that type matching the search (repeatable; several for one type are ORed); result parameters are refused"),
        ],
        body: false,
        returns: "202 Accepted, Content-Location: the status URL",
    },
    OperationDoc {
        id: "group-export",
        method: "get",
        path: "/fhir/Group/{id}/$export",
        tag: "Bulk Data",
        summary: "Bulk Data export of the Patient compartments of a Group's current members (e.g. a program cohort, Group/icm-cohort-{program}), within what the caller may see, asynchronous (Prefer: respond-async)",
        query: &[
            ("_outputFormat", "application/fhir+ndjson (default), application/ndjson or ndjson"),
            ("_since", "only resources last updated at or after this FHIR instant"),
            ("_type", "comma-separated resource types to export (repeatable; default: every type the caller may read in the Patient compartment)"),
            ("_typeFilter", "ResourceType?search-parameters: export only the resources of that type matching the search (repeatable; several for one type are ORed); result parameters are refused"),
        ],
        body: false,
        returns: "202 Accepted, Content-Location: the status URL",
    },
    OperationDoc {
        id: "export-status",
        method: "get",
        path: "/fhir/$export-status/{job}",
        tag: "Bulk Data",
        summary: "Status of an export job (only for the caller who started it): 202 with X-Progress and Retry-After while running; 200 with the manifest when complete; 500 OperationOutcome when it failed; 404 for an unknown or cancelled job",
        query: &[],
        body: false,
        returns: "application/json manifest: transactionTime, request, requiresAccessToken, output [{type, url, count}], error [{type: OperationOutcome, url, count}]",
    },
    OperationDoc {
        id: "export-cancel",
        method: "delete",
        path: "/fhir/$export-status/{job}",
        tag: "Bulk Data",
        summary: "Cancel an export job (or delete a finished one) and remove its files",
        query: &[],
        body: false,
        returns: "202 Accepted with an informational OperationOutcome; the status URL answers 404 afterwards",
    },
    OperationDoc {
        id: "export-file",
        method: "get",
        path: "/fhir/$export-file/{job}/{name}",
        tag: "Bulk Data",
        summary: "One NDJSON file of a completed export (application/fhir+ndjson), for the caller who started it (same token subject and client)",
        query: &[],
        body: false,
        returns: "application/fhir+ndjson: one resource per line",
    },
    OperationDoc {
        id: "codesystem-lookup",
        method: "get",
        path: "/fhir/CodeSystem/$lookup",
        tag: "CodeSystem",
        summary: "CodeSystem/$lookup: name, display, parent and child properties of a code in a code system the server holds (the FHIR R4 required value sets' systems, the program's CodeSystems) or of a stored CodeSystem (instance level)",
        query: &[("system", "code system URL (type level)"), ("code", "the code"), ("version", "ignored: one version of each system is held")],
        body: false,
        returns: "Parameters with name, display (the code itself where the definition gives no display) and property (parent, child); 404 when the system or code is not held",
    },
    OperationDoc {
        id: "codesystem-lookup-post",
        method: "post",
        path: "/fhir/CodeSystem/$lookup",
        tag: "CodeSystem",
        summary: "CodeSystem/$lookup: name, display, parent and child properties of a code in a code system the server holds (the FHIR R4 required value sets' systems, the program's CodeSystems) or of a stored CodeSystem (instance level) (arguments in a Parameters body)",
        query: &[],
        body: true,
        returns: "Parameters with name, display (the code itself where the definition gives no display) and property (parent, child); 404 when the system or code is not held",
    },
    OperationDoc {
        id: "codesystem-lookup-instance",
        method: "get",
        path: "/fhir/CodeSystem/{id}/$lookup",
        tag: "CodeSystem",
        summary: "CodeSystem/$lookup: name, display, parent and child properties of a code in a code system the server holds (the FHIR R4 required value sets' systems, the program's CodeSystems) or of a stored CodeSystem (instance level)",
        query: &[("code", "the code")],
        body: false,
        returns: "Parameters with name, display (the code itself where the definition gives no display) and property (parent, child); 404 when the system or code is not held",
    },
    OperationDoc {
        id: "codesystem-subsumes",
        method: "get",
        path: "/fhir/CodeSystem/$subsumes",
        tag: "CodeSystem",
        summary: "CodeSystem/$subsumes: how codeA relates to codeB in a held code system's hierarchy",
        query: &[("system", "code system URL (type level)"), ("codeA", "first code"), ("codeB", "second code")],
        body: false,
        returns: "Parameters with outcome (equivalent | subsumes | subsumed-by | not-subsumed); 400 when a code is not in the system",
    },
    OperationDoc {
        id: "codesystem-subsumes-post",
        method: "post",
        path: "/fhir/CodeSystem/$subsumes",
        tag: "CodeSystem",
        summary: "CodeSystem/$subsumes: how codeA relates to codeB in a held code system's hierarchy (arguments in a Parameters body)",
        query: &[],
        body: true,
        returns: "Parameters with outcome (equivalent | subsumes | subsumed-by | not-subsumed); 400 when a code is not in the system",
    },
    OperationDoc {
        id: "codesystem-subsumes-instance",
        method: "get",
        path: "/fhir/CodeSystem/{id}/$subsumes",
        tag: "CodeSystem",
        summary: "CodeSystem/$subsumes: how codeA relates to codeB in a held code system's hierarchy",
        query: &[("codeA", "first code"), ("codeB", "second code")],
        body: false,
        returns: "Parameters with outcome (equivalent | subsumes | subsumed-by | not-subsumed); 400 when a code is not in the system",
    },
    OperationDoc {
        id: "valueset-expand",
        method: "get",
        path: "/fhir/ValueSet/$expand",
        tag: "ValueSet",
        summary: "ValueSet/$expand: the codes of a held value set (url), of a stored ValueSet (instance level) or of a ValueSet sent in a POST (valueSet parameter; compose with concepts, whole held systems, is-a/descendent-of filters, other held value sets, excludes)",
        query: &[("url", "value set URL (type level)"), ("filter", "case-insensitive text matched against code and display"), ("offset", "codes to skip (paging)"), ("count", "most codes returned (at most 10000)")],
        body: false,
        returns: "ValueSet with expansion (identifier, timestamp, total, offset, parameter, contains); 404 when the value set is not held",
    },
    OperationDoc {
        id: "valueset-expand-post",
        method: "post",
        path: "/fhir/ValueSet/$expand",
        tag: "ValueSet",
        summary: "ValueSet/$expand: the codes of a held value set (url), of a stored ValueSet (instance level) or of a ValueSet sent in a POST (valueSet parameter; compose with concepts, whole held systems, is-a/descendent-of filters, other held value sets, excludes) (arguments in a Parameters body)",
        query: &[],
        body: true,
        returns: "ValueSet with expansion (identifier, timestamp, total, offset, parameter, contains); 404 when the value set is not held",
    },
    OperationDoc {
        id: "valueset-expand-instance",
        method: "get",
        path: "/fhir/ValueSet/{id}/$expand",
        tag: "ValueSet",
        summary: "ValueSet/$expand: the codes of a held value set (url), of a stored ValueSet (instance level) or of a ValueSet sent in a POST (valueSet parameter; compose with concepts, whole held systems, is-a/descendent-of filters, other held value sets, excludes)",
        query: &[("filter", "case-insensitive text matched against code and display"), ("offset", "codes to skip (paging)"), ("count", "most codes returned (at most 10000)")],
        body: false,
        returns: "ValueSet with expansion (identifier, timestamp, total, offset, parameter, contains); 404 when the value set is not held",
    },
    OperationDoc {
        id: "valueset-validate-code",
        method: "get",
        path: "/fhir/ValueSet/$validate-code",
        tag: "ValueSet",
        summary: "ValueSet/$validate-code: whether a code (system, code, display), a Coding or a CodeableConcept is in a held or stored value set",
        query: &[("url", "value set URL (type level)"), ("system", "code system of the code"), ("code", "the code"), ("display", "display to check")],
        body: false,
        returns: "Parameters with result (boolean), message when false, display when known",
    },
    OperationDoc {
        id: "valueset-validate-code-post",
        method: "post",
        path: "/fhir/ValueSet/$validate-code",
        tag: "ValueSet",
        summary: "ValueSet/$validate-code: whether a code (system, code, display), a Coding or a CodeableConcept is in a held or stored value set (arguments in a Parameters body)",
        query: &[],
        body: true,
        returns: "Parameters with result (boolean), message when false, display when known",
    },
    OperationDoc {
        id: "valueset-validate-code-instance",
        method: "get",
        path: "/fhir/ValueSet/{id}/$validate-code",
        tag: "ValueSet",
        summary: "ValueSet/$validate-code: whether a code (system, code, display), a Coding or a CodeableConcept is in a held or stored value set",
        query: &[("code", "the code"), ("display", "display to check")],
        body: false,
        returns: "Parameters with result (boolean), message when false, display when known",
    },
];

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::from_error(ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.path()
    )))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::from_error(ApiError::NotFound(format!(
        "no FHIR endpoint at {}",
        req.path()
    )))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/openapi.json", web::get().to(openapi_json))
        // Before the Swagger UI's catch-all /docs/{file}.
        .route("/docs/openapi.json", web::get().to(openapi_docs_json))
        .service(
            utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}").config(
                utoipa_swagger_ui::Config::new(["/docs/openapi.json"]).try_it_out_enabled(true),
            ),
        )
        .route("/docs", web::get().to(docs_redirect))
        .route("/console", web::get().to(console::redirect))
        .route("/console/{file:.*}", web::get().to(console::asset))
        .service(resource("/auth/dev/practitioners").get(console::dev_practitioners))
        .service(resource("/auth/dev/token").post(console::dev_token))
        .service(
            web::scope("/fhir")
                .wrap_fn(fhir_guard)
                .wrap(auth::SecurityLayer)
                .service(resource("").post(bundle::transaction_or_batch))
                .service(resource("/").post(bundle::transaction_or_batch))
                .service(resource("/metadata").get(capabilities::metadata))
                .service(
                    resource("/.well-known/smart-configuration")
                        .get(auth::smart::smart_configuration),
                )
                .service(resource("/Patient/{id}/$everything").get(operations::everything))
                .service(resource("/Patient/{id}/$enroll").post(operations::enroll))
                .service(resource("/Patient/{id}/$disenroll").post(operations::disenroll))
                .service(resource("/Patient/{id}/$stratify").post(operations::stratify))
                .service(resource("/$enroll").post(operations::intake))
                .service(resource("/$icm-metrics").get(operations::icm_metrics))
                .service(resource("/$subscription-ws").get(websocket::subscription_ws))
                .service(resource("/Practitioner/{id}/$worklist").get(operations::worklist))
                .service(resource("/Practitioner/{id}/$caseload").get(operations::caseload))
                .service(resource("/$export").get(export::system))
                .service(resource("/Patient/$export").get(export::patient))
                .service(resource("/Group/{id}/$export").get(export::group))
                .service(
                    resource("/$export-status/{job}")
                        .get(export::status)
                        .delete(export::cancel),
                )
                .service(resource("/$export-file/{job}/{name}").get(export::file))
                .service(
                    resource("/{type:CodeSystem|ValueSet}/${op:lookup|subsumes|expand|validate-code}")
                        .get(terminology::type_get)
                        .post(terminology::type_post),
                )
                .service(
                    resource("/{type:CodeSystem|ValueSet}/{id}/${op:lookup|subsumes|expand|validate-code}")
                        .get(terminology::instance_get)
                        .post(terminology::instance_post),
                )
                .service(resource("/_history").get(history::system))
                .service(resource("/{type}/_history").get(history::type_level))
                .service(resource("/{type}/$validate").post(validate::type_level))
                .service(resource("/{type}/{id}/$validate").post(validate::instance_level))
                .service(resource("/{type}/{id}/_history/{vid}").get(interactions::vread))
                .service(resource("/{type}/{id}/_history").get(history::instance))
                .service(resource("/{type}/_search").post(search::search_post))
                .service(
                    resource("/{type}/{id}")
                        .get(interactions::read)
                        .put(interactions::update)
                        .patch(patch::patch)
                        .delete(interactions::delete),
                )
                .service(
                    resource("/{type}")
                        .get(search::search_get)
                        .post(interactions::create)
                        .put(bundle::conditional_update)
                        .patch(patch::conditional_patch)
                        .delete(bundle::conditional_delete),
                )
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found));
}

/// GET /openapi.json (built once per process).
async fn openapi_json() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text =
        DOC.get_or_init(|| super::openapi::committed_text(crate::fhir::registry::Registry::get()));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(text.as_str())
}

/// GET /docs/openapi.json: the same paths with shallow schemas, for the Swagger UI (built once).
async fn openapi_docs_json() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text =
        DOC.get_or_init(|| super::openapi::docs_text(crate::fhir::registry::Registry::get()));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(text.as_str())
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", "/docs/"))
        .finish()
}

/// A resource path whose unmatched methods answer 405 with an OperationOutcome.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Checks that apply to every /fhir request before it reaches a handler:
/// the database is migrated (503 otherwise) and the client accepts JSON (406 otherwise).
fn fhir_guard<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: 'static,
{
    let check = || -> Result<(), ApiError> {
        negotiate::check_acceptable(req.request())?;
        if let Some(state) = req.app_data::<State>() {
            if !state.is_ready() {
                return Err(ApiError::Unavailable(
                    "the server is starting and the database is not ready yet".into(),
                ));
            }
        }
        Ok(())
    };
    match check() {
        Ok(()) => Either::Left(
            srv.call(req)
                .map(|r| r.map(ServiceResponse::map_into_left_body)),
        ),
        Err(e) => {
            let resp = HttpResponse::from_error(e).map_into_right_body();
            Either::Right(ready(Ok(req.into_response(resp))))
        }
    }
    .boxed_local()
}
