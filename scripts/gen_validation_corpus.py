#!/usr/bin/env python3
"""Derive the code and extension cases of the validation corpus from the specification's own
examples (tests/data/examples/), as small patches so the corpus stays compact.

Usage: python3 scripts/gen_validation_corpus.py

Writes tests/data/validation-corpus/codes/examples-mutated.json and
tests/data/validation-corpus/extensions/examples-mutated.json. Each case names an example, the
edits to make (`set`: JSON pointer -> value; `remove`: JSON pointers) and the issues expected
(`errors`, `warnings`: expression + issue code), computed from fhir-profiles/r4/ (held code
systems, core extension definitions, choice element names). tests/validation_codes.rs applies
and checks them through $validate.
"""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "tests", "data", "examples")
OUT = os.path.join(ROOT, "tests", "data", "validation-corpus")
# The examples the R4 specification itself gets wrong (tests/validate_examples.rs).
KNOWN_BAD = {"Observation/observation-example-clinical-gender.json", "MedicationRequest/medicationrequest0301.json",
             "Questionnaire/questionnaire-zika-virus-exposure-assessment.json"}
BAD_CODE = "not-a-code-zz9"


def load(*p):
    with open(os.path.join(ROOT, *p), encoding="utf-8") as f:
        return json.load(f)


SYSTEMS = load("fhir-profiles", "r4", "codesystems.json")["codeSystem"]
CODES = {u: {c[0] for c in s["concept"]} for u, s in SYSTEMS.items()}
EXTS = load("fhir-profiles", "r4", "extensions.json")["extension"]
CHOICES = load("fhir-profiles", "r4", "choice-elements.json")


def cap(t):
    return t[0].upper() + t[1:]


def segment(key):
    """The expression segment of a JSON key: `_birthDate` -> birthDate, valueQuantity ->
    value.ofType(Quantity)."""
    key = key.lstrip("_")
    for base, types in CHOICES.items():
        if key.startswith(base) and len(key) > len(base):
            for t in types:
                if key == base + cap(t):
                    return f"{base}.ofType({t})"
    return key


def walk(v, ptr, expr, out):
    """(pointer, expression, object) of every JSON object in a resource."""
    if isinstance(v, dict):
        out.append((ptr, expr, v))
        for k, x in v.items():
            if k == "resourceType":
                continue
            walk(x, f"{ptr}/{k}", f"{expr}.{segment(k)}", out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            walk(x, f"{ptr}/{i}", f"{expr}[{i}]", out)


def value_key(o):
    return next((k for k in o if k.startswith("value") and len(k) > 5), None)


def main():
    code_cases, ext_cases = [], []
    for ty in sorted(os.listdir(EX)):
        for name in sorted(os.listdir(os.path.join(EX, ty))):
            ex = f"{ty}/{name}"
            if ex in KNOWN_BAD:
                continue
            res = load("tests", "data", "examples", ty, name)
            objs = []
            walk(res, "", res["resourceType"], objs)
            for ptr, expr, o in objs:
                s, c = o.get("system"), o.get("code")
                is_coding = isinstance(s, str) and isinstance(c, str) and s in CODES and "value" not in o and "unit" not in o
                # con-4: an abated Condition's clinicalStatus is inactive, resolved or remission,
                # so any other code there also fails that invariant (on the Condition).
                also = []
                if ty == "Condition" and expr.startswith("Condition.clinicalStatus") and any(
                        k.startswith("abatement") for k in res):
                    also = [{"expression": "Condition", "code": "invariant"}]
                if is_coding:
                    code_cases.append({"name": f"{ex}: unknown code of {s} at {expr}", "example": ex,
                                       "set": {f"{ptr}/code": BAD_CODE},
                                       "errors": [{"expression": f"{expr}.code", "code": "code-invalid"}] + also})
                    changed = c.swapcase()
                    if changed != c:
                        sensitive = SYSTEMS[s].get("caseSensitive") is True
                        clash = changed in CODES[s]
                        if not clash:
                            case = {"name": f"{ex}: {s}#{c} in another case at {expr}", "example": ex,
                                    "set": {f"{ptr}/code": changed}}
                            if sensitive:
                                case["errors"] = [{"expression": f"{expr}.code", "code": "code-invalid"}] + also
                            code_cases.append(case)
                url = o.get("url")
                if isinstance(url, str) and ptr.split("/")[-2:-1] in (["extension"], ["modifierExtension"]) and "://" in url:
                    d = EXTS.get(url)
                    vk = value_key(o)
                    if d is None:
                        continue
                    if d["value"] and vk:
                        wrong = next(t for t in ("String", "Boolean", "Integer") if t not in {cap(x) for x in d["value"]})
                        val = {"String": "x", "Boolean": True, "Integer": 1}[wrong]
                        ext_cases.append({"name": f"{ex}: {url} with value{wrong} at {expr}", "example": ex,
                                          "remove": [f"{ptr}/{vk}"], "set": {f"{ptr}/value{wrong}": val},
                                          "errors": [{"expression": expr, "code": "value"}]})
                    if not d["value"] and "extension" in o:
                        ext_cases.append({"name": f"{ex}: complex {url} given a value at {expr}", "example": ex,
                                          "remove": [f"{ptr}/extension"], "set": {f"{ptr}/valueString": "x"},
                                          "errors": [{"expression": expr, "code": "structure"}]})
                    unknown = "http://example.org/fhir/StructureDefinition/not-held-" + url.rsplit("/", 1)[-1]
                    ext_cases.append({"name": f"{ex}: {url} renamed to an unknown url at {expr}", "example": ex,
                                      "set": {f"{ptr}/url": unknown},
                                      "warnings": [{"expression": expr, "code": "structure"}]})
    for folder, cases, desc in [
        ("codes", code_cases, "Mutations of the R4 examples: each code of a held code system replaced by an unknown code (error), or given in another case (error for a case-sensitive system, accepted for the v2 tables)"),
        ("extensions", ext_cases, "Mutations of the R4 examples: each held extension given a value of a type its definition does not allow (error), a complex one given a value (error), or renamed to an unknown url (warning)"),
    ]:
        os.makedirs(os.path.join(OUT, folder), exist_ok=True)
        with open(os.path.join(OUT, folder, "examples-mutated.json"), "w", encoding="utf-8") as f:
            f.write('{\n "description": ' + json.dumps(desc) + ',\n "cases": [\n')
            f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
            f.write("\n ]\n}\n")
        print(f"{folder}: {len(cases)} cases")


if __name__ == "__main__":
    main()
