//! Assessments: the ICM Questionnaires (PHQ-9, AHC social needs, functional status, intake,
//! patient experience),
//! checking a QuestionnaireResponse against its Questionnaire, and scoring a response into
//! results ready to become Observations. Pure functions over JSON.
//!
//! Two extensions of ours appear on the Questionnaires in fhir-profiles/icm/:
//! - [`POSITIVE_ANSWER`] on an answerOption (valueBoolean true): choosing that answer makes the
//!   enclosing social-need domain positive (the AHC tool's "underlined" answers).
//! - [`POSITIVE_THRESHOLD`] on a domain group (valueDecimal): the domain is also positive when
//!   the ordinalValues of its answers add up to at least this (AHC interpersonal safety: more
//!   than 10, so 11).
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::str_at;
use crate::fhir::datetime::parse_lower_bound;
use crate::fhir::outcome::{Issue, IssueType};

pub const LOINC: &str = "http://loinc.org";
/// The score of an answer (R4 core extension), on the answerOption's valueCoding.
pub const ORDINAL_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/ordinalValue";
/// On an answerOption, valueBoolean true: the answer is positive for its social-need domain.
pub const POSITIVE_ANSWER: &str = "http://icm-fhir.org/fhir/StructureDefinition/positive-answer";
/// On a domain group, valueDecimal: the domain is positive when its ordinals sum to this or more.
pub const POSITIVE_THRESHOLD: &str =
    "http://icm-fhir.org/fhir/StructureDefinition/positive-threshold";
/// Our social-need domains (housing, food, transportation, utilities, safety, positive-domains).
pub const SOCIAL_NEED: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-social-need";
/// The patient-experience survey's codes (fhir-profiles/icm/CodeSystem-icm-experience.json).
pub const EXPERIENCE: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-experience";
/// The survey (Questionnaire.code) and the total score derived from a completed response.
pub const SATISFACTION: &str = "satisfaction";
pub const SATISFACTION_TOTAL: &str = "satisfaction-total";
/// The five statements of the survey, in order.
const SATISFACTION_ITEMS: [&str; 5] = ["listened", "reachable", "explained", "involved", "helped"];

const QUESTIONNAIRE_BASE: &str = "http://icm-fhir.org/fhir/Questionnaire/";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const PHQ9_PANEL: &str = "44249-1";
const PHQ9_TOTAL: &str = "44261-6";
const PHQ9_TOTAL_DISPLAY: &str =
    "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]";
/// The nine PHQ-9 items in order; the last one (44260-8) is the suicide-risk item.
const PHQ9_ITEMS: [&str; 9] = [
    "44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3",
    "44260-8",
];
/// enableWhen chains longer than this are taken as a cycle (and the item as enabled).
const MAX_DEPTH: usize = 16;

static QUESTIONNAIRES: [(&str, &str); 5] = [
    (
        "icm-phq9",
        include_str!("../../fhir-profiles/icm/Questionnaire-icm-phq9.json"),
    ),
    (
        "icm-social-needs",
        include_str!("../../fhir-profiles/icm/Questionnaire-icm-social-needs.json"),
    ),
    (
        "icm-functional-status",
        include_str!("../../fhir-profiles/icm/Questionnaire-icm-functional-status.json"),
    ),
    (
        "icm-intake",
        include_str!("../../fhir-profiles/icm/Questionnaire-icm-intake.json"),
    ),
    (
        "icm-satisfaction",
        include_str!("../../fhir-profiles/icm/Questionnaire-icm-satisfaction.json"),
    ),
];

/// The shipped Questionnaires: (id, JSON text).
pub fn questionnaires() -> &'static [(&'static str, &'static str)] {
    &QUESTIONNAIRES
}

/// The shipped Questionnaires, parsed once.
fn parsed() -> &'static [Value] {
    static P: OnceLock<Vec<Value>> = OnceLock::new();
    P.get_or_init(|| {
        QUESTIONNAIRES
            .iter()
            .map(|(id, text)| {
                serde_json::from_str(text).unwrap_or_else(|e| panic!("Questionnaire {id}: {e}"))
            })
            .collect()
    })
}

