#!/usr/bin/env python3
"""The benchmark suite behind `bench/run` (see the README, "Benchmark suite").

One run: build release binaries; make a fresh database; generate the care-management dataset of
bench/search_bench.py and load it with `icm-fhir import` (load rate); start the server with
production defaults (authentication on with an HS256 secret, auditing on); measure the machine's
ceilings (a minimal actix-web server returning a stored Patient from memory; the storage's own
point read and insert, by pgbench on PostgreSQL and examples/sqlite_ceiling.rs on SQLite); drive
every scenario with wrk (warm-up, then a fixed duration); report requests/s, p50/p95/p99, non-2xx
responses, each scenario's ratio to its ceiling, and the server's memory; write JSON to
bench/results/.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import search_bench  # noqa: E402  (the dataset generator)

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432"

# name → (kind, description). kind: read (GET; compared with the HTTP ceiling and the storage's
# point read), write (compared with the storage's insert), mixed (HTTP ceiling only).
SCENARIOS = {
    "read-patient": ("read", "GET Patient/{id}"),
    "read-task": ("read", "GET Task/{id}"),
    "create-patient": ("write", "POST Patient"),
    "update-task": ("write", "PUT Task/{id} with If-Match"),
    "search-patient-name": ("read", "Patient?name={prefix}"),
    "search-task-owner": ("read", "Task?owner=&status=requested,in-progress&_sort=period"),
    "search-careplan-revinclude": ("read", "CarePlan?patient=&_revinclude=Task:based-on"),
    "transaction-21": ("write", "POST transaction Bundle, 21 entries"),
    "everything": ("read", "Patient/{id}/$everything"),
    "worklist": ("read", "Practitioner/{id}/$worklist"),
    "mixed": ("mixed", "70% reads and searches, 30% writes"),
}
# The mixed workload: weights in percent.
MIXED = [("read-patient", 20), ("read-task", 20), ("search-patient-name", 10),
         ("search-task-owner", 5), ("search-careplan-revinclude", 10), ("everything", 5),
         ("create-patient", 15), ("update-task", 15)]
UPDATE_PATIENTS = 4000  # the update scenario cycles over the first Task of this many patients


def log(msg):
    print(msg, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------------------------
# wrk scripts. One Lua file; the scenario's mode and data come as arguments after `--`:
#   mode data_file instance instances
# Each wrk thread knows its global index (instance * threads + thread) so that update workloads
# get disjoint Task ranges. A `response` hook is defined only where needed (it makes wrk parse
# every response into Lua, which costs wrk CPU the server would otherwise get).
LUA_COMMON = r"""
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local mode, paths, np, pi = nil, {}, 0, 0
local post_path, post_body = nil, nil
local auth = nil
local function hdrs(extra)
  local h = {["Authorization"] = auth, ["Accept"] = "application/fhir+json"}
  if extra then for k, v in pairs(extra) do h[k] = v end end
  return h
end

-- update state: this thread's tasks, their versions and bodies
local tasks, ti, nt = {}, 0, 0
local version, stale, body = {}, {}, {}
seq, put_ok, put_412, put_other, gets = 0, 0, 0, 0, 0
status_2xx, status_other = 0, 0

