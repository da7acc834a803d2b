//! The program's outcome measures (`$icm-metrics`), pure: the catalogue of measures (each also a
//! `Measure` resource in fhir-profiles/icm/), what counts, computed from compact facts the
//! service reads from the search index (never whole resources), and the R4 `MeasureReport`s.
//!
//! Everything is counted in whole UTC calendar days (`Day`: days since 1970-01-01). The README
//! ("Outcome measures") and the Measure resources give the definitions in words; the functions
//! below are those definitions, one per measure.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, NaiveDate};
use serde_json::{json, Map, Value};

/// Canonical base of the Measures.
pub const MEASURE_BASE: &str = "http://icm-fhir.org/fhir/Measure/";
/// Our codes of the measures' groups and of the pre/post windows.
pub const GROUP_SYSTEM: &str = "http://icm-fhir.org/fhir/CodeSystem/icm-measure";
/// The standard population codes.
pub const POPULATION: &str = "http://terminology.hl7.org/CodeSystem/measure-population";
/// On a MeasureReport of a pre/post comparison: valueCode `pre` or `post`.
pub const WINDOW_EXTENSION: &str = "http://icm-fhir.org/fhir/StructureDefinition/measure-window";
/// On a group whose numerator is an amount (Claim.total): valueDecimal, the sum.
pub const AMOUNT_EXTENSION: &str = "http://icm-fhir.org/fhir/StructureDefinition/measure-amount";
/// Days in a mean month (365.25 / 12): patient-months = patient-days / this.
pub const MONTH_DAYS: f64 = 30.4375;
/// A readmission is an admission up to this many days after the discharge day.
pub const READMISSION_DAYS: Day = 30;
/// The pre/post windows: 12 months taken as 365 days.
pub const WINDOW_DAYS: Day = 365;
/// High-risk patients need a contact within the last this many days of the period.
pub const CONTACT_DAYS: Day = 30;
/// The follow-up contact is due within this many business days after the discharge day.
pub const FOLLOW_UP_BUSINESS_DAYS: u32 = 2;
/// HbA1c (%) below this is controlled; above `HBA1C_POOR` poorly controlled.
pub const HBA1C_CONTROL: f64 = 8.0;
pub const HBA1C_POOR: f64 = 9.0;
/// LOINC codes of the clinical measures: HbA1c (%), systolic and diastolic blood pressure.
pub const HBA1C_LOINC: &str = "4548-4";
pub const SYSTOLIC_LOINC: &str = "8480-6";
pub const DIASTOLIC_LOINC: &str = "8462-4";
/// Blood pressure (mm[Hg]) below both is controlled.
pub const SYSTOLIC_CONTROL: f64 = 140.0;
pub const DIASTOLIC_CONTROL: f64 = 90.0;

// ---- days

/// A UTC calendar day: days since 1970-01-01.
pub type Day = i64;
const DAY_MICROS: i64 = 86_400_000_000;

/// The day of an instant (microseconds since the epoch).
pub fn day_of(micros: i64) -> Day {
    micros.div_euclid(DAY_MICROS)
}

/// The first day of an index range `[low, high)` (None when open at the start).
pub fn start_day(low: i64) -> Option<Day> {
    (low != i64::MIN).then(|| day_of(low))
}

/// The last day of an index range `[low, high)` (None when open at the end).
pub fn end_day(high: i64) -> Option<Day> {
    (high != i64::MAX).then(|| day_of(high - 1))
}

/// `YYYY-MM-DD` of a day.
pub fn format_day(d: Day) -> String {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let date = epoch
        .checked_add_signed(chrono::Duration::days(d))
        .unwrap_or(epoch);
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// Whether a day is Monday to Friday (1970-01-01 was a Thursday).
pub fn is_business_day(d: Day) -> bool {
    (d + 3).rem_euclid(7) < 5
}

/// The day `n` business days (Monday to Friday) after `d`: a Friday's second is the Tuesday.
pub fn business_days_after(d: Day, n: u32) -> Day {
    let mut day = d;
    let mut left = n;
    while left > 0 {
        day += 1;
        if is_business_day(day) {
            left -= 1;
        }
    }
    day
}

/// The measurement period: its first and last day, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub first: Day,
    pub last: Day,
}

// ---- the catalogue

/// The measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MeasureId {
    Readmission,
    EdVisits,
    Hba1c,
    BloodPressure,
    FollowUp,
    TasksOnTime,
    ReferralToEnrollment,
    Caseload,
    HighRiskContact,
    Experience,
    Cost,
}

/// One group of a measure: its code (in [`GROUP_SYSTEM`]), what it shows, and the unit of its
/// score (None: a proportion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDef {
    pub code: &'static str,
    pub display: &'static str,
    pub unit: Option<&'static str>,
}