/// A shipped Questionnaire by canonical URL (`url` or `url|version`) or `Questionnaire/<id>`.
pub fn by_canonical(url: &str) -> Option<&'static Value> {
    let (url, version) = match url.split_once('|') {
        Some((u, v)) => (u, Some(v)),
        None => (url, None),
    };
    let id = url
        .strip_prefix(QUESTIONNAIRE_BASE)
        .or_else(|| url.strip_prefix("Questionnaire/"))?;
    parsed().iter().find(|q| {
        str_at(q, "id") == Some(id) && version.is_none_or(|v| str_at(q, "version") == Some(v))
    })
}

// ---- small JSON helpers

/// The array `key` of `v` (empty when absent).
fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An item's linkId ("" when missing).
fn link_id(v: &Value) -> &str {
    str_at(v, "linkId").unwrap_or_default()
}

/// The `prefix[x]` element of `v` (`valueCoding`, `answerBoolean`): its type name and value.
fn choice<'a>(v: &'a Value, prefix: &str) -> Option<(&'a str, &'a Value)> {
    v.as_object()?.iter().find_map(|(k, x)| {
        k.strip_prefix(prefix)
            .filter(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|t| (t, x))
    })
}

/// The value of the extension `url` on `v`.
fn extension<'a>(v: &'a Value, url: &str) -> Option<&'a Value> {
    list(v, "extension")
        .iter()
        .find(|e| str_at(e, "url") == Some(url))
        .and_then(|e| choice(e, "value"))
        .map(|(_, x)| x)
}

/// Whether an item (or Questionnaire) carries the code system|code in `code`.
fn has_code(v: &Value, system: &str, code: &str) -> bool {
    list(v, "code")
        .iter()
        .any(|c| str_at(c, "system") == Some(system) && str_at(c, "code") == Some(code))
}

/// Every item nested in `items`, depth first, groups included.
fn descendants(items: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for it in items {
        out.push(it);
        out.extend(descendants(list(it, "item")));
    }
    out
}

// ---- what a response says, and which items are enabled

/// The Questionnaire's items and the response's answers, both by linkId.
struct Ctx<'a> {
    /// Each item definition with its parent's linkId.
    defs: HashMap<&'a str, (&'a Value, Option<&'a str>)>,
    /// Each answer value given, as (type name, value), wherever it sits in the response.
    given: HashMap<&'a str, Vec<(&'a str, &'a Value)>>,
}

impl<'a> Ctx<'a> {
    /// Index the Questionnaire's items and the response's answers.
    fn new(q: &'a Value, qr: &'a Value) -> Self {
        let mut c = Ctx {
            defs: HashMap::new(),
            given: HashMap::new(),
        };
        c.index_defs(list(q, "item"), None);
        c.index_given(list(qr, "item"));
        c
    }

    /// Record item definitions with their parent.
    fn index_defs(&mut self, items: &'a [Value], parent: Option<&'a str>) {
        for it in items {
            self.defs.insert(link_id(it), (it, parent));
            self.index_defs(list(it, "item"), Some(link_id(it)));
        }
    }

    /// Record answer values, following group children and answer-nested items.
    fn index_given(&mut self, items: &'a [Value]) {
        for it in items {
            for a in list(it, "answer") {
                if let Some(v) = choice(a, "value") {
                    self.given.entry(link_id(it)).or_default().push(v);
                }
                self.index_given(list(a, "item"));
            }
            self.index_given(list(it, "item"));
        }
    }

    /// Answers given to `id` (empty when none).
    fn answers(&self, id: &str) -> &[(&'a str, &'a Value)] {
        self.given.get(id).map_or(&[], Vec::as_slice)
    }

    /// Whether item `id` is enabled: its ancestors are, and its enableWhen holds.
    fn enabled(&self, id: &str) -> bool {
        self.enabled_at(id, 0)
    }

    /// `enabled`, with the depth of the enableWhen chain followed so far.
    fn enabled_at(&self, id: &str, depth: usize) -> bool {
        let Some(&(def, parent)) = self.defs.get(id) else {
            return true;
        };
        if depth > MAX_DEPTH {
            return true;
        }
        if parent.is_some_and(|p| !self.enabled_at(p, depth + 1)) {
            return false;
        }
        let conditions = list(def, "enableWhen");
        let check = |c: &Value| self.condition(c, depth + 1);
        match str_at(def, "enableBehavior") {
            _ if conditions.is_empty() => true,
            Some("any") => conditions.iter().any(check),
            _ => conditions.iter().all(check),
        }
    }

