#!/usr/bin/env python3
"""Regenerate the committed seed corpora of the fuzz targets (fuzz/seeds/<target>/) from the
repository's own test data: official R4 examples (tests/data/examples), search URLs used by the
tests (tests/*.rs), the JSON Patch test suite (tests/data/json-patch-tests.json), and a few
hand-written transaction Bundles, FHIRPath Patches and tokens. Run from the repository root."""
import base64, glob, hashlib, hmac, json, os, re, shutil

shutil.rmtree('fuzz/seeds', ignore_errors=True)


def put(target, data):
    d = f'fuzz/seeds/{target}'
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    open(f'{d}/{hashlib.sha1(data).hexdigest()[:12]}', 'wb').write(data)


# validate_resource: the two smallest official examples of each type, compact JSON
for t in sorted(glob.glob('tests/data/examples/*')):
    for f in sorted(glob.glob(t + '/*.json'), key=os.path.getsize)[:2]:
        raw = open(f, 'rb').read()
        if len(raw) <= 12000:
            put('validate_resource', json.dumps(json.loads(raw), separators=(',', ':'), ensure_ascii=False))
put('validate_resource', open('tests/data/examples/Patient/json-edge-cases.json', 'rb').read())
for r in [
    {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Patient/p1"},
     "owner": {"reference": "Practitioner/pr1"}, "restriction": {"period": {"end": "2026-12-01"}},
     "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}},
    {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"},
     "period": {"start": "2026-01-01"}, "activity": [{"detail": {"status": "in-progress", "kind": "Task"}}]},
    {"resourceType": "CareTeam", "status": "active", "subject": {"reference": "Patient/p1"},
     "participant": [{"member": {"reference": "Practitioner/pr1"}, "role": [{"text": "care manager"}]}]},
    {"resourceType": "EpisodeOfCare", "status": "active", "patient": {"reference": "Patient/p1"},
     "period": {"start": "2026-11-01"}},
    {"resourceType": "Subscription", "status": "requested", "reason": "r", "criteria": "Task?status=requested",
     "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook", "payload": "application/fhir+json"}},
    {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:mrn", "value": "1"}],
     "name": [{"family": "Doe"}], "birthDate": "1950-02-30"},
]:
    put('validate_resource', json.dumps(r))

# search_plan: `Type?query` as the tests send them, and a few more
seeds = set()
for f in glob.glob('tests/*.rs'):
    for m in re.finditer(r'"([A-Z][A-Za-z]+\?[^" ]{3,200})"', open(f).read()):
        if '{' not in m.group(1):
            seeds.add(m.group(1))
seeds = sorted(seeds)
for s in seeds[::max(1, len(seeds) // 60)] + [
    "Patient?_page=a[1]", "Task?_sort=-period,_id&_page=b[\"2026-01-01\",7]",
    "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140",
    "Patient?_has:Observation:patient:code=1234-5", "Task?patient.name=Doe&_count=5",
    "Patient?_content=diabetes OR \"heart failure\"",
    "Observation?value-quantity=ap5.4|http://unitsofmeasure.org|mg",
    "Patient?birthdate=ge1950-01&birthdate=lt2000", "AuditEvent?date=ge2026&_count=3",
    "CarePlan?subject:Patient.identifier=urn:mrn|123&status=active,on-hold",
]:
    put('search_plan', s)

# patch: the resource, then the patch
for t in json.load(open('tests/data/json-patch-tests.json'))[::2]:
    if 'doc' in t and 'patch' in t:
        put('patch', json.dumps(t['doc']) + '\n' + json.dumps(t['patch']))
task = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order", "note": [{"text": "a"}],
        "input": [{"type": {"text": "x"}, "valueString": "1"}]}


def op(ty, path, **parts):
    p = [{"name": "type", "valueCode": ty}, {"name": "path", "valueString": path}]
    for k, v in parts.items():
        p.append({"name": k, **v})
    return {"name": "operation", "part": p}


fhirpath_patches = [
    [op("replace", "Task.status", value={"valueCode": "in-progress"})],
    [op("add", "Task", name={"valueString": "businessStatus"}, value={"valueCodeableConcept": {"text": "waiting"}})],
    [op("insert", "Task.note", index={"valueInteger": 0}, value={"valueAnnotation": {"text": "first"}})],
    [op("delete", "Task.note[0]")],
    [op("move", "Task.note", source={"valueInteger": 0}, destination={"valueInteger": 0})],
    [op("replace", "Task.input.where(type.text='x').value", value={"valueString": "2"})],
]
for ops in fhirpath_patches:
    put('patch', json.dumps(task) + '\n' + json.dumps({"resourceType": "Parameters", "parameter": ops}))