const fn g(code: &'static str, display: &'static str, unit: Option<&'static str>) -> GroupDef {
    GroupDef {
        code,
        display,
        unit,
    }
}

impl MeasureId {
    pub const ALL: [MeasureId; 11] = [
        MeasureId::Readmission,
        MeasureId::EdVisits,
        MeasureId::Hba1c,
        MeasureId::BloodPressure,
        MeasureId::FollowUp,
        MeasureId::TasksOnTime,
        MeasureId::ReferralToEnrollment,
        MeasureId::Caseload,
        MeasureId::HighRiskContact,
        MeasureId::Experience,
        MeasureId::Cost,
    ];

    /// The Measure's id (and the last segment of its canonical URL).
    pub fn id(self) -> &'static str {
        match self {
            MeasureId::Readmission => "readmission-30d",
            MeasureId::EdVisits => "ed-visits",
            MeasureId::Hba1c => "hba1c-control",
            MeasureId::BloodPressure => "bp-control",
            MeasureId::FollowUp => "transition-follow-up",
            MeasureId::TasksOnTime => "tasks-on-time",
            MeasureId::ReferralToEnrollment => "referral-to-enrollment",
            MeasureId::Caseload => "caseload-size",
            MeasureId::HighRiskContact => "high-risk-contact",
            MeasureId::Experience => "patient-experience",
            MeasureId::Cost => "cost-proxy",
        }
    }

    pub fn url(self) -> String {
        format!("{MEASURE_BASE}{}", self.id())
    }

    /// A measure by id or canonical URL (a `|version` suffix is ignored).
    pub fn parse(s: &str) -> Option<MeasureId> {
        let s = s.split('|').next().unwrap_or(s);
        let id = s.strip_prefix(MEASURE_BASE).unwrap_or(s);
        MeasureId::ALL.into_iter().find(|m| m.id() == id)
    }

    /// The utilisation and clinical measures: compared before and after enrollment.
    pub fn pre_post(self) -> bool {
        matches!(
            self,
            MeasureId::Readmission
                | MeasureId::EdVisits
                | MeasureId::Hba1c
                | MeasureId::BloodPressure
                | MeasureId::Cost
        )
    }

    /// Whether the measure has a report for one patient (a caseload belongs to a care manager).
    pub fn individual(self) -> bool {
        self != MeasureId::Caseload
    }

    /// The groups, in report order.
    pub fn groups(self) -> &'static [GroupDef] {
        const PER_1000: Option<&str> = Some("per 1000 patient-months");
        const PER_MONTH: Option<&str> = Some("per patient-month");
        match self {
            MeasureId::Readmission => {
                const G: &[GroupDef] = &[g(
                    "readmission-30d",
                    "Discharges followed by an inpatient admission within 30 days",
                    None,
                )];
                G
            }
            MeasureId::EdVisits => {
                const G: &[GroupDef] = &[g(
                    "ed-visits",
                    "Emergency department visits per 1,000 enrolled patient-months",
                    PER_1000,
                )];
                G
            }
            MeasureId::Hba1c => {
                const G: &[GroupDef] = &[
                    g(
                        "hba1c-control",
                        "Most recent HbA1c in the period below 8.0 %",
                        None,
                    ),
                    g(
                        "hba1c-poor-control",
                        "Most recent HbA1c in the period above 9.0 %",
                        None,
                    ),
                    g("hba1c-untested", "No HbA1c result in the period", None),
                ];
                G
            }
            MeasureId::BloodPressure => {
                const G: &[GroupDef] = &[g(
                    "bp-control",
                    "Most recent blood pressure in the period below 140/90 mm[Hg]",
                    None,
                )];
                G
            }
            MeasureId::FollowUp => {
                const G: &[GroupDef] = &[g(
                    "transition-follow-up",
                    "Follow-up contact completed within 2 business days of discharge",
                    None,
                )];
                G
            }
            MeasureId::TasksOnTime => {
                const G: &[GroupDef] = &[g(
                    "tasks-on-time",
                    "Tasks completed by their due date",
                    None,
                )];
                G
            }
            MeasureId::ReferralToEnrollment => {
                const G: &[GroupDef] = &[g(
                    "referral-to-enrollment",
                    "Mean days from referral to enrollment",
                    Some("days"),
                )];
                G
            }
            MeasureId::Caseload => {
                const G: &[GroupDef] = &[g(
                    "caseload-size",
                    "Mean caseload size per care manager",
                    Some("patients"),
                )];
                G
            }
            MeasureId::HighRiskContact => {
                const G: &[GroupDef] = &[g(
                    "high-risk-contact",
                    "High-risk patients with a contact in the last 30 days",
                    None,
                )];
                G
            }
            MeasureId::Experience => {
                const G: &[GroupDef] = &[g(
                    "patient-experience",
                    "Mean patient-experience score (5-25)",
                    Some("score"),
                )];
                G
            }
            MeasureId::Cost => {
                const G: &[GroupDef] = &[
                    g(
                        "inpatient-days",
                        "Inpatient days per enrolled patient-month",
                        PER_MONTH,
                    ),
                    g(
                        "cost-ed-visits",
                        "Emergency department visits per enrolled patient-month",
                        PER_MONTH,
                    ),
                    g(
                        "claim-total",
                        "Claim.total per enrolled patient-month",
                        PER_MONTH,
                    ),
                ];
                G
            }
        }
    }
}

