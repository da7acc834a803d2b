#!/usr/bin/env python3
"""Benchmark of Bulk Data export ($export): kick off, poll until the manifest is there, download
every file; report the export time (kick-off to manifest), resources/s, the download time and the
bytes written. Any dataset works; the README figure uses `bench/measures_bench.py ndjson`.

Usage:
  python3 bench/measures_bench.py ndjson --out DIR --patients 10000
  icm-fhir import DIR --database-url postgres://…/export_bench
  python3 bench/export_bench.py --base http://127.0.0.1:8080/fhir [--token T] [--path '$export']
Results go to stdout.
"""
import argparse
import json
import time
import urllib.request


def call(url, token, headers=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        r = urllib.request.urlopen(req, timeout=3600)
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--token")
    ap.add_argument("--path", default="$export", help="kick-off path below the base, with its query")
    ap.add_argument("--no-download", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    st, h, r = call(f"{a.base}/{a.path}", a.token, {"Accept": "application/fhir+json", "Prefer": "respond-async"})
    if st != 202:
        raise SystemExit(f"kick-off: {st} {r.read()[:500]}")
    status_url = h["content-location"]
    while True:
        st, h, r = call(status_url, a.token, {"Accept": "application/json"})
        if st == 200:
            manifest = json.loads(r.read())
            break
        if st != 202:
            raise SystemExit(f"status: {st} {r.read()[:500]}")
        time.sleep(0.2)
    export_s = time.perf_counter() - t0
    total = sum(o["count"] for o in manifest["output"])
    print(f"export {a.path}: {total} resources in {len(manifest['output'])} files, "
          f"{export_s:.1f} s kick-off to manifest = {total / export_s:,.0f} resources/s")
    if not a.no_download:
        t1 = time.perf_counter()
        size = 0
        for o in manifest["output"]:
            st, _, r = call(o["url"], a.token, {"Accept": "application/fhir+ndjson"})
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
        dl = time.perf_counter() - t1
        print(f"download: {size / 1e6:.1f} MB in {dl:.1f} s ({size / 1e6 / max(dl, 1e-9):.0f} MB/s)")
    call(status_url, a.token, method="DELETE")


if __name__ == "__main__":
    main()
