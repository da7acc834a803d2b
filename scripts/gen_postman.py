#!/usr/bin/env python3
"""Generate the Postman collection and environment in openapi/ from the workflow list below.

Usage: python3 scripts/gen_postman.py
Each request has tests (status, key fields) and chains variables from earlier responses, so the
collection runs top to bottom against a fresh server: `newman run openapi/icm-fhir.postman_collection.json
-e openapi/icm-fhir.postman_environment.json`.
"""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "openapi")
FHIR = "application/fhir+json"


def req(name, method, path, body=None, tests=(), headers=None, prerequest=None):
    """A Postman request item. `path` is relative to {{base}}; `tests` are JS lines."""
    h = [] if "Accept" in (headers or {}) else [{"key": "Accept", "value": FHIR}]
    if body is not None:
        h.append({"key": "Content-Type", "value": FHIR})
    for k, v in (headers or {}).items():
        h.append({"key": k, "value": v})
    item = {
        "name": name,
        "request": {
            "method": method,
            "header": h,
            "url": {"raw": "{{base}}/" + path, "host": ["{{base}}"], "path": path.split("?")[0].split("/")},
        },
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": list(tests)}}],
    }
    if "?" in path:
        q = path.split("?", 1)[1]
        item["request"]["url"]["query"] = [
            {"key": kv.split("=", 1)[0], "value": kv.split("=", 1)[1] if "=" in kv else ""} for kv in q.split("&")
        ]
    if body is not None:
        item["request"]["body"] = {"mode": "raw", "raw": json.dumps(body, indent=2)}
    if prerequest:
        item["event"].append({"listen": "prerequest", "script": {"type": "text/javascript", "exec": list(prerequest)}})
    return item


def status(code):
    return f'pm.test("status {code}", function () {{ pm.response.to.have.status({code}); }});'


def field(expr, value):
    return f'pm.test("{expr} = {value}", function () {{ pm.expect(pm.response.json().{expr}).to.eql({json.dumps(value)}); }});'


def save(var, expr="id"):
    return f'pm.environment.set("{var}", pm.response.json().{expr});'


def outcome(code):
    return (f'pm.test("OperationOutcome {code}", function () {{ var b = pm.response.json(); '
            f'pm.expect(b.resourceType).to.eql("OperationOutcome"); '
            f'pm.expect(b.issue.map(function (i) {{ return i.code; }})).to.include("{code}"); }});')