// ---- facts: what the service reads from the search index

/// An enrollment: an EpisodeOfCare of an ICM program (active, onhold or finished).
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub id: String,
    pub patient: String,
    /// First day (None: the episode has no period.start and is not counted).
    pub start: Option<Day>,
    /// Last day (None: open).
    pub end: Option<Day>,
    /// `Type/id` of careManager.
    pub care_manager: Option<String>,
    /// The day of the earliest referral's authoredOn.
    pub referral: Option<Day>,
}

/// Encounter classes the measures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StayClass {
    /// IMP, ACUTE, NONAC.
    Inpatient,
    /// EMER.
    Emergency,
}

/// An inpatient stay or emergency visit.
#[derive(Debug, Clone, PartialEq)]
pub struct Stay {
    pub id: String,
    pub patient: String,
    pub class: StayClass,
    pub status: String,
    /// Day of period.start (None: not counted).
    pub admit: Option<Day>,
    /// Day of period.end (None: no end).
    pub discharge: Option<Day>,
    /// hospitalization.dischargeDisposition is one of [`EXCLUDED_DISPOSITIONS`].
    pub excluded: bool,
}

impl Stay {
    /// An admission that happened (inpatient stays: in-progress, onleave, finished).
    fn admitted(&self) -> bool {
        matches!(self.status.as_str(), "in-progress" | "onleave" | "finished")
    }
    /// An emergency visit that happened (arrived and later).
    fn visited(&self) -> bool {
        self.admitted() || matches!(self.status.as_str(), "arrived" | "triaged")
    }
}

/// A dated value: an HbA1c result, a satisfaction total.
#[derive(Debug, Clone, PartialEq)]
pub struct Value1 {
    pub patient: String,
    /// The instant (effective start), microseconds.
    pub at: i64,
    pub value: f64,
}

/// One systolic or diastolic value.
#[derive(Debug, Clone, PartialEq)]
pub struct BpValue {
    pub patient: String,
    pub day: Day,
    pub systolic: bool,
    pub value: f64,
}

/// A Task: a transition follow-up (with its discharge day) or one with a due date.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFact {
    pub id: String,
    pub patient: String,
    pub status: String,
    /// Completion day: executionPeriod.end, else lastModified.
    pub done: Option<Day>,
    /// Follow-up Tasks: the day of the focus Encounter's period.end. Others: the due day.
    pub day: Option<Day>,
}

/// A RiskAssessment of the program's score: when, and whether a prediction's qualitativeRisk
/// is high.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskFact {
    pub patient: String,
    pub at: i64,
    pub high: bool,
}

/// An amount in hundredths, rounded half up (`floor(v × 100 + 0.5)`).
pub fn cents(v: f64) -> i64 {
    (v * 100.0 + 0.5).floor() as i64
}

/// A Claim: its created day and total in hundredths.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimFact {
    pub patient: String,
    pub day: Day,
    pub cents: i64,
}

/// Everything the measures read, for the patients (and care managers) in scope. A reader may
/// leave out facts a measure cannot use (e.g. blood pressure of a patient without hypertension,
/// a risk assessment that is not a patient's latest): the measures are the same either way.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub episodes: Vec<Episode>,
    pub stays: Vec<Stay>,
    pub diabetic: BTreeSet<String>,
    pub hypertensive: BTreeSet<String>,
    /// Deceased patients: the day of death when known.
    pub deaths: BTreeMap<String, Option<Day>>,
    pub hba1c: Vec<Value1>,
    pub bp: Vec<BpValue>,
    pub follow_ups: Vec<TaskFact>,
    pub due_tasks: Vec<TaskFact>,
    pub risks: Vec<RiskFact>,
    /// Contacts: (patient, day).
    pub contacts: Vec<(String, Day)>,
    pub satisfaction: Vec<Value1>,
    pub claims: Vec<ClaimFact>,
}

// ---- enrollment and frames

/// Each patient's enrolled days: sorted, disjoint, inclusive spans (`Day::MAX`: open).
pub type Spans = BTreeMap<String, Vec<(Day, Day)>>;

