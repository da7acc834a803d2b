//! OperationOutcome: issues with severity, code (FHIR issue-type value set), diagnostics, expression.
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// Codes of http://hl7.org/fhir/ValueSet/issue-type used by this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Forbidden,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    BusinessRule,
    Conflict,
    Transient,
    NoStore,
    Exception,
    Informational,
    TooCostly,
    Timeout,
}

impl IssueType {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueType::Invalid => "invalid",
            IssueType::Structure => "structure",
            IssueType::Required => "required",
            IssueType::Value => "value",
            IssueType::Invariant => "invariant",
            IssueType::Security => "security",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
            IssueType::Processing => "processing",
            IssueType::NotSupported => "not-supported",
            IssueType::Duplicate => "duplicate",
            IssueType::MultipleMatches => "multiple-matches",
            IssueType::NotFound => "not-found",
            IssueType::Deleted => "deleted",
            IssueType::TooLong => "too-long",
            IssueType::CodeInvalid => "code-invalid",
            IssueType::BusinessRule => "business-rule",
            IssueType::Conflict => "conflict",
            IssueType::Transient => "transient",
            IssueType::NoStore => "no-store",
            IssueType::Exception => "exception",
            IssueType::Informational => "informational",
            IssueType::TooCostly => "too-costly",
            IssueType::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueType,
    pub diagnostics: String,
    pub expression: Vec<String>,
}

impl Issue {
    pub fn new(severity: Severity, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity,
            code,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, diagnostics)
    }
    pub fn fatal(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, diagnostics)
    }
    pub fn warning(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, diagnostics)
    }
    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self::new(Severity::Information, IssueType::Informational, diagnostics)
    }
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("severity".into(), json!(self.severity.as_str()));
        m.insert("code".into(), json!(self.code.as_str()));
        m.insert("diagnostics".into(), json!(self.diagnostics));
        if !self.expression.is_empty() {
            m.insert("expression".into(), json!(self.expression));
        }
        Value::Object(m)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct OperationOutcome {
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    pub fn single(issue: Issue) -> Self {
        OperationOutcome {
            issues: vec![issue],
        }
    }

    pub fn to_json(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![Issue::information("All OK").to_json()]
        } else {
            self.issues.iter().map(Issue::to_json).collect()
        };
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }

    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }
}
