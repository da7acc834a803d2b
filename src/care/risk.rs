//! Explainable risk stratification, pure functions over JSON: the inputs a patient's FHIR
//! resources give, the Charlson comorbidity index and the LACE index, the configurable program
//! score with its tier and per-factor contributions, and the RiskAssessment that records them.
//!
//! Data: `fhir-profiles/icm/risk-config.json` (weights, thresholds, tiers, contact frequencies;
//! see [`load_config`]) and `fhir-profiles/icm/charlson-codes.json` (our Condition code list for
//! the Charlson and chronic-condition groups), both embedded at build time.
use std::collections::BTreeSet;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Months, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::str_at;
use crate::fhir::datetime::parse_lower_bound;

/// LOINC, the system of every Observation code read here except the social-needs count.
const LOINC: &str = "http://loinc.org";
/// Hemoglobin A1c/Hemoglobin.total in Blood (%).
const HBA1C: &str = "4548-4";
/// Systolic blood pressure (a component of the 85354-9 panel, or an Observation of its own).
const SYSTOLIC: &str = "8480-6";
/// Diastolic blood pressure (a component of the 85354-9 panel, or an Observation of its own).
const DIASTOLIC: &str = "8462-4";
/// PHQ-9 total score.
const PHQ9_TOTAL: &str = "44261-6";
/// Our code system for social-needs screening results.
pub const SOCIAL_NEED_SYSTEM: &str = super::assessment::SOCIAL_NEED;
/// Observation code (in [`SOCIAL_NEED_SYSTEM`]) whose valueInteger counts the positive domains.
pub const SOCIAL_NEED_COUNT: &str = "positive-domains";
/// Encounter.class system (v3 ActCode).
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// Condition code systems read as ICD-10 (prefix and range entries of charlson-codes.json).
const ICD10_SYSTEMS: [&str; 2] = [
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
];
/// SNOMED CT (exact codes of charlson-codes.json).
const SNOMED: &str = "http://snomed.info/sct";
/// RiskAssessment.prediction.qualitativeRisk system.
const RISK_PROBABILITY: &str = "http://terminology.hl7.org/CodeSystem/risk-probability";

/// RiskAssessment.method system (fhir-profiles/icm/CodeSystem-icm-risk-method.json).
pub const METHOD_SYSTEM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-risk-method";
/// RiskAssessment.method code of the program score.
pub const METHOD_CODE: &str = "icm-program-score";
/// Extension on RiskAssessment.prediction: the program score (valueDecimal).
pub const RISK_SCORE_URL: &str = "http://icm-fhir.org/fhir/StructureDefinition/risk-score";
/// Extension on RiskAssessment.prediction: the LACE total (valueInteger), when an index stay exists.
pub const LACE_SCORE_URL: &str = "http://icm-fhir.org/fhir/StructureDefinition/lace-score";
/// Extension on RiskAssessment.prediction, one per contribution, with sub-extensions `factor`
/// (valueCode), `points` (valueDecimal), `detail` (valueString) and `basis` (valueReference,
/// repeating).
pub const CONTRIBUTION_URL: &str = "http://icm-fhir.org/fhir/StructureDefinition/risk-contribution";

/// One day in microseconds.
const DAY: i64 = 86_400_000_000;

// ---------------------------------------------------------------------------------------------
// Code list (charlson-codes.json)

/// A group of Condition codes: a Charlson comorbidity (with its weight) or a chronic condition.
#[derive(Debug, Deserialize)]
struct CodeGroup {
    group: String,
    display: String,
    #[serde(default)]
    weight: u32,
    icd10: Vec<String>,
    snomed: Vec<String>,
}

/// The parsed charlson-codes.json.
#[derive(Debug, Deserialize)]
struct CodeList {
    charlson: Vec<CodeGroup>,
    charlson_hierarchy: Vec<[String; 2]>,
    chronic: Vec<CodeGroup>,
}

/// Our code list, parsed once.
fn code_list() -> &'static CodeList {
    static L: OnceLock<CodeList> = OnceLock::new();
    L.get_or_init(|| {
        serde_json::from_str(include_str!("../../fhir-profiles/icm/charlson-codes.json"))
            .expect("embedded charlson-codes.json")
    })
}

/// Whether an ICD-10 code falls under an entry: a prefix (`I25.2`) or a range of three-character
/// categories (`I60-I69`, letter and two digits only); dots and case are ignored.
fn icd10_matches(entry: &str, code: &str) -> bool {
    let code: String = code
        .chars()
        .filter(|c| *c != '.')
        .collect::<String>()
        .to_ascii_uppercase();
    match entry.split_once('-') {
        Some((lo, hi)) => code.get(..3).is_some_and(|cat| {
            cat.bytes().skip(1).all(|b| b.is_ascii_digit()) && (lo..=hi).contains(&cat)
        }),
        None => code.starts_with(&entry.replace('.', "")),
    }
}