/// The union of the episodes' days per patient (overlapping or adjacent spans merged).
pub fn enrollment_spans(episodes: &[Episode]) -> Spans {
    let mut raw: BTreeMap<String, Vec<(Day, Day)>> = BTreeMap::new();
    for e in episodes {
        if let Some(s) = e.start {
            let end = e.end.unwrap_or(Day::MAX);
            if end >= s {
                raw.entry(e.patient.clone()).or_default().push((s, end));
            }
        }
    }
    raw.into_iter()
        .map(|(p, mut v)| {
            v.sort();
            let mut out: Vec<(Day, Day)> = Vec::new();
            for (a, b) in v {
                match out.last_mut() {
                    Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                    _ => out.push((a, b)),
                }
            }
            (p, out)
        })
        .collect()
}

/// Spans cut to `[a, b]`.
fn clip(spans: &[(Day, Day)], a: Day, b: Day) -> Vec<(Day, Day)> {
    spans
        .iter()
        .filter_map(|&(s, e)| {
            let (s, e) = (s.max(a), e.min(b));
            (s <= e).then_some((s, e))
        })
        .collect()
}

/// What one patient counts in a report: the days its events count on, and the window its
/// clinical results (HbA1c, blood pressure) are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub spans: Vec<(Day, Day)>,
    pub window: (Day, Day),
}

impl Frame {
    pub fn contains(&self, d: Day) -> bool {
        self.spans.iter().any(|&(a, b)| a <= d && d <= b)
    }
    pub fn days(&self) -> i64 {
        self.spans.iter().map(|&(a, b)| b - a + 1).sum()
    }
    /// Counted days in `[a, b]`.
    fn days_in(&self, a: Day, b: Day) -> i64 {
        clip(&self.spans, a, b)
            .iter()
            .map(|&(s, e)| e - s + 1)
            .sum()
    }
    fn in_window(&self, d: Day) -> bool {
        self.window.0 <= d && d <= self.window.1
    }
}

/// The patients a report counts, each with its frame (never an empty one).
pub type Frames = BTreeMap<String, Frame>;

/// A report over the period: each patient's enrolled days in it; results from the whole period.
pub fn period_frames(spans: &Spans, period: Period) -> Frames {
    spans
        .iter()
        .filter_map(|(p, s)| {
            let c = clip(s, period.first, period.last);
            (!c.is_empty()).then(|| {
                (
                    p.clone(),
                    Frame {
                        spans: c,
                        window: (period.first, period.last),
                    },
                )
            })
        })
        .collect()
}

/// The pre/post comparison: the cohort is the patients whose first enrollment day E lies in
/// the period (and not after `today`). Pre: the 365 days before E, all counted. Post: E and the
/// 364 days after it, up to `today`, counting the days enrolled.
pub fn pre_post_frames(
    episodes: &[Episode],
    spans: &Spans,
    period: Period,
    today: Day,
) -> (Frames, Frames) {
    let mut first: BTreeMap<&str, Day> = BTreeMap::new();
    for e in episodes {
        if let Some(s) = e.start {
            if e.end.is_none_or(|end| end >= s) {
                let f = first.entry(e.patient.as_str()).or_insert(s);
                *f = (*f).min(s);
            }
        }
    }
    let (mut pre, mut post) = (Frames::new(), Frames::new());
    for (p, e) in first {
        if e < period.first || e > period.last || e > today {
            continue;
        }
        pre.insert(
            p.to_string(),
            Frame {
                spans: vec![(e - WINDOW_DAYS, e - 1)],
                window: (e - WINDOW_DAYS, e - 1),
            },
        );
        let end = (e + WINDOW_DAYS - 1).min(today);
        let c = clip(spans.get(p).map_or(&[][..], Vec::as_slice), e, end);
        if !c.is_empty() {
            post.insert(
                p.to_string(),
                Frame {
                    spans: c,
                    window: (e, end),
                },
            );
        }
    }
    (pre, post)
}

// ---- results

/// The counts of one group: initial population, denominator, denominator exclusions (part of
/// the denominator) and numerator (of the denominator without the exclusions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub initial: i64,
    pub denominator: i64,
    pub exclusion: i64,
    pub numerator: i64,
}

/// One stratum of a group (a care manager's caseload).
#[derive(Debug, Clone, PartialEq)]
pub struct Stratum {
    pub value: String,
    pub counts: Counts,
    pub score: Option<f64>,
}

/// One group's result.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    pub def: GroupDef,
    pub counts: Counts,
    pub score: Option<f64>,
    /// A summed amount behind the score (Claim.total), in hundredths.
    pub amount: Option<i64>,
    pub strata: Vec<Stratum>,
}

impl GroupResult {
    fn new(def: GroupDef, counts: Counts, score: Option<f64>) -> Self {
        GroupResult {
            def,
            counts,
            score,
            amount: None,
            strata: Vec::new(),
        }
    }
}

/// numerator / (denominator − exclusions), None when nothing is left to divide by.
fn proportion(c: Counts) -> Option<f64> {
    let d = c.denominator - c.exclusion;
    (d > 0).then(|| c.numerator as f64 / d as f64)
}

