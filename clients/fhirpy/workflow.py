"""A care-coordination workflow driven through fhirpy's synchronous client against a live icm-fhir.

Usage: FHIR_BASE=http://127.0.0.1:8080/fhir [FHIR_TOKEN=<jwt>] python workflow.py
Every result is asserted exactly; the first mismatch exits 1 naming the step.
Run by .ci/clients on SQLite and PostgreSQL.
"""

import os
import sys
import uuid

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, OperationOutcome, ResourceNotFound

BASE = os.environ.get("FHIR_BASE", "http://127.0.0.1:8080/fhir")
TOKEN = os.environ.get("FHIR_TOKEN", "")
TAG = uuid.uuid4().hex[:10]  # keeps this run's data apart from anything else on the server
MRN = "urn:icm-ci:mrn"
TASK_ID = "urn:icm-ci:task"

checks = 0


def fail(step, msg):
    print(f"FAIL [fhirpy] {step}: {msg}", file=sys.stderr)
    sys.exit(1)


def eq(step, got, want):
    global checks
    checks += 1
    if got != want:
        fail(step, f"expected {want!r}, got {got!r}")


def ok(step, cond, msg="condition false"):
    global checks
    checks += 1
    if not cond:
        fail(step, msg)


def raises(step, exc_type, fn):
    global checks
    checks += 1
    try:
        fn()
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001
        fail(step, f"expected {exc_type.__name__}, got {type(e).__name__}: {e}")
    fail(step, f"expected {exc_type.__name__}, the call succeeded")


def issue_codes(exc):
    res = exc.resource if isinstance(exc, OperationOutcome) else None
    return [i.get("code") for i in (res or {}).get("issue", [])]