impl CodeGroup {
    /// Whether a coding (system, code) belongs to this group.
    fn matches(&self, system: &str, code: &str) -> bool {
        if ICD10_SYSTEMS.contains(&system) {
            self.icd10.iter().any(|e| icd10_matches(e, code))
        } else if system == SNOMED {
            self.snomed.iter().any(|c| c == code)
        } else {
            false
        }
    }
}

/// The Condition codings of a chronic-condition group of charlson-codes.json (`diabetes`,
/// `hypertension`, …) as (system, code, prefix) patterns for an index look-up: SNOMED CT codes
/// exactly; ICD-10 entries as code prefixes, written with and without the dot after the
/// category, ranges (`E08-E14`) as one prefix per three-character category. Unlike
/// [`CodeGroup::matches`] the look-up compares codes as written (case-sensitive).
pub fn chronic_code_patterns(group: &str) -> Vec<(&'static str, String, bool)> {
    let Some(g) = code_list().chronic.iter().find(|g| g.group == group) else {
        return vec![];
    };
    let mut prefixes: Vec<String> = Vec::new();
    for e in &g.icd10 {
        match e.split_once('-') {
            Some((lo, hi)) => {
                let letter = &lo[..1];
                let (a, b): (u32, u32) =
                    (lo[1..].parse().unwrap_or(1), hi[1..].parse().unwrap_or(0));
                prefixes.extend((a..=b).map(|n| format!("{letter}{n:02}")));
            }
            None => {
                prefixes.push(e.clone());
                let bare = e.replace('.', "");
                if bare != *e {
                    prefixes.push(bare);
                } else if e.len() > 3 {
                    prefixes.push(format!("{}.{}", &e[..3], &e[3..]));
                }
            }
        }
    }
    let mut out: Vec<(&'static str, String, bool)> = Vec::new();
    for sys in ICD10_SYSTEMS {
        out.extend(prefixes.iter().map(|p| (sys, p.clone(), true)));
    }
    out.extend(g.snomed.iter().map(|c| (SNOMED, c.clone(), false)));
    out
}

// ---------------------------------------------------------------------------------------------
// Configuration (risk-config.json)

/// Points for a count or value: the band with the highest `from` not above it applies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub from: f64,
    pub points: f64,
}

/// Points per chronic-condition group found, capped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChronicRule {
    pub groups: Vec<String>,
    pub points_each: f64,
    pub max: f64,
}

/// Points when the latest HbA1c is at or above the threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hba1cRule {
    pub uncontrolled_from: f64,
    pub points: f64,
}

/// Points when the latest systolic or diastolic pressure is at or above its threshold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpRule {
    pub systolic_from: f64,
    pub diastolic_from: f64,
    pub points: f64,
}

/// Points per PHQ-9 severity band (minimal and mild score nothing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phq9Rule {
    pub moderate: f64,
    #[serde(rename = "moderately-severe")]
    pub moderately_severe: f64,
    pub severe: f64,
}

/// Points per positive social-need domain, capped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocialRule {
    pub points_each: f64,
    pub max: f64,
}

/// Points when the LACE total of the index stay is at or above `high_from`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaceRule {
    pub high_from: u32,
    pub points: f64,
}

/// Lowest score of the high and moderate tiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiers {
    pub high: f64,
    pub moderate: f64,
}

/// Care-manager contact frequency per tier, as ISO 8601 durations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frequencies {
    pub high: String,
    pub moderate: String,
    pub low: String,
}

/// The program score's weights, thresholds, tier cut-offs and contact frequencies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    pub version: String,
    pub chronic_conditions: ChronicRule,
    pub admissions_12m: Vec<Band>,
    pub ed_visits_12m: Vec<Band>,
    pub hba1c: Hba1cRule,
    pub bp: BpRule,
    pub phq9: Phq9Rule,
    pub social_needs: SocialRule,
    pub age: Vec<Band>,
    pub lace: LaceRule,
    pub tiers: Tiers,
    pub contact_frequency: Frequencies,
}

/// The program configuration, `fhir-profiles/icm/risk-config.json` embedded and parsed once.
///
/// Keys (unknown keys are rejected; all points are decimals and add up to the score):
/// - `version`: the configuration's version, for the RiskAssessment method text.
/// - `chronic_conditions`: `groups` (ids of charlson-codes.json `chronic` groups that count),
///   `points_each` (per group present), `max` (cap on their sum).
/// - `admissions_12m`: bands `[{from, points}]` over the inpatient admissions starting in the
///   last 12 months; the band with the highest `from` not above the count applies.
/// - `ed_visits_12m`: bands over the emergency department visits starting in the last 12 months.
/// - `hba1c`: `points` when the latest HbA1c (%) is at or above `uncontrolled_from` (control is
///   below 8.0 %).
/// - `bp`: `points` when the latest systolic is at or above `systolic_from` or the latest
///   diastolic at or above `diastolic_from` (control is below 140/90 mm[Hg]).
/// - `phq9`: points per severity band of the latest PHQ-9 total: `moderate` (10–14),
///   `moderately-severe` (15–19), `severe` (20–27).
/// - `social_needs`: `points_each` per positive domain of the latest screening, capped at `max`.
/// - `age`: bands over the age in whole years.
/// - `lace`: `points` when the LACE total of the index stay is at or above `high_from`.
/// - `tiers`: score at or above `high` is high, at or above `moderate` is moderate, else low.
/// - `contact_frequency`: `high`, `moderate`, `low` — ISO 8601 durations between care-manager
///   contacts (`P7D`, `P1M`).
pub fn load_config() -> &'static RiskConfig {
    static C: OnceLock<RiskConfig> = OnceLock::new();
    C.get_or_init(|| {
        serde_json::from_str(include_str!("../../fhir-profiles/icm/risk-config.json"))
            .expect("embedded risk-config.json")
    })
}