/// `x` per patient-month of `days` enrolled patient-days, times `scale`.
fn per_month(x: f64, days: i64, scale: f64) -> Option<f64> {
    (days > 0).then(|| x * scale * MONTH_DAYS / days as f64)
}

/// Statuses of a Task that was called off: excluded from the Task measures.
fn called_off(status: &str) -> bool {
    matches!(status, "cancelled" | "rejected" | "entered-in-error")
}

/// Discharge dispositions (http://terminology.hl7.org/CodeSystem/discharge-disposition, or no
/// system) excluded from the readmission measure: died, left against medical advice,
/// transferred to another acute-care hospital.
pub const EXCLUDED_DISPOSITIONS: &[&str] = &["exp", "aadvice", "hosp"];

/// Whether the patient had died by `day` (a death without a date always counts).
fn dead_by(facts: &Facts, patient: &str, day: Day) -> bool {
    facts
        .deaths
        .get(patient)
        .is_some_and(|d| d.is_none_or(|d| d <= day))
}

// Per-patient maps that are only looked up are hash maps: at 100,000 patients a B-tree of
// patient ids cost ~17 string comparisons per fact (7 % of a report's CPU in a profile).
fn stays_of(facts: &Facts) -> HashMap<&str, Vec<&Stay>> {
    let mut m: HashMap<&str, Vec<&Stay>> = HashMap::new();
    for s in &facts.stays {
        m.entry(s.patient.as_str()).or_default().push(s);
    }
    m
}

/// 30-day all-cause readmission.
pub fn readmission(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let by_patient = stays_of(facts);
    let mut c = Counts::default();
    for (p, f) in frames {
        let Some(stays) = by_patient.get(p.as_str()) else {
            continue;
        };
        let inpatient = || {
            stays
                .iter()
                .filter(|s| s.class == StayClass::Inpatient && s.admitted())
        };
        for s in inpatient().filter(|s| s.status == "finished") {
            let Some(d) = s.discharge.filter(|&d| s.admit.is_some() && f.contains(d)) else {
                continue;
            };
            c.initial += 1;
            c.denominator += 1;
            if s.excluded {
                c.exclusion += 1;
                continue;
            }
            let readmitted = inpatient().any(|t| {
                t.id != s.id && t.admit.is_some_and(|a| a >= d && a - d <= READMISSION_DAYS)
            });
            if readmitted {
                c.numerator += 1;
            }
        }
    }
    vec![GroupResult::new(
        MeasureId::Readmission.groups()[0],
        c,
        proportion(c),
    )]
}

/// Emergency visits of the frames' patients on their counted days.
fn ed_count(frames: &Frames, facts: &Facts) -> i64 {
    facts
        .stays
        .iter()
        .filter(|s| s.class == StayClass::Emergency && s.visited())
        .filter(|s| {
            s.admit
                .is_some_and(|a| frames.get(&s.patient).is_some_and(|f| f.contains(a)))
        })
        .count() as i64
}

fn patient_days(frames: &Frames) -> i64 {
    frames.values().map(Frame::days).sum()
}

/// ED visits per 1,000 enrolled patient-months.
pub fn ed_visits(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let days = patient_days(frames);
    let c = Counts {
        initial: frames.len() as i64,
        denominator: days,
        exclusion: 0,
        numerator: ed_count(frames, facts),
    };
    vec![GroupResult::new(
        MeasureId::EdVisits.groups()[0],
        c,
        per_month(c.numerator as f64, days, 1000.0),
    )]
}

/// HbA1c control (< 8.0 %), poor control (> 9.0 %) and untested, of the most recent result.
pub fn hba1c(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let mut latest: HashMap<&str, (i64, f64)> = HashMap::new();
    for v in &facts.hba1c {
        let Some(f) = frames.get(&v.patient) else {
            continue;
        };
        if !f.in_window(day_of(v.at)) {
            continue;
        }
        let e = latest.entry(v.patient.as_str()).or_insert((v.at, v.value));
        // The latest instant; at the same instant, the highest value.
        if (v.at, v.value) > *e {
            *e = (v.at, v.value);
        }
    }
    let mut base = Counts::default();
    let (mut control, mut poor, mut untested) = (0, 0, 0);
    for (p, f) in frames {
        if !facts.diabetic.contains(p) {
            continue;
        }
        base.initial += 1;
        base.denominator += 1;
        if dead_by(facts, p, f.window.1) {
            base.exclusion += 1;
            continue;
        }
        match latest.get(p.as_str()) {
            Some(&(_, v)) => {
                control += i64::from(v < HBA1C_CONTROL);
                poor += i64::from(v > HBA1C_POOR);
            }
            None => untested += 1,
        }
    }
    let defs = MeasureId::Hba1c.groups();
    [control, poor, untested]
        .into_iter()
        .zip(defs)
        .map(|(n, d)| {
            let c = Counts {
                numerator: n,
                ..base
            };
            GroupResult::new(*d, c, proportion(c))
        })
        .collect()
}

