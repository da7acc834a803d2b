#!/usr/bin/env python3
"""Regenerate fhir-profiles/r4/ and tests/data/ from the shared FHIR R4 4.0.1 reference data.

Usage: python3 scripts/gen_profiles.py [SHARED_FHIR_DIR]   (default: ../shared/fhir-r4)

The outputs are committed; the server embeds fhir-profiles/ at compile time, so a clone
builds without the shared folder. A test (tests/profiles_drift.rs) checks the outputs are
in sync with this script when the shared folder is present.
"""
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "fhir-r4"))
OUT = os.path.join(ROOT, "fhir-profiles", "r4")
DATA = os.path.join(ROOT, "tests", "data")


def load(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return json.load(f)


def dump(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def resource_types():
    """Every concrete R4 resource type with the top-level elements flagged isSummary."""
    out = []
    sdir = os.path.join(SRC, "structure")
    for name in sorted(os.listdir(sdir)):
        if not name.endswith(".json"):
            continue
        sd = load("structure", name)
        if sd.get("kind") != "resource" or sd.get("abstract"):
            continue
        t = sd["type"]
        summary = []
        mandatory = []
        elements = []
        for el in sd["element"]:
            parts = el["path"].split(".")
            if len(parts) != 2:
                continue
            elem = parts[1]
            if el.get("isSummary"):
                summary.append(elem)
            if el.get("min", 0) > 0:
                mandatory.append(elem)
            types = [ty.get("code") for ty in el.get("type", [])]
            elements.append({"name": elem, "types": types, "max": el.get("max", "1")})
        out.append({"type": t, "summary": summary, "mandatory": mandatory, "elements": elements})
    return out


SEARCH_KEYS = ["code", "base", "type", "expression", "target", "modifier", "comparator", "chain", "component", "url"]


def search_parameters(types):
    names = {t["type"] for t in types} | {"Resource", "DomainResource"}
    params = []
    for p in load("search-parameters.json")["parameter"]:
        if not any(b in names for b in p.get("base", [])):
            continue
        params.append({k: p[k] for k in SEARCH_KEYS if k in p})
    return {"fhirVersion": "4.0.1", "parameter": params}


SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


def type_code(path, root, kind, code):
    """The FHIR type of an element; FHIRPath System types are mapped to the FHIR primitive they stand for."""
    if code in SYSTEM_TYPES:
        if kind == "resource" and path == root + ".id":
            return "id"
        if path == "Extension.url":
            return "uri"
        return SYSTEM_TYPES[code]
    return code


def invariants(el):
    """Error-level invariants as [key, FHIRPath expression]; ele-1 and ext-1 on every element are implied."""
    return [[c["key"], c["expression"]] for c in el.get("constraint", [])
            if c.get("severity") == "error" and c["key"] not in ("ele-1",) and not (c["key"] == "ext-1" and el["path"] != "Extension")]


def compact_element(el, root, kind):
    """One element definition in the compact form the validator loads (defaults left out)."""
    out = {"path": el["path"], "min": el.get("min", 0), "max": el.get("max", "*")}
    if "contentReference" in el:
        out["contentReference"] = el["contentReference"].lstrip("#")
    types, targets = [], []
    for t in el.get("type", []):
        code = type_code(el["path"], root, kind, t["code"])
        if code not in types:
            types.append(code)
        if code == "Reference":
            for tp in t.get("targetProfile", []):
                name = tp[len(SD_PREFIX):] if tp.startswith(SD_PREFIX) else tp
                if name not in targets:
                    targets.append(name)
        if code == "Quantity" and any(p.endswith("/SimpleQuantity") for p in t.get("profile", [])):
            out["simpleQuantity"] = True
    if types:
        out["type"] = types
    if targets:
        out["targets"] = targets
    b = el.get("binding")
    if b and b.get("strength") == "required" and b.get("valueSet"):
        out["binding"] = b["valueSet"].split("|")[0]
    inv = invariants(el)
    if inv:
        out["invariants"] = inv
    return out


def definitions():
    """Compact element definitions of every concrete resource type and every data type."""
    out = {}
    files = [("structure", n) for n in sorted(os.listdir(os.path.join(SRC, "structure"))) if n.endswith(".json")]
    files += [("structure/datatypes", n) for n in sorted(os.listdir(os.path.join(SRC, "structure", "datatypes"))) if n.endswith(".json")]
    for folder, name in files:
        sd = load(*folder.split("/"), name)
        kind, t = sd["kind"], sd["type"]
        if kind == "logical":
            continue
        entry = {"kind": kind, "abstract": bool(sd.get("abstract"))}
        if kind != "primitive-type":
            root = sd["element"][0]
            inv = invariants(root)
            if inv:
                entry["invariants"] = inv
            entry["elements"] = [compact_element(el, t, kind) for el in sd["element"][1:]]
        out[t] = entry
    return {"fhirVersion": "4.0.1", "types": out}
def choice_elements():
    """Every choice element name (value[x] -> "value") with the union of its allowed type codes,
    over all resource and data types: the search evaluator expands `value` to `valueQuantity`
    etc. only for these names."""
    out = {}
    for folder in ("structure", os.path.join("structure", "datatypes")):
        d = os.path.join(SRC, folder)
        for name in sorted(os.listdir(d)):
            if not name.endswith(".json"):
                continue
            sd = load(folder, name)
            for el in sd.get("element", []):
                last = el["path"].split(".")[-1]
                if not last.endswith("[x]") or "." not in el["path"]:
                    continue
                codes = out.setdefault(last[:-3], set())
                for t in el.get("type", []):
                    codes.add(t["code"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def main():
    types = resource_types()
    dump(os.path.join(OUT, "definitions.json"), definitions())
    dump(os.path.join(OUT, "choice-elements.json"), choice_elements())
    dump(os.path.join(OUT, "resource-types.json"), types)
    dump(os.path.join(OUT, "search-parameters.json"), search_parameters(types))
    dump(os.path.join(OUT, "compartment-patient.json"), load("compartment-patient.json"))
    dump(os.path.join(OUT, "required-valuesets.json"), load("required-valuesets.json"))
    # Test data: the specification's own examples and HL7's JSON Patch cases.
    ex_out = os.path.join(DATA, "examples")
    if os.path.isdir(ex_out):
        shutil.rmtree(ex_out)
    shutil.copytree(os.path.join(SRC, "examples"), ex_out)
    shutil.copyfile(os.path.join(SRC, "tests", "json-patch-tests.json"), os.path.join(DATA, "json-patch-tests.json"))
    print(f"{len(types)} resource types written to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
