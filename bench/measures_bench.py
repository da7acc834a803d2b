#!/usr/bin/env python3
"""Benchmark of GET /fhir/$icm-metrics: generate a care-management population with outcomes,
load it with `icm-fhir import`, time the measures.

Usage:
  python3 bench/measures_bench.py ndjson --out DIR --patients 100000
  icm-fhir import DIR --database-url postgres://…/icm_measures
  python3 bench/measures_bench.py run --base http://127.0.0.1:8080/fhir --token TOKEN [--repeat 5]
  python3 bench/measures_bench.py check --base http://127.0.0.1:8080/fhir --token TOKEN

`check` reads every resource the measures use back from the server (plain search) and
recomputes the reports of the `run` queries with tests/measures_check.py (the independent
computation from the resources' JSON); it prints each disagreement and exits 1 if there is one.
It holds the whole population in memory: meant for 10,000 patients, not 100,000.

Dataset per patient p{i} (ids deterministic): Patient; a diabetes Condition (40 %) and a
hypertension Condition (50 %); over 2024-2025 two ambulatory visits, emergency visits (0-3) and
inpatient stays (0-2, some readmitted within 20-40 days, some with a discharge disposition),
each with an active Claim; HbA1c results (diabetics, 2-3) and blood-pressure panels (2-4);
a transition follow-up Task per inpatient discharge (focus the Encounter, due two days later,
mostly completed) and two other Tasks with due dates; two program RiskAssessments; a
patient-experience total Observation (20 %); a Communication (30 %); a referral ServiceRequest;
and, for 80 % of patients, an EpisodeOfCare of the program (care manager cm{i // 50}, started in
2024 or 2025, 10 % finished). About 25 resources per patient. Episodes are written in the last
file, so importing the history triggers none of the program's effects.
Results go to stdout.
"""
import argparse
import json
import os
import random
import statistics
import time
import urllib.request

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
WORKFLOW = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow"


def cc(system, code):
    return {"coding": [{"system": system, "code": code}]}


def day(rnd, lo="2024-01-01", span=700):
    import datetime
    d = datetime.date.fromisoformat(lo) + datetime.timedelta(days=rnd.randrange(span))
    return d.isoformat()


def plus(d, n):
    import datetime
    return (datetime.date.fromisoformat(d) + datetime.timedelta(days=n)).isoformat()