/// Blood pressure control: the most recent day with both values, lowest of each that day.
pub fn blood_pressure(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    // patient → day → (lowest systolic, lowest diastolic)
    type Lowest = (Option<f64>, Option<f64>);
    let mut days: HashMap<&str, BTreeMap<Day, Lowest>> = HashMap::new();
    for v in &facts.bp {
        let Some(f) = frames.get(&v.patient) else {
            continue;
        };
        if !f.in_window(v.day) {
            continue;
        }
        let e = days
            .entry(v.patient.as_str())
            .or_default()
            .entry(v.day)
            .or_default();
        let slot = if v.systolic { &mut e.0 } else { &mut e.1 };
        *slot = Some(slot.map_or(v.value, |x| x.min(v.value)));
    }
    let mut c = Counts::default();
    for (p, f) in frames {
        if !facts.hypertensive.contains(p) {
            continue;
        }
        c.initial += 1;
        c.denominator += 1;
        if dead_by(facts, p, f.window.1) {
            c.exclusion += 1;
            continue;
        }
        let reading = days
            .get(p.as_str())
            .and_then(|m| m.values().rev().find_map(|&(s, d)| Some((s?, d?))));
        if reading.is_some_and(|(s, d)| s < SYSTOLIC_CONTROL && d < DIASTOLIC_CONTROL) {
            c.numerator += 1;
        }
    }
    vec![GroupResult::new(
        MeasureId::BloodPressure.groups()[0],
        c,
        proportion(c),
    )]
}

/// Tasks counted on their day (`TaskFact.day`) and done by `deadline(day)`.
fn task_counts(frames: &Frames, tasks: &[TaskFact], deadline: impl Fn(Day) -> Day) -> Counts {
    let mut c = Counts::default();
    for t in tasks {
        let Some(d) = t.day else { continue };
        if !frames.get(&t.patient).is_some_and(|f| f.contains(d)) {
            continue;
        }
        c.initial += 1;
        c.denominator += 1;
        if called_off(&t.status) {
            c.exclusion += 1;
        } else if t.status == "completed" && t.done.is_some_and(|x| x <= deadline(d)) {
            c.numerator += 1;
        }
    }
    c
}

/// Follow-up contact within 2 business days of the discharge day.
pub fn follow_up(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let c = task_counts(frames, &facts.follow_ups, |d| {
        business_days_after(d, FOLLOW_UP_BUSINESS_DAYS)
    });
    vec![GroupResult::new(
        MeasureId::FollowUp.groups()[0],
        c,
        proportion(c),
    )]
}

/// Tasks completed by their due day.
pub fn tasks_on_time(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let c = task_counts(frames, &facts.due_tasks, |d| d);
    vec![GroupResult::new(
        MeasureId::TasksOnTime.groups()[0],
        c,
        proportion(c),
    )]
}

/// Mean days from referral to enrollment, over the enrollments starting in the period.
pub fn referral_to_enrollment(period: Period, facts: &Facts) -> Vec<GroupResult> {
    let mut c = Counts::default();
    for e in &facts.episodes {
        let Some(s) = e.start.filter(|s| (period.first..=period.last).contains(s)) else {
            continue;
        };
        if e.end.is_some_and(|end| end < s) {
            continue;
        }
        c.initial += 1;
        c.denominator += 1;
        match e.referral.filter(|&r| r <= s) {
            Some(r) => c.numerator += s - r,
            None => c.exclusion += 1,
        }
    }
    vec![GroupResult::new(
        MeasureId::ReferralToEnrollment.groups()[0],
        c,
        proportion(c),
    )]
}

/// Caseload size per care manager on the last day of the period, with one stratum each.
pub fn caseload(period: Period, facts: &Facts) -> Vec<GroupResult> {
    let mut by_manager: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &facts.episodes {
        let (Some(s), Some(cm)) = (e.start, e.care_manager.as_deref()) else {
            continue;
        };
        if s <= period.last && e.end.is_none_or(|end| end >= period.last) {
            by_manager.entry(cm).or_default().insert(&e.patient);
        }
    }
    let managers = by_manager.len() as i64;
    let c = Counts {
        initial: managers,
        denominator: managers,
        exclusion: 0,
        numerator: by_manager.values().map(|p| p.len() as i64).sum(),
    };
    let mut r = GroupResult::new(MeasureId::Caseload.groups()[0], c, proportion(c));
    r.strata = by_manager
        .into_iter()
        .map(|(cm, p)| {
            let n = p.len() as i64;
            let counts = Counts {
                initial: 1,
                denominator: 1,
                exclusion: 0,
                numerator: n,
            };
            Stratum {
                value: cm.to_string(),
                counts,
                score: Some(n as f64),
            }
        })
        .collect();
    vec![r]
}