/// The configured contact frequency (ISO 8601 duration) of a tier.
pub fn contact_frequency(tier: Tier) -> &'static str {
    let f = &load_config().contact_frequency;
    match tier {
        Tier::High => &f.high,
        Tier::Moderate => &f.moderate,
        Tier::Low => &f.low,
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// A value and the references (`Type/id`, sorted, distinct) of the resources it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence<T> {
    pub value: T,
    pub basis: Vec<String>,
}

impl<T> Evidence<T> {
    /// A value with its basis, sorted and deduplicated.
    pub fn new(value: T, basis: impl IntoIterator<Item = String>) -> Self {
        Evidence {
            value,
            basis: sorted(basis),
        }
    }
}

/// A Charlson or chronic-condition group found among the active Conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupHit {
    pub group: &'static str,
    pub display: &'static str,
    /// The Charlson weight (0 for chronic-condition groups).
    pub weight: u32,
    pub basis: Vec<String>,
}

/// The index stay for LACE: the most recent finished inpatient Encounter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stay {
    /// Midnights between admission and discharge dates.
    pub length_of_stay_days: i64,
    /// Why the admission counts as emergent (acute), if it does.
    pub emergent: Option<&'static str>,
    /// The stay, and the ED visit that made it emergent if that was the reason.
    pub basis: Vec<String>,
}

/// What the risk rules read about a patient, each with the resources it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inputs {
    pub age: Option<Evidence<u32>>,
    /// Charlson groups present, after the hierarchy (each group once).
    pub charlson: Vec<GroupHit>,
    /// Chronic-condition groups present (each group once).
    pub chronic: Vec<GroupHit>,
    pub admissions_12m: Evidence<u32>,
    pub ed_visits_12m: Evidence<u32>,
    /// ED visits in the 6 months before the index admission (before now when there is none),
    /// not counting the ED visit that led to the admission.
    pub ed_visits_6m: Evidence<u32>,
    pub index_stay: Option<Stay>,
    pub hba1c: Option<Evidence<f64>>,
    pub systolic: Option<Evidence<f64>>,
    pub diastolic: Option<Evidence<f64>>,
    pub phq9: Option<Evidence<u32>>,
    pub social_needs: Option<Evidence<u32>>,
}

/// Sorted, distinct references.
fn sorted(refs: impl IntoIterator<Item = String>) -> Vec<String> {
    refs.into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `Type/id` of a resource, the form RiskAssessment.basis takes (None without an id).
fn reference(r: &Value) -> Option<String> {
    Some(format!(
        "{}/{}",
        str_at(r, "resourceType")?,
        str_at(r, "id")?
    ))
}

/// The (system, code) pairs of a CodeableConcept (system "" when absent).
fn codings<'a>(cc: Option<&'a Value>) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    cc.and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| Some((str_at(c, "system").unwrap_or(""), str_at(c, "code")?)))
}

/// Whether a CodeableConcept carries system|code.
fn has_code(cc: Option<&Value>, system: &str, code: &str) -> bool {
    codings(cc).any(|(s, c)| s == system && c == code)
}

/// The instant `months` calendar months before `now`.
fn months_before(now: i64, months: u32) -> i64 {
    DateTime::from_timestamp_micros(now)
        .and_then(|d| d.checked_sub_months(Months::new(months)))
        .map_or(i64::MIN, |d| d.timestamp_micros())
}