local function split(line)
  local out = {}
  for f in string.gmatch(line, "[^\t]+") do out[#out + 1] = f end
  return out
end

local function load(file, gtid, gtotal, want)
  local i = 0
  for line in io.lines(file) do
    local f = split(line)
    if f[1] == "GET" and (want == nil or want.get) then
      np = np + 1; paths[np] = f[2]
    elseif f[1] == "POST" and (want == nil or want.post) then
      post_path, post_body = f[2], f[3]
    elseif f[1] == "TASK" and (want == nil or want.task) then
      if i % gtotal == gtid then
        nt = nt + 1; tasks[nt] = f[2]; version[f[2]] = f[3]; body[f[2]] = f[4]
      end
      i = i + 1
    end
  end
end

function init(args)
  mode = args[1]
  auth = wrk.headers["Authorization"]
  local instance, instances = tonumber(args[3]), tonumber(args[4])
  local per = tonumber(args[5])
  local gtid, gtotal = instance * per + tid, instances * per
  load(args[2], gtid, gtotal, nil)
  math.randomseed(7919 * (gtid + 1))
  pi = math.random(np > 0 and np or 1) - 1
  ti = math.random(nt > 0 and nt or 1) - 1
end

local function next_get()
  pi = pi + 1
  return wrk.format("GET", paths[(pi % np) + 1], hdrs())
end

local function next_post()
  return wrk.format("POST", post_path, hdrs({["Content-Type"] = "application/fhir+json"}), post_body)
end

local function next_update()
  ti = ti + 1
  local id = tasks[(ti % nt) + 1]
  if stale[id] then
    gets = gets + 1
    return wrk.format("GET", "/fhir/Task/" .. id, hdrs({["X-Request-Id"] = "g|" .. id}))
  end
  seq = seq + 1
  local b = string.gsub(body[id], "__REV__", tostring(seq))
  return wrk.format("PUT", "/fhir/Task/" .. id, hdrs({
    ["Content-Type"] = "application/fhir+json",
    ["If-Match"] = 'W/"' .. version[id] .. '"',
    ["X-Request-Id"] = "u|" .. id .. "|" .. seq}), b)
end

local function track(status, headers)
  local rid = headers["x-request-id"] or headers["X-Request-Id"]
  if status >= 200 and status < 300 then status_2xx = status_2xx + 1 else status_other = status_other + 1 end
  if rid == nil then return end
  local kind, id = string.match(rid, "^([ug])|([^|]+)")
  if kind == nil then return end
  local etag = headers["etag"] or headers["ETag"]
  local v = etag and string.match(etag, '"([^"]+)"')
  if kind == "u" then
    if status == 412 then put_412 = put_412 + 1; stale[id] = true
    elseif status >= 200 and status < 300 then put_ok = put_ok + 1; if v then version[id] = v end
    else put_other = put_other + 1 end
  elseif status == 200 and v then
    version[id] = v; stale[id] = nil
  end
end

local MIX = {}
"""

LUA_MODES = {
    "get": r"""
request = function() return next_get() end
""",
    "post": r"""
request = function() return next_post() end
""",
    "update": r"""
request = function() return next_update() end
response = function(status, headers, body) track(status, headers) end
""",
    "mixed": r"""
request = function()
  local r = math.random(100)
  if r <= 70 then return next_get()
  elseif r <= 85 then return next_post()
  else return next_update() end
end
response = function(status, headers, body) track(status, headers) end
""",
}

LUA_DONE = r"""
done = function(summary, latency, requests)
  local c = {put_ok = 0, put_412 = 0, put_other = 0, gets = 0, status_2xx = 0, status_other = 0}
  for _, t in ipairs(threads) do
    for k, _ in pairs(c) do c[k] = c[k] + (tonumber(t:get(k)) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"timeouts": %d, "p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "put_ok": %d, "put_412": %d, "put_other": %d, "gets": %d, ' ..
    '"status_2xx": %d, "status_other": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean,
    c.put_ok, c.put_412, c.put_other, c.gets, c.status_2xx, c.status_other))
