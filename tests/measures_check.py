#!/usr/bin/env python3
"""Independent check of GET /fhir/$icm-metrics.

Generates a Synthea-shaped population (one transaction Bundle per patient: Patient, Conditions,
ambulatory, emergency and inpatient Encounters, HbA1c and blood-pressure Observations, Claims),
loads it, runs the program through its operations (a referral, Patient/$enroll with a care
manager, the enrollment dated back, Patient/$disenroll for some), writes what happens after
enrollment (discharges, whose follow-up Tasks the server creates and the script completes or
cancels; patient-experience surveys; calls), then reads every resource back through plain FHIR
search and recomputes every measure from the resources' JSON with the definitions of the README
("Outcome measures") — no server code, no search index — and compares the counts and scores of
each MeasureReport with the server's, for the whole population, one care manager, single
patients, the pre/post comparison and (with --practitioner-token) a care manager's own token.

  python3 tests/measures_check.py --base http://127.0.0.1:8080/fhir --token ADMIN_TOKEN \
      [--practitioner-token TOKEN --practitioner ID] [--patients 40] [--seed 7] [--no-load]

--synthea DIR loads the transaction Bundles of a Synthea run (`synthea -p 20 -o DIR`, files in
DIR/fhir) instead of the generated ones. Exit status 0 when every report agrees; each
disagreement is printed.
"""
import argparse
import calendar
import datetime
import json
import math
import os
import random
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

DAY = 86_400_000_000
PROGRAM = "http://icm-fhir.org/fhir/CodeSystem/icm-program"
WORKFLOW = "http://icm-fhir.org/fhir/CodeSystem/icm-workflow"
EXPERIENCE = "http://icm-fhir.org/fhir/CodeSystem/icm-experience"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = ["http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"]
DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
RISK_METHOD = "http://icm-fhir.org/fhir/CodeSystem/icm-risk-method"
SATISFACTION = "http://icm-fhir.org/fhir/Questionnaire/icm-satisfaction"
MEASURE = "http://icm-fhir.org/fhir/Measure/"
HERE = os.path.dirname(os.path.abspath(__file__))
CODES = os.path.join(HERE, "..", "fhir-profiles", "icm", "charlson-codes.json")

MEASURES = ["readmission-30d", "ed-visits", "hba1c-control", "bp-control", "transition-follow-up",
            "tasks-on-time", "referral-to-enrollment", "caseload-size", "high-risk-contact",
            "patient-experience", "cost-proxy"]
PRE_POST = ["readmission-30d", "ed-visits", "hba1c-control", "bp-control", "cost-proxy"]

# ---------------------------------------------------------------------------------------------
# FHIR dates, as ranges of microseconds: a date is its whole day (month, year), a time its
# precision; no zone means UTC.

TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?$")


def _epoch_us(y, mo, d, h=0, mi=0, s=0):
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000


def date_range(s):
    if s is None:
        return None
    s = s.strip()
    if re.fullmatch(r"\d{4}", s):
        y = int(s)
        return _epoch_us(y, 1, 1), _epoch_us(y + 1, 1, 1)
    if re.fullmatch(r"\d{4}-\d{2}", s):
        y, m = int(s[:4]), int(s[5:])
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        return _epoch_us(y, m, 1), _epoch_us(ny, nm, 1)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        low = _epoch_us(int(s[:4]), int(s[5:7]), int(s[8:]))
        return low, low + DAY
    m = TIME.match(s)
    if not m:
        return None
    y, mo, d, h, mi, sec, frac, zone = m.groups()
    low = _epoch_us(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0))
    if sec is None:
        step = 60_000_000
    elif frac is None:
        step = 1_000_000
    else:
        digits = min(len(frac), 6)
        low += int(frac[:digits].ljust(6, "0"))
        step = 10 ** (6 - digits)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        low -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * 1_000_000
    return low, low + step


def start_day(s):
    r = date_range(s)
    return None if r is None else r[0] // DAY


def end_day(s):
    r = date_range(s)
    return None if r is None else (r[1] - 1) // DAY


def instant(s):
    r = date_range(s)
    return None if r is None else r[0]


def day_text(d):
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=d)).isoformat()


def text_day(s):
    return (datetime.date.fromisoformat(s) - datetime.date(1970, 1, 1)).days


def business_days_after(d, n):
    while n > 0:
        d += 1
        if (d + 3) % 7 < 5:
            n -= 1
    return d


def local(ref, ty):
    """The id of a relative reference `ty/id` (None otherwise)."""
    if not isinstance(ref, dict):
        return None
    r = ref.get("reference") or ""
    parts = r.split("/")
    if len(parts) in (2, 4) and parts[0] == ty and (len(parts) == 2 or parts[2] == "_history"):
        return parts[1]
    return None


def codings(cc):
    return (cc or {}).get("coding") or []


# ---------------------------------------------------------------------------------------------
# HTTP