/// Gather the risk inputs from a patient's resources at `now` (microseconds since the epoch).
///
/// - Conditions: clinicalStatus active, recurrence or relapse (or absent); verificationStatus
///   entered-in-error or refuted skipped. Codes map to groups through charlson-codes.json.
/// - Encounters: class (v3 ActCode, or no system) IMP/ACUTE/NONAC is inpatient, EMER is
///   emergency; status planned, cancelled and entered-in-error skipped; period.start required.
///   Counts use period.start within the last 12 calendar months.
/// - Index stay: the finished inpatient Encounter with period.end latest in the last 12 months.
///   It is emergent when Encounter.priority has code EM or UR, or hospitalization.admitSource
///   is `emd`, or an emergency Encounter started in the 24 hours up to its admission.
/// - Observations: status final, amended or corrected, timed by effectiveDateTime,
///   effectiveInstant, effectivePeriod.start or issued, not after `now`; the latest wins (ties by
///   reference). HbA1c 4548-4, PHQ-9 total 44261-6, social needs
///   [`SOCIAL_NEED_SYSTEM`]#[`SOCIAL_NEED_COUNT`]: valueQuantity.value or valueInteger.
///   Systolic 8480-6 and diastolic 8462-4: a component of any Observation (the 85354-9 panel)
///   or an Observation of that code; each side is the latest of its own.
/// - Age: whole years from Patient.birthDate (a partial date reads as its first day).
pub fn inputs(
    patient: &Value,
    conditions: &[Value],
    encounters: &[Value],
    observations: &[Value],
    now: i64,
) -> Inputs {
    let active: Vec<&Value> = conditions.iter().filter(|c| is_active(c)).collect();
    let list = code_list();
    let visits: Vec<Visit> = encounters.iter().filter_map(visit).collect();
    let year_ago = months_before(now, 12);
    let in_year = |t: i64| (year_ago..=now).contains(&t);
    let stay = index_stay(&visits, now);
    let ed_6m = match stay {
        Some(s) => {
            let from = months_before(s.start, 6);
            count(&visits, Class::Emergency, |t| {
                (from..s.start - DAY).contains(&t)
            })
        }
        None => {
            let from = months_before(now, 6);
            count(&visits, Class::Emergency, |t| (from..=now).contains(&t))
        }
    };
    let int = |e: Evidence<f64>| Evidence::new(e.value.max(0.0).round() as u32, e.basis);
    Inputs {
        age: age(patient, now),
        charlson: apply_hierarchy(groups(&active, &list.charlson), &list.charlson_hierarchy),
        chronic: groups(&active, &list.chronic),
        admissions_12m: count(&visits, Class::Inpatient, in_year),
        ed_visits_12m: count(&visits, Class::Emergency, in_year),
        ed_visits_6m: ed_6m,
        index_stay: stay.and_then(|s| describe_stay(s, &visits)),
        hba1c: latest(observations, now, |o| loinc_value(o, HBA1C)),
        systolic: latest(observations, now, |o| bp_value(o, SYSTOLIC)),
        diastolic: latest(observations, now, |o| bp_value(o, DIASTOLIC)),
        phq9: latest(observations, now, |o| loinc_value(o, PHQ9_TOTAL)).map(int),
        social_needs: latest(observations, now, |o| {
            has_code(o.get("code"), SOCIAL_NEED_SYSTEM, SOCIAL_NEED_COUNT)
                .then(|| number(o))
                .flatten()
        })
        .map(int),
    }
}

/// Whether a Condition counts: active, recurrence or relapse (or no clinicalStatus), and not
/// entered-in-error or refuted.
fn is_active(c: &Value) -> bool {
    let clinical: Vec<&str> = codings(c.get("clinicalStatus")).map(|(_, k)| k).collect();
    let active = clinical.is_empty()
        || clinical
            .iter()
            .any(|k| matches!(*k, "active" | "recurrence" | "relapse"));
    let void = codings(c.get("verificationStatus"))
        .any(|(_, k)| matches!(k, "entered-in-error" | "refuted"));
    active && !void
}

/// The groups of `list` some active Condition's code belongs to, each once, in list order.
fn groups(active: &[&Value], list: &'static [CodeGroup]) -> Vec<GroupHit> {
    list.iter()
        .filter_map(|g| {
            let hits: Vec<&&Value> = active
                .iter()
                .filter(|c| codings(c.get("code")).any(|(s, k)| g.matches(s, k)))
                .collect();
            (!hits.is_empty()).then(|| GroupHit {
                group: &g.group,
                display: &g.display,
                weight: g.weight,
                basis: sorted(hits.iter().filter_map(|c| reference(c))),
            })
        })
        .collect()
}

/// Drop the lower group of each (higher, lower) pair when the higher one is present.
fn apply_hierarchy(hits: Vec<GroupHit>, pairs: &[[String; 2]]) -> Vec<GroupHit> {
    let present = |g: &str| hits.iter().any(|h| h.group == g);
    let dropped: Vec<&str> = pairs
        .iter()
        .filter(|[hi, _]| present(hi))
        .map(|[_, lo]| lo.as_str())
        .collect();
    hits.iter()
        .filter(|h| !dropped.contains(&h.group))
        .cloned()
        .collect()
}

/// The Encounter classes the rules count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Inpatient,
    Emergency,
}

/// An inpatient or emergency Encounter, as the rules read it.
struct Visit<'a> {
    class: Class,
    start: i64,
    /// period.end, for a finished Encounter only.
    end: Option<i64>,
    resource: &'a Value,
}

