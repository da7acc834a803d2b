#!/usr/bin/env python3
"""Round-trip the official R4 examples (tests/data/examples/) through the pydantic models
datamodel-code-generator generated from openapi/openapi.json: parse each example with the model
of its resourceType, dump it back (by alias, leaving out unset elements) and compare the result
with the original JSON semantically (same objects, arrays and values; 1.50 == 1.5). Any example
that does not parse, or comes back different, fails the run.

It also checks that the models are strict: hand-made invalid resources (a code outside a
required value set, a malformed date, an unknown element, an array where one value is allowed, a
string where a Reference is required, a bad resource inside a Bundle) must be refused.

Usage: roundtrip.py MODELS_MODULE_DIR [EXAMPLES_DIR]
"""
import importlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def diff(a, b, path="$"):
    """First difference between two JSON values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: {'missing after the round trip' if k not in b else 'added by the round trip'}"
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items became {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, bool) or isinstance(b, bool):
        return None if a is b else f"{path}: {a!r} became {b!r}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return None if a == b else f"{path}: {a!r} became {b!r}"
    return None if a == b else f"{path}: {a!r} became {b!r}"


TASK = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Patient/p1"}}
PATIENT = {"resourceType": "Patient", "birthDate": "1974-12-25", "name": [{"family": "Chalmers"}]}
INVALID = [
    ("Task.status 'done'", "Task", {**TASK, "status": "done"}),
    ("Task without intent", "Task", {k: v for k, v in TASK.items() if k != "intent"}),
    ("Task.for as a string", "Task", {**TASK, "for": "Patient/p1"}),
    ("birthDate 25/12/1974", "Patient", {**PATIENT, "birthDate": "25/12/1974"}),
    ("birthDate as an array", "Patient", {**PATIENT, "birthDate": ["1974-12-25"]}),
    ("unknown element", "Patient", {**PATIENT, "nickname": "Pete"}),
    ("Bundle entry Task.status 'done'", "Bundle",
     {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {**TASK, "status": "done"}}]}),
]


def strictness(models):
    """Each invalid resource must be refused, and its valid base accepted."""
    problems = []
    for base in (TASK, PATIENT):
        getattr(models, base["resourceType"]).model_validate(base)
    for what, ty, res in INVALID:
        try:
            getattr(models, ty).model_validate(res)
            problems.append(f"accepted an invalid resource: {what}")
        except Exception:
            pass
    return problems


def main():
    sys.path.insert(0, sys.argv[1])
    examples = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tests", "data", "examples")
    t0 = time.time()
    models = importlib.import_module("icm_fhir_models")
    print(f"imported the generated models in {time.time() - t0:.1f}s")
    ok, failures = 0, []
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(examples) for f in fs if f.endswith(".json")
    )
    for path in files:
        name = os.path.relpath(path, examples)
        with open(path, encoding="utf-8") as f:
            original = json.load(f)
        cls = getattr(models, original["resourceType"], None)
        if cls is None:
            failures.append(f"{name}: no model named {original['resourceType']}")
            continue
        try:
            obj = cls.model_validate(original)
        except Exception as e:  # pydantic.ValidationError, reported with the example's name
            failures.append(f"{name}: does not parse: {str(e)[:600]}")
            continue
        dumped = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
        d = diff(original, dumped)
        if d:
            failures.append(f"{name}: {d}")
        else:
            ok += 1
    strict = strictness(models)
    failures += strict
    print(f"strictness: {len(INVALID) - len(strict)}/{len(INVALID)} invalid resources refused")
    for f in failures:
        print("FAIL", f)
    print(f"python round trip: {ok}/{len(files)} official examples parsed and dumped back unchanged, {len(failures)} mismatches")
    sys.exit(1 if failures or not files else 0)


if __name__ == "__main__":
    main()