/// High-risk patients (enrolled on the last day, current tier high) with a contact in the last
/// 30 days of the period.
pub fn high_risk_contact(spans: &Spans, period: Period, facts: &Facts) -> Vec<GroupResult> {
    let c = high_risk_counts(spans, period, facts);
    vec![GroupResult::new(
        MeasureId::HighRiskContact.groups()[0],
        c,
        proportion(c),
    )]
}

/// The patients enrolled on the period's last day whose current tier (the latest program
/// RiskAssessment on or before that day) is high.
pub fn high_risk_patients(spans: &Spans, period: Period, risks: &[RiskFact]) -> BTreeSet<String> {
    // The latest; at the same instant, high when any of them is.
    let mut latest: BTreeMap<&str, (i64, bool)> = BTreeMap::new();
    for r in risks {
        if day_of(r.at) > period.last {
            continue;
        }
        let key = (r.at, r.high);
        let e = latest.entry(r.patient.as_str()).or_insert(key);
        if key > *e {
            *e = key;
        }
    }
    latest
        .into_iter()
        .filter(|(p, (_, high))| {
            *high
                && spans
                    .get(*p)
                    .is_some_and(|s| s.iter().any(|&(a, b)| a <= period.last && period.last <= b))
        })
        .map(|(p, _)| p.to_string())
        .collect()
}

fn high_risk_counts(spans: &Spans, period: Period, facts: &Facts) -> Counts {
    let from = period.last - (CONTACT_DAYS - 1);
    let contacted: BTreeSet<&str> = facts
        .contacts
        .iter()
        .filter(|(_, d)| (from..=period.last).contains(d))
        .map(|(p, _)| p.as_str())
        .collect();
    let mut c = Counts::default();
    for p in high_risk_patients(spans, period, &facts.risks) {
        c.initial += 1;
        c.denominator += 1;
        if dead_by(facts, &p, period.last) {
            c.exclusion += 1;
            continue;
        }
        if contacted.contains(p.as_str()) {
            c.numerator += 1;
        }
    }
    c
}

/// Mean patient-experience total of the responses in the period.
pub fn experience(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let mut c = Counts::default();
    for v in &facts.satisfaction {
        if frames
            .get(&v.patient)
            .is_some_and(|f| f.contains(day_of(v.at)))
        {
            c.initial += 1;
            c.denominator += 1;
            c.numerator += v.value.round() as i64;
        }
    }
    vec![GroupResult::new(
        MeasureId::Experience.groups()[0],
        c,
        proportion(c),
    )]
}

/// The days a stay is counted on: admission day up to the day before the discharge day (the
/// admission day alone for a same-day stay, or a finished stay without an end; open while in
/// progress).
fn census(s: &Stay) -> Option<(Day, Day)> {
    let a = s.admit?;
    let last = match s.discharge {
        Some(b) if b > a => b - 1,
        Some(_) => a,
        None if s.status == "finished" => a,
        None => Day::MAX,
    };
    Some((a, last))
}

/// Cost proxy: inpatient days, ED visits and Claim.total per enrolled patient-month.
pub fn cost(frames: &Frames, facts: &Facts) -> Vec<GroupResult> {
    let days = patient_days(frames);
    let base = Counts {
        initial: frames.len() as i64,
        denominator: days,
        exclusion: 0,
        numerator: 0,
    };
    let inpatient_days: i64 = facts
        .stays
        .iter()
        .filter(|s| s.class == StayClass::Inpatient && s.admitted())
        .filter_map(|s| Some((frames.get(&s.patient)?, census(s)?)))
        .map(|(f, (a, b))| f.days_in(a, b))
        .sum();
    let ed = ed_count(frames, facts);
    let (mut claims, mut cents) = (0, 0_i64);
    for c in &facts.claims {
        if frames.get(&c.patient).is_some_and(|f| f.contains(c.day)) {
            claims += 1;
            cents += c.cents;
        }
    }
    let defs = MeasureId::Cost.groups();
    let with = |n: i64| Counts {
        numerator: n,
        ..base
    };
    let mut claim = GroupResult::new(
        defs[2],
        with(claims),
        per_month(cents as f64 / 100.0, days, 1.0),
    );
    claim.amount = Some(cents);
    vec![
        GroupResult::new(
            defs[0],
            with(inpatient_days),
            per_month(inpatient_days as f64, days, 1.0),
        ),
        GroupResult::new(defs[1], with(ed), per_month(ed as f64, days, 1.0)),
        claim,
    ]
}