/// Read an Encounter as a Visit (None when it is not an inpatient or emergency encounter that
/// took place).
fn visit(e: &Value) -> Option<Visit<'_>> {
    let status = str_at(e, "status");
    if matches!(
        status,
        Some("planned" | "cancelled" | "entered-in-error") | None
    ) {
        return None;
    }
    let class = e.get("class")?;
    if str_at(class, "system").is_some_and(|s| s != ACT_CODE) {
        return None;
    }
    let class = match str_at(class, "code")? {
        "IMP" | "ACUTE" | "NONAC" => Class::Inpatient,
        "EMER" => Class::Emergency,
        _ => return None,
    };
    let start = e
        .pointer("/period/start")
        .and_then(Value::as_str)
        .and_then(parse_lower_bound)?;
    let end = e
        .pointer("/period/end")
        .and_then(Value::as_str)
        .and_then(parse_lower_bound)
        .filter(|_| status == Some("finished"));
    Some(Visit {
        class,
        start,
        end,
        resource: e,
    })
}

/// Visits of `class` whose start satisfies `window`, with their references.
fn count(visits: &[Visit], class: Class, window: impl Fn(i64) -> bool) -> Evidence<u32> {
    let hits: Vec<&Visit> = visits
        .iter()
        .filter(|v| v.class == class && window(v.start))
        .collect();
    Evidence::new(
        hits.len() as u32,
        hits.iter().filter_map(|v| reference(v.resource)),
    )
}

/// The finished inpatient visit discharged latest within the last 12 months (ties by reference).
fn index_stay<'v, 'a>(visits: &'v [Visit<'a>], now: i64) -> Option<&'v Visit<'a>> {
    let from = months_before(now, 12);
    visits
        .iter()
        .filter(|v| v.class == Class::Inpatient)
        .filter(|v| v.end.is_some_and(|e| (from..=now).contains(&e)))
        .max_by_key(|v| (v.end, v.start, reference(v.resource)))
}

/// Length of stay, emergency and basis of the index stay.
fn describe_stay(stay: &Visit, visits: &[Visit]) -> Option<Stay> {
    let text = |p: &str| stay.resource.pointer(p).and_then(Value::as_str);
    let days = length_of_stay(text("/period/start")?, text("/period/end")?)?;
    let (why, extra) = emergent(stay, visits).unzip();
    let basis = reference(stay.resource)
        .into_iter()
        .chain(extra.into_iter().flatten());
    Some(Stay {
        length_of_stay_days: days,
        emergent: why,
        basis: sorted(basis),
    })
}

/// Midnights between the admission and discharge dates as written (the local dates of
/// period.start and period.end); 0 for a same-day stay.
fn length_of_stay(start: &str, end: &str) -> Option<i64> {
    let date = |s: &str| NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok();
    Some((date(end)? - date(start)?).num_days().max(0))
}

/// Why an inpatient stay counts as emergent, with the references that show it: priority EM or
/// UR, admitted from the emergency department (admitSource `emd`), or an emergency visit
/// started in the 24 hours up to the admission.
fn emergent(stay: &Visit, visits: &[Visit]) -> Option<(&'static str, Vec<String>)> {
    let e = stay.resource;
    if codings(e.get("priority")).any(|(_, c)| matches!(c, "EM" | "UR")) {
        return Some(("emergency or urgent priority", vec![]));
    }
    if codings(e.pointer("/hospitalization/admitSource")).any(|(_, c)| c == "emd") {
        return Some(("admitted from the emergency department", vec![]));
    }
    let leading: Vec<&Visit> = visits
        .iter()
        .filter(|v| v.class == Class::Emergency && leads_to(v, stay))
        .collect();
    (!leading.is_empty()).then(|| {
        let refs = leading.iter().filter_map(|v| reference(v.resource));
        (
            "emergency department visit before admission",
            refs.collect(),
        )
    })
}

/// Whether an emergency visit started in the 24 hours up to an admission.
fn leads_to(ed: &Visit, stay: &Visit) -> bool {
    (stay.start - DAY..=stay.start).contains(&ed.start)
}

/// When an Observation was made, if it is usable at `now` (final, amended or corrected; not in
/// the future).
fn observed_at(o: &Value, now: i64) -> Option<i64> {
    if !matches!(str_at(o, "status"), Some("final" | "amended" | "corrected")) {
        return None;
    }
    let t = [
        "/effectiveDateTime",
        "/effectiveInstant",
        "/effectivePeriod/start",
        "/issued",
    ]
    .iter()
    .find_map(|p| o.pointer(p).and_then(Value::as_str))
    .and_then(parse_lower_bound)?;
    (t <= now).then_some(t)
}

/// valueQuantity.value or valueInteger of an Observation or component.
fn number(v: &Value) -> Option<f64> {
    v.pointer("/valueQuantity/value")
        .or_else(|| v.get("valueInteger"))
        .and_then(Value::as_f64)
}

/// The value of an Observation coded LOINC `code`.
fn loinc_value(o: &Value, code: &str) -> Option<f64> {
    has_code(o.get("code"), LOINC, code)
        .then(|| number(o))
        .flatten()
}

/// A blood-pressure value: the component coded `code`, or the Observation itself.
fn bp_value(o: &Value, code: &str) -> Option<f64> {
    o.get("component")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| has_code(c.get("code"), LOINC, code)))
        .and_then(number)
        .or_else(|| loinc_value(o, code))
}