def folders():
    intake = [
        req("Create care manager (Practitioner)", "POST", "Practitioner",
            {"resourceType": "Practitioner", "name": [{"family": "Rivera", "given": ["Ana"], "prefix": ["RN"]}]},
            [status(201), field("resourceType", "Practitioner"), save("practitionerId")]),
        req("Create organization", "POST", "Organization",
            {"resourceType": "Organization", "name": "Riverside Integrated Care"},
            [status(201), save("organizationId")]),
        req("Create patient", "POST", "Patient",
            {"resourceType": "Patient", "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-20931"}],
             "name": [{"family": "Okafor", "given": ["Grace"]}], "gender": "female", "birthDate": "1956-07-14",
             "managingOrganization": {"reference": "Organization/{{organizationId}}"}},
            [status(201), field("meta.versionId", "1"),
             'pm.test("Location header", function () { pm.expect(pm.response.headers.get("Location")).to.include("/Patient/"); });',
             save("patientId")]),
        req("Read patient", "GET", "Patient/{{patientId}}", None,
            [status(200), field("name[0].family", "Okafor"),
             'pm.test("ETag", function () { pm.expect(pm.response.headers.get("ETag")).to.eql("W/\\"1\\""); });']),
        req("Record a condition", "POST", "Condition",
            {"resourceType": "Condition", "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]},
             "subject": {"reference": "Patient/{{patientId}}"}},
            [status(201), save("conditionId")]),
    ]
    team = [
        req("Form the care team", "POST", "CareTeam",
            {"resourceType": "CareTeam", "status": "active", "name": "Okafor care team",
             "subject": {"reference": "Patient/{{patientId}}"},
             "participant": [{"role": [{"coding": [{"system": "http://snomed.info/sct", "code": "768730001", "display": "Care manager"}]}],
                              "member": {"reference": "Practitioner/{{practitionerId}}"}}]},
            [status(201), field("status", "active"), save("careTeamId")]),
        req("Read the care team", "GET", "CareTeam/{{careTeamId}}", None,
            [status(200),
             'pm.test("coordinator is the care manager", function () { pm.expect(pm.response.json().participant[0].member.reference).to.eql("Practitioner/" + pm.environment.get("practitionerId")); });']),
    ]
    plan = [
        req("Set an A1C goal", "POST", "Goal",
            {"resourceType": "Goal", "lifecycleStatus": "active",
             "description": {"text": "HbA1c below 7%"}, "subject": {"reference": "Patient/{{patientId}}"}},
            [status(201), save("goalId")]),
        req("Write the care plan", "POST", "CarePlan",
            {"resourceType": "CarePlan", "status": "active", "intent": "plan", "title": "Diabetes care plan",
             "subject": {"reference": "Patient/{{patientId}}"}, "period": {"start": "2026-11-01"},
             "careTeam": [{"reference": "CareTeam/{{careTeamId}}"}], "goal": [{"reference": "Goal/{{goalId}}"}],
             "addresses": [{"reference": "Condition/{{conditionId}}"}]},
            [status(201), field("status", "active"), save("carePlanId")]),
        req("Care plan history", "GET", "CarePlan/{{carePlanId}}/_history", None,
            [status(200), field("type", "history"), field("total", 1)]),
    ]
    tasks = [
        req("Assign a follow-up call", "POST", "Task",
            {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "urgent",
             "description": "Call patient about glucose log",
             "for": {"reference": "Patient/{{patientId}}"}, "basedOn": [{"reference": "CarePlan/{{carePlanId}}"}],
             "owner": {"reference": "Practitioner/{{practitionerId}}"},
             "restriction": {"period": {"end": "2026-12-01"}}},
            [status(201), field("status", "requested"), save("taskId"), save("taskVersion", "meta.versionId")]),
        req("Accept the task", "PUT", "Task/{{taskId}}",
            {"resourceType": "Task", "id": "{{taskId}}", "status": "accepted", "intent": "order", "priority": "urgent",
             "description": "Call patient about glucose log",
             "for": {"reference": "Patient/{{patientId}}"}, "basedOn": [{"reference": "CarePlan/{{carePlanId}}"}],
             "owner": {"reference": "Practitioner/{{practitionerId}}"},
             "restriction": {"period": {"end": "2026-12-01"}}},
            [status(200), field("status", "accepted"), field("meta.versionId", "2")],
            headers={"If-Match": 'W/"{{taskVersion}}"'}),
        req("Start the task", "PUT", "Task/{{taskId}}",
            {"resourceType": "Task", "id": "{{taskId}}", "status": "in-progress", "intent": "order", "priority": "urgent",
             "description": "Call patient about glucose log",
             "for": {"reference": "Patient/{{patientId}}"}, "basedOn": [{"reference": "CarePlan/{{carePlanId}}"}],
             "owner": {"reference": "Practitioner/{{practitionerId}}"},
             "restriction": {"period": {"end": "2026-12-01"}}},
            [status(200), field("status", "in-progress")]),
        req("Complete the task", "PUT", "Task/{{taskId}}",
            {"resourceType": "Task", "id": "{{taskId}}", "status": "completed", "intent": "order", "priority": "urgent",
             "description": "Call patient about glucose log",
             "for": {"reference": "Patient/{{patientId}}"}, "basedOn": [{"reference": "CarePlan/{{carePlanId}}"}],
             "owner": {"reference": "Practitioner/{{practitionerId}}"},
             "restriction": {"period": {"end": "2026-12-01"}}},
            [status(200), field("status", "completed"), field("meta.versionId", "4")]),
        req("Task version 1 is still readable", "GET", "Task/{{taskId}}/_history/1", None,
            [status(200), field("status", "requested")]),
    ]
    worklist = [
        req("Assign a medication review", "POST", "Task",
            {"resourceType": "Task", "status": "requested", "intent": "order", "priority": "asap",
             "description": "Pharmacist medication reconciliation",
             "for": {"reference": "Patient/{{patientId}}"}, "basedOn": [{"reference": "CarePlan/{{carePlanId}}"}],
             "owner": {"reference": "Practitioner/{{practitionerId}}"},
             "restriction": {"period": {"end": "2026-12-15"}}},
            [status(201), save("reviewTaskId")]),
        req("Open tasks of the care manager (search)", "GET",
            "Task?owner=Practitioner/{{practitionerId}}&status=requested,in-progress&_sort=period", None,
            [status(200), field("type", "searchset"),
             'pm.test("the review task is listed", function () { var ids = (pm.response.json().entry || []).map(function (e) { return e.resource.id; }); pm.expect(ids).to.include(pm.environment.get("reviewTaskId")); });']),
        req("Care manager worklist", "GET", "Practitioner/{{practitionerId}}/$worklist", None,
            [status(200), field("resourceType", "Bundle"),
             'pm.test("open task on the worklist, completed one not", function () { var ids = (pm.response.json().entry || []).map(function (e) { return e.resource.id; }); pm.expect(ids).to.include(pm.environment.get("reviewTaskId")); pm.expect(ids).to.not.include(pm.environment.get("taskId")); });']),
        req("Care manager caseload", "GET", "Practitioner/{{practitionerId}}/$caseload", None,
            [status(200),
             'pm.test("the patient is on the caseload", function () { pm.expect(JSON.stringify(pm.response.json())).to.include("Patient/" + pm.environment.get("patientId")); });']),
        req("Patient $everything", "GET", "Patient/{{patientId}}/$everything", None,
            [status(200), field("type", "searchset"),
             'pm.test("care plan included", function () { var ids = (pm.response.json().entry || []).map(function (e) { return e.resource.resourceType + "/" + e.resource.id; }); pm.expect(ids).to.include("CarePlan/" + pm.environment.get("carePlanId")); });']),
    ]
    wf = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow"
    program = [
        req("Referral to the program", "POST", "ServiceRequest",
            {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
             "category": [{"coding": [{"system": wf, "code": "icm-referral"}]}],
             "code": {"text": "Integrated care management"},
             "subject": {"reference": "Patient/{{patientId}}"}},
            [status(201), save("referralId")]),
        req("Enroll the patient ($enroll)", "POST", "Patient/{{patientId}}/$enroll",
            {"resourceType": "Parameters", "parameter": [
                {"name": "referral", "valueReference": {"reference": "ServiceRequest/{{referralId}}"}},
                {"name": "careManager", "valueReference": {"reference": "Practitioner/{{practitionerId}}"}},
                {"name": "program", "valueCode": "chronic-disease"}]},
            [status(200), field("type", "transaction-response"),
             'pm.test("episode, team, plan, tasks and risk", function () { var t = pm.response.json().entry.map(function (e) { return e.resource.resourceType; }); ["EpisodeOfCare", "CareTeam", "CarePlan", "Task", "RiskAssessment"].forEach(function (x) { pm.expect(t).to.include(x); }); var ep = pm.response.json().entry.filter(function (e) { return e.resource.resourceType === "EpisodeOfCare"; })[0]; pm.environment.set("episodeId", ep.resource.id); });']),
        req("Enrolling twice is refused", "POST", "Patient/{{patientId}}/$enroll",
            {"resourceType": "Parameters", "parameter": [
                {"name": "referral", "valueReference": {"reference": "ServiceRequest/{{referralId}}"}},
                {"name": "careManager", "valueReference": {"reference": "Practitioner/{{practitionerId}}"}}]},
            [status(409)]),
        req("PHQ-9 assessment (scored on write)", "POST", "QuestionnaireResponse",
            {"resourceType": "QuestionnaireResponse", "status": "completed",
             "questionnaire": "http://icm-fhir.org/fhir/Questionnaire/icm-phq9",
             "subject": {"reference": "Patient/{{patientId}}"},
             "item": [{"linkId": f"phq9-{i}", "answer": [{"valueCoding": {"system": "http://loinc.org", "code": c}}]}
                      for i, c in enumerate(["LA6569-3", "LA6570-1", "LA6568-5", "LA6571-9", "LA6569-3",
                                             "LA6568-5", "LA6570-1", "LA6569-3", "LA6568-5"], start=1)]},
            [status(201), save("phq9Id")]),
        req("PHQ-9 total is an Observation", "GET",
            "Observation?derived-from=QuestionnaireResponse/{{phq9Id}}&code=http://loinc.org|44261-6", None,
            [status(200), field("total", 1), field("entry[0].resource.valueInteger", 10)]),
        req("Stratify ($stratify)", "POST", "Patient/{{patientId}}/$stratify", None,
            [status(200), field("resourceType", "RiskAssessment"), field("status", "final")]),
        req("Discharge after an admission", "POST", "Encounter",
            {"resourceType": "Encounter", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
             "subject": {"reference": "Patient/{{patientId}}"},
             "period": {"start": "2026-11-20T10:00:00Z", "end": "2026-11-25T09:00:00Z"}},
            [status(201), save("encounterId")]),
        req("Follow-up Tasks of the discharge", "GET", "Task?focus=Encounter/{{encounterId}}", None,
            [status(200), field("total", 3)]),
        req("Disenroll ($disenroll)", "POST", "Patient/{{patientId}}/$disenroll",
            {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueCode": "goals-met"}]},
            [status(200)]),
        req("The episode is finished", "GET", "EpisodeOfCare/{{episodeId}}", None,
            [status(200), field("status", "finished")]),
        req("The program cohort Group", "GET", "Group/icm-cohort-chronic-disease", None,
            [status(200), field("type", "person"), field("actual", True)]),
        req("Bulk export of the cohort (Group $export)", "GET", "Group/icm-cohort-chronic-disease/$export", None,
            [status(202), "pm.test('Content-Location', () => pm.expect(pm.response.headers.get('Content-Location')).to.include('$export-status'));"],
            headers={"Prefer": "respond-async"}),
    ]
    errors = [
        req("Unknown resource type", "GET", "NotAType/1", None, [status(404), outcome("not-found")]),
        req("Unknown id", "GET", "Patient/does-not-exist", None, [status(404), outcome("not-found")]),
        req("Malformed JSON", "POST", "Patient", None, [status(400), outcome("structure")],
            headers={"Content-Type": FHIR}, prerequest=[]),
        req("Type mismatch", "POST", "Patient", {"resourceType": "Task", "status": "draft", "intent": "order"},
            [status(400), outcome("invalid")]),
        req("Stale If-Match", "PUT", "Patient/{{patientId}}",
            {"resourceType": "Patient", "id": "{{patientId}}", "gender": "female"},
            [status(412)], headers={"If-Match": 'W/"99"'}),
        req("$export without Prefer: respond-async", "GET", "$export", None, [status(400), outcome("invalid")]),
        req("XML is not supported", "GET", "Patient/{{patientId}}", None, [status(406), outcome("not-supported")],
            headers={"Accept": "application/fhir+xml"}),
    ]
    no_token = req("Missing bearer token", "GET", "Patient/{{patientId}}", None,
                   [status(401), outcome("login")])
    no_token["request"]["auth"] = {"type": "noauth"}
    errors.append(no_token)
    # The malformed-JSON request carries a raw, broken body.
    errors[2]["request"]["body"] = {"mode": "raw", "raw": "{\"resourceType\": \"Patient\", \"name\": ["}
    return [
        ("1. Patient intake", intake),
        ("2. Forming the care team", team),
        ("3. Care plan with goals", plan),
        ("4. Assigning and completing tasks", tasks),
        ("5. Worklist, caseload and the patient record", worklist),
        ("6. The ICM program: enrollment, assessment, risk, transitions", program),
        ("9. Error cases", errors),
    ]


def main():
    items = [{"name": n, "item": reqs} for n, reqs in folders()]
    collection = {
        "info": {
            "name": "icm-fhir workflows",
            "description": "Integrated Care Management workflows against icm-fhir. Run top to bottom; variables chain from earlier responses.",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{token}}", "type": "string"}]},
        "item": items,
    }
    env = {
        "name": "icm-fhir local",
        "values": [
            {"key": "base", "value": "http://127.0.0.1:8080/fhir", "enabled": True},
            {"key": "token", "value": "", "enabled": True},
        ],
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "icm-fhir.postman_collection.json"), "w", encoding="utf-8") as f:
        json.dump(collection, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "icm-fhir.postman_environment.json"), "w", encoding="utf-8") as f:
        json.dump(env, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