    /// One enableWhen condition; a disabled question counts as unanswered, and with several
    /// answers the condition holds when one of them satisfies it.
    fn condition(&self, c: &Value, depth: usize) -> bool {
        let q = str_at(c, "question").unwrap_or_default();
        let given = if self.enabled_at(q, depth) {
            self.answers(q)
        } else {
            &[]
        };
        let Some((ty, expected)) = choice(c, "answer") else {
            return false;
        };
        match str_at(c, "operator").unwrap_or_default() {
            "exists" => expected.as_bool() == Some(!given.is_empty()),
            op => given
                .iter()
                .any(|&(t, v)| holds(op, compare(t, v, ty, expected))),
        }
    }
}

/// Whether two Codings match: same code, and same system unless `b` names none.
fn same_coding(a: &Value, b: &Value) -> bool {
    a.get("code") == b.get("code")
        && (b.get("system").is_none() || a.get("system") == b.get("system"))
}

/// How value `a` of type `ta` compares with `b` of type `tb` (None: not comparable). Dates
/// compare by the first instant they denote, so partial dates are only approximately ordered.
fn compare(ta: &str, a: &Value, tb: &str, b: &Value) -> Option<Ordering> {
    let number = |t: &str| matches!(t, "Decimal" | "Integer");
    let date = |t: &str| matches!(t, "Date" | "DateTime");
    match (ta, tb) {
        ("Coding", "Coding") => same_coding(a, b).then_some(Ordering::Equal),
        ("Boolean", "Boolean") => Some(a.as_bool()?.cmp(&b.as_bool()?)),
        (x, y) if number(x) && number(y) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (x, y) if date(x) && date(y) => {
            Some(parse_lower_bound(a.as_str()?)?.cmp(&parse_lower_bound(b.as_str()?)?))
        }
        ("String", "String") | ("Time", "Time") | ("Uri", "Uri") => {
            Some(a.as_str()?.cmp(b.as_str()?))
        }
        ("Quantity", "Quantity")
            if a.get("system") == b.get("system") && a.get("code") == b.get("code") =>
        {
            a.get("value")?
                .as_f64()?
                .partial_cmp(&b.get("value")?.as_f64()?)
        }
        ("Reference", "Reference") => {
            (a.get("reference") == b.get("reference")).then_some(Ordering::Equal)
        }
        _ => None,
    }
}

/// Whether an enableWhen operator holds for the comparison of an answer with its value.
fn holds(op: &str, ord: Option<Ordering>) -> bool {
    use Ordering::*;
    match op {
        "=" => ord == Some(Equal),
        "!=" => ord != Some(Equal),
        ">" => ord == Some(Greater),
        "<" => ord == Some(Less),
        ">=" => matches!(ord, Some(Greater | Equal)),
        "<=" => matches!(ord, Some(Less | Equal)),
        _ => false,
    }
}

/// The answerOption of `def` that an answer value (type name, value) selects.
fn option_for<'a>(def: &'a Value, ty: &str, value: &Value) -> Option<&'a Value> {
    list(def, "answerOption").iter().find(|o| {
        choice(o, "value").is_some_and(|(t, v)| compare(ty, value, t, v) == Some(Ordering::Equal))
    })
}

// ---- validation of a response

/// Every problem of a QuestionnaireResponse against its Questionnaire, each at its item.
pub fn validate_response(q: &Value, qr: &Value) -> Vec<Issue> {
    let ctx = Ctx::new(q, qr);
    let mut out = Vec::new();
    check_items(
        &ctx,
        list(q, "item"),
        list(qr, "item"),
        "QuestionnaireResponse",
        &mut out,
    );
    out
}

/// An error issue at `at`.
fn issue(code: IssueType, at: String, msg: String) -> Issue {
    Issue::error(code, msg).at(at)
}