/// The latest usable Observation value `value_of` reads (ties by reference), with its reference.
fn latest(
    observations: &[Value],
    now: i64,
    value_of: impl Fn(&Value) -> Option<f64>,
) -> Option<Evidence<f64>> {
    observations
        .iter()
        .filter_map(|o| Some((observed_at(o, now)?, reference(o), value_of(o)?)))
        .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        .map(|(_, r, v)| Evidence::new(v, r))
}

/// Age in whole years at `now` from Patient.birthDate.
fn age(patient: &Value, now: i64) -> Option<Evidence<u32>> {
    let mut parts = str_at(patient, "birthDate")?.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(1);
    let day: u32 = parts
        .next()
        .and_then(|d| d.get(..2)?.parse().ok())
        .unwrap_or(1);
    let today = DateTime::from_timestamp_micros(now)?.date_naive();
    let before_birthday = (today.month(), today.day()) < (month, day);
    let years = today.year() - year - i32::from(before_birthday);
    Some(Evidence::new(
        u32::try_from(years).ok()?,
        reference(patient),
    ))
}

// ---------------------------------------------------------------------------------------------
// Charlson and LACE

/// The LACE index (van Walraven et al., CMAJ 2010) of the index stay, by component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lace {
    pub l: u32,
    pub a: u32,
    pub c: u32,
    pub e: u32,
    pub total: u32,
}

/// The Charlson comorbidity index (1987 weights, no age points): the sum of the group weights.
pub fn charlson(inputs: &Inputs) -> u32 {
    inputs.charlson.iter().map(|g| g.weight).sum()
}

/// LACE L points for a length of stay in days: <1 → 0, 1, 2, 3, 4–6 → 4, 7–13 → 5, ≥14 → 7.
pub fn lace_l(days: i64) -> u32 {
    match days {
        ..=0 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        4..=6 => 4,
        7..=13 => 5,
        _ => 7,
    }
}

/// LACE C points for a Charlson index: 0–3 as is, ≥4 → 5.
pub fn lace_c(charlson: u32) -> u32 {
    if charlson >= 4 {
        5
    } else {
        charlson
    }
}

/// LACE E points for ED visits in the previous 6 months: 0–3 as is, ≥4 → 4.
pub fn lace_e(visits: u32) -> u32 {
    visits.min(4)
}

/// The LACE index of the inputs (L and A are 0 without an index stay).
pub fn lace(inputs: &Inputs) -> Lace {
    let stay = inputs.index_stay.as_ref();
    let l = stay.map_or(0, |s| lace_l(s.length_of_stay_days));
    let a = if stay.is_some_and(|s| s.emergent.is_some()) {
        3
    } else {
        0
    };
    let c = lace_c(charlson(inputs));
    let e = lace_e(inputs.ed_visits_6m.value);
    Lace {
        l,
        a,
        c,
        e,
        total: l + a + c + e,
    }
}

// ---------------------------------------------------------------------------------------------
// Program score

/// Risk tier of the program score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    High,
    Moderate,
    Low,
}

impl Tier {
    /// The code in http://terminology.hl7.org/CodeSystem/risk-probability.
    pub fn code(self) -> &'static str {
        match self {
            Tier::High => "high",
            Tier::Moderate => "moderate",
            Tier::Low => "low",
        }
    }

    /// The display of the risk-probability code.
    fn display(self) -> &'static str {
        match self {
            Tier::High => "High likelihood",
            Tier::Moderate => "Moderate likelihood",
            Tier::Low => "Low likelihood",
        }
    }
}

/// One factor's share of the score: what was found, its points and the resources behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub factor: &'static str,
    pub detail: String,
    pub points: f64,
    pub basis: Vec<String>,
}

/// The program score, its tier, the contributions that make it up (factors scoring more than
/// 0, in a fixed order) and the LACE index when there is an index stay.
#[derive(Debug, Clone, PartialEq)]
pub struct Stratification {
    pub score: f64,
    pub tier: Tier,
    pub contributions: Vec<Contribution>,
    pub lace: Option<Lace>,
}

/// Score the inputs with the configuration.
pub fn stratify(inputs: &Inputs, config: &RiskConfig) -> Stratification {
    let lace = inputs.index_stay.as_ref().map(|_| lace(inputs));
    let contributions: Vec<Contribution> = [
        chronic_points(inputs, config),
        admission_points(inputs, config),
        ed_points(inputs, config),
        hba1c_points(inputs, config),
        bp_points(inputs, config),
        phq9_points(inputs, config),
        social_points(inputs, config),
        age_points(inputs, config),
        lace.and_then(|l| lace_points(inputs, &l, config)),
    ]
    .into_iter()
    .flatten()
    .filter(|c| c.points > 0.0)
    .collect();
    let score = contributions.iter().map(|c| c.points).sum();
    Stratification {
        score,
        tier: tier(score, &config.tiers),
        contributions,
        lace,
    }
}

