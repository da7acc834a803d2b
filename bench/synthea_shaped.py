#!/usr/bin/env python3
"""Write a Synthea-shaped transaction Bundle of N entries to stdout: one Patient's history as
Synthea exports it — the Patient, a few Organizations and Practitioners (POST with ifNoneExist,
as Synthea's hospital and practitioner bundles do), then Encounters, each followed by its
Observations (vital signs and labs with valueQuantity, a few with components), Conditions,
Procedures and a DiagnosticReport, all linked by urn:uuid fullUrls.

Usage: python3 bench/synthea_shaped.py N [seed] > bundle.json
"""
import json
import random
import sys
import uuid

LOINC = [
    ("8302-2", "Body Height", "cm", 150, 190),
    ("29463-7", "Body Weight", "kg", 50, 110),
    ("39156-5", "Body mass index", "kg/m2", 18, 35),
    ("8867-4", "Heart rate", "/min", 55, 100),
    ("9279-1", "Respiratory rate", "/min", 12, 20),
    ("2339-0", "Glucose", "mg/dL", 70, 180),
    ("4548-4", "Hemoglobin A1c", "%", 4.5, 9.5),
    ("2093-3", "Cholesterol", "mg/dL", 150, 260),
    ("38483-4", "Creatinine", "mg/dL", 0.6, 1.4),
]
SNOMED_CONDITIONS = [
    ("44054006", "Diabetes"),
    ("38341003", "Hypertension"),
    ("195662009", "Acute viral pharyngitis"),
    ("10509002", "Acute bronchitis"),
    ("55822004", "Hyperlipidemia"),
]
SNOMED_PROCEDURES = [("430193006", "Medication reconciliation"), ("710824005", "Assessment of health")]
SYNTHEA = "https://github.com/synthetichealth/synthea"


def urn():
    return f"urn:uuid:{uuid.UUID(int=random.getrandbits(128), version=4)}"


def entry(resource, full_url, if_none_exist=None):
    req = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        req["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": req}


def coding(system, code, display):
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def bundle(n, seed=42):
    random.seed(seed)
    entries = []
    patient = urn()
    entries.append(entry({
        "resourceType": "Patient",
        "identifier": [{"system": SYNTHEA, "value": str(uuid.UUID(int=random.getrandbits(128), version=4))}],
        "name": [{"use": "official", "family": "Synthea", "given": ["Shaped"]}],
        "gender": "female", "birthDate": "1950-03-04",
        "address": [{"line": ["1 Main St"], "city": "Boston", "state": "MA", "country": "US"}],
    }, patient))
    orgs, pracs = [], []
    for i in range(3):
        f = urn()
        ident = f"org-{i}"
        entries.append(entry({"resourceType": "Organization", "identifier": [{"system": SYNTHEA, "value": ident}],
                              "name": f"Clinic {i}", "active": True}, f, f"identifier={SYNTHEA}|{ident}"))
        orgs.append(f)
    for i in range(3):
        f = urn()
        ident = f"prac-{i}"
        entries.append(entry({"resourceType": "Practitioner", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": ident}],
                              "name": [{"family": f"Doctor{i}", "prefix": ["Dr."]}]}, f,
                             f"identifier=http://hl7.org/fhir/sid/us-npi|{ident}"))
        pracs.append(f)
    year = 1970
    while len(entries) < n:
        enc = urn()
        start = f"{year + len(entries) // 400:04d}-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}T09:00:00+00:00"
        entries.append(entry({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "type": [coding("http://snomed.info/sct", "185349003", "Encounter for check up")],
            "subject": {"reference": patient},
            "participant": [{"individual": {"reference": random.choice(pracs)}}],
            "period": {"start": start, "end": start},
            "serviceProvider": {"reference": random.choice(orgs)},
        }, enc))
        obs = []
        for code, display, unit, lo, hi in random.sample(LOINC, k=min(len(LOINC), random.randint(5, 9))):
            if len(entries) >= n:
                break
            o = urn()
            obs.append(o)
            entries.append(entry({
                "resourceType": "Observation", "status": "final",
                "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "vital signs")],
                "code": coding("http://loinc.org", code, display),
                "subject": {"reference": patient}, "encounter": {"reference": enc},
                "effectiveDateTime": start, "issued": start.replace("+00:00", ".000+00:00"),
                "valueQuantity": {"value": round(random.uniform(lo, hi), 1), "unit": unit,
                                  "system": "http://unitsofmeasure.org", "code": unit},
            }, o))
        if len(entries) < n:
            entries.append(entry({
                "resourceType": "Observation", "status": "final",
                "code": coding("http://loinc.org", "85354-9", "Blood pressure panel"),
                "subject": {"reference": patient}, "encounter": {"reference": enc}, "effectiveDateTime": start,
                "component": [
                    {"code": coding("http://loinc.org", "8480-6", "Systolic Blood Pressure"),
                     "valueQuantity": {"value": random.randint(100, 160), "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                    {"code": coding("http://loinc.org", "8462-4", "Diastolic Blood Pressure"),
                     "valueQuantity": {"value": random.randint(60, 100), "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                ]}, urn()))
        if len(entries) < n and random.random() < 0.5:
            code, display = random.choice(SNOMED_CONDITIONS)
            entries.append(entry({
                "resourceType": "Condition",
                "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
                "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
                "code": coding("http://snomed.info/sct", code, display),
                "subject": {"reference": patient}, "encounter": {"reference": enc},
                "onsetDateTime": start, "recordedDate": start,
            }, urn()))
        if len(entries) < n and random.random() < 0.5:
            code, display = random.choice(SNOMED_PROCEDURES)
            entries.append(entry({
                "resourceType": "Procedure", "status": "completed",
                "code": coding("http://snomed.info/sct", code, display),
                "subject": {"reference": patient}, "encounter": {"reference": enc},
                "performedPeriod": {"start": start, "end": start},
            }, urn()))
        if len(entries) < n and obs:
            entries.append(entry({
                "resourceType": "DiagnosticReport", "status": "final",
                "code": coding("http://loinc.org", "51990-0", "Basic metabolic panel"),
                "subject": {"reference": patient}, "encounter": {"reference": enc},
                "effectiveDateTime": start, "issued": start.replace("+00:00", ".000+00:00"),
                "result": [{"reference": o} for o in obs[:4]],
            }, urn()))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries[:n]}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 42
    json.dump(bundle(n, seed), sys.stdout, separators=(",", ":"))