end
"""


def lua_script(mode):
    return LUA_COMMON + LUA_MODES[mode] + LUA_DONE


# ---------------------------------------------------------------------------------------------
# Request data for each scenario.

def transaction_bundle():
    """21 entries: a new patient with its care team, two conditions, a goal, a care plan and 15
    Tasks, linked by urn:uuid references (the same body creates new resources every time)."""
    u = lambda n: f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
    pat, team, goal, plan = u(1), u(2), u(5), u(6)
    conds = [u(3), u(4)]
    subj = {"reference": pat}
    entries = [
        ("Patient", pat, {"resourceType": "Patient", "name": [{"family": "Transaction", "given": ["Bench"]}],
                          "gender": "female", "birthDate": "1950-02-03"}),
        ("CareTeam", team, {"resourceType": "CareTeam", "status": "active", "subject": subj,
                            "participant": [{"member": {"reference": "Practitioner/dr0"}}]}),
    ]
    for c in conds:
        entries.append(("Condition", c, {
            "resourceType": "Condition", "subject": subj,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]}}))
    entries.append(("Goal", goal, {"resourceType": "Goal", "lifecycleStatus": "active", "subject": subj,
                                   "description": {"text": "Blood pressure under control"},
                                   "addresses": [{"reference": c} for c in conds]}))
    entries.append(("CarePlan", plan, {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": subj,
                                       "careTeam": [{"reference": team}], "goal": [{"reference": goal}],
                                       "addresses": [{"reference": c} for c in conds]}))
    for k in range(15):
        entries.append(("Task", u(100 + k), {
            "resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
            "for": subj, "basedOn": [{"reference": plan}], "owner": {"reference": "Practitioner/dr0"},
            "description": f"Step {k + 1}", "authoredOn": "2026-12-01T09:00:00Z"}))
    assert len(entries) == 21
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": full, "resource": r, "request": {"method": "POST", "url": t}} for t, full, r in entries]}


NEW_PATIENT = {"resourceType": "Patient", "identifier": [{"system": "urn:icm:mrn", "value": "NEW"}],
               "name": [{"family": "Created", "given": ["Bench"]}], "gender": "male", "birthDate": "1961-07-08",
               "address": [{"city": "Porto"}], "generalPractitioner": [{"reference": "Practitioner/dr0"}]}


def get_paths(name, n, rnd, count=4000):
    n_prac = search_bench.practitioners(n)
    q = urllib.parse.quote
    gen = {
        "read-patient": lambda: f"/fhir/Patient/p{rnd.randrange(n)}",
        "read-task": lambda: f"/fhir/Task/t{rnd.randrange(n)}-{rnd.randrange(5)}",
        "search-patient-name": lambda: f"/fhir/Patient?name={q(rnd.choice(search_bench.FAMILIES)[:4])}",
        "search-task-owner": lambda: f"/fhir/Task?owner=Practitioner/dr{rnd.randrange(n_prac)}"
                                     "&status=requested,in-progress&_sort=period",
        "search-careplan-revinclude": lambda: f"/fhir/CarePlan?patient=Patient/p{rnd.randrange(n)}"
                                              "&_revinclude=Task:based-on",
        "everything": lambda: f"/fhir/Patient/p{rnd.randrange(n)}/$everything",
        "worklist": lambda: f"/fhir/Practitioner/dr{rnd.randrange(n_prac)}/$worklist",
    }[name]
    return [gen() for _ in range(count)]


def update_tasks(n):
    """(id, body with a __REV__ placeholder) for the first Task of the first patients."""
    n_prac = search_bench.practitioners(n)
    out = []
    for i in range(min(n, UPDATE_PATIENTS)):
        for r in search_bench.patient_resources(i, n_prac, random.Random(i)):
            if r["resourceType"] == "Task" and r["id"] == f"t{i}-0":
                r = dict(r, description="__REV__")
                out.append((r["id"], json.dumps(r, separators=(",", ":"), ensure_ascii=False)))
                break
    return out


# ---------------------------------------------------------------------------------------------
# Databases.

class Postgres:
    kind = "postgres"

    def __init__(self, n, admin=PG_ADMIN):
        self.admin = admin
        self.name = f"icm_bench_{n}"
        self.url = f"{admin}/{self.name}"

    def psql(self, sql, db=None):
        out = sh(["psql", f"{self.admin}/{db or self.name}", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
                 capture_output=True, text=True)
        return out.stdout.strip()

    def fresh(self):
        self.psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)", db="postgres")
        self.psql(f"CREATE DATABASE {self.name}", db="postgres")

    def versions(self, ids):
        arr = ",".join(f"'{i}'" for i in ids)
        rows = self.psql(f"SELECT res_id, version_id FROM resources WHERE res_type = 'Task' AND res_id IN ({arr})")
        return dict(line.split("|") for line in rows.splitlines())

    def count(self, table):
        return int(self.psql(f"SELECT count(*) FROM {table}"))

    def size(self):
        return int(self.psql(f"SELECT pg_database_size('{self.name}')"))


class Sqlite:
    kind = "sqlite"

    def __init__(self, n, folder):
        self.path = os.path.join(folder, f"icm_bench_{n}.db")
        self.url = f"sqlite://{self.path}"

    def fresh(self):
        for suffix in ["", "-wal", "-shm"]:
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)

    def query(self, sql, args=()):
        c = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.close()

    def versions(self, ids):
        out = {}
        for k in range(0, len(ids), 500):
            part = ids[k:k + 500]
            rows = self.query("SELECT res_id, version_id FROM resources WHERE res_type = 'Task' AND res_id IN (%s)"
                              % ",".join("?" * len(part)), part)
            out.update({r[0]: str(r[1]) for r in rows})
        return out

    def count(self, table):
        return self.query(f"SELECT count(*) FROM {table}")[0][0]

    def size(self):
        return sum(os.path.getsize(self.path + s) for s in ["", "-wal"] if os.path.exists(self.path + s))


# ---------------------------------------------------------------------------------------------
# Processes.

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, seconds=60):
    end = time.time() + seconds
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"no answer from {url} after {seconds} s")


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0]) // 1024  # MiB
    except OSError:
        pass
    return out


class RssSampler:
    """Largest VmRSS (and its anonymous part: RssAnon; the rest is file pages, e.g. SQLite's
    memory-mapped database) of the given processes while a measurement runs, every 0.25 s."""

    def __init__(self, pids):
        self.pids, self.stop = pids, threading.Event()
        self.peak, self.peak_anon = {p: 0 for p in pids}, {p: 0 for p in pids}
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for p in self.pids:
                st = proc_status(p)
                self.peak[p] = max(self.peak[p], st.get("VmRSS", 0))
                self.peak_anon[p] = max(self.peak_anon[p], st.get("RssAnon", 0))
            self.stop.wait(0.25)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()


class Server:
    extra_env = {}
    running = []  # stopped at exit, whatever happens

    def __init__(self, binary, db_url, port, logdir, idx):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, DATABASE_URL=db_url, ICM_BIND=f"127.0.0.1:{port}", ICM_JWT_SECRET=SECRET,
                   RUST_LOG="warn")
        # Production defaults: nothing else is set (ICM_AUTH and ICM_AUDIT default to on).
        for k in ("ICM_AUTH", "ICM_AUDIT", "ICM_POOL_SIZE", "ICM_WORKERS", "ICM_AUDIT_SPOOL"):
            env.pop(k, None)
        env.update(Server.extra_env)
        # Each process runs in its own folder: on PostgreSQL the audit spool (events kept on disk
        # while the writer is behind or the database away) is icm-audit-spool.jsonl in the
        # working directory, and it must be neither shared nor left in the checkout.
        self.dir = os.path.join(logdir, f"server-{idx}")
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.p = subprocess.Popen([binary, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                  cwd=self.dir)
        Server.running.append(self)
        wait_http(f"{self.base}/readyz", 120)

    def stop(self):
        if self in Server.running:
            Server.running.remove(self)
        if self.p.poll() is not None:
            return
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()


def http(method, url, token, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else body.encode())
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/fhir+json")
    if body is not None:
        req.add_header("Content-Type", "application/fhir+json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------------------------------------
# wrk.

def run_wrk(bases, lua, mode, data, seconds, connections, threads, timeout, token):
    """Run one wrk per base URL in parallel (connections split between them); sum the
    throughput; latency percentiles are the request-weighted mean over the instances (exact
    when there is one)."""
    k = len(bases)
    procs = []
    per_threads = max(1, threads // k)
    for i, base in enumerate(bases):
        conns = connections // k + (1 if i < connections % k else 0)
        t = max(1, min(per_threads, conns))
        cmd = ["wrk", f"-t{t}", f"-c{conns}", f"-d{seconds}s", f"--timeout={timeout}s", "--latency",
               "-H", f"Authorization: Bearer {token}", "-s", lua, base, "--",
               mode, data, str(i), str(k), str(per_threads)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate()
        line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
        if p.returncode != 0 or line is None:
            raise SystemExit(f"wrk failed ({p.returncode}): {err.strip()[:500]} {out[-500:]}")
        results.append(json.loads(line[len("RESULT "):]))
    total = sum(r["requests"] for r in results)
    dur = max(r["duration_us"] for r in results) / 1e6
    w = lambda key: sum(r[key] * r["requests"] for r in results) / max(1, total) / 1000.0
    agg = {
        "requests": total, "seconds": round(dur, 3),
        "rps": round(sum(r["requests"] / (r["duration_us"] / 1e6) for r in results), 1),
        "p50_ms": round(w("p50_us"), 2), "p90_ms": round(w("p90_us"), 2), "p95_ms": round(w("p95_us"), 2),
        "p99_ms": round(w("p99_us"), 2), "max_ms": round(max(r["max_us"] for r in results) / 1000.0, 2),
        "non2xx": sum(r["status_errors"] for r in results),
        "socket_errors": sum(r["socket_errors"] for r in results),
        "timeouts": sum(r["timeouts"] for r in results),
    }
    if mode in ("update", "mixed"):
        for key in ("put_ok", "put_412", "put_other", "gets"):
            agg[key] = sum(r[key] for r in results)
        # With a response hook, every status is counted (wrk's own count is of ≥ 400 only).
        agg["non2xx"] = sum(r["status_other"] for r in results)
        agg["non2xx_excluding_412"] = agg["non2xx"] - agg["put_412"]
    return agg


# ---------------------------------------------------------------------------------------------
# Ceilings.

def pgbench(db, script, seconds, clients, threads, n):
    path = os.path.join(db.workdir, "pgbench.sql")
    with open(path, "w") as f:
        f.write(script)
    out = sh(["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(threads), "-T", str(seconds),
              "-D", f"n={n}", "-f", path, db.url], capture_output=True, text=True).stdout
    tps = next(float(l.split("=")[1].split()[0]) for l in out.splitlines() if l.startswith("tps ="))
    lat = next((float(l.split("=")[1].split()[0]) for l in out.splitlines() if l.startswith("latency average")), None)
    return {"per_s": round(tps, 1), "latency_avg_ms": lat}


PG_SELECT = """\\set i random(0, :n - 1)
SELECT content FROM resources WHERE res_type = 'Patient' AND res_id = 'p' || :i;
"""
PG_INSERT = """WITH r AS (INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted, content)
  VALUES ('Patient', 'ceiling-' || gen_random_uuid(), 1, 0, false, '%s') RETURNING pk)
