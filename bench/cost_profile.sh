#!/usr/bin/env bash
# Instructions per request, by configuration: the release server runs under
# `valgrind --tool=callgrind` with instrumentation off until it is ready, then N identical
# requests are sent on one keep-alive connection and counted. Instruction counts do not depend
# on what else the machine is doing (wall-clock throughput does), so this is how the cost of
# authentication and auditing is compared on a shared 2-core machine.
#
# Usage: cargo build --release && bash bench/cost_profile.sh [N]
#   CONFIGS="off auth audit"  which configurations (default all three):
#     off   ICM_AUTH=off ICM_AUDIT=off
#     auth  ICM_AUTH=on  ICM_AUDIT=off (HS256 token, system/*.cruds)
#     audit ICM_AUTH=on  ICM_AUDIT=on  (production defaults)
#   PATHS="/fhir/Patient/ID ..." requests to profile (default: a Patient read and a search)
#   TOP=25 functions to list per run (inclusive cost, from callgrind_annotate)
# Output: bench/results/cost-<date>.txt (a table of instructions per request) and the
# callgrind.out files in a temporary folder (kept when KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/icm-fhir}
CONFIGS=${CONFIGS:-"off auth audit"}
TOP=${TOP:-25}
SECRET="bench-secret-0123456789abcdef0123456789abcdef"
WORK=$(mktemp -d)
PORT=${PORT:-18561}
SRV=
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)"; exit 1; }
mkdir -p bench/results
OUT=bench/results/cost-$(date -u +%Y%m%d-%H%M).txt
TOKEN=$(ICM_JWT_SECRET=$SECRET "$BIN" token --sub bench --scope 'system/*.cruds' --ttl 1d)

# One database for every configuration: a Patient and a few Tasks to read.
DB=$WORK/cost.db
ICM_AUTH=off ICM_AUDIT=off DATABASE_URL=sqlite://$DB ICM_BIND=127.0.0.1:$PORT "$BIN" serve \
  >"$WORK/seed.log" 2>&1 &
SRV=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
PID=$(curl -sf -X PUT -H 'Content-Type: application/fhir+json' \
  -d '{"resourceType":"Patient","id":"cost1","name":[{"family":"Cost","given":["Ada"]}],"birthDate":"1950-01-01"}' \
  "http://127.0.0.1:$PORT/fhir/Patient/cost1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for i in 1 2 3; do
  curl -sf -X POST -H 'Content-Type: application/fhir+json' \
    -d "{\"resourceType\":\"Task\",\"status\":\"requested\",\"intent\":\"order\",\"for\":{\"reference\":\"Patient/$PID\"}}" \
    "http://127.0.0.1:$PORT/fhir/Task" >/dev/null
done
kill $SRV; wait $SRV 2>/dev/null || true; SRV=

PATHS=${PATHS:-"/fhir/Patient/$PID /fhir/Task?patient=Patient/$PID"}

drive() { # $1 path, $2 token or empty: N requests on one connection
  python3 - "$PORT" "$1" "$2" "$N" <<'EOF'
import http.client, sys
port, path, token, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
h = {"Authorization": "Bearer " + token} if token else {}
for _ in range(n):
    c.request("GET", path, headers=h)
    r = c.getresponse(); r.read()
    assert r.status == 200, (r.status, path)
EOF
}

printf '# instructions per request (callgrind, %s requests each, release build %s)\n' "$N" "$(git rev-parse --short HEAD)" | tee "$OUT"
printf '| request | %s |\n' "$(echo $CONFIGS | sed 's/ / | /g')" | tee -a "$OUT"
printf '|---|%s\n' "$(for _ in $CONFIGS; do printf -- '---|'; done)" | tee -a "$OUT"
for path in $PATHS; do
  row="| \`$path\` |"
  for cfg in $CONFIGS; do
    case $cfg in
      off) auth=off; audit=off; tok= ;;
      auth) auth=on; audit=off; tok=$TOKEN ;;
      audit) auth=on; audit=on; tok=$TOKEN ;;
      *) echo "unknown configuration $cfg"; exit 2 ;;
    esac
    tag=$(echo "$path" | tr -c 'A-Za-z0-9' '_')-$cfg
    ICM_AUTH=$auth ICM_AUDIT=$audit ICM_JWT_SECRET=$SECRET ICM_WORKERS=1 \
      ICM_AUDIT_SPOOL=$WORK/spool.jsonl DATABASE_URL=sqlite://$DB ICM_BIND=127.0.0.1:$PORT RUST_LOG=warn \
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg-$tag.out" \
      "$BIN" serve >"$WORK/$tag.log" 2>&1 &
    SRV=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
    drive "$path" "$tok" # warm-up (caches, pool, lazy statics), not counted
    callgrind_control -i on $SRV >/dev/null
    drive "$path" "$tok"
    sleep 1 # the audit writer's batch of these requests
    callgrind_control -i off $SRV >/dev/null
    kill -INT $SRV; wait $SRV 2>/dev/null || true; SRV=
    total=$(callgrind_annotate "$WORK/cg-$tag.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    per=$((total / N))
    row="$row $per |"
    callgrind_annotate --inclusive=yes "$WORK/cg-$tag.out" 2>/dev/null >"$WORK/top-$tag.txt"
  done
  echo "$row" | tee -a "$OUT"
done
echo "profiles: $WORK (KEEP=1 keeps them)" | tee -a "$OUT"
