#!/usr/bin/env python3
"""Search benchmark: generate a care-management dataset, load it, drive typical searches with wrk.

Usage:
  python3 bench/search_bench.py load  --base http://127.0.0.1:8080/fhir --patients 10000 [--workers 16]
  python3 bench/search_bench.py ndjson --out DIR --patients 100000   (then: icm-fhir import DIR)
  python3 bench/search_bench.py run   --base http://127.0.0.1:8080/fhir --patients 10000 [--duration 20] [--connections 8]

Dataset per patient (ids are deterministic so the searches below know what to ask for):
  Patient p{i}; CareTeam ct{i} (subject p{i}, members: 2 of the practitioners);
  Condition c{i}a, c{i}b; Goal g{i} (addresses the conditions); CarePlan cp{i} (subject, careTeam,
  goal, addresses); 5–20 Tasks t{i}-{k} in mixed states (for p{i}, basedOn cp{i}, owner one of
  the practitioners, priority, authoredOn, executionPeriod). One Practitioner per 50 patients.
About 15 resources per patient (1.5 M for 100,000 patients).

Units are numbered practitioners first (one per 50 patients), then patients; --skip/--until
resume or grow a load (e.g. from 10,000 to 30,000 patients: `--patients 30000 --skip 200 --until 600`,
then `--patients 30000 --skip 10600`).
`ndjson` writes the same dataset as NDJSON files (practitioners.ndjson, then one file per 5,000
patients) for `icm-fhir import`, which goes through the same write path without HTTP: the way
to load 100,000 patients.
Loading uses parallel PUTs over keep-alive connections (the same write path as any client, so
index rows are written exactly as in production). `run` needs wrk (apt-get install wrk).
Results go to stdout and bench/out/.
"""
import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse

STATES = ["requested", "accepted", "in-progress", "on-hold", "completed", "cancelled", "ready", "received"]
WEIGHTS = [25, 10, 25, 5, 25, 5, 3, 2]
FAMILIES = ["Nguyen", "Müller", "García", "Smith", "Kowalski", "Dubois", "Rossi", "Öztürk", "Johansson",
            "Novák", "Silva", "Jones", "Brown", "Lefèvre", "Horvath", "Papadopoulos", "Ivanova", "Kim"]
GIVEN = ["Zoë", "Lan", "José", "Anna", "Björn", "Chloé", "Ahmed", "Maria", "Jan", "Li", "Sofia", "Noah"]
SNOMED = [("44054006", "Diabetes mellitus type 2"), ("38341003", "Hypertension"), ("13645005", "COPD"),
          ("84114007", "Heart failure"), ("35489007", "Depressive disorder"), ("709044004", "Chronic kidney disease")]
TASK_CODES = ["fulfill", "approve", "abort", "replace", "change", "suspend", "resume"]