def main():
    auth = f"Bearer {TOKEN}" if TOKEN else None
    client = SyncFHIRClient(BASE, authorization=auth)

    # -- authentication: without the token every /fhir call is 401 (when the server has auth on)
    if TOKEN:
        anon = SyncFHIRClient(BASE)
        raises("no token → 401", AuthorizationError, lambda: anon.resources("Patient").count())

    # -- create
    family = f"Fhirpy{TAG}"
    patient = client.resource(
        "Patient",
        identifier=[{"system": MRN, "value": TAG}],
        name=[{"family": family, "given": ["Ada"]}],
        gender="female",
        birthDate="1950-03-04",
    )
    patient.save()
    ok("create Patient", bool(patient.id), "no id assigned")
    eq("create Patient versionId", patient.meta.versionId, "1")

    practitioner = client.resource(
        "Practitioner", name=[{"family": f"Carer{TAG}", "given": ["Grace"]}]
    )
    practitioner.save()
    ok("create Practitioner", bool(practitioner.id), "no id assigned")

    careteam = client.resource(
        "CareTeam",
        status="active",
        name=f"Team {TAG}",
        subject=patient.to_reference(),
        participant=[{"member": practitioner.to_reference()}],
    )
    careteam.save()
    eq("create CareTeam status", careteam.status, "active")

    careplan = client.resource(
        "CarePlan",
        status="active",
        intent="plan",
        title=f"Plan {TAG}",
        subject=patient.to_reference(),
        careTeam=[careteam.to_reference()],
    )
    careplan.save()
    eq("create CarePlan status", careplan.status, "active")

    def new_task(name, status):
        t = client.resource(
            "Task",
            identifier=[{"system": TASK_ID, "value": f"{TAG}-{name}"}],
            status=status,
            intent="order",
            description=f"{name} {TAG}",
            basedOn=[careplan.to_reference()],
            **{"for": patient.to_reference()},
            owner=practitioner.to_reference(),
        )
        t.save()
        return t

    call = new_task("call", "requested")
    visit = new_task("visit", "requested")
    draft = new_task("draft", "draft")
    eq("create Task status", [call.status, visit.status, draft.status], ["requested", "requested", "draft"])
    eq("create Task reference to patient", call["for"]["reference"], f"Patient/{patient.id}")

    # -- read back, through the client and through a reference
    got = client.reference("Patient", patient.id).to_resource()
    eq("read Patient id", got.id, patient.id)
    eq("read Patient name", got.name[0].family, family)
    eq("read Patient birthDate", got.birthDate, "1950-03-04")
    got = client.get("Task", call.id)
    eq("read Task owner", got.owner.reference, f"Practitioner/{practitioner.id}")
    eq("read Task basedOn", got.basedOn[0].reference, f"CarePlan/{careplan.id}")
    got = client.reference(reference=f"CareTeam/{careteam.id}").to_resource()
    eq("read CareTeam member", got.participant[0].member.reference, f"Practitioner/{practitioner.id}")
    got = client.get("CarePlan", careplan.id)
    eq("read CarePlan careTeam", got.careTeam[0].reference, f"CareTeam/{careteam.id}")

    # refresh() sends If-None-Match with the bare versionId: 304, the resource is unchanged
    before = dict(patient)
    patient.refresh()
    eq("refresh (304) keeps the resource", dict(patient), before)

    # -- search and count (count() sends _count=0 and must get the real total)
    tasks = client.resources("Task")
    requested = tasks.search(patient=patient.id, status="requested").sort("_id")
    eq("search Task by patient & status", sorted(t.id for t in requested.fetch()), sorted([call.id, visit.id]))
    eq("count Task by patient & status", requested.count(), 2)
    eq("count Task by patient", tasks.search(patient=patient.id).count(), 3)
    eq("count Task by identifier", tasks.search(identifier=f"{TASK_ID}|{TAG}-draft").count(), 1)
    by_name = client.resources("Patient").search(name=family)
    eq("search Patient by name", [p.id for p in by_name.fetch()], [patient.id])
    eq("count Patient by name", by_name.count(), 1)
    eq("count Patient by name prefix, other case", client.resources("Patient").search(name=family.lower()[:-2]).count(), 1)
    eq("search Patient by identifier .get()", client.resources("Patient").search(identifier=f"{MRN}|{TAG}").get().id, patient.id)
    eq("search first()", tasks.search(patient=patient.id, status="draft").first().id, draft.id)
    eq("count nothing", client.resources("Patient").search(name=f"nobody{TAG}").count(), 0)

    # paging: three Tasks, two per page; fetch_all() follows the next links
    paged = tasks.search(patient=patient.id).limit(2)
    eq("page 1 size", len(paged.fetch()), 2)
    eq("fetch_all follows next", sorted(t.id for t in paged.fetch_all()), sorted([call.id, visit.id, draft.id]))

    # _include / _revinclude
    raw = requested.include("Task", "patient").include("Task", "owner").fetch_raw()
    modes = sorted((e.search.mode, e.resource.resourceType, e.resource.id) for e in raw.entry)
    eq(
        "_include Task:patient + Task:owner",
        modes,
        sorted(
            [
                ("match", "Task", call.id),
                ("match", "Task", visit.id),
                ("include", "Patient", patient.id),
                ("include", "Practitioner", practitioner.id),
            ]
        ),
    )
    eq("fetch() with _include returns only Tasks", sorted(t.id for t in requested.include("Task", "patient").fetch()), sorted([call.id, visit.id]))
    raw = client.resources("Patient").search(_id=patient.id).revinclude("Task", "patient").revinclude("CareTeam", "subject").fetch_raw()
    modes = sorted((e.search.mode, e.resource.resourceType, e.resource.id) for e in raw.entry)
    want = [("match", "Patient", patient.id), ("include", "CareTeam", careteam.id)]
    want += [("include", "Task", t.id) for t in (call, visit, draft)]
    eq("_revinclude Task:patient + CareTeam:subject", modes, sorted(want))

    # -- Task lifecycle through update (PUT), as the server's state machine allows
    for i, status in enumerate(["accepted", "in-progress", "on-hold", "in-progress", "completed"], start=2):
        call.status = status
        call.save()
        eq(f"update Task → {status}", call.status, status)
        eq(f"update Task → {status} versionId", call.meta.versionId, str(i))
    ok("executionPeriod.start set on in-progress", bool(call.get("executionPeriod", {}).get("start")))
    ok("executionPeriod.end set on completed", bool(call.get("executionPeriod", {}).get("end")))
    eq("search completed", [t.id for t in tasks.search(patient=patient.id, status="completed").fetch()], [call.id])
    # a terminal Task cannot be re-opened: 409 business-rule, and nothing is written
    call.status = "in-progress"
    err = raises("completed → in-progress refused", OperationOutcome, call.save)
    eq("completed → in-progress issue code", issue_codes(err), ["business-rule"])
    eq("refused update wrote nothing", client.get("Task", call.id).meta.versionId, "6")

    # fhirpy's patch() sends a partial resource as application/json (merge-patch semantics without
    # the merge-patch media type); in R4 application/json PATCH bodies are FHIRPath Patch
    # Parameters, so the server answers 400. Same request with the RFC 7386 media type:
    patched = client._do_request(
        "patch",
        f"Task/{draft.id}",
        data={"status": "requested", "priority": "urgent"},
        extra_headers={"Content-Type": "application/merge-patch+json"},
    )
    eq("merge-patch draft → requested", (patched["status"], patched["priority"], patched["meta"]["versionId"]), ("requested", "urgent", "2"))
    err = raises("fhirpy patch() as application/json", OperationOutcome, lambda: client.patch("Task", draft.id, priority="asap"))
    eq("fhirpy patch() issue code", issue_codes(err), ["invalid"])

    # -- conditional create. fhirpy's get_or_create() puts the criteria in the POST URL
    # (POST Patient?identifier=…), which R4 does not define; the server refuses it (400) rather
    # than make a duplicate. The R4 way is If-None-Exist, sent through _do_request.
    dup = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": TAG}], "name": [{"family": family}]}
    err = raises(
        "get_or_create (criteria in the POST URL) refused",
        OperationOutcome,
        lambda: client.resources("Patient").search(identifier=f"{MRN}|{TAG}").get_or_create(client.resource("Patient", identifier=dup["identifier"], name=dup["name"])),
    )
    eq("get_or_create issue code", issue_codes(err), ["invalid"])
    eq("get_or_create made no duplicate", by_name.count(), 1)
    body, status = client._do_request(
        "post", "Patient", data=dup, extra_headers={"If-None-Exist": f"identifier={MRN}|{TAG}"}, returning_status=True
    )
    eq("conditional create (match) status", status, 200)
    eq("conditional create (match) returns the existing Patient", body["id"], patient.id)
    new_mrn = f"{TAG}-2"
    body, status = client._do_request(
        "post",
        "Patient",
        data={**dup, "identifier": [{"system": MRN, "value": new_mrn}]},
        extra_headers={"If-None-Exist": f"identifier={MRN}|{new_mrn}"},
        returning_status=True,
    )
    eq("conditional create (no match) status", status, 201)
    second_id = body["id"]
    ok("conditional create (no match) new id", second_id != patient.id)
    eq("count Patient by name after conditional creates", by_name.count(), 2)

    # conditional update (PUT Patient?identifier=…) is R4: searchset.update()
    updated, created = client.resources("Patient").search(identifier=f"{MRN}|{new_mrn}").update(
        client.resource("Patient", identifier=[{"system": MRN, "value": new_mrn}], name=[{"family": family}], active=False)
    )
    eq("conditional update (1 match) keeps the id", (updated.id, created), (second_id, False))
    eq("conditional update (1 match) new version", (updated.meta.versionId, updated.active), ("2", False))

    # -- revoking the CarePlan cancels its open Tasks (visit: requested; draft: requested), not the completed one
    careplan.status = "revoked"
    careplan.save()
    eq("CarePlan revoked", careplan.status, "revoked")
    statuses = {t.id: t.status for t in tasks.search(patient=patient.id).fetch_all()}
    eq("revoking the plan cancelled the open Tasks", statuses, {call.id: "completed", visit.id: "cancelled", draft.id: "cancelled"})
    eq("cancelled Task statusReason", client.get("Task", visit.id).statusReason.text, f"CarePlan/{careplan.id} was revoked")

    # -- delete: 204, then read is 410 Gone (fhirpy: ResourceNotFound) and search no longer finds it
    draft.delete()
    raises("read deleted Task", ResourceNotFound, lambda: client.get("Task", draft.id))
    eq("count Task by patient after delete", tasks.search(patient=patient.id).count(), 2)
    # conditional delete through the search set
    _, status = client.resources("Patient").search(identifier=f"{MRN}|{new_mrn}").delete()
    ok("conditional delete status", status in (200, 204), f"status {status}")
    eq("count Patient by name after conditional delete", by_name.count(), 1)
    raises("read conditionally deleted Patient", ResourceNotFound, lambda: client.get("Patient", second_id))

    print(f"fhirpy workflow OK: {checks} checks")


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 — an unexpected client error is a failure too
        print(f"FAIL [fhirpy] unexpected {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
