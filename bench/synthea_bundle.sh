#!/usr/bin/env bash
# Load one Synthea patient history — a transaction Bundle — into a release build in one request,
# on SQLite and on PostgreSQL: wall time of the POST, the server's peak RSS (VmHWM), and a check
# that every entry was written.
#
# The Bundle: $SYNTHEA_BUNDLE if set (e.g. a file of `synthea -p 20 -s 42 -a 55-80 -o OUT`,
# OUT/fhir/*.json), else a Synthea-shaped Bundle of N entries from bench/synthea_shaped.py.
# Usage: cargo build --release && bash bench/synthea_bundle.sh [N]
# PREFER=return=minimal sends that Prefer header (default: none, as Synthea loaders do: the
# response then carries every stored resource).
# PostgreSQL: PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres); a database is
# created and dropped per run. BACKENDS="sqlite postgres" by default.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/icm-fhir}
PORT=${PORT:-18472}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
WORK=$(mktemp -d)
SRV=
DB=
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
  [ -n "$DB" ] && psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

BUNDLE=${SYNTHEA_BUNDLE:-$WORK/bundle.json}
[ -n "${SYNTHEA_BUNDLE:-}" ] || python3 bench/synthea_shaped.py "$N" > "$BUNDLE"
read -r ENTRIES TYPES < <(python3 -c '
import json, sys, collections
b = json.load(open(sys.argv[1]))
c = collections.Counter(e["resource"]["resourceType"] for e in b["entry"])
print(len(b["entry"]), ",".join(f"{t}:{n}" for t, n in c.most_common()))' "$BUNDLE")
MB=$(du -m "$BUNDLE" | cut -f1)
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg); $BUNDLE: $ENTRIES entries, ${MB} MB; Prefer: ${PREFER:-none}"

run() { # backend
  local backend=$1 url
  if [ "$backend" = postgres ]; then
    DB=icm_bench_$$
    psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
    url=${PG_ADMIN_URL%/*}/$DB
  else
    url=sqlite://$WORK/bench.db
  fi
  DATABASE_URL=$url ICM_AUTH=off ICM_BIND=127.0.0.1:$PORT RUST_LOG=warn "$BIN" serve > "$WORK/$backend.log" 2>&1 &
  SRV=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  local rss0 t0 t1 status cpu0 cpu1
  rss0=$(awk '/VmHWM/ {print $2}' "/proc/$SRV/status")
  cpu0=$(awk '{print $14 + $15}' "/proc/$SRV/stat")
  t0=$(date +%s.%N)
  status=$(curl -s -o "$WORK/response.json" -w '%{http_code}' -X POST -H 'Content-Type: application/fhir+json' \
    ${PREFER:+-H "Prefer: $PREFER"} --data-binary "@$BUNDLE" "http://127.0.0.1:$PORT/fhir")
  t1=$(date +%s.%N)
  local hwm stored
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SRV/status")
  cpu1=$(awk '{print $14 + $15}' "/proc/$SRV/stat")
  stored=$(python3 -c '
import json, sys, urllib.request
total = 0
for t in sys.argv[2].split(","):
    ty = t.split(":")[0]
    u = f"http://127.0.0.1:{sys.argv[1]}/fhir/{ty}?_summary=count"
    total += json.load(urllib.request.urlopen(u))["total"]
print(total)' "$PORT" "$TYPES")
  kill "$SRV"; wait "$SRV" 2>/dev/null || true
  SRV=
  if [ "$backend" = postgres ]; then
    psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
    DB=
  fi
  printf '%-9s HTTP %s  %6.1f s (server CPU %5.1f s)  peak RSS %5d MB (idle %d MB)  stored %s of %s\n' \
    "$backend" "$status" "$(echo "$t1 - $t0" | bc)" "$(echo "($cpu1 - $cpu0) / $(getconf CLK_TCK)" | bc -l)" \
    $((hwm / 1024)) $((rss0 / 1024)) "$stored" "$ENTRIES"
  [ "$status" = 200 ] || { head -c 600 "$WORK/response.json"; echo; }
}

for b in ${BACKENDS:-sqlite postgres}; do run "$b"; done
