//! The program's shipped conformance resources (`fhir-profiles/icm/`: Questionnaires, Measures,
//! CodeSystems, ValueSets, StructureDefinitions, SearchParameters) stored as ordinary resources,
//! so that they are read, searched, listed in history and exported like any other.
//!
//! [`install`] runs at server start, after the migrations, through the one write unit of work
//! with the server's own authority: each resource under its fixed id is created when absent (or
//! deleted) and updated only when its stored content differs from the shipped one, so a restart
//! adds no version. Several processes starting together on one database converge: the writes
//! are PUT-like upserts on fixed ids in one transaction, and a process that loses the race on a
//! row retries the unit, finds the rows present and equal, and writes nothing.
//!
//! The embedded copies stay the server's reference for behaviour (profile validation, scoring of
//! assessments, terminology, search parameters): a local edit of a stored definition is replaced
//! by the shipped content at the next start.
use serde_json::Value;

use super::context::RequestContext;
use super::write::{self, Change};
use crate::config::WritePolicy;
use crate::error::{ApiError, ApiResult};
use crate::fhir::validate::profiles::RESOURCES;
use crate::store::write::{current, WriteKind};
use crate::store::Store;

/// What [`install`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Installed {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// The shipped conformance resources: (type, id, resource).
pub fn shipped() -> ApiResult<Vec<(&'static str, &'static str, Value)>> {
    RESOURCES
        .iter()
        .map(|(ty, id, text)| {
            let v: Value = serde_json::from_str(text).map_err(ApiError::internal)?;
            Ok((*ty, *id, v))
        })
        .collect()
}

/// A resource without what the server sets on every write (meta.versionId, meta.lastUpdated),
/// for comparing a stored version with the shipped content.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            v.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    v
}

/// Store every shipped conformance resource that is absent or differs (see the module docs).
pub fn install(store: &Store, policy: WritePolicy) -> ApiResult<Installed> {
    let shipped = shipped()?;
    let ctx = RequestContext::internal(policy, "");
    write::run(store, &ctx, |u| {
        let mut done = Installed::default();
        for (ty, id, body) in &shipped {
            let same = current(u.conn(), ty, id)?
                .and_then(|c| c.resource())
                .is_some_and(|stored| comparable(&stored) == comparable(body));
            if same {
                done.unchanged += 1;
                continue;
            }
            let r = u.apply(
                ty,
                Change::Update {
                    id: id.to_string(),
                    body: body.clone(),
                    if_match: None,
                },
            )?;
            match r.kind {
                WriteKind::Created => done.created += 1,
                _ => done.updated += 1,
            }
        }
        Ok(done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shipped_resource_parses_with_its_type_and_id() {
        let all = shipped().unwrap();
        assert_eq!(all.len(), RESOURCES.len());
        for (ty, id, v) in all {
            assert_eq!(v["resourceType"], *ty, "{ty}/{id}");
            assert_eq!(v["id"], *id, "{ty}/{id}");
        }
    }

    #[test]
    fn comparison_ignores_what_the_server_sets() {
        let shipped = json!({"resourceType": "Questionnaire", "id": "q", "status": "active"});
        let stored = json!({"resourceType": "Questionnaire", "id": "q", "status": "active",
            "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z"}});
        assert_eq!(comparable(&stored), comparable(&shipped));
        let edited = json!({"resourceType": "Questionnaire", "id": "q", "status": "retired",
            "meta": {"versionId": "4", "lastUpdated": "2026-01-02T00:00:00Z"}});
        assert_ne!(comparable(&edited), comparable(&shipped));
        let tagged = json!({"resourceType": "Questionnaire", "id": "q", "status": "active",
            "meta": {"versionId": "1", "tag": [{"code": "x"}]}});
        assert_ne!(comparable(&tagged), comparable(&shipped));
    }
}