/// Check the response items `given` (under `at`) against the definitions `defs` of that level.
fn check_items(ctx: &Ctx, defs: &[Value], given: &[Value], at: &str, out: &mut Vec<Issue>) {
    for (i, item) in given.iter().enumerate() {
        let path = format!("{at}.item[{i}]");
        match defs.iter().find(|d| link_id(d) == link_id(item)) {
            Some(def) => check_item(ctx, def, item, &path, out),
            None => out.push(misplaced(ctx, link_id(item), path)),
        }
    }
    for def in defs {
        let id = link_id(def);
        let found: Vec<usize> = (0..given.len())
            .filter(|&i| link_id(&given[i]) == id)
            .collect();
        if found.len() > 1 && def.get("repeats") != Some(&Value::Bool(true)) {
            out.push(issue(
                IssueType::Structure,
                format!("{at}.item[{}]", found[1]),
                format!(
                    "item '{id}' does not repeat but appears {} times",
                    found.len()
                ),
            ));
        }
        let required = def.get("required") == Some(&Value::Bool(true));
        if required && ctx.enabled(id) && !found.iter().any(|&i| answered(def, &given[i])) {
            let path = match found.first() {
                Some(i) => format!("{at}.item[{i}]"),
                None => format!("{at}.item.where(linkId='{id}')"),
            };
            out.push(issue(
                IssueType::Required,
                path,
                format!("required item '{id}' has no answer"),
            ));
        }
    }
}

/// The issue for a response item whose linkId is not defined at its place.
fn misplaced(ctx: &Ctx, id: &str, path: String) -> Issue {
    if ctx.defs.contains_key(id) {
        let msg = format!("item '{id}' is in the Questionnaire, but not at this place");
        issue(IssueType::Structure, path, msg)
    } else {
        let msg = format!("linkId '{id}' is not an item of the Questionnaire");
        issue(IssueType::Invalid, path, msg)
    }
}

/// Whether a response item carries content: answers with a value, or children for a group.
fn answered(def: &Value, item: &Value) -> bool {
    match str_at(def, "type") {
        Some("group") => !list(item, "item").is_empty(),
        Some("display") => true,
        _ => list(item, "answer")
            .iter()
            .any(|a| choice(a, "value").is_some()),
    }
}

/// Check one response item against its definition, then its children.
fn check_item(ctx: &Ctx, def: &Value, item: &Value, path: &str, out: &mut Vec<Issue>) {
    let id = link_id(def);
    let ty = str_at(def, "type").unwrap_or_default();
    let answers = list(item, "answer");
    let children = list(def, "item");
    if matches!(ty, "group" | "display") {
        if !answers.is_empty() {
            let msg = format!("item '{id}' is a {ty} item and cannot have answers");
            out.push(issue(IssueType::Structure, format!("{path}.answer"), msg));
        }
    } else {
        if !answers.is_empty() && !ctx.enabled(id) {
            let msg =
                format!("item '{id}' is disabled by its enableWhen conditions but is answered");
            out.push(issue(IssueType::BusinessRule, path.to_string(), msg));
        }
        if answers.len() > 1 && def.get("repeats") != Some(&Value::Bool(true)) {
            let msg = format!(
                "item '{id}' does not repeat but has {} answers",
                answers.len()
            );
            out.push(issue(
                IssueType::Structure,
                format!("{path}.answer[1]"),
                msg,
            ));
        }
        for (j, a) in answers.iter().enumerate() {
            let at = format!("{path}.answer[{j}]");
            check_answer(def, a, &at, out);
            if !children.is_empty() || !list(a, "item").is_empty() {
                check_items(ctx, children, list(a, "item"), &at, out);
            }
        }
    }
    if ty == "group" || !list(item, "item").is_empty() {
        check_items(ctx, children, list(item, "item"), path, out);
    }
}