def practitioners(n_patients):
    return max(1, n_patients // 50)


def patient_resources(i, n_prac, rnd):
    p = f"p{i}"
    res = []
    birth = f"{rnd.randint(1930, 2005)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
    res.append({"resourceType": "Patient", "id": p,
                "identifier": [{"system": "urn:icm:mrn", "value": f"MRN{i:07d}"}],
                "name": [{"family": rnd.choice(FAMILIES), "given": [rnd.choice(GIVEN)]}],
                "gender": rnd.choice(["female", "male"]), "birthDate": birth,
                "address": [{"city": rnd.choice(["Genève", "Lyon", "Berlin", "Porto", "Oslo", "Kraków"])}],
                "generalPractitioner": [{"reference": f"Practitioner/dr{rnd.randrange(n_prac)}"}]})
    members = rnd.sample(range(n_prac), min(2, n_prac))
    res.append({"resourceType": "CareTeam", "id": f"ct{i}", "status": "active",
                "subject": {"reference": f"Patient/{p}"},
                "participant": [{"member": {"reference": f"Practitioner/dr{m}"}} for m in members]})
    conds = []
    for suffix in "ab":
        code, disp = rnd.choice(SNOMED)
        cid = f"c{i}{suffix}"
        conds.append(cid)
        res.append({"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{p}"},
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": disp}], "text": disp}})
    res.append({"resourceType": "Goal", "id": f"g{i}", "lifecycleStatus": "active",
                "description": {"text": "Stabilise condition"}, "subject": {"reference": f"Patient/{p}"},
                "addresses": [{"reference": f"Condition/{c}"} for c in conds]})
    start = f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
    res.append({"resourceType": "CarePlan", "id": f"cp{i}", "status": rnd.choice(["active"] * 4 + ["completed"]),
                "intent": "plan", "subject": {"reference": f"Patient/{p}"},
                "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "734163000", "display": "Care plan"}]}],
                "period": {"start": start}, "careTeam": [{"reference": f"CareTeam/ct{i}"}],
                "goal": [{"reference": f"Goal/g{i}"}], "addresses": [{"reference": f"Condition/{c}"} for c in conds]})
    for k in range(rnd.randint(5, 20)):
        day = rnd.randint(1, 28)
        month = rnd.randint(1, 12)
        res.append({"resourceType": "Task", "id": f"t{i}-{k}", "status": rnd.choices(STATES, WEIGHTS)[0],
                    "intent": "order", "priority": rnd.choice(["routine", "urgent", "asap", "stat"]),
                    "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": rnd.choice(TASK_CODES)}]},
                    "for": {"reference": f"Patient/{p}"}, "basedOn": [{"reference": f"CarePlan/cp{i}"}],
                    "owner": {"reference": f"Practitioner/dr{rnd.choice(members)}"},
                    "authoredOn": f"2026-{month:02d}-{day:02d}T{rnd.randint(0, 23):02d}:00:00Z",
                    "executionPeriod": {"start": f"2026-{month:02d}-{day:02d}",
                                        "end": f"2026-{min(12, month + 1):02d}-{day:02d}"}})
    return res


