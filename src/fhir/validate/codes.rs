//! Codes of the code systems the server holds (`fhir::terminology`: HL7's complete R4 code
//! systems and the program's own). A Coding whose `system` is held must carry a code of that
//! system, whatever the binding strength (error `code-invalid`); a Coding or CodeableConcept under
//! an extensible binding whose value set is expandable from held systems, with a code of a held
//! system but none from the value set, gets a warning. Codes of systems not held (SNOMED CT,
//! LOINC, RxNorm, local systems) are not judged.
use serde_json::{Map, Value};

use super::Walker;
use crate::fhir::definitions::ElemDef;
use crate::fhir::outcome::{Issue, IssueType};
use crate::fhir::terminology;

impl Walker<'_> {
    /// A Coding (at the current path): its code exists in its system when the system is held.
    pub(super) fn held_code(&mut self, m: &Map<String, Value>) {
        let (Some(system), Some(code)) = (
            m.get("system").and_then(Value::as_str),
            m.get("code").and_then(Value::as_str),
        ) else {
            return;
        };
        let Some(cs) = terminology::complete_system(system) else {
            return;
        };
        if !cs.has_code(code) {
            self.issue_sub(
                ".code",
                IssueType::CodeInvalid,
                format!("'{code}' is not a code of the code system {system}"),
            );
        }
    }

    /// An extensible binding on a Coding or CodeableConcept: a warning when a coding is from a
    /// held system yet no coding is from the bound value set.
    pub(super) fn extensible(&mut self, elem: &ElemDef, ty: &str, m: &Map<String, Value>) {
        let Some(vs) = terminology::extensible_binding(&elem.path) else {
            return;
        };
        let one = [(usize::MAX, m)];
        let codings: Vec<(usize, &Map<String, Value>)> = if ty == "Coding" {
            one.to_vec()
        } else {
            match m.get("coding") {
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_object().map(|o| (i, o)))
                    .collect(),
                _ => return,
            }
        };
        let mut outside: Option<(usize, &str, &str)> = None;
        for (i, c) in codings {
            let (Some(s), Some(code)) = (
                c.get("system").and_then(Value::as_str),
                c.get("code").and_then(Value::as_str),
            ) else {
                continue;
            };
            if vs.contains(s, code) {
                return;
            }
            // Only a real code of a held system is judged here (an unknown one is an error
            // already, from held_code).
            if outside.is_none()
                && terminology::complete_system(s).is_some_and(|cs| cs.has_code(code))
            {
                outside = Some((i, s, code));
            }
        }
        if let Some((i, s, code)) = outside {
            let at = if i == usize::MAX {
                format!("{}.code", self.path)
            } else {
                format!("{}.coding[{i}].code", self.path)
            };
            self.report.issues.push(
                Issue::warning(
                    IssueType::CodeInvalid,
                    format!(
                        "{s}#{code} is not in the value set {} (extensible binding of {}); use a code from it when one fits",
                        vs.url, elem.path
                    ),
                )
                .at(at),
            );
        }
    }
}