/// The value[x] types an item of this definition accepts.
fn accepted_types(def: &Value) -> Vec<&str> {
    let options = || {
        let mut t: Vec<&str> = list(def, "answerOption")
            .iter()
            .filter_map(|o| choice(o, "value").map(|(t, _)| t))
            .collect();
        t.dedup();
        if t.is_empty() {
            t.push("Coding");
        }
        t
    };
    match str_at(def, "type").unwrap_or_default() {
        "boolean" => vec!["Boolean"],
        "decimal" => vec!["Decimal"],
        "integer" => vec!["Integer"],
        "date" => vec!["Date"],
        "dateTime" => vec!["DateTime"],
        "time" => vec!["Time"],
        "string" | "text" => vec!["String"],
        "url" => vec!["Uri"],
        "choice" => options(),
        "open-choice" => {
            let mut t = options();
            t.push("String");
            t
        }
        "attachment" => vec!["Attachment"],
        "reference" => vec!["Reference"],
        "quantity" => vec!["Quantity"],
        _ => Vec::new(),
    }
}

/// Check one answer: it has a value, of a type the item accepts, among its options for a choice.
fn check_answer(def: &Value, answer: &Value, at: &str, out: &mut Vec<Issue>) {
    let id = link_id(def);
    let Some((ty, value)) = choice(answer, "value") else {
        let msg = format!("an answer to item '{id}' has no value");
        out.push(issue(IssueType::Required, at.to_string(), msg));
        return;
    };
    let at = format!("{at}.value{ty}");
    let accepted = accepted_types(def);
    if !accepted.contains(&ty) {
        let want: Vec<String> = accepted.iter().map(|t| format!("value{t}")).collect();
        let msg = format!(
            "item '{id}' is of type {}: expected {}, found value{ty}",
            str_at(def, "type").unwrap_or("(none)"),
            want.join(" or ")
        );
        out.push(issue(IssueType::Value, at, msg));
        return;
    }
    let restricted = match str_at(def, "type") {
        Some("choice") => true,
        Some("open-choice") => ty != "String",
        _ => false,
    };
    if restricted && !list(def, "answerOption").is_empty() && option_for(def, ty, value).is_none() {
        let shown = match ty {
            "Coding" => format!(
                "{}|{}",
                str_at(value, "system").unwrap_or_default(),
                str_at(value, "code").unwrap_or_default()
            ),
            _ => value.to_string(),
        };
        let msg = format!("answer {shown} to item '{id}' is not one of its answerOptions");
        out.push(issue(IssueType::CodeInvalid, at, msg));
    }
}

// ---- scoring

/// A coded concept: system, code, display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub system: String,
    pub code: String,
    pub display: String,
}

impl Code {
    /// A Code from its three parts.
    pub fn new(system: &str, code: &str, display: &str) -> Self {
        Code {
            system: system.into(),
            code: code.into(),
            display: display.into(),
        }
    }

    /// A Code from a FHIR Coding.
    fn of(coding: &Value) -> Self {
        let s = |k| str_at(coding, k).unwrap_or_default();
        Code::new(s("system"), s("code"), s("display"))
    }

    /// The FHIR Coding.
    fn coding(&self) -> Value {
        json!({"system": self.system, "code": self.code, "display": self.display})
    }

    /// A CodeableConcept with this one coding.
    fn concept(&self) -> Value {
        json!({"coding": [self.coding()], "text": self.display})
    }
}

/// The value of a derived result.
#[derive(Debug, Clone, PartialEq)]
pub enum DerivedValue {
    Integer(i64),
    /// A score as a Quantity (UCUM `{score}`), so it is indexed (Observation `value-quantity`).
    Score(i64),
    Boolean(bool),
    Coding(Code),
}

/// How to read a result: a code when one exists, and the words shown to the care manager.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpretation {
    pub coding: Option<Code>,
    pub text: String,
}

/// One result derived from a response, ready to become an Observation.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedObservation {
    pub code: Code,
    pub value: DerivedValue,
    /// PHQ-9 severity band, or "positive" for a positive screen.
    pub interpretation: Option<Interpretation>,
    pub note: Option<String>,
    /// Needs same-day follow-up by a clinician (a positive PHQ-9 item 9).
    pub urgent: bool,
}

/// The PHQ-9 severity band of a total (0–27).
pub fn phq9_band(total: i64) -> &'static str {
    match total {
        ..=4 => "minimal",
        5..=9 => "mild",
        10..=14 => "moderate",
        15..=19 => "moderately severe",
        _ => "severe",
    }
}