/// The tier of a score.
fn tier(score: f64, tiers: &Tiers) -> Tier {
    if score >= tiers.high {
        Tier::High
    } else if score >= tiers.moderate {
        Tier::Moderate
    } else {
        Tier::Low
    }
}

/// Points of the band with the highest `from` not above `value` (0 when none applies).
fn band_points(bands: &[Band], value: f64) -> f64 {
    bands
        .iter()
        .filter(|b| b.from <= value)
        .max_by(|a, b| a.from.total_cmp(&b.from))
        .map_or(0.0, |b| b.points)
}

/// A contribution with its basis sorted and deduplicated.
fn contribution(
    factor: &'static str,
    detail: String,
    points: f64,
    basis: impl IntoIterator<Item = String>,
) -> Contribution {
    Contribution {
        factor,
        detail,
        points,
        basis: sorted(basis),
    }
}

/// Chronic-condition groups present, points each, capped.
fn chronic_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let rule = &config.chronic_conditions;
    let hits: Vec<&GroupHit> = inputs
        .chronic
        .iter()
        .filter(|g| rule.groups.iter().any(|x| x == g.group))
        .collect();
    let raw = hits.len() as f64 * rule.points_each;
    let points = raw.min(rule.max);
    let names: Vec<&str> = hits.iter().map(|g| g.display).collect();
    let cap = if raw > points {
        format!(", capped at {}", rule.max)
    } else {
        String::new()
    };
    let detail = format!(
        "{} chronic condition(s): {}{cap}",
        hits.len(),
        names.join(", ")
    );
    let basis = hits.iter().flat_map(|g| g.basis.iter().cloned());
    Some(contribution("chronic-conditions", detail, points, basis))
}

/// Inpatient admissions in the last 12 months, by band.
fn admission_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let n = &inputs.admissions_12m;
    let detail = format!("{} inpatient admission(s) in 12 months", n.value);
    let points = band_points(&config.admissions_12m, n.value.into());
    Some(contribution(
        "admissions-12m",
        detail,
        points,
        n.basis.clone(),
    ))
}

/// Emergency department visits in the last 12 months, by band.
fn ed_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let n = &inputs.ed_visits_12m;
    let detail = format!("{} emergency department visit(s) in 12 months", n.value);
    let points = band_points(&config.ed_visits_12m, n.value.into());
    Some(contribution(
        "ed-visits-12m",
        detail,
        points,
        n.basis.clone(),
    ))
}

/// Latest HbA1c at or above the uncontrolled threshold.
fn hba1c_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let h = inputs.hba1c.as_ref()?;
    let rule = &config.hba1c;
    let detail = format!(
        "HbA1c {} % (uncontrolled from {} %)",
        h.value, rule.uncontrolled_from
    );
    let points = if h.value >= rule.uncontrolled_from {
        rule.points
    } else {
        0.0
    };
    Some(contribution("hba1c", detail, points, h.basis.clone()))
}

/// Latest systolic or diastolic pressure at or above its threshold.
fn bp_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let rule = &config.bp;
    let (s, d) = (inputs.systolic.as_ref(), inputs.diastolic.as_ref());
    if s.is_none() && d.is_none() {
        return None;
    }
    let high = s.is_some_and(|s| s.value >= rule.systolic_from)
        || d.is_some_and(|d| d.value >= rule.diastolic_from);
    let show = |e: Option<&Evidence<f64>>| e.map_or_else(|| "?".into(), |e| e.value.to_string());
    let detail = format!(
        "blood pressure {}/{} mm[Hg] (uncontrolled from {}/{})",
        show(s),
        show(d),
        rule.systolic_from,
        rule.diastolic_from
    );
    let points = if high { rule.points } else { 0.0 };
    let basis = s.into_iter().chain(d).flat_map(|e| e.basis.iter().cloned());
    Some(contribution("blood-pressure", detail, points, basis))
}

/// The PHQ-9 severity band of a total score (0–27).
pub fn phq9_band(total: u32) -> &'static str {
    match total {
        0..=4 => "minimal",
        5..=9 => "mild",
        10..=14 => "moderate",
        15..=19 => "moderately severe",
        _ => "severe",
    }
}

/// Latest PHQ-9 total, points by severity band.
fn phq9_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let p = inputs.phq9.as_ref()?;
    let rule = &config.phq9;
    let band = phq9_band(p.value);
    let points = match band {
        "moderate" => rule.moderate,
        "moderately severe" => rule.moderately_severe,
        "severe" => rule.severe,
        _ => 0.0,
    };
    let detail = format!("PHQ-9 {}, {band}", p.value);
    Some(contribution("phq9", detail, points, p.basis.clone()))
}

/// Positive social-need domains of the latest screening, points each, capped.
fn social_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let n = inputs.social_needs.as_ref()?;
    let rule = &config.social_needs;
    let points = (f64::from(n.value) * rule.points_each).min(rule.max);
    let detail = format!("{} positive social-need domain(s)", n.value);
    Some(contribution(
        "social-needs",
        detail,
        points,
        n.basis.clone(),
    ))
}

