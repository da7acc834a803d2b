//! The one error type: every failure maps to an HTTP status and an OperationOutcome.
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::fhir::outcome::{Issue, IssueType, OperationOutcome};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad parameter, id mismatch).
    #[error("{msg}")]
    BadRequest {
        code: IssueType,
        msg: String,
        expression: Option<String>,
    },
    /// 401: missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown type, id, version or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the method is not supported on this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406: no acceptable response format.
    #[error("{0}")]
    NotAcceptable(String),
    /// 409: conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 409 with code business-rule: a care-coordination rule refused the change.
    #[error("{0}")]
    BusinessRule(String),
    /// 409: another writer changed the same resource at the same moment (retried first).
    #[error("a concurrent change to the same resource won; retry the request")]
    ConcurrentWrite,
    /// 410: the resource was deleted.
    #[error("{0}")]
    Gone(String),
    /// 412: If-Match names a version that is not the current one.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: body larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: unsupported Content-Type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the resource breaks the rules; every problem listed.
    #[error("resource is invalid")]
    Unprocessable(Vec<Issue>),
    /// 408: the client did not send the whole request body in time (ICM_BODY_TIMEOUT).
    #[error("{0}")]
    RequestTimeout(String),
    /// 503: the database cannot be reached (carries Retry-After).
    #[error("{0}")]
    Unavailable(String),
    /// 507: the database has no room left for the write (a full disk; carries Retry-After).
    #[error("{0}")]
    InsufficientStorage(String),
    /// 500: a server fault. The detail goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: IssueType::Invalid,
            msg: msg.into(),
            expression: None,
        }
    }
    pub fn invalid_at(msg: impl Into<String>, expression: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: IssueType::Invalid,
            msg: msg.into(),
            expression: Some(expression.into()),
        }
    }
    pub fn structure(msg: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: IssueType::Structure,
            msg: msg.into(),
            expression: None,
        }
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError::Internal(detail.to_string())
    }

    /// The OperationOutcome this error is reported as.
    pub fn outcome(&self) -> OperationOutcome {
        let issue = |code: IssueType, msg: &str| Issue::error(code, msg);
        let issues = match self {
            ApiError::BadRequest {
                code,
                msg,
                expression,
            } => {
                let mut i = issue(*code, msg);
                if let Some(e) = expression {
                    i.expression = vec![e.clone()];
                }
                vec![i]
            }
            ApiError::Unauthorized(m) => vec![issue(IssueType::Login, m)],
            ApiError::Forbidden(m) => vec![issue(IssueType::Forbidden, m)],
            ApiError::NotFound(m) => vec![issue(IssueType::NotFound, m)],
            ApiError::MethodNotAllowed(m) => vec![issue(IssueType::NotSupported, m)],
            ApiError::NotAcceptable(m) => vec![issue(IssueType::NotSupported, m)],
            ApiError::Conflict(m) => vec![issue(IssueType::Conflict, m)],
            ApiError::BusinessRule(m) => vec![issue(IssueType::BusinessRule, m)],
            ApiError::ConcurrentWrite => vec![issue(IssueType::Conflict, &self.to_string())],
            ApiError::Gone(m) => vec![issue(IssueType::Deleted, m)],
            ApiError::PreconditionFailed(m) => vec![issue(IssueType::Conflict, m)],
            ApiError::PayloadTooLarge(m) => vec![issue(IssueType::TooLong, m)],
            ApiError::UnsupportedMediaType(m) => vec![issue(IssueType::NotSupported, m)],
            ApiError::Unprocessable(list) => list.clone(),
            ApiError::RequestTimeout(m) => vec![issue(IssueType::Timeout, m)],
            ApiError::Unavailable(m) => vec![issue(IssueType::Transient, m)],
            ApiError::InsufficientStorage(m) => vec![issue(IssueType::NoStore, m)],
            ApiError::Internal(_) => vec![Issue::fatal(
                IssueType::Exception,
                "internal server error; the server log has the details",
            )],
        };
        OperationOutcome { issues }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Conflict(_) | ApiError::BusinessRule(_) | ApiError::ConcurrentWrite => {
                StatusCode::CONFLICT
            }
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let mut b = HttpResponse::build(self.status_code());
        b.insert_header((header::CONTENT_TYPE, crate::fhir::FHIR_JSON));
        match self {
            ApiError::Unavailable(_) | ApiError::InsufficientStorage(_) => {
                b.insert_header((header::RETRY_AFTER, "5"));
            }
            ApiError::Unauthorized(_) => {
                b.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"icm-fhir\""));
            }
            _ => {}
        }
        b.body(self.outcome().to_json_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