/// The v3 "positive" interpretation, with the words to show.
fn positive(text: &str) -> Option<Interpretation> {
    Some(Interpretation {
        coding: Some(Code::new(INTERPRETATION, "POS", "Positive")),
        text: text.into(),
    })
}

/// The results a response yields: the PHQ-9 total and safety flag, the social-needs domains.
pub fn score(q: &Value, qr: &Value) -> Vec<DerivedObservation> {
    let ctx = Ctx::new(q, qr);
    let mut out = Vec::new();
    if has_code(q, LOINC, PHQ9_PANEL) {
        out.extend(phq9(&ctx));
    }
    let domains: Vec<&Value> = descendants(list(q, "item"))
        .into_iter()
        .filter(|g| {
            list(g, "code")
                .iter()
                .any(|c| str_at(c, "system") == Some(SOCIAL_NEED))
        })
        .collect();
    if !domains.is_empty() {
        out.extend(social_needs(&ctx, &domains));
    }
    if has_code(q, EXPERIENCE, SATISFACTION) {
        out.extend(satisfaction(&ctx));
    }
    out
}

/// The item definition carrying `code` of `system`, with the option chosen and its score.
fn scored_in<'a>(ctx: &Ctx<'a>, system: &str, code: &str) -> Option<(&'a Value, f64)> {
    let &(def, _) = ctx.defs.values().find(|(d, _)| has_code(d, system, code))?;
    let &(ty, value) = ctx.answers(link_id(def)).first()?;
    let option = option_for(def, ty, value)?;
    let ordinal = option
        .get("valueCoding")
        .and_then(|c| extension(c, ORDINAL_VALUE))
        .or_else(|| extension(option, ORDINAL_VALUE))?;
    Some((option, ordinal.as_f64()?))
}

/// The patient-experience total (5–25) once all five statements are scored.
fn satisfaction(ctx: &Ctx) -> Option<DerivedObservation> {
    let scores: Option<Vec<f64>> = SATISFACTION_ITEMS
        .iter()
        .map(|c| scored_in(ctx, EXPERIENCE, c).map(|(_, s)| s))
        .collect();
    let total = scores?.iter().sum::<f64>().round() as i64;
    Some(DerivedObservation {
        code: Code::new(
            EXPERIENCE,
            SATISFACTION_TOTAL,
            "ICM patient experience total score",
        ),
        value: DerivedValue::Score(total),
        interpretation: None,
        note: Some(format!("Patient experience total {total} of 25")),
        urgent: false,
    })
}

/// The item definition carrying LOINC `code`, with the option chosen and its score.
fn scored<'a>(ctx: &Ctx<'a>, code: &str) -> Option<(&'a Value, f64)> {
    scored_in(ctx, LOINC, code)
}

/// PHQ-9: the total with its band once all nine items are scored, and the item-9 safety flag.
fn phq9(ctx: &Ctx) -> Vec<DerivedObservation> {
    let scores: Vec<Option<(&Value, f64)>> = PHQ9_ITEMS.iter().map(|c| scored(ctx, c)).collect();
    let mut out = Vec::new();
    if scores.iter().all(Option::is_some) {
        let total = scores.iter().flatten().map(|(_, s)| s).sum::<f64>().round() as i64;
        let band = phq9_band(total);
        out.push(DerivedObservation {
            code: Code::new(LOINC, PHQ9_TOTAL, PHQ9_TOTAL_DISPLAY),
            value: DerivedValue::Integer(total),
            interpretation: Some(Interpretation {
                coding: None,
                text: band.into(),
            }),
            note: Some(format!("PHQ-9 total {total}: {band} depression severity")),
            urgent: false,
        });
    }
    if let Some(Some((option, s))) = scores.last() {
        if *s > 0.0 {
            out.push(suicide_risk(option));
        }
    }
    out
}