/// One measure over a period (care-process measures included).
pub fn compute(
    m: MeasureId,
    spans: &Spans,
    frames: &Frames,
    period: Period,
    facts: &Facts,
) -> Vec<GroupResult> {
    match m {
        MeasureId::Readmission => readmission(frames, facts),
        MeasureId::EdVisits => ed_visits(frames, facts),
        MeasureId::Hba1c => hba1c(frames, facts),
        MeasureId::BloodPressure => blood_pressure(frames, facts),
        MeasureId::FollowUp => follow_up(frames, facts),
        MeasureId::TasksOnTime => tasks_on_time(frames, facts),
        MeasureId::ReferralToEnrollment => referral_to_enrollment(period, facts),
        MeasureId::Caseload => caseload(period, facts),
        MeasureId::HighRiskContact => high_risk_contact(spans, period, facts),
        MeasureId::Experience => experience(frames, facts),
        MeasureId::Cost => cost(frames, facts),
    }
}

// ---- MeasureReport

/// Whose report: the population (summary) or one patient (individual).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Summary,
    Patient(String),
}

/// A score as a JSON number with at most 6 decimals.
fn score_number(x: f64) -> Value {
    let text = format!("{x:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text.is_empty() || text == "-" {
        "0"
    } else {
        text
    };
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Hundredths as a JSON decimal (`12.30` → 12.3).
fn amount_number(cents: i64) -> Value {
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    let text = format!("{sign}{}.{:02}", a / 100, a % 100);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn coded(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut c = json!({"system": system, "code": code});
    if let Some(d) = display {
        c["display"] = json!(d);
    }
    json!({"coding": [c]})
}

fn populations(c: Counts) -> Value {
    json!([
        {"code": coded(POPULATION, "initial-population", Some("Initial Population")), "count": c.initial},
        {"code": coded(POPULATION, "denominator", Some("Denominator")), "count": c.denominator},
        {"code": coded(POPULATION, "denominator-exclusion", Some("Denominator Exclusion")), "count": c.exclusion},
        {"code": coded(POPULATION, "numerator", Some("Numerator")), "count": c.numerator},
    ])
}

fn score(x: Option<f64>, unit: Option<&str>) -> Option<Value> {
    let mut q = json!({"value": score_number(x?)});
    if let Some(u) = unit {
        q["unit"] = json!(u);
    }
    Some(q)
}

/// The R4 MeasureReport of one measure's groups over `[first, last]`; `window` marks a report
/// of a pre/post comparison.
pub fn measure_report(
    m: MeasureId,
    groups: &[GroupResult],
    subject: &Subject,
    (first, last): (Day, Day),
    window: Option<&str>,
    now: &str,
) -> Value {
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("MeasureReport"));
    if let Some(w) = window {
        r.insert(
            "extension".into(),
            json!([{"url": WINDOW_EXTENSION, "valueCode": w}]),
        );
    }
    r.insert("status".into(), json!("complete"));
    let kind = match subject {
        Subject::Summary => "summary",
        Subject::Patient(_) => "individual",
    };
    r.insert("type".into(), json!(kind));
    r.insert("measure".into(), json!(m.url()));
    if let Subject::Patient(p) = subject {
        r.insert(
            "subject".into(),
            json!({"reference": format!("Patient/{p}")}),
        );
    }
    r.insert("date".into(), json!(now));
    r.insert(
        "period".into(),
        json!({"start": format_day(first), "end": format_day(last)}),
    );
    let groups: Vec<Value> = groups
        .iter()
        .map(|gr| {
            let mut o = Map::new();
            if let Some(cents) = gr.amount {
                o.insert(
                    "extension".into(),
                    json!([{"url": AMOUNT_EXTENSION, "valueDecimal": amount_number(cents)}]),
                );
            }
            o.insert(
                "code".into(),
                coded(GROUP_SYSTEM, gr.def.code, Some(gr.def.display)),
            );
            o.insert("population".into(), populations(gr.counts));
            if let Some(s) = score(gr.score, gr.def.unit) {
                o.insert("measureScore".into(), s);
            }
            if !gr.strata.is_empty() {
                let strata: Vec<Value> = gr
                    .strata
                    .iter()
                    .map(|s| {
                        let mut st = json!({"value": {"text": s.value}, "population": populations(s.counts)});
                        if let Some(x) = score(s.score, gr.def.unit) {
                            st["measureScore"] = x;
                        }
                        st
                    })
                    .collect();
                o.insert(
                    "stratifier".into(),
                    json!([{"code": [{"text": "care manager"}], "stratum": strata}]),
                );
            }
            Value::Object(o)
        })
        .collect();
    r.insert("group".into(), Value::Array(groups));
    Value::Object(r)
}

/// The days a set of frames covers (their windows), or `fallback` when there are none.
pub fn frames_span(frames: &Frames, fallback: (Day, Day)) -> (Day, Day) {
    let first = frames.values().map(|f| f.window.0).min();
    let last = frames.values().map(|f| f.window.1).max();
    match (first, last) {
        (Some(a), Some(b)) => (a, b),
        _ => fallback,
    }
}

#[cfg(test)]
mod tests;