put('patch', json.dumps(task) + '\n' + json.dumps({"status": "cancelled", "note": None}))
put('patch', json.dumps(task) + '\n' + json.dumps(
    [{"op": "replace", "path": "/status", "value": "on-hold"}, {"op": "test", "path": "/note/0/text", "value": "a"}]))

# bundle_plan


def bundle(kind, entries):
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries})


u1, u2 = "urn:uuid:6d3e1b2a-8c1f-4f0e-9a57-1a2b3c4d5e6f", "urn:uuid:0b7f8e2c-1111-4a4a-8b8b-123456789abc"
put('bundle_plan', bundle("transaction", [
    {"fullUrl": u1, "resource": {"resourceType": "Patient", "name": [{"family": "Doe"}]},
     "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|1"}},
    {"fullUrl": u2, "resource": {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": u1}},
     "request": {"method": "POST", "url": "Task"}},
    {"resource": {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                  "subject": {"reference": "Patient?identifier=urn:mrn|1"}},
     "request": {"method": "PUT", "url": "CarePlan?identifier=urn:cp|9"}},
    {"request": {"method": "DELETE", "url": "Task/old-1"}},
    {"request": {"method": "GET", "url": "Patient?name=Doe&_count=2"}},
]))
patch_b64 = base64.b64encode(json.dumps([{"op": "replace", "path": "/status", "value": "in-progress"}]).encode()).decode()
put('bundle_plan', bundle("batch", [
    {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch_b64},
     "request": {"method": "PATCH", "url": "Task/t1", "ifMatch": "W/\"3\""}},
    {"resource": {"resourceType": "Parameters", "parameter": fhirpath_patches[0]},
     "request": {"method": "PATCH", "url": "Task?identifier=x|1"}},
    {"request": {"method": "HEAD", "url": "http://fuzz.example/fhir/Patient/p1/_history/2"}},
    {"request": {"method": "GET", "url": "Patient/p1/$everything"}},
    {"fullUrl": "http://fuzz.example/fhir/Patient/p9", "resource": {"resourceType": "Patient", "id": "p9"},
     "request": {"method": "PUT", "url": "Patient/p9"}},
]))
put('bundle_plan', bundle("transaction", [
    {"fullUrl": u1, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
    {"fullUrl": u1, "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]))
put('bundle_plan', bundle("document", []))
put('bundle_plan', '{"resourceType":"Bundle","type":"transaction","entry":[1,{"request":{}},'
                   '{"request":{"method":"POST","url":"Patient/x"}}]}')

# jwt: first byte even = a compact token (HS256 with the target's secret), odd = claims to sign
secret = b"fuzz-secret-0123456789abcdef-0123456789"


def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b'=')


def tok(header, claims):
    h, c = b64(json.dumps(header).encode()), b64(json.dumps(claims).encode())
    return h + b'.' + c + b'.' + b64(hmac.new(secret, h + b'.' + c, 'sha256').digest())


exp = 4102444800
claims = [
    {"sub": "alice", "exp": exp, "scope": "user/*.cruds", "fhirUser": "Practitioner/pr1", "role": "admin"},
    {"sub": "app", "exp": exp, "scope": "patient/Observation.rs patient/Patient.r launch/patient", "patient": "p1"},
    {"sub": "etl", "exp": exp, "scp": ["system/*.cruds", "system/Task.u?status=done"], "client_id": "etl", "nbf": 1},
    {"sub": "old", "exp": 1, "scope": "user/*.*"},
    {"sub": "x", "exp": exp, "roles": ["admin", "nurse"], "azp": "console",
     "scope": "user/Patient.read user/Task.write openid fhirUser"},
]
for c in claims:
    put('jwt', b'\x00' + tok({"alg": "HS256", "typ": "JWT"}, c))
    put('jwt', b'\x01' + json.dumps(c).encode())
put('jwt', b'\x00' + tok({"alg": "none"}, claims[0])[:-10])
put('jwt', b'\x00' + tok({"alg": "RS256", "kid": "rsa1"}, claims[0]))
put('jwt', b'\x00' + tok({"alg": "ES256", "kid": "nope"}, claims[0]))
put('jwt', b'\x00eyJhbGciOiJIUzI1NiJ9..')

for d in sorted(glob.glob('fuzz/seeds/*')):
    print(d, len(os.listdir(d)))