INSERT INTO search_string (resource_pk, res_type, param, value_norm, value_exact)
  SELECT pk, 'Patient', 'family', 'ceiling', 'Ceiling' FROM r;
"""
CEILING_PATIENT = json.dumps({"resourceType": "Patient", "id": "x", "meta": {"versionId": "1"},
                              "name": [{"family": "Ceiling", "given": ["Bench"]}], "gender": "female",
                              "birthDate": "1970-01-01"})


def storage_ceilings(db, args, bins):
    if db.kind == "postgres":
        sel = pgbench(db, PG_SELECT, args.ceiling_seconds, args.connections, args.threads, args.patients)
        ins = pgbench(db, PG_INSERT % CEILING_PATIENT, args.ceiling_seconds, args.connections, args.threads,
                      args.patients)
        db.psql("DELETE FROM search_string WHERE resource_pk IN (SELECT pk FROM resources WHERE res_type = 'Patient'"
                " AND res_id LIKE 'ceiling-%'); DELETE FROM resources WHERE res_type = 'Patient'"
                " AND res_id LIKE 'ceiling-%'")
        return {"select": dict(sel, tool="pgbench -M prepared, point SELECT by (res_type, res_id)"),
                "insert": dict(ins, tool="pgbench -M prepared, INSERT resource row + one search_string row")}
    out = {}
    for mode, threads in (("select", args.threads), ("insert", 1)):
        r = sh([bins["sqlite_ceiling"], db.path, mode, str(args.ceiling_seconds), str(threads), str(args.patients)],
               capture_output=True, text=True).stdout
        out[mode] = json.loads(r.strip().splitlines()[-1])
        out[mode]["tool"] = f"examples/sqlite_ceiling.rs {mode}, {threads} thread(s)"
    return out


def http_ceiling(args, bins, body_file, lua, data, token):
    port = free_port()
    p = subprocess.Popen([bins["http_ceiling"], body_file, f"127.0.0.1:{port}"])
    try:
        wait_http(f"http://127.0.0.1:{port}/", 30)
        base = f"http://127.0.0.1:{port}"
        run_wrk([base], lua, "get", data, args.warmup, args.connections, args.threads, args.timeout, token)
        return run_wrk([base], lua, "get", data, args.duration, args.connections, args.threads, args.timeout, token)
    finally:
        p.terminate()
        p.wait()


# ---------------------------------------------------------------------------------------------

def build(args):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bins = {"icm-fhir": os.path.join(target, "release", "icm-fhir"),
            "http_ceiling": os.path.join(target, "release", "examples", "http_ceiling"),
            "sqlite_ceiling": os.path.join(target, "release", "examples", "sqlite_ceiling")}
    if not args.no_build:
        log("== cargo build --release (server and ceiling programs)")
        sh(["cargo", "build", "--release", "--quiet", "--bin", "icm-fhir",
            "--example", "http_ceiling", "--example", "sqlite_ceiling"], cwd=ROOT)
    for b in bins.values():
        if not os.path.exists(b):
            raise SystemExit(f"missing {b}: run without --no-build")
    return bins


def ensure_tools():
    if shutil.which("wrk") is None:
        log("== installing wrk")
        apt = ["apt-get", "install", "-y", "wrk"]
        if os.geteuid() != 0:
            apt = ["sudo"] + apt
        if subprocess.run(apt).returncode != 0:
            sh((["sudo"] if os.geteuid() != 0 else []) + ["apt-get", "update"])
            sh(apt)
    if shutil.which("pgbench") is None:
        log("warning: pgbench not found (apt-get install postgresql-client): no PostgreSQL storage ceiling")


def dataset(n, folder):
    """NDJSON of the search_bench dataset, cached by size (bench/out/data-N)."""
    out = os.path.join(folder, f"data-{n}")
    mark = os.path.join(out, ".complete")
    if not os.path.exists(mark):
        shutil.rmtree(out, ignore_errors=True)
        search_bench.ndjson(types.SimpleNamespace(out=out, patients=n))
        open(mark, "w").close()
    return out


def machine():
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "loadavg": [float(x) for x in load]}


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def write_data(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(line + "\n")


def main():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=2000, help="dataset size (default 2000; ~18.5 resources each)")
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--processes", default="1",
                    help="server processes on one PostgreSQL, e.g. 2 or 1,2,3 (each count is a round)")
    ap.add_argument("--duration", type=int, default=8, help="seconds per measurement (default 8)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each (default 2)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--timeout", type=int, default=10, help="wrk request timeout, seconds")
    ap.add_argument("--ceiling-seconds", type=int, default=0, help="pgbench/SQLite ceiling seconds (default: --duration)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list (default: all): " + ", ".join(SCENARIOS))
    ap.add_argument("--pg", default=PG_ADMIN, help=f"PostgreSQL server URL without database (default {PG_ADMIN})")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server environment, for comparisons (e.g. ICM_AUDIT=off); recorded in the result")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--no-ceilings", action="store_true", help="skip the ceilings")
    ap.add_argument("--keep", action="store_true", help="keep the database after the run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for the JSON result")
    args = ap.parse_args()
    args.ceiling_seconds = args.ceiling_seconds or args.duration
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in chosen:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")
    try:
        procs = [int(k) for k in args.processes.split(",")]
    except ValueError:
        ap.error("--processes: a number or a comma list of numbers")
    if args.sqlite and procs != [1]:
        ap.error("--processes needs PostgreSQL (SQLite allows one server process per file)")
    for kv in args.server_env:
        k, eq, v = kv.partition("=")
        if not eq:
            ap.error("--server-env KEY=VALUE")
        Server.extra_env[k] = v
    backend = "sqlite" if args.sqlite else "postgres"
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = os.path.join(HERE, "out", f"run-{started}")
    os.makedirs(work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    ensure_tools()
    bins = build(args)
    m0 = machine()
    log(f"== {backend}, {args.patients} patients, wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
        f"(+{args.warmup}s warm-up), {m0['cores']} cores, load average {m0['loadavg'][0]}")

    # Dataset and load.
    t0 = time.time()
    data_dir = dataset(args.patients, os.path.join(HERE, "out"))
    gen_s = time.time() - t0
    db = Sqlite(args.patients, work) if args.sqlite else Postgres(args.patients, args.pg)
    db.workdir = work
    db.fresh()
    t0 = time.time()
    imp = sh([bins["icm-fhir"], "import", data_dir, "--quiet", "--database-url", db.url],
             capture_output=True, text=True)
    load_s = time.time() - t0
    resources = db.count("resources")
    summary_line = next((l for l in imp.stdout.splitlines() if l.startswith("imported")), "")
    load = {"resources": resources, "seconds": round(load_s, 1), "per_s": round(resources / load_s, 1),
            "generate_seconds": round(gen_s, 1), "import_summary": summary_line, "database_bytes": db.size()}
    log(f"   loaded {resources} resources in {load_s:.1f} s: {resources / load_s:.0f} resources/s ({summary_line})")

    token = sh([bins["icm-fhir"], "token", "--sub", "bench", "--scope", "system/*.cruds", "--ttl", "1d"],
               env=dict(os.environ, ICM_JWT_SECRET=SECRET), capture_output=True, text=True).stdout.strip()

    # Request data.
    rnd = random.Random(11)
    files = {}
    lua = {}
    for mode in LUA_MODES:
        lua[mode] = os.path.join(work, f"{mode}.lua")
        with open(lua[mode], "w") as f:
            f.write(lua_script(mode))
    for name in SCENARIOS:
        if SCENARIOS[name][0] == "read":
            files[name] = os.path.join(work, f"{name}.txt")
            write_data(files[name], ["GET\t" + p for p in get_paths(name, args.patients, rnd)])
    files["create-patient"] = os.path.join(work, "create-patient.txt")
    write_data(files["create-patient"], ["POST\t/fhir/Patient\t" + json.dumps(NEW_PATIENT)])
    files["transaction-21"] = os.path.join(work, "transaction-21.txt")
    write_data(files["transaction-21"], ["POST\t/fhir\t" + json.dumps(transaction_bundle(), separators=(",", ":"))])
    tasks = update_tasks(args.patients)
    mixed_gets = []
    for name, weight in MIXED:
        if SCENARIOS[name][0] == "read":
            mixed_gets += get_paths(name, args.patients, rnd, count=weight * 60)
    rnd.shuffle(mixed_gets)

    def task_file(name):
        versions = db.versions([t for t, _ in tasks])
        lines = [f"TASK\t{t}\t{versions[t]}\t{b}" for t, b in tasks]
        if name == "mixed":
            lines = ["GET\t" + p for p in mixed_gets] + ["POST\t/fhir/Patient\t" + json.dumps(NEW_PATIENT)] + lines
        path = os.path.join(work, f"{name}.txt")
        write_data(path, lines)
        return path

    result = {"started": started, "command": "bench/run " + " ".join(sys.argv[1:]), "commit": git_commit(),
              "backend": backend, "patients": args.patients,
              "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections,
                           "threads": args.threads, "ceiling_s": args.ceiling_seconds,
                           "server": "production defaults: ICM_AUTH=on (HS256 secret), ICM_AUDIT=on, "
                                     "RUST_LOG=warn, other settings default; token system/*.cruds",
                           "server_env": Server.extra_env},
              "machine_start": m0, "load": load, "ceilings": {}, "rounds": []}

    # Ceilings (before the scenarios; once more after them, and the mean is used).
    servers = [Server(bins["icm-fhir"], db.url, free_port(), work, 0)]
    st, patient_body = http("GET", f"{servers[0].base}/fhir/Patient/p0", token)
    assert st == 200, (st, patient_body[:300])
    body_file = os.path.join(work, "patient.json")
    with open(body_file, "wb") as f:
        f.write(patient_body)
    result["idle_rss_mib"] = proc_status(servers[0].p.pid)
    log(f"   server idle: VmRSS {result['idle_rss_mib'].get('VmRSS')} MiB")

    def ceilings(tag):
        if args.no_ceilings:
            return
        log(f"== ceilings ({tag})")
        h = http_ceiling(args, bins, body_file, lua["get"], files["read-patient"], token)
        s = storage_ceilings(db, args, bins) if (db.kind == "sqlite" or shutil.which("pgbench")) else {}
        result["ceilings"][tag] = {"http": h, **s}
        log(f"   HTTP ceiling {h['rps']:.0f} req/s (p99 {h['p99_ms']} ms); storage point read "
            f"{s.get('select', {}).get('per_s', '-')}/s, insert {s.get('insert', {}).get('per_s', '-')}/s")

    ceilings("before")

    sent = [1]  # requests sent to the FHIR server(s) so far (the Patient read above)
    for k in procs:
        if len(servers) != k:
            for s in servers:
                s.stop()
            servers = [Server(bins["icm-fhir"], db.url, free_port(), work, i) for i in range(k)]
        bases = [s.base for s in servers]
        rnd_result = {"processes": k, "idle_rss_mib": [proc_status(s.p.pid) for s in servers], "scenarios": {}}
        log(f"== {k} server process(es)")
        for name in chosen:
            kind = SCENARIOS[name][0]
            mode = {"read": "get", "mixed": "mixed"}.get(kind, "update" if name == "update-task" else "post")
            data = task_file(name) if mode in ("update", "mixed") else files[name]
            if args.warmup:
                w = run_wrk(bases, lua[mode], mode, data, args.warmup, args.connections, args.threads,
                            args.timeout, token)
                sent[0] += w["requests"]
                if mode in ("update", "mixed"):
                    time.sleep(0.5)
                    data = task_file(name)
            with RssSampler([s.p.pid for s in servers]) as rss:
                r = run_wrk(bases, lua[mode], mode, data, args.duration, args.connections, args.threads,
                            args.timeout, token)
            sent[0] += r["requests"]
            r["rss_peak_mib"] = sum(rss.peak.values())
            r["rss_anon_peak_mib"] = sum(rss.peak_anon.values())
            r["kind"] = kind
            # Every request is audited. Wait until the trail holds them all before the next
            # scenario, so no scenario pays for an earlier one's backlog; report the wait.
            r.update(audit_drain(db, sent[0]))
            rnd_result["scenarios"][name] = r
            extra = ""
            if "put_412" in r:
                extra = f", PUT 2xx {r['put_ok']}, 412 {r['put_412']}, re-reads {r['gets']}"
            log(f"   {name:28} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:7.2f}  p95 {r['p95_ms']:7.2f}  "
                f"p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non2xx']}{extra}  RSS {r['rss_peak_mib']} MiB  "
                f"audit: {r['audit_behind_at_end']} behind, stored {r['audit_drain_s']} s later")
        rnd_result["hwm_rss_mib"] = [proc_status(s.p.pid).get("VmHWM") for s in servers]
        result["rounds"].append(rnd_result)

    ceilings("after")
    for s in servers:
        s.stop()
    result["audit_events_stored"] = db.count("audit_log")
    result["machine_end"] = machine()
    ratios(result)
    if not args.keep:
        if db.kind == "postgres":
            db.psql(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)", db="postgres")
        else:
            db.fresh()
    path = os.path.join(args.out, f"{started}-{backend}-{args.patients}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    report(result)
    log(f"\nwrote {os.path.relpath(path, ROOT)}")


def audit_drain(db, expected, timeout=900):
    """Seconds until the audit trail holds `expected` events (every request is audited), and how
    many it lacked when the load stopped."""
    if Server.extra_env.get("ICM_AUDIT", "on").lower() in ("off", "false", "0", "no"):
        return {"audit_behind_at_end": 0, "audit_drain_s": 0.0, "audit_missing": 0}
    t0 = time.time()
    stored = db.count("audit_log")
    behind = max(0, expected - stored)
    while stored < expected and time.time() - t0 < timeout:
        time.sleep(0.5)
        stored = db.count("audit_log")
    return {"audit_behind_at_end": behind, "audit_drain_s": round(time.time() - t0, 1),
            "audit_missing": max(0, expected - stored)}


def ceiling_mean(result, key):
    vals = []
    for c in result["ceilings"].values():
        v = c.get(key)
        if v:
            vals.append(v["rps"] if key == "http" else v["per_s"])
    return sum(vals) / len(vals) if vals else None


def ratios(result):
    http_c, sel, ins = (ceiling_mean(result, k) for k in ("http", "select", "insert"))
    result["ceiling_means"] = {"http_rps": http_c, "select_per_s": sel, "insert_per_s": ins}
    for rnd in result["rounds"]:
        for name, r in rnd["scenarios"].items():
            r["vs_http"] = round(r["rps"] / http_c, 3) if http_c else None
            if r["kind"] == "read" and sel:
                r["vs_storage"] = round(r["rps"] / sel, 3)
            elif r["kind"] == "write" and ins:
                # per resource written: a transaction Bundle writes 21
                per = 21 if name == "transaction-21" else 1
                r["vs_storage"] = round(r["rps"] * per / ins, 3)
            else:
                r["vs_storage"] = None


def report(result):
    cm = result["ceiling_means"]
    st = result["settings"]
    print(f"\n## {result['backend']}, {result['patients']} patients ({result['load']['resources']} resources), "
          f"wrk -t{st['threads']} -c{st['connections']} -d{st['duration_s']}s after {st['warmup_s']}s warm-up")
    print(f"`{result['command']}` at {result['commit']}, {result['started']}, load average "
          f"{result['machine_start']['loadavg'][0]} → {result['machine_end']['loadavg'][0]}\n")
    if st.get("server_env"):
        print(f"- **not production defaults**: server environment {st['server_env']}")
    ld = result["load"]
    print(f"- load: {ld['resources']} resources in {ld['seconds']} s = **{ld['per_s']:.0f} resources/s**")
    if cm["http_rps"]:
        c = result["ceilings"]
        fmt = lambda key, f: " / ".join(f"{f(v[key]):.0f}" for v in c.values() if v.get(key))
        print(f"- HTTP ceiling (examples/http_ceiling.rs, GET Patient from memory): {fmt('http', lambda v: v['rps'])} req/s "
              f"(before / after the scenarios)")
        if cm["select_per_s"]:
            print(f"- storage ceiling, point read: {fmt('select', lambda v: v['per_s'])} /s; insert resource + index row: "
                  f"{fmt('insert', lambda v: v['per_s'])} /s")
    allr = [r for rr in result["rounds"] for r in rr["scenarios"].values()]
    print(f"- server RSS idle {result['idle_rss_mib'].get('VmRSS')} MiB; peak under load "
          f"{max((r['rss_peak_mib'] for r in allr), default=0)} MiB, of which anonymous "
          f"{max((r['rss_anon_peak_mib'] for r in allr), default=0)} MiB "
          f"(VmHWM at the end {result['rounds'][-1]['hwm_rss_mib'] if result['rounds'] else '-'} MiB)")
    print(f"- AuditEvents stored: {result['audit_events_stored']}")
    for rnd in result["rounds"]:
        print(f"\n**{rnd['processes']} server process(es)**\n")
        print("| scenario | req/s | p50 ms | p95 ms | p99 ms | non-2xx | ÷ HTTP ceiling | ÷ storage ceiling "
              "| peak RSS MiB (anon) | audit trail complete after |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, r in rnd["scenarios"].items():
            nx = str(r["non2xx"])
            if "put_412" in r:
                nx = f"{r['non2xx_excluding_412']} (+{r['put_412']} 412)"
            pct = lambda v: "—" if v is None else f"{100 * v:.1f} %"
            print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {nx} | "
                  f"{pct(r['vs_http'])} | {pct(r['vs_storage'])} | {r['rss_peak_mib']} ({r['rss_anon_peak_mib']}) | "
                  f"{r['audit_drain_s']} s |")


def stop_all(*_):
    for s in list(Server.running):
        s.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        stop_all()
