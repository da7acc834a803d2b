#!/usr/bin/env python3
"""Soak: a steady mixed load (reads, searches, creates, updates, transactions, $everything)
against one icm-fhir server for a fixed time; reports the error rate, the p50/p99 latency per
interval and the server's resident memory (RSS) at the start and the end. See README
"Reliability". Exit code 1 when any request failed (error rate above 0).

  bench/soak.sh                         # 10 minutes on PostgreSQL (127.0.0.1:5432), 40 req/s
  bench/soak.sh --seconds 60 --interval 10
  bench/soak.sh --sqlite --rate 20

Latency is measured from each request's scheduled start (open loop), so a stalled server shows
as latency instead of quietly lowering the rate.
"""
import argparse
import json
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client:
    """One keep-alive HTTP connection per worker thread."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def req(self, method, path, body=None, headers=None):
        h = {"Accept": "application/fhir+json"}
        if body is not None:
            h["Content-Type"] = "application/fhir+json"
            body = json.dumps(body)
        h.update(headers or {})
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the server closed while idle: reconnect once.
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")


def patient(i):
    return {
        "resourceType": "Patient",
        "active": True,
        "name": [{"family": f"Soak{i % 500}", "given": [f"G{i}"]}],
        "gender": random.choice(["female", "male"]),
        "birthDate": f"19{random.randint(30, 99)}-0{random.randint(1, 9)}-1{random.randint(0, 9)}",
        "identifier": [{"system": "urn:soak", "value": f"s-{i}"}],
    }


def observation(pid, i):
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"2025-0{random.randint(1, 9)}-1{random.randint(0, 9)}T10:00:00Z",
        "valueQuantity": {"value": 50 + i % 60, "unit": "/min",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
    }


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.patients = []  # ids
        self.counter = 0

    def next(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def add(self, pid):
        with self.lock:
            self.patients.append(pid)

    def pick(self):
        with self.lock:
            return random.choice(self.patients) if self.patients else None


# The mix: (name, weight).
MIX = [("read", 30), ("search", 25), ("create", 15), ("update", 15), ("transaction", 10),
       ("everything", 5)]


def run_op(op, c, st):
    """One operation; returns (ok, detail, label): the label is the operation, and for a search
    its shape."""
    pid = st.pick()
    if op == "read":
        s, _ = c.req("GET", f"/fhir/Patient/{pid}")
        return s == 200, s, op
    if op == "search":
        kind, q = random.choice([
            ("family", f"/fhir/Patient?family=soak{random.randint(0, 499)}&_count=10"),
            ("obs-code", f"/fhir/Observation?subject=Patient/{pid}&code=http://loinc.org|8867-4"),
            ("obs-value", "/fhir/Observation?value-quantity=gt100&_count=10&_sort=-date"),
            ("birthdate", f"/fhir/Patient?birthdate=ge19{random.randint(30, 99)}&_count=10"),
        ])
        s, _ = c.req("GET", q)
        return s == 200, s, f"search:{kind}"
    if op == "create":
        i = st.next()
        s, data = c.req("POST", "/fhir/Patient", patient(i))
        if s == 201:
            st.add(json.loads(data)["id"])
        return s == 201, s, op
    if op == "update":
        s, data = c.req("GET", f"/fhir/Patient/{pid}")
        if s != 200:
            return False, s, op
        p = json.loads(data)
        p["active"] = not p.get("active", True)
        s, _ = c.req("PUT", f"/fhir/Patient/{pid}", p)
        return s == 200, s, op
    if op == "transaction":
        i = st.next()
        full = f"urn:uuid:{os.urandom(16).hex()}"
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": full, "resource": patient(i),
             "request": {"method": "POST", "url": "Patient"}},
        ] + [
            {"resource": dict(observation("x", i + k), subject={"reference": full}),
             "request": {"method": "POST", "url": "Observation"}} for k in range(3)
        ]}
        s, data = c.req("POST", "/fhir", bundle)
        if s == 200:
            loc = json.loads(data)["entry"][0]["response"]["location"]
            st.add(loc.split("/")[1])
        return s == 200, s, op
    if op == "everything":
        s, _ = c.req("GET", f"/fhir/Patient/{pid}/$everything?_count=50")
        return s == 200, s, op
    raise ValueError(op)


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--interval", type=int, default=60, help="seconds per reported interval")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second")
    ap.add_argument("--workers", type=int, default=16, help="client threads")
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--pg", default=os.environ.get("SOAK_PG", "postgres://postgres@127.0.0.1:5432"),
                    help="PostgreSQL server (a fresh database is created and dropped)")
    ap.add_argument("--bin", default=None, help="icm-fhir binary (default: release, else debug build)")
    ap.add_argument("--seed-patients", type=int, default=200)
    a = ap.parse_args()

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = a.bin
    if binary is None:
        for b in (os.path.join(target, "release", "icm-fhir"), os.path.join(target, "debug", "icm-fhir")):
            if os.path.exists(b):
                binary = b
                break
    if binary is None:
        sys.exit("no icm-fhir binary: cargo build --release (or pass --bin)")
    tmp = tempfile.mkdtemp(prefix="icm-soak-")
    dbname = None
    if a.sqlite:
        url = f"sqlite://{tmp}/soak.db"
    else:
        dbname = f"icm_soak_{os.getpid()}_{int(time.time())}"
        subprocess.run(["psql", a.pg + "/postgres", "-qc", f'CREATE DATABASE "{dbname}"'], check=True)
        url = f"{a.pg}/{dbname}"
    port = free_port()
    env = dict(os.environ, DATABASE_URL=url, ICM_BIND=f"127.0.0.1:{port}", ICM_AUTH="off",
               RUST_LOG="warn", ICM_AUDIT_SPOOL=f"{tmp}/spool.jsonl")
    log = open(f"{tmp}/server.log", "w")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=log)
    code = 1
    try:
        c = Client(port)
        for _ in range(600):
            try:
                if c.req("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            sys.exit("server did not become ready")
        st = State()
        for _ in range(a.seed_patients):
            s, data = c.req("POST", "/fhir/Patient", patient(st.next()))
            assert s == 201, (s, data)
            pid = json.loads(data)["id"]
            st.add(pid)
            c.req("POST", "/fhir/Observation", observation(pid, st.counter))
        rss_start = rss_kib(server.pid)

        ops = [op for op, w in MIX for _ in range(w)]
        tickets = queue.Queue()
        results = []  # (interval, op, ok, latency, status)
        rlock = threading.Lock()
        start = time.monotonic()
        stop = threading.Event()

        def worker():
            cl = Client(port)
            while True:
                t = tickets.get()
                if t is None:
                    return
                sched, op = t
                label = op
                try:
                    ok, detail, label = run_op(op, cl, st)
                except Exception as e:  # transport error: counts as a failure
                    ok, detail = False, repr(e)
                lat = time.monotonic() - sched
                with rlock:
                    results.append((int((sched - start) // a.interval), label, ok, lat, detail))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.workers)]
        for t in threads:
            t.start()
        n = 0
        while True:
            sched = start + n / a.rate
            if sched - start >= a.seconds:
                break
            now = time.monotonic()
            if sched > now:
                time.sleep(sched - now)
            tickets.put((sched, random.choice(ops)))
            n += 1
        for _ in threads:
            tickets.put(None)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        rss_end = rss_kib(server.pid)

        total = len(results)
        errors = [r for r in results if not r[2]]
        print(f"soak: {total} requests in {elapsed:.0f} s ({total / elapsed:.1f}/s target {a.rate}/s), "
              f"{'SQLite' if a.sqlite else 'PostgreSQL'}, binary {os.path.relpath(binary, ROOT) if binary.startswith(ROOT) else binary}")
        print(f"errors: {len(errors)} ({100.0 * len(errors) / max(total, 1):.3f} %)")
        for e in errors[:10]:
            print(f"  {e[1]}: {e[4]}")
        print(f"{'interval':>10} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for i in sorted({r[0] for r in results}):
            lats = [r[3] * 1000 for r in results if r[0] == i]
            errs = sum(1 for r in results if r[0] == i and not r[2])
            label = f"{i * a.interval}-{(i + 1) * a.interval}s"
            print(f"{label:>10} {len(lats):>9} {errs:>7} {pct(lats, 50):>8.1f} {pct(lats, 99):>8.1f} {max(lats):>8.1f}")
        labels = sorted({r[1] for r in results})
        print("per operation (whole run):")
        for op in labels:
            lats = [r[3] * 1000 for r in results if r[1] == op]
            print(f"  {op:>16}: {len(lats):>6} p50 {pct(lats, 50):7.1f} ms  p99 {pct(lats, 99):7.1f} ms")
        # Which operation moves the p99: p99 per operation and interval (a search whose cost grows
        # with the data the soak itself writes shows here as a rising row).
        print("p99 ms per operation and interval:")
        print(f"{'interval':>10} " + " ".join(f"{op.replace('search:', 's:')[-12:]:>12}" for op in labels))
        for i in sorted({r[0] for r in results}):
            cells = []
            for op in labels:
                lats = [r[3] * 1000 for r in results if r[0] == i and r[1] == op]
                cells.append(f"{pct(lats, 99):>12.1f}")
            print(f"{f'{i * a.interval}-{(i + 1) * a.interval}s':>10} " + " ".join(cells))
        s, data = c.req("GET", "/fhir/Observation?_summary=count")
        s2, data2 = c.req("GET", "/fhir/Patient?_summary=count")
        if s == 200 and s2 == 200:
            print(f"data at the end: {json.loads(data2).get('total')} Patients, "
                  f"{json.loads(data).get('total')} Observations")
        print(f"server RSS: start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB")
        code = 0 if not errors else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if dbname:
            subprocess.run(["psql", a.pg + "/postgres", "-qc", f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'])
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