/// The positive suicide-risk screen: item 9 with the answer given.
fn suicide_risk(option: &Value) -> DerivedObservation {
    let answer = Code::of(option.get("valueCoding").unwrap_or(&Value::Null));
    DerivedObservation {
        code: Code::new(
            LOINC,
            PHQ9_ITEMS[8],
            "Thoughts that you would be better off dead, or of hurting yourself in some way",
        ),
        value: DerivedValue::Coding(answer),
        interpretation: positive("positive suicide-risk screen"),
        note: Some(
            "PHQ-9 item 9 answered above 0: positive suicide-risk screen, same-day follow-up by a clinician"
                .into(),
        ),
        urgent: true,
    }
}

/// Social needs: how many domains are positive, then one result per positive domain.
fn social_needs(ctx: &Ctx, domains: &[&Value]) -> Vec<DerivedObservation> {
    let positive_domains: Vec<Code> = domains
        .iter()
        .filter(|g| domain_positive(ctx, g))
        .filter_map(|g| {
            list(g, "code")
                .iter()
                .find(|c| str_at(c, "system") == Some(SOCIAL_NEED))
        })
        .map(Code::of)
        .collect();
    let count = DerivedObservation {
        code: Code::new(
            SOCIAL_NEED,
            "positive-domains",
            "Number of positive social-need domains",
        ),
        value: DerivedValue::Integer(positive_domains.len() as i64),
        interpretation: None,
        note: None,
        urgent: false,
    };
    let each = positive_domains.into_iter().map(|code| DerivedObservation {
        note: Some(format!("Positive social-needs screen: {}", code.display)),
        code,
        value: DerivedValue::Boolean(true),
        interpretation: positive("positive screen"),
        urgent: false,
    });
    std::iter::once(count).chain(each).collect()
}

/// Whether a domain group is positive: a positive answer chosen, or its ordinals reach the threshold.
fn domain_positive(ctx: &Ctx, group: &Value) -> bool {
    let chosen: Vec<(&Value, &Value)> = descendants(list(group, "item"))
        .into_iter()
        .flat_map(|def| {
            ctx.answers(link_id(def))
                .iter()
                .filter_map(move |&(t, v)| option_for(def, t, v).map(|o| (def, o)))
        })
        .collect();
    let flagged = chosen
        .iter()
        .any(|(_, o)| extension(o, POSITIVE_ANSWER) == Some(&Value::Bool(true)));
    let sum: f64 = chosen
        .iter()
        .filter_map(|(_, o)| {
            o.get("valueCoding")
                .and_then(|c| extension(c, ORDINAL_VALUE))
        })
        .filter_map(Value::as_f64)
        .sum();
    let threshold = extension(group, POSITIVE_THRESHOLD).and_then(Value::as_f64);
    flagged || threshold.is_some_and(|t| sum >= t)
}

/// An R4 Observation (final, category survey) for one result derived from the response `qr`.
pub fn derived_observation(qr: &Value, qr_ref: &str, d: &DerivedObservation, now: &str) -> Value {
    let mut o = Map::new();
    o.insert("resourceType".into(), json!("Observation"));
    o.insert("status".into(), json!("final"));
    o.insert(
        "category".into(),
        json!([{"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]}]),
    );
    o.insert("code".into(), d.code.concept());
    for k in ["subject", "encounter"] {
        if let Some(v) = qr.get(k) {
            o.insert(k.into(), v.clone());
        }
    }
    let when = str_at(qr, "authored").unwrap_or(now);
    o.insert("effectiveDateTime".into(), json!(when));
    o.insert("derivedFrom".into(), json!([{ "reference": qr_ref }]));
    let (key, value) = match &d.value {
        DerivedValue::Integer(n) => ("valueInteger", json!(n)),
        DerivedValue::Score(n) => (
            "valueQuantity",
            json!({"value": n, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}),
        ),
        DerivedValue::Boolean(b) => ("valueBoolean", json!(b)),
        DerivedValue::Coding(c) => ("valueCodeableConcept", c.concept()),
    };
    o.insert(key.into(), value);
    if let Some(i) = &d.interpretation {
        let mut cc = Map::new();
        if let Some(c) = &i.coding {
            cc.insert("coding".into(), json!([c.coding()]));
        }
        cc.insert("text".into(), json!(i.text));
        o.insert("interpretation".into(), json!([cc]));
    }
    if let Some(n) = &d.note {
        o.insert("note".into(), json!([{ "text": n }]));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests;