class Server:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, ok=(200, 201)):
        url = path if path.startswith("http") else f"{self.base}/{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/fhir+json")
        if data is not None:
            req.add_header("Content-Type", "application/fhir+json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        if status not in ok:
            raise RuntimeError(f"{method} {url}: {status} {text[:500]}")
        return json.loads(text) if text else None

    def all(self, ty):
        out = []
        url = f"{ty}?_count=1000"
        while url:
            b = self.call("GET", url)
            out += [e["resource"] for e in b.get("entry", []) if e.get("search", {}).get("mode") != "outcome"]
            url = next((l["url"] for l in b.get("link", []) if l["relation"] == "next"), None)
        return out


# ---------------------------------------------------------------------------------------------
# The population


def coded(system, code, display=None):
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return {"coding": [c], "text": display or code}


def iso(d, hour=None):
    t = day_text(d)
    return t if hour is None else f"{t}T{hour:02d}:{(d * 7) % 60:02d}:00Z"


class Population:
    def __init__(self, n, seed, today):
        self.rnd = random.Random(seed)
        self.n = n
        self.today = today

    def uid(self):
        return f"urn:uuid:{uuid.UUID(int=self.rnd.getrandbits(128))}"

    def bundle(self, i):
        rnd = self.rnd
        entries = []

        def add(res):
            full = self.uid()
            entries.append({"fullUrl": full, "resource": res,
                            "request": {"method": "POST", "url": res["resourceType"]}})
            return full

        pat = {"resourceType": "Patient", "identifier": [{"system": "urn:icm-check:mrn", "value": f"M{i:05d}"}],
               "name": [{"family": f"Check{i}", "given": ["Synth"]}],
               "gender": rnd.choice(["female", "male"]),
               "birthDate": f"{rnd.randint(1940, 1975)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"}
        u = rnd.random()
        if u < 0.04:
            pat["deceasedDateTime"] = iso(self.today - rnd.randint(10, 700), 12)
        elif u < 0.06:
            pat["deceasedBoolean"] = True
        p = add(pat)
        first = text_day("2022-01-01")
        last = self.today - 45
        diabetic = rnd.random() < 0.45
        hypertensive = rnd.random() < 0.5
        if diabetic:
            sys_code = rnd.choice([(SNOMED, "44054006"), (SNOMED, "73211009"), (ICD10[0], "E11.9"), (ICD10[1], "E119")])
            status = rnd.choices(["active", "resolved", "recurrence"], [8, 1, 1])[0]
            cond = {"resourceType": "Condition",
                    "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical", status),
                    "code": coded(sys_code[0], sys_code[1], "Diabetes"), "subject": {"reference": p},
                    "onsetDateTime": iso(first - rnd.randint(0, 2000), 9)}
            if rnd.random() < 0.05:
                cond["verificationStatus"] = coded("http://terminology.hl7.org/CodeSystem/condition-ver-status", "refuted")
            add(cond)
        if hypertensive:
            sys_code = rnd.choice([(SNOMED, "59621000"), (SNOMED, "38341003"), (ICD10[0], "I10")])
            add({"resourceType": "Condition",
                 "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
                 "code": coded(sys_code[0], sys_code[1], "Hypertension"), "subject": {"reference": p},
                 "onsetDateTime": iso(first - rnd.randint(0, 2000), 9)})
        for enc in self.encounters(first, last):
            e = add(self.encounter(p, *enc))
            if rnd.random() < 0.8:
                self.claim(add, p, enc[1], enc[2] if enc[2] is not None else enc[1])
        d = first + rnd.randint(0, 60)
        while d < last:
            if diabetic or rnd.random() < 0.1:
                add(self.observation(p, "4548-4", d, round(rnd.uniform(5.4, 11.2), 1), "%"))
            if rnd.random() < 0.1 and diabetic:
                add(self.observation(p, "4548-4", d, round(rnd.uniform(5.4, 11.2), 1), "%"))
            if hypertensive or rnd.random() < 0.3:
                when = d + rnd.randint(0, 3)
                if rnd.random() < 0.8:
                    add(self.bp_panel(p, when, rnd.randint(105, 170), rnd.randint(60, 105)))
                else:
                    add(self.observation(p, "8480-6", when, rnd.randint(105, 170), "mm[Hg]"))
                    if rnd.random() < 0.8:
                        add(self.observation(p, "8462-4", when, rnd.randint(60, 105), "mm[Hg]"))
            d += rnd.randint(60, 200)
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    def encounters(self, first, last):
        """(class, start day, end day or None, status, disposition) of a patient's history."""
        rnd = self.rnd
        out = []
        for y in range(first, last, 365):
            out.append(("AMB", y + rnd.randint(0, 300), None, "finished", None))
        for _ in range(rnd.choices([0, 1, 2, 3, 5], [4, 3, 2, 1, 1])[0]):
            out.append(("EMER", rnd.randint(first, last), None, "finished", None))
        for _ in range(rnd.choices([0, 1, 2, 3], [5, 3, 2, 1])[0]):
            a = rnd.randint(first, last - 10)
            b = a + rnd.choice([0, 1, 2, 3, 5, 8])
            disp = rnd.choices([None, "home", "exp", "aadvice", "hosp"], [10, 6, 1, 1, 1])[0]
            out.append(("IMP", a, b, "finished", disp))
            if rnd.random() < 0.5:
                # A readmission near the 30-day edge.
                a2 = b + rnd.choice([0, 5, 29, 30, 31, 32, 45])
                if a2 < last:
                    out.append(("IMP", a2, a2 + rnd.randint(0, 4), "finished", None))
        return out

    def encounter(self, p, cls, a, b, status, disp):
        rnd = self.rnd
        if b is None:
            b = a
        start = iso(a, rnd.randint(0, 22))
        end = iso(b, 23) if b > a else f"{day_text(b)}T23:30:00Z"
        e = {"resourceType": "Encounter", "status": status, "class": {"system": ACT, "code": cls},
             "type": [coded(SNOMED, {"AMB": "185349003", "EMER": "50849002", "IMP": "183452005"}[cls])],
             "subject": {"reference": p}, "period": {"start": start, "end": end}}
        if disp:
            e["hospitalization"] = {"dischargeDisposition": coded(DISPOSITION, disp)}
        return e

    def claim(self, add, p, a, b):
        rnd = self.rnd
        c = {"resourceType": "Claim", "status": rnd.choices(["active", "cancelled"], [19, 1])[0],
             "type": coded("http://terminology.hl7.org/CodeSystem/claim-type", "institutional"),
             "use": "claim", "patient": {"reference": p},
             "billablePeriod": {"start": iso(a, 8), "end": iso(b, 20)}, "created": iso(a, 20),
             "provider": {"reference": "Organization/check-hospital"},
             "priority": coded("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
             "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Synthetic payer"}}]}
        if rnd.random() < 0.95:
            c["total"] = {"value": round(rnd.uniform(50, 9000), 2), "currency": "USD"}
        add(c)

    def observation(self, p, code, d, value, unit):
        return {"resourceType": "Observation", "status": self.rnd.choices(["final", "amended", "preliminary"], [18, 1, 1])[0],
                "category": [coded("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory" if code == "4548-4" else "vital-signs")],
                "code": coded(LOINC, code), "subject": {"reference": p},
                "effectiveDateTime": iso(d, self.rnd.randint(6, 18)),
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}

    def bp_panel(self, p, d, sys_v, dia_v):
        comp = lambda c, v: {"code": coded(LOINC, c), "valueQuantity": {"value": v, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        return {"resourceType": "Observation", "status": "final",
                "category": [coded("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
                "code": coded(LOINC, "85354-9"), "subject": {"reference": p},
                "effectiveDateTime": iso(d, self.rnd.randint(6, 18)),
                "component": [comp("8480-6", sys_v), comp("8462-4", dia_v)]}


def load(server, args, today):
    rnd = random.Random(args.seed + 1)
    server.call("PUT", "Organization/check-hospital",
                {"resourceType": "Organization", "id": "check-hospital", "name": "Check Hospital"})
    managers = ["check-m1", "check-m2", "check-m3"]
    for m in managers:
        server.call("PUT", f"Practitioner/{m}", {"resourceType": "Practitioner", "id": m, "name": [{"family": m}]})
    patients = []
    if args.synthea:
        folder = os.path.join(args.synthea, "fhir")
        for f in sorted(os.listdir(folder)):
            if f.endswith(".json") and not f.startswith(("hospital", "practitioner")):
                b = json.load(open(os.path.join(folder, f)))
                # Synthea names a Patient as ExplanationOfBenefit.insurer, which R4 does not
                # allow (the server refuses it); the measures do not read EOBs.
                b["entry"] = [e for e in b["entry"] if e["resource"]["resourceType"] != "ExplanationOfBenefit"]
                r = server.call("POST", "", b)
                patients.append(r["entry"][0]["response"]["location"].split("/")[1])
    else:
        pop = Population(args.patients, args.seed, today)
        for i in range(args.patients):
            r = server.call("POST", "", pop.bundle(i))
            patients.append(r["entry"][0]["response"]["location"].split("/")[1])
    # The program: referral, enrollment (dated back), disenrollment for some.
    enrolled = []
    for p in patients:
        if rnd.random() < 0.2:
            continue
        start = rnd.randint(text_day("2023-01-01"), today - 60)
        sr = server.call("POST", "ServiceRequest", {
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "category": [coded(WORKFLOW, "icm-referral")], "code": {"text": "Integrated care management"},
            "subject": {"reference": f"Patient/{p}"},
            "authoredOn": iso(start - rnd.choice([0, 3, 10, 40]), 10)})
        manager = rnd.choice(managers)
        params = {"resourceType": "Parameters", "parameter": [
            {"name": "referral", "valueReference": {"reference": f"ServiceRequest/{sr['id']}"}},
            {"name": "careManager", "valueReference": {"reference": f"Practitioner/{manager}"}},
            {"name": "program", "valueCode": rnd.choice(["chronic-disease", "transitions-of-care"])}]}
        b = server.call("POST", f"Patient/{p}/$enroll", params)
        ep = next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "EpisodeOfCare")
        ep["period"]["start"] = iso(start, 9)
        ep = server.call("PUT", f"EpisodeOfCare/{ep['id']}", ep)
        enrolled.append((p, start, ep["id"]))
    for p, start, ep_id in enrolled:
        # After enrollment: a stay (the server creates the follow-up Tasks), surveys, calls.
        if rnd.random() < 0.45:
            a = rnd.randint(start, today - 8)
            b = a + rnd.choice([0, 1, 2, 4])
            enc = server.call("POST", "Encounter", {
                "resourceType": "Encounter", "status": "finished", "class": {"system": ACT, "code": "IMP"},
                "subject": {"reference": f"Patient/{p}"},
                "period": {"start": iso(a, 7), "end": iso(b, rnd.randint(8, 20))}})
            tasks = server.call("GET", f"Task?focus=Encounter/{enc['id']}&code={WORKFLOW}|transition-follow-up")
            for e in tasks.get("entry", []):
                t = e["resource"]
                u = rnd.random()
                if u < 0.65:
                    done = iso(b + rnd.choice([0, 1, 2, 3, 4, 5]), rnd.randint(8, 20))
                    for status in ["accepted", "in-progress", "completed"]:
                        t["status"] = status
                        if status == "in-progress":
                            t["executionPeriod"] = {"start": done}
                        if status == "completed":
                            t["executionPeriod"]["end"] = done
                        t = server.call("PUT", f"Task/{t['id']}", t)
                elif u < 0.8:
                    t["status"] = "cancelled"
                    server.call("PUT", f"Task/{t['id']}", t)
        for _ in range(rnd.choice([0, 0, 1, 2])):
            answers = [rnd.choice(["strongly-disagree", "disagree", "neutral", "agree", "strongly-agree"]) for _ in range(5)]
            server.call("POST", "QuestionnaireResponse", {
                "resourceType": "QuestionnaireResponse", "status": "completed", "questionnaire": SATISFACTION,
                "subject": {"reference": f"Patient/{p}"}, "authored": iso(rnd.randint(start, today), 15),
                "item": [{"linkId": f"satisfaction-{k + 1}", "answer": [{"valueCoding": {"system": EXPERIENCE, "code": a}}]}
                         for k, a in enumerate(answers)]})
        if rnd.random() < 0.5:
            server.call("POST", "Communication", {
                "resourceType": "Communication", "status": rnd.choice(["completed", "completed", "in-progress"]),
                "subject": {"reference": f"Patient/{p}"}, "sent": iso(today - rnd.randint(0, 45), 11)})
    for p, start, ep_id in enrolled:
        if rnd.random() < 0.2:
            server.call("POST", f"Patient/{p}/$disenroll", {"resourceType": "Parameters", "parameter": [
                {"name": "reason", "valueCode": "goals-met"}]})
            ep = server.call("GET", f"EpisodeOfCare/{ep_id}")
            ep["period"]["end"] = iso(rnd.randint(start, today - 1), 17)
            server.call("PUT", f"EpisodeOfCare/{ep_id}", ep)
    return patients, [e[0] for e in enrolled]


# ---------------------------------------------------------------------------------------------
# The measures, from the resources


def chronic_patterns(group):
    data = json.load(open(CODES))
    g = next(x for x in data["chronic"] if x["group"] == group)
    prefixes = []
    for e in g["icd10"]:
        if "-" in e:
            lo, hi = e.split("-")
            prefixes += [f"{lo[0]}{n:02d}" for n in range(int(lo[1:]), int(hi[1:]) + 1)]
        else:
            prefixes.append(e)
            bare = e.replace(".", "")
            if bare != e:
                prefixes.append(bare)
            elif len(e) > 3:
                prefixes.append(e[:3] + "." + e[3:])
    return prefixes, set(g["snomed"])


def condition_patients(conditions, group):
    prefixes, snomed = chronic_patterns(group)
    out = set()
    for c in conditions:
        p = local(c.get("subject"), "Patient")
        if not p:
            continue
        ok = any((x.get("system") in ICD10 and any((x.get("code") or "").startswith(pre) for pre in prefixes))
                 or (x.get("system") == SNOMED and x.get("code") in snomed) for x in codings(c.get("code")))
        clinical = [x.get("code") for x in codings(c.get("clinicalStatus"))]
        active = not clinical or any(k in ("active", "recurrence", "relapse") for k in clinical)
        void = any(x.get("code") in ("refuted", "entered-in-error") for x in codings(c.get("verificationStatus")))
        if ok and active and not void:
            out.add(p)
    return out


class Data:
    """Every resource the measures read, as the caller may see them."""

    def __init__(self, res, visible=None):
        def vis(ty, field):
            items = res[ty]
            if visible is None:
                return items
            return [r for r in items if (r["id"] if ty == "Patient" else local(r.get(field), "Patient")) in visible]

        self.patients = vis("Patient", None)
        self.episodes = vis("EpisodeOfCare", "patient")
        self.encounters = vis("Encounter", "subject")
        self.conditions = vis("Condition", "subject")
        self.observations = vis("Observation", "subject")
        self.tasks = vis("Task", "for")
        self.requests = {r["id"]: r for r in vis("ServiceRequest", "subject")}
        self.risks = vis("RiskAssessment", "subject")
        self.communications = vis("Communication", "subject")
        self.claims = vis("Claim", "patient")
        self.responses = vis("QuestionnaireResponse", "subject")
        self.by_encounter = {e["id"]: e for e in self.encounters}


def episodes_of(data, manager=None, subject=None):
    out = []
    for e in data.episodes:
        if not any(c.get("system") == PROGRAM for t in e.get("type", []) for c in codings(t)):
            continue
        if e.get("status") not in ("active", "onhold", "finished"):
            continue
        p = local(e.get("patient"), "Patient")
        if not p or (subject and p != subject):
            continue
        cm = (e.get("careManager") or {}).get("reference")
        if manager and cm != manager:
            continue
        period = e.get("period") or {}
        start = start_day(period.get("start"))
        end = end_day(period.get("end")) if period.get("end") else None
        referral = None
        for r in e.get("referralRequest", []):
            sr = data.requests.get(local(r, "ServiceRequest"))
            d = start_day(sr.get("authoredOn")) if sr else None
            if d is not None and (referral is None or d < referral):
                referral = d
        out.append({"patient": p, "start": start, "end": end, "manager": cm, "referral": referral})
    return out


INF = 10 ** 12


def spans_of(episodes):
    raw = {}
    for e in episodes:
        if e["start"] is None:
            continue
        end = INF if e["end"] is None else e["end"]
        if end >= e["start"]:
            raw.setdefault(e["patient"], []).append((e["start"], end))
    out = {}
    for p, v in raw.items():
        v.sort()
        merged = []
        for a, b in v:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        out[p] = merged
    return out


def clip(spans, a, b):
    return [(max(s, a), min(e, b)) for s, e in spans if max(s, a) <= min(e, b)]


class Frame:
    def __init__(self, spans, window):
        self.spans, self.window = spans, window

    def has(self, d):
        return d is not None and any(a <= d <= b for a, b in self.spans)

    def days(self):
        return sum(b - a + 1 for a, b in self.spans)

    def days_in(self, a, b):
        return sum(e - s + 1 for s, e in clip(self.spans, a, b))

    def in_window(self, d):
        return self.window[0] <= d <= self.window[1]


def stays_of(data):
    out = []
    for e in data.encounters:
        c = e.get("class") or {}
        if c.get("system") not in (None, ACT) or c.get("code") not in ("IMP", "ACUTE", "NONAC", "EMER"):
            continue
        if e.get("status") not in ("arrived", "triaged", "in-progress", "onleave", "finished"):
            continue
        period = e.get("period") or {}
        if not period.get("start") and not period.get("end"):
            continue
        disp = codings((e.get("hospitalization") or {}).get("dischargeDisposition"))
        out.append({"id": e["id"], "patient": local(e.get("subject"), "Patient"),
                    "emergency": c.get("code") == "EMER", "status": e.get("status"),
                    "admit": start_day(period.get("start")) if period.get("start") else None,
                    "discharge": end_day(period.get("end")) if period.get("end") else None,
                    "excluded": any(x.get("system") in (None, DISPOSITION) and x.get("code") in ("exp", "aadvice", "hosp") for x in disp)})
    return out


def admitted(s):
    return s["status"] in ("in-progress", "onleave", "finished")


def deaths_of(data):
    out = {}
    for p in data.patients:
        if p.get("deceasedBoolean") is True:
            out[p["id"]] = None
        elif "deceasedDateTime" in p:
            out[p["id"]] = start_day(p["deceasedDateTime"])
    return out


def dead_by(deaths, p, d):
    return p in deaths and (deaths[p] is None or deaths[p] <= d)


def counts(ip=0, den=0, ex=0, num=0):
    return [ip, den, ex, num]


def proportion(c):
    d = c[1] - c[2]
    return None if d <= 0 else c[3] / d


def per_month(x, days, scale):
    return None if days <= 0 else x * scale * 30.4375 / days


def task_done(t):
    ep = t.get("executionPeriod") or {}
    if ep.get("end"):
        return end_day(ep["end"])
    return start_day(t.get("lastModified")) if t.get("lastModified") else None


def has_code(cc, system, code):
    return any(x.get("system") == system and x.get("code") == code for x in codings(cc))


def compute(data, frames, spans, period, measures):
    """{(measure, group): (counts, score)} plus caseload strata."""
    out = {}
    stays = stays_of(data)
    deaths = deaths_of(data)
    days_total = sum(f.days() for f in frames.values())
    n_pat = len(frames)
    ed = sum(1 for s in stays if s["emergency"] and (admitted(s) or s["status"] in ("arrived", "triaged"))
             and s["patient"] in frames and frames[s["patient"]].has(s["admit"]))
    strata = {}
    for m in measures:
        if m == "readmission-30d":
            c = counts()
            for s in stays:
                f = frames.get(s["patient"])
                if not f or s["emergency"] or s["status"] != "finished" or not admitted(s):
                    continue
                d = s["discharge"]
                if s["admit"] is None or d is None or not f.has(d):
                    continue
                c[0] += 1
                c[1] += 1
                if s["excluded"]:
                    c[2] += 1
                    continue
                if any(t["patient"] == s["patient"] and not t["emergency"] and admitted(t) and t["id"] != s["id"]
                       and t["admit"] is not None and d <= t["admit"] <= d + 30 for t in stays):
                    c[3] += 1
            out[(m, "readmission-30d")] = (c, proportion(c))
        elif m == "ed-visits":
            c = counts(n_pat, days_total, 0, ed)
            out[(m, "ed-visits")] = (c, per_month(float(ed), days_total, 1000.0))
        elif m == "hba1c-control":
            diabetic = condition_patients(data.conditions, "diabetes")
            latest = {}
            for o in data.observations:
                if not has_code(o.get("code"), LOINC, "4548-4") or o.get("status") not in ("final", "amended", "corrected"):
                    continue
                v = (o.get("valueQuantity") or {}).get("value")
                at = instant(o.get("effectiveDateTime") or (o.get("effectivePeriod") or {}).get("start"))
                p = local(o.get("subject"), "Patient")
                if v is None or at is None or p not in frames or not frames[p].in_window(at // DAY):
                    continue
                if p not in latest or (at, v) > latest[p]:
                    latest[p] = (at, v)
            base = counts()
            ctl = poor = untested = 0
            for p, f in frames.items():
                if p not in diabetic:
                    continue
                base[0] += 1
                base[1] += 1
                if dead_by(deaths, p, f.window[1]):
                    base[2] += 1
                    continue
                if p in latest:
                    ctl += latest[p][1] < 8.0
                    poor += latest[p][1] > 9.0
                else:
                    untested += 1
            for g, n in [("hba1c-control", ctl), ("hba1c-poor-control", poor), ("hba1c-untested", untested)]:
                c = base[:3] + [n]
                out[(m, g)] = (c, proportion(c))
        elif m == "bp-control":
            hyper = condition_patients(data.conditions, "hypertension")
            days = {}
            for o in data.observations:
                if o.get("status") not in ("final", "amended", "corrected"):
                    continue
                p = local(o.get("subject"), "Patient")
                d = start_day(o.get("effectiveDateTime") or (o.get("effectivePeriod") or {}).get("start"))
                if p not in frames or d is None or not frames[p].in_window(d):
                    continue
                parts = [o] + o.get("component", [])
                for part in parts:
                    v = (part.get("valueQuantity") or {}).get("value")
                    if v is None:
                        continue
                    for code, k in (("8480-6", 0), ("8462-4", 1)):
                        if has_code(part.get("code"), LOINC, code):
                            slot = days.setdefault(p, {}).setdefault(d, [None, None])
                            slot[k] = v if slot[k] is None else min(slot[k], v)
            c = counts()
            for p, f in frames.items():
                if p not in hyper:
                    continue
                c[0] += 1
                c[1] += 1
                if dead_by(deaths, p, f.window[1]):
                    c[2] += 1
                    continue
                both = [v for d, v in sorted(days.get(p, {}).items()) if v[0] is not None and v[1] is not None]
                if both and both[-1][0] < 140 and both[-1][1] < 90:
                    c[3] += 1
            out[(m, "bp-control")] = (c, proportion(c))
        elif m in ("transition-follow-up", "tasks-on-time"):
            c = counts()
            for t in data.tasks:
                p = local(t.get("for"), "Patient")
                f = frames.get(p)
                if not f:
                    continue
                if m == "transition-follow-up":
                    if not has_code(t.get("code"), WORKFLOW, "transition-follow-up"):
                        continue
                    enc = data.by_encounter.get(local(t.get("focus"), "Encounter"))
                    end = ((enc or {}).get("period") or {}).get("end")
                    d = end_day(end) if end else None
                    deadline = None if d is None else business_days_after(d, 2)
                else:
                    due = ((t.get("restriction") or {}).get("period") or {}).get("end")
                    d = start_day(due) if due else None
                    deadline = d
                if not f.has(d):
                    continue
                c[0] += 1
                c[1] += 1
                if t.get("status") in ("cancelled", "rejected", "entered-in-error"):
                    c[2] += 1
                elif t.get("status") == "completed" and task_done(t) is not None and task_done(t) <= deadline:
                    c[3] += 1
            out[(m, m)] = (c, proportion(c))
        elif m == "referral-to-enrollment":
            c = counts()
            for e in episodes_now:
                s = e["start"]
                if s is None or not (period[0] <= s <= period[1]) or (e["end"] is not None and e["end"] < s):
                    continue
                c[0] += 1
                c[1] += 1
                if e["referral"] is None or e["referral"] > s:
                    c[2] += 1
                else:
                    c[3] += s - e["referral"]
            out[(m, m)] = (c, proportion(c))
        elif m == "caseload-size":
            by = {}
            for e in episodes_now:
                if e["start"] is None or e["manager"] is None:
                    continue
                if e["start"] <= period[1] and (e["end"] is None or e["end"] >= period[1]):
                    by.setdefault(e["manager"], set()).add(e["patient"])
            n = len(by)
            c = counts(n, n, 0, sum(len(v) for v in by.values()))
            out[(m, m)] = (c, proportion(c))
            strata = {k: len(v) for k, v in by.items()}
        elif m == "high-risk-contact":
            latest = {}
            for r in data.risks:
                if not has_code(r.get("method"), RISK_METHOD, "icm-program-score"):
                    continue
                at = instant(r.get("occurrenceDateTime"))
                if at is None or at // DAY > period[1]:
                    continue
                high = any(x.get("system") in (None, RISK_PROBABILITY) and x.get("code") == "high"
                           for pr in r.get("prediction", []) for x in codings(pr.get("qualitativeRisk")))
                p = local(r.get("subject"), "Patient")
                if p not in latest or (at, high) > latest[p]:
                    latest[p] = (at, high)
            high = [p for p, (_, h) in latest.items() if h and any(a <= period[1] <= b for a, b in spans.get(p, []))]
            lo = period[1] - 29
            contacted = set()
            for e in data.encounters:
                d = start_day((e.get("period") or {}).get("start")) if (e.get("period") or {}).get("start") else None
                if e.get("status") in ("in-progress", "onleave", "finished") and d is not None and lo <= d <= period[1]:
                    contacted.add(local(e.get("subject"), "Patient"))
            for cm in data.communications:
                d = start_day(cm.get("sent")) if cm.get("sent") else None
                if cm.get("status") == "completed" and d is not None and lo <= d <= period[1]:
                    contacted.add(local(cm.get("subject"), "Patient"))
            for t in data.tasks:
                if t.get("status") == "completed" and (has_code(t.get("code"), WORKFLOW, "outreach") or has_code(t.get("code"), WORKFLOW, "transition-follow-up")):
                    d = task_done(t)
                    if d is not None and lo <= d <= period[1]:
                        contacted.add(local(t.get("for"), "Patient"))
            c = counts()
            for p in high:
                c[0] += 1
                c[1] += 1
                if dead_by(deaths, p, period[1]):
                    c[2] += 1
                elif p in contacted:
                    c[3] += 1
            out[(m, m)] = (c, proportion(c))
        elif m == "patient-experience":
            c = counts()
            scores = {}
            for q in [json.load(open(os.path.join(HERE, "..", "fhir-profiles", "icm", "Questionnaire-icm-satisfaction.json")))]:
                for it in q["item"]:
                    for o in it.get("answerOption", []):
                        scores[o["valueCoding"]["code"]] = o["valueCoding"]["extension"][0]["valueDecimal"]
            for r in data.responses:
                if r.get("questionnaire", "").split("|")[0] != SATISFACTION or r.get("status") not in ("completed", "amended"):
                    continue
                vals = {}
                for it in r.get("item", []):
                    for a in it.get("answer", []):
                        code = (a.get("valueCoding") or {}).get("code")
                        if code in scores and it["linkId"] not in vals:
                            vals[it["linkId"]] = scores[code]
                if len(vals) < 5:
                    continue
                p = local(r.get("subject"), "Patient")
                d = start_day(r.get("authored"))
                if p in frames and frames[p].has(d):
                    c[0] += 1
                    c[1] += 1
                    c[3] += int(round(sum(vals.values())))
            out[(m, m)] = (c, proportion(c))
        elif m == "cost-proxy":
            inpatient = 0
            for s in stays:
                f = frames.get(s["patient"])
                if not f or s["emergency"] or not admitted(s) or s["admit"] is None:
                    continue
                a, b = s["admit"], s["discharge"]
                if b is not None:
                    last = b - 1 if b > a else a
                else:
                    last = a if s["status"] == "finished" else INF
                inpatient += f.days_in(a, last)
            n_claims = cents = 0
            for k in data.claims:
                p = local(k.get("patient"), "Patient")
                d = start_day(k.get("created")) if k.get("created") else None
                if k.get("status") == "active" and p in frames and frames[p].has(d):
                    n_claims += 1
                    v = (k.get("total") or {}).get("value")
                    if v is not None:
                        cents += math.floor(float(v) * 100.0 + 0.5)
            base = [n_pat, days_total, 0]
            out[(m, "inpatient-days")] = (base + [inpatient], per_month(float(inpatient), days_total, 1.0))
            out[(m, "cost-ed-visits")] = (base + [ed], per_month(float(ed), days_total, 1.0))
            out[(m, "claim-total")] = (base + [n_claims], per_month(cents / 100.0, days_total, 1.0))
    return out, strata


episodes_now = []


def expected(data, period, manager=None, subject=None, pre_post=False, today=None, measures=None):
    global episodes_now
    episodes_now = episodes_of(data, manager, subject)
    spans = spans_of(episodes_now)
    if not pre_post:
        frames = {}
        for p, s in spans.items():
            c = clip(s, period[0], period[1])
            if c:
                frames[p] = Frame(c, period)
        res, strata = compute(data, frames, spans, period, measures or MEASURES)
        return {("", k[0], k[1]): v for k, v in res.items()}, strata
    first = {}
    for e in episodes_now:
        if e["start"] is not None and (e["end"] is None or e["end"] >= e["start"]):
            first[e["patient"]] = min(first.get(e["patient"], e["start"]), e["start"])
    pre, post = {}, {}
    for p, e in first.items():
        if e < period[0] or e > period[1] or e > today:
            continue
        pre[p] = Frame([(e - 365, e - 1)], (e - 365, e - 1))
        end = min(e + 364, today)
        c = clip(spans.get(p, []), e, end)
        if c:
            post[p] = Frame(c, (e, end))
    out = {}
    for w, frames in (("pre", pre), ("post", post)):
        res, _ = compute(data, frames, spans, period, measures or PRE_POST)
        out.update({(w, k[0], k[1]): v for k, v in res.items()})
    return out, {}


def reported(bundle):
    out, strata = {}, {}
    for e in bundle["entry"]:
        r = e["resource"]
        w = next((x["valueCode"] for x in r.get("extension", []) if x["url"].endswith("measure-window")), "")
        m = r["measure"][len(MEASURE):]
        for g in r["group"]:
            code = g["code"]["coding"][0]["code"]
            c = [p["count"] for p in g["population"]]
            out[(w, m, code)] = (c, (g.get("measureScore") or {}).get("value"))
            for st in (g.get("stratifier") or [{}])[0].get("stratum", []):
                strata[st["value"]["text"]] = st["population"][3]["count"]
    return out, strata


def same_score(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(float(f"{a:.6f}") - float(b)) < 1e-9


def compare(label, want, got, problems):
    want, want_strata = want
    got, got_strata = got
    if set(want) != set(got):
        problems.append(f"{label}: groups differ: expected {sorted(set(want) - set(got))} extra {sorted(set(got) - set(want))}")
    for k in sorted(set(want) & set(got)):
        (wc, ws), (gc, gs) = want[k], got[k]
        if wc != gc or not same_score(ws, gs):
            problems.append(f"{label} {k}: expected {wc} score {ws}, server {gc} score {gs}")
    if want_strata != got_strata:
        problems.append(f"{label} caseload strata: expected {want_strata}, server {got_strata}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--token")
    ap.add_argument("--practitioner-token")
    ap.add_argument("--practitioner", help="the practitioner id of --practitioner-token")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--synthea", help="load DIR/fhir/*.json (Synthea output) instead of generating")
    ap.add_argument("--no-load", action="store_true", help="check what the server holds")
    args = ap.parse_args()
    server = Server(args.base, args.token)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    today_d = (today - datetime.date(1970, 1, 1)).days
    if not args.no_load:
        patients, enrolled = load(server, args, today_d)
        print(f"loaded {len(patients)} patients, {len(enrolled)} enrolled")
    types = ["Patient", "EpisodeOfCare", "Encounter", "Condition", "Observation", "Task", "ServiceRequest",
             "RiskAssessment", "Communication", "Claim", "QuestionnaireResponse", "CareTeam"]
    res = {t: server.all(t) for t in types}
    everyone = Data(res)
    problems = []
    checks = 0

    def check(label, query, data, **kw):
        nonlocal checks
        token = kw.pop("token", None)
        s = Server(args.base, token) if token else server
        got = reported(s.call("GET", "$icm-metrics?" + query))
        compare(label, expected(data, **kw), got, problems)
        checks += 1

    a = (text_day("2024-01-01"), text_day("2024-12-31"))
    b = (today_d - 182, today_d)
    q = lambda p: f"period-start={day_text(p[0])}&period-end={day_text(p[1])}"
    check("2024", q(a), everyone, period=a)
    check("last 6 months", q(b), everyone, period=b)
    check("2023 by month", "period-start=2023-03&period-end=2023-03", everyone,
          period=(text_day("2023-03-01"), text_day("2023-03-31")))
    for m in ["check-m1", "check-m2"]:
        check(f"care manager {m}", q(b) + f"&care-manager=Practitioner/{m}", everyone, period=b,
              manager=f"Practitioner/{m}")
    enrolled_ids = sorted({e["patient"] for e in episodes_of(everyone)})
    for p in random.Random(args.seed).sample(enrolled_ids, min(3, len(enrolled_ids))):
        ms = [m for m in MEASURES if m != "caseload-size"]
        check(f"Patient/{p}", q(a) + f"&subject=Patient/{p}", everyone, period=a, subject=p, measures=ms)
    pp = (text_day("2023-01-01"), text_day("2024-12-31"))
    check("pre/post", q(pp) + "&compare=pre-post", everyone, period=pp, pre_post=True, today=today_d)
    check("pre/post care manager", q(pp) + "&compare=pre-post&care-manager=Practitioner/check-m3", everyone,
          period=pp, pre_post=True, today=today_d, manager="Practitioner/check-m3")
    if args.practitioner_token:
        me = f"Practitioner/{args.practitioner}"
        mine = {local(t.get("subject"), "Patient") for t in res["CareTeam"]
                if t.get("status") == "active" and any((x.get("member") or {}).get("reference") == me for x in t.get("participant", []))}
        own = Data(res, mine)
        check(f"{me}'s token", q(b), own, period=b, token=args.practitioner_token)
        check(f"{me}'s token, pre/post", q(pp) + "&compare=pre-post", own, period=pp, pre_post=True,
              today=today_d, token=args.practitioner_token)
    for p in problems:
        print("DISAGREE", p)
    print(f"{checks} reports checked, {len(problems)} disagreements")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