/// Age, by band.
fn age_points(inputs: &Inputs, config: &RiskConfig) -> Option<Contribution> {
    let a = inputs.age.as_ref()?;
    let points = band_points(&config.age, a.value.into());
    let detail = format!("age {}", a.value);
    Some(contribution("age", detail, points, a.basis.clone()))
}

/// A LACE total at or above the high cut-off; basis: the stay, the Charlson Conditions and
/// the ED visits counted.
fn lace_points(inputs: &Inputs, lace: &Lace, config: &RiskConfig) -> Option<Contribution> {
    let rule = &config.lace;
    let stay = inputs.index_stay.as_ref()?;
    let detail = format!(
        "LACE {} (L{} A{} C{} E{}; high from {})",
        lace.total, lace.l, lace.a, lace.c, lace.e, rule.high_from
    );
    let points = if lace.total >= rule.high_from {
        rule.points
    } else {
        0.0
    };
    let basis = stay
        .basis
        .iter()
        .chain(inputs.charlson.iter().flat_map(|g| &g.basis))
        .chain(&inputs.ed_visits_6m.basis)
        .cloned();
    Some(contribution("lace", detail, points, basis))
}

// ---------------------------------------------------------------------------------------------
// RiskAssessment

/// A decimal JSON number.
fn decimal(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A reference element.
fn reference_to(r: &str) -> Value {
    json!({ "reference": r })
}

/// Points as a signed number, `+1` or `+1.5`.
fn signed(points: f64) -> String {
    if points >= 0.0 {
        format!("+{points}")
    } else {
        points.to_string()
    }
}

/// The [`CONTRIBUTION_URL`] extension of one contribution.
fn contribution_extension(c: &Contribution) -> Value {
    let mut parts = vec![
        json!({"url": "factor", "valueCode": c.factor}),
        json!({"url": "points", "valueDecimal": decimal(c.points)}),
        json!({"url": "detail", "valueString": c.detail}),
    ];
    parts.extend(
        c.basis
            .iter()
            .map(|r| json!({"url": "basis", "valueReference": reference_to(r)})),
    );
    json!({ "url": CONTRIBUTION_URL, "extension": parts })
}

/// An R4 RiskAssessment (status final) recording a stratification of Patient/`patient_id` made
/// at `now` (FHIR dateTime): method [`METHOD_SYSTEM`]#[`METHOD_CODE`] with `method_text`,
/// prediction[0] with the tier as qualitativeRisk and the score, LACE total and contributions
/// as extensions ([`RISK_SCORE_URL`], [`LACE_SCORE_URL`], [`CONTRIBUTION_URL`]), basis = every
/// contributing reference, one note per contribution, parent = `previous` (`RiskAssessment/id`).
pub fn risk_assessment(
    patient_id: &str,
    strat: &Stratification,
    method_text: &str,
    now: &str,
    previous: Option<&str>,
) -> Value {
    let mut method = json!({"coding": [{
        "system": METHOD_SYSTEM, "code": METHOD_CODE, "display": "ICM program risk score"
    }]});
    if !method_text.trim().is_empty() {
        method["text"] = json!(method_text);
    }
    let mut extension = vec![json!({"url": RISK_SCORE_URL, "valueDecimal": decimal(strat.score)})];
    if let Some(l) = strat.lace {
        extension.push(json!({"url": LACE_SCORE_URL, "valueInteger": l.total}));
    }
    extension.extend(strat.contributions.iter().map(contribution_extension));
    let prediction = json!({
        "extension": extension,
        "qualitativeRisk": {"coding": [{
            "system": RISK_PROBABILITY, "code": strat.tier.code(), "display": strat.tier.display()
        }]},
        "rationale": format!("ICM program score {}: {} tier", strat.score, strat.tier.code()),
    });
    let basis = sorted(
        strat
            .contributions
            .iter()
            .flat_map(|c| c.basis.iter().cloned()),
    );
    let notes: Vec<Value> = strat
        .contributions
        .iter()
        .map(|c| json!({"text": format!("{} ({})", c.detail, signed(c.points))}))
        .collect();

    let mut ra = Map::new();
    ra.insert("resourceType".into(), json!("RiskAssessment"));
    ra.insert("status".into(), json!("final"));
    ra.insert("method".into(), method);
    ra.insert(
        "subject".into(),
        reference_to(&format!("Patient/{patient_id}")),
    );
    ra.insert("occurrenceDateTime".into(), json!(now));
    if let Some(p) = previous {
        ra.insert("parent".into(), reference_to(p));
    }
    if !basis.is_empty() {
        let refs = basis.iter().map(|r| reference_to(r)).collect();
        ra.insert("basis".into(), Value::Array(refs));
    }
    ra.insert("prediction".into(), json!([prediction]));
    if !notes.is_empty() {
        ra.insert("note".into(), Value::Array(notes));
    }
    Value::Object(ra)
}

#[cfg(test)]
mod tests;
