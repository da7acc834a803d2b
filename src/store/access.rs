//! Reads the access policy needs: the CareTeams and PractitionerRoles that may make a
//! practitioner a care-team member, found through the reference search index.
use diesel::sql_types::{Nullable, Text};
use diesel::QueryableByName;
use serde_json::Value;

use crate::error::ApiResult;
use crate::store::backend::{db_error, DbConn, Store};
use crate::store::sql::{load, Sql};

#[derive(QueryableByName)]
struct ContentRow {
    #[diesel(sql_type = Nullable<Text>)]
    content: Option<String>,
}

fn contents(rows: Vec<ContentRow>) -> Vec<Value> {
    rows.into_iter()
        .filter_map(|r| r.content)
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect()
}

impl Store {
    /// [`care_team_candidates`] on a pooled connection.
    pub fn care_team_candidates(&self, practitioner: &str) -> ApiResult<(Vec<Value>, Vec<Value>)> {
        care_team_candidates(&mut *self.conn()?, practitioner)
    }

    /// [`organization_tasks`] on a pooled connection.
    pub fn organization_tasks(&self, organization: &str) -> ApiResult<Vec<Value>> {
        organization_tasks(&mut *self.conn()?, organization)
    }

    /// [`organization_records`] on a pooled connection.
    pub fn organization_records(&self, organization: &str) -> ApiResult<Vec<(String, String)>> {
        organization_records(&mut *self.conn()?, organization)
    }
}

/// The PractitionerRoles of a practitioner, and the CareTeams whose participants reference
/// the practitioner or one of those roles (current, non-deleted versions). The caller
/// decides with `policy::care_team_patients` (status, subject).
pub fn care_team_candidates(
    conn: &mut DbConn,
    practitioner: &str,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    let mut q = Sql::new();
    q.push(
            "SELECT r.content FROM resources r WHERE r.res_type = 'PractitionerRole' AND NOT r.deleted \
             AND r.pk IN (SELECT i.resource_pk FROM search_reference i WHERE i.res_type = 'PractitionerRole' \
             AND i.param = 'practitioner' AND i.target_type = 'Practitioner' AND i.target_id = ",
        )
        .text(practitioner)
        .push(")");
    let roles = contents(load(conn, &q).map_err(db_error)?);
    let role_ids: Vec<String> = roles
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let mut q = Sql::new();
    q.push(
            "SELECT r.content FROM resources r WHERE r.res_type = 'CareTeam' AND NOT r.deleted \
             AND r.pk IN (SELECT i.resource_pk FROM search_reference i WHERE i.res_type = 'CareTeam' \
             AND i.param = 'participant' AND ((i.target_type = 'Practitioner' AND i.target_id = ",
        )
        .text(practitioner)
        .push(")");
    if !role_ids.is_empty() {
        q.push(" OR (i.target_type = 'PractitionerRole' AND i.target_id IN ")
            .text_list(&role_ids)
            .push(")");
    }
    q.push("))");
    let teams = contents(load(conn, &q).map_err(db_error)?);
    Ok((roles, teams))
}

/// The Tasks owned by an organization (current, non-deleted): what a community
/// organization's token reaches is decided from them (`policy::organization_reach`).
pub fn organization_tasks(conn: &mut DbConn, organization: &str) -> ApiResult<Vec<Value>> {
    let mut q = Sql::new();
    q.push(
        "SELECT r.content FROM resources r WHERE r.res_type = 'Task' AND NOT r.deleted \
             AND r.pk IN (SELECT i.resource_pk FROM search_reference i WHERE i.res_type = 'Task' \
             AND i.param = 'owner' AND i.target_type = 'Organization' AND i.target_id = ",
    )
    .text(organization)
    .push(")");
    Ok(contents(load(conn, &q).map_err(db_error)?))
}

/// The records an organization made itself: current resources (other than Tasks) whose
/// performer, author, asserter, recorder or source is the Organization — such as the
/// Procedure or Observation that records the outcome of a referral. (type, id).
pub fn organization_records(
    conn: &mut DbConn,
    organization: &str,
) -> ApiResult<Vec<(String, String)>> {
    #[derive(QueryableByName)]
    struct Rec {
        #[diesel(sql_type = Text)]
        res_type: String,
        #[diesel(sql_type = Text)]
        res_id: String,
    }
    let mut q = Sql::new();
    q.push(
        "SELECT DISTINCT r.res_type, r.res_id FROM search_reference i JOIN resources r \
             ON r.pk = i.resource_pk WHERE i.target_type = 'Organization' AND i.target_id = ",
    )
    .text(organization)
    .push(
        " AND i.param IN ('performer', 'author', 'asserter', 'recorder', 'source') \
             AND r.res_type <> 'Task' AND NOT r.deleted",
    );
    let rows: Vec<Rec> = load(conn, &q).map_err(db_error)?;
    Ok(rows.into_iter().map(|r| (r.res_type, r.res_id)).collect())
}