def history(i, rnd):
    p = f"p{i}"
    subj = {"reference": f"Patient/{p}"}
    out = [{"resourceType": "Patient", "id": p, "gender": rnd.choice(["female", "male"]),
            "birthDate": f"{rnd.randint(1935, 1980)}-0{rnd.randint(1, 9)}-1{rnd.randint(0, 9)}"}]
    if rnd.random() < 0.02:
        out[0]["deceasedDateTime"] = day(rnd) + "T12:00:00Z"
    if rnd.random() < 0.4:
        out.append({"resourceType": "Condition", "id": f"dm{i}", "subject": subj,
                    "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
                    "code": cc(SNOMED, "44054006")})
        for k in range(rnd.randint(2, 3)):
            out.append({"resourceType": "Observation", "id": f"a1c{i}-{k}", "status": "final", "subject": subj,
                        "code": cc(LOINC, "4548-4"), "effectiveDateTime": day(rnd) + "T09:00:00Z",
                        "valueQuantity": {"value": round(rnd.uniform(5.5, 11), 1), "unit": "%"}})
    if rnd.random() < 0.5:
        out.append({"resourceType": "Condition", "id": f"htn{i}", "subject": subj,
                    "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
                    "code": cc(SNOMED, "59621000")})
    for k in range(rnd.randint(2, 4)):
        comp = lambda c, v: {"code": cc(LOINC, c), "valueQuantity": {"value": v, "unit": "mm[Hg]"}}
        out.append({"resourceType": "Observation", "id": f"bp{i}-{k}", "status": "final", "subject": subj,
                    "code": cc(LOINC, "85354-9"), "effectiveDateTime": day(rnd) + "T10:00:00Z",
                    "component": [comp("8480-6", rnd.randint(110, 165)), comp("8462-4", rnd.randint(65, 100))]})
    encounters = [("AMB", day(rnd), 0) for _ in range(2)]
    encounters += [("EMER", day(rnd), 0) for _ in range(rnd.choices([0, 1, 2, 3], [5, 3, 1, 1])[0])]
    for _ in range(rnd.choices([0, 1, 2], [7, 2, 1])[0]):
        a = day(rnd, span=650)
        encounters.append(("IMP", a, rnd.randint(1, 7)))
        if rnd.random() < 0.25:
            encounters.append(("IMP", plus(a, rnd.randint(20, 40)), rnd.randint(1, 4)))
    for k, (cls, a, los) in enumerate(encounters):
        eid = f"e{i}-{k}"
        e = {"resourceType": "Encounter", "id": eid, "status": "finished", "class": {"system": ACT, "code": cls},
             "subject": subj, "period": {"start": a + "T08:00:00Z", "end": plus(a, los) + "T16:00:00Z"}}
        if cls == "IMP" and rnd.random() < 0.1:
            e["hospitalization"] = {"dischargeDisposition": cc("http://terminology.hl7.org/CodeSystem/discharge-disposition", rnd.choice(["exp", "aadvice", "home"]))}
        out.append(e)
        if cls != "AMB":
            out.append({"resourceType": "Claim", "id": f"k{i}-{k}", "status": "active",
                        "type": cc("http://terminology.hl7.org/CodeSystem/claim-type", "institutional"),
                        "use": "claim", "patient": subj, "created": a + "T18:00:00Z",
                        "provider": {"reference": "Organization/hospital"},
                        "priority": cc("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
                        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Payer"}}],
                        "total": {"value": round(rnd.uniform(100, 20000), 2), "currency": "USD"}})
        if cls == "IMP":
            end = plus(a, los)
            t = {"resourceType": "Task", "id": f"fu{i}-{k}", "intent": "order", "for": subj,
                 "status": rnd.choices(["completed", "requested", "cancelled"], [7, 2, 1])[0],
                 "code": cc(WORKFLOW, "transition-follow-up"), "focus": {"reference": f"Encounter/{eid}"},
                 "restriction": {"period": {"end": plus(end, 2) + "T16:00:00Z"}}}
            if t["status"] == "completed":
                t["executionPeriod"] = {"end": plus(end, rnd.randint(0, 5)) + "T12:00:00Z"}
            out.append(t)
    for k in range(2):
        due = day(rnd)
        t = {"resourceType": "Task", "id": f"t{i}-{k}", "intent": "order", "for": subj,
             "status": rnd.choice(["completed", "requested", "in-progress"]),
             "code": cc(WORKFLOW, "outreach"), "restriction": {"period": {"end": due + "T17:00:00Z"}}}
        if t["status"] == "completed":
            t["executionPeriod"] = {"end": plus(due, rnd.randint(-3, 4)) + "T12:00:00Z"}
        out.append(t)
    for k in range(2):
        out.append({"resourceType": "RiskAssessment", "id": f"ra{i}-{k}", "status": "final", "subject": subj,
                    "occurrenceDateTime": day(rnd) + "T07:00:00Z",
                    "method": cc("http://icm-fhir.org/fhir/CodeSystem/icm-risk-method", "icm-program-score"),
                    "prediction": [{"qualitativeRisk": cc("http://terminology.hl7.org/CodeSystem/risk-probability",
                                                          rnd.choices(["high", "moderate", "low"], [2, 3, 5])[0])}]})
    if rnd.random() < 0.2:
        out.append({"resourceType": "Observation", "id": f"sat{i}", "status": "final", "subject": subj,
                    "code": cc("http://icm-fhir.org/fhir/CodeSystem/icm-experience", "satisfaction-total"),
                    "effectiveDateTime": day(rnd) + "T15:00:00Z",
                    "valueQuantity": {"value": rnd.randint(5, 25), "unit": "{score}"}})
    if rnd.random() < 0.3:
        out.append({"resourceType": "Communication", "id": f"call{i}", "status": "completed", "subject": subj,
                    "sent": day(rnd) + "T11:00:00Z"})
    out.append({"resourceType": "ServiceRequest", "id": f"ref{i}", "status": "completed", "intent": "order",
                "subject": subj, "authoredOn": day(rnd, "2023-12-01", 600)})
    return out


def episode(i, rnd):
    if rnd.random() >= 0.8:
        return None
    start = day(rnd, "2024-01-01", 640)
    e = {"resourceType": "EpisodeOfCare", "id": f"ep{i}", "status": "active",
         "type": [cc("http://icm-fhir.org/fhir/CodeSystem/icm-program", "chronic-disease")],
         "patient": {"reference": f"Patient/p{i}"}, "period": {"start": start},
         "careManager": {"reference": f"Practitioner/cm{i // 50}"},
         "referralRequest": [{"reference": f"ServiceRequest/ref{i}"}]}
    if rnd.random() < 0.1:
        e["status"] = "finished"
        e["period"]["end"] = plus(start, rnd.randint(30, 300))
    return e


def ndjson(args):
    os.makedirs(args.out, exist_ok=True)
    total = 0
    with open(os.path.join(args.out, "0000-practitioners.ndjson"), "w") as f:
        f.write(json.dumps({"resourceType": "Organization", "id": "hospital", "name": "Hospital"}) + "\n")
        for m in range((args.patients + 49) // 50):
            f.write(json.dumps({"resourceType": "Practitioner", "id": f"cm{m}"}) + "\n")
            total += 1
    per_file = 5000
    for start in range(0, args.patients, per_file):
        with open(os.path.join(args.out, f"{1 + start // per_file:04d}-patients.ndjson"), "w") as f:
            for i in range(start, min(args.patients, start + per_file)):
                for r in history(i, random.Random(i)):
                    f.write(json.dumps(r) + "\n")
                    total += 1
    with open(os.path.join(args.out, "9999-episodes.ndjson"), "w") as f:
        for i in range(args.patients):
            e = episode(i, random.Random(-i - 1))
            if e:
                f.write(json.dumps(e) + "\n")
                total += 1
    print(f"wrote {total} resources for {args.patients} patients to {args.out}")


QUERIES = {
    "one year, every measure": "period-start=2025-01-01&period-end=2025-12-31",
    "one quarter, every measure": "period-start=2025-04-01&period-end=2025-06-30",
    "one care manager": "period-start=2025-01-01&period-end=2025-12-31&care-manager=Practitioner/cm7",
    "one patient": "period-start=2025-01-01&period-end=2025-12-31&subject=Patient/p42",
    "pre/post": "period-start=2024-06-01&period-end=2025-05-31&compare=pre-post",
    "one measure (readmissions)": "period-start=2025-01-01&period-end=2025-12-31&measure=readmission-30d",
}


def check(args):
    import datetime
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import measures_check as mc
    server = mc.Server(args.base, args.token)
    types = ["Patient", "EpisodeOfCare", "Encounter", "Condition", "Observation", "Task", "ServiceRequest",
             "RiskAssessment", "Communication", "Claim", "QuestionnaireResponse"]
    t = time.perf_counter()
    data = mc.Data({ty: server.all(ty) for ty in types})
    print(f"read {sum(len(v) if isinstance(v, list) else 0 for v in vars(data).values())} resources "
          f"in {time.perf_counter() - t:.1f} s")
    today = (datetime.datetime.now(datetime.timezone.utc).date() - datetime.date(1970, 1, 1)).days
    problems = []
    for name, q in QUERIES.items():
        kw = dict(x.split("=", 1) for x in q.split("&"))
        period = (mc.text_day(kw["period-start"]), mc.text_day(kw["period-end"]))
        subject = kw.get("subject", "").removeprefix("Patient/") or None
        measures = [m.strip() for m in kw["measure"].split(",")] if "measure" in kw else None
        if subject and not measures:
            measures = [m for m in mc.MEASURES if m != "caseload-size"]
        want = mc.expected(data, period, manager=kw.get("care-manager"), subject=subject,
                           pre_post=kw.get("compare") == "pre-post", today=today, measures=measures)
        got = mc.reported(server.call("GET", "$icm-metrics?" + q))
        before = len(problems)
        mc.compare(name, want, got, problems)
        print(f"{name:32s} {len(got[0])} groups, {len(problems) - before} disagreements")
    for p in problems:
        print("DISAGREE", p)
    sys.exit(1 if problems else 0)


def run(args):
    for name, q in QUERIES.items():
        times = []
        for _ in range(args.repeat):
            req = urllib.request.Request(f"{args.base}/$icm-metrics?{q}")
            if args.token:
                req.add_header("Authorization", f"Bearer {args.token}")
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=600) as r:
                body = json.loads(r.read())
            times.append(time.perf_counter() - t)
        ips = [e["resource"]["group"][0]["population"][0]["count"] for e in body["entry"]]
        print(f"{name:32s} median {statistics.median(times):7.3f} s  min {min(times):7.3f} s  "
              f"(initial populations of the {len(ips)} reports: {' '.join(map(str, ips))})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("ndjson")
    n.add_argument("--out", required=True)
    n.add_argument("--patients", type=int, default=10000)
    r = sub.add_parser("run")
    r.add_argument("--base", required=True)
    r.add_argument("--token")
    r.add_argument("--repeat", type=int, default=3)
    c = sub.add_parser("check")
    c.add_argument("--base", required=True)
    c.add_argument("--token")
    args = ap.parse_args()
    {"ndjson": ndjson, "run": run, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