def load(args):
    base = urllib.parse.urlparse(args.base)
    n_prac = practitioners(args.patients)
    lock = threading.Lock()
    state = {"next": args.skip, "done": 0, "errors": 0}
    t0 = time.time()

    def put(conn, r):
        body = json.dumps(r).encode()
        for attempt in range(3):
            try:
                conn.request("PUT", f"{base.path}/{r['resourceType']}/{r['id']}", body,
                             {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
                resp = conn.getresponse()
                resp.read()
                if resp.status in (200, 201):
                    return conn, True
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
        return conn, False

    def worker(wid):
        conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= min(args.patients + n_prac, args.until or 1 << 62):
                break
            if i < n_prac:
                items = [{"resourceType": "Practitioner", "id": f"dr{i}", "name": [{"family": f"Doc{i}"}]}]
            else:
                pi = i - n_prac
                items = patient_resources(pi, n_prac, random.Random(pi))
            ok = 0
            for r in items:
                conn, good = put(conn, r)
                ok += good
            with lock:
                state["done"] += ok
                state["errors"] += len(items) - ok
                if i % 1000 == 0:
                    el = time.time() - t0
                    print(f"  {i} units, {state['done']} resources, {state['done'] / el:.0f}/s", flush=True)
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    el = time.time() - t0
    print(f"loaded {state['done']} resources ({state['errors']} errors) in {el:.0f} s: {state['done'] / el:.0f}/s")


def ndjson(args):
    os.makedirs(args.out, exist_ok=True)
    n_prac = practitioners(args.patients)
    with open(os.path.join(args.out, "practitioners.ndjson"), "w") as f:
        for i in range(n_prac):
            f.write(json.dumps({"resourceType": "Practitioner", "id": f"dr{i}", "name": [{"family": f"Doc{i}"}]}) + "\n")
    total = n_prac
    per_file = 1000  # files load in parallel (one writer per file; see README "Bulk import")
    for start in range(0, args.patients, per_file):
        with open(os.path.join(args.out, f"patients-{start // per_file:04d}.ndjson"), "w") as f:
            for pi in range(start, min(args.patients, start + per_file)):
                for r in patient_resources(pi, n_prac, random.Random(pi)):
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
                    total += 1
    print(f"wrote {total} resources for {args.patients} patients to {args.out}")


WRK_LUA = """
local paths = {}
local n = 0
init = function(args)
  for line in io.lines(args[1]) do n = n + 1; paths[n] = line end
end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % n) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT p50=%.2f p95=%.2f p99=%.2f rps=%.1f errors=%d\\n",
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6),
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def scenarios(base_path, n_patients, rnd):
    n_prac = practitioners(n_patients)
    pid = lambda: f"p{rnd.randrange(n_patients)}"
    dr = lambda: f"dr{rnd.randrange(n_prac)}"
    q = urllib.parse.quote
    return {
        "Patient?identifier (token)": lambda: f"Patient?identifier=urn:icm:mrn%7CMRN{rnd.randrange(n_patients):07d}",
        "Patient?name (string prefix)": lambda: f"Patient?name={q(rnd.choice(FAMILIES)[:4])}&_count=20",
        "Task?patient (reference)": lambda: f"Task?patient=Patient/{pid()}",
        "CarePlan?subject&status": lambda: f"CarePlan?subject=Patient/{pid()}&status=active",
        "Task?owner&status&_sort=period": lambda: f"Task?owner=Practitioner/{dr()}&status=requested,in-progress&_sort=period",
        "Task?authored-on (date range)": lambda: f"Task?authored-on=2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
        "Task?patient.identifier (chain)": lambda: f"Task?patient.identifier=urn:icm:mrn%7CMRN{rnd.randrange(n_patients):07d}&status=requested",
        "Patient?_revinclude CarePlan+Task": lambda: f"Patient?_id={pid()}&_revinclude=CarePlan:subject&_revinclude=Task:patient",
        "Patient?_has:CarePlan (reverse chain)": lambda: f"Patient?_has:CarePlan:subject:status=completed&identifier=urn:icm:mrn%7CMRN{rnd.randrange(n_patients):07d}",
    }


def run(args):
    base = urllib.parse.urlparse(args.base)
    os.makedirs(os.path.join(os.path.dirname(__file__), "out"), exist_ok=True)
    lua = os.path.join(os.path.dirname(__file__), "out", "paths.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    rnd = random.Random(7)
    print(f"# {args.patients} patients, wrk -t2 -c{args.connections} -d{args.duration}s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{'scenario':40} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for name, gen in scenarios(base.path, args.patients, rnd).items():
        paths_file = os.path.join(os.path.dirname(__file__), "out", "paths.txt")
        with open(paths_file, "w") as f:
            for _ in range(2000):
                f.write(f"{base.path}/{gen()}\n")
        out = subprocess.run(["wrk", "-t2", f"-c{args.connections}", f"-d{args.duration}s", "-s", lua,
                              f"{base.scheme}://{base.netloc}", "--", paths_file],
                             capture_output=True, text=True)
        line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
        if not line:
            print(f"{name:40} wrk failed: {out.stderr.strip()[:200]}")
            continue
        kv = dict(x.split("=") for x in line.split()[1:])
        print(f"{name:40} {float(kv['p50']):8.2f} {float(kv['p95']):8.2f} {float(kv['p99']):8.2f} {float(kv['rps']):8.1f}"
              + (f"  errors={kv['errors']}" if kv["errors"] != "0" else ""), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["load", "ndjson", "run"])
    ap.add_argument("--out", default="bench/out/data")
    ap.add_argument("--base", default="http://127.0.0.1:8080/fhir")
    ap.add_argument("--patients", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--skip", type=int, default=0, help="resume a load: skip this many units")
    ap.add_argument("--until", type=int, default=0, help="stop before this unit (0: the end)")
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    {"load": load, "ndjson": ndjson, "run": run}[args.cmd](args)


if __name__ == "__main__":
    main()
