#!/usr/bin/env bash
# Cost of authentication and auditing: wrk against a release build on loopback, SQLite (or
# DATABASE_URL=postgres://… for PostgreSQL), reads (GET Patient/id) and writes (POST Observation),
# with auth off / auth on + audit off / auth on + audit on.
# Usage: cargo build --release && bash bench/security_bench.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
CONN=${2:-16}
BIN=${BIN:-target/release/icm-fhir}
PORT=18471
WORK=$(mktemp -d)
trap 'kill $SRV 2>/dev/null || true; rm -rf "$WORK"' EXIT
export ICM_JWT_SECRET=bench-secret-0123456789abcdef0123456789abcdef
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.body = '{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/PID"}}'
LUA

run() { # name auth audit
  local name=$1 auth=$2 audit=$3
  local db=${DATABASE_URL_BENCH:-sqlite://$WORK/$name.db}
  ICM_AUTH=$auth ICM_AUDIT=$audit DATABASE_URL=$db ICM_BIND=127.0.0.1:$PORT RUST_LOG=warn \
    $BIN serve > "$WORK/$name.log" 2>&1 &
  SRV=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
  local tok
  tok=$(DATABASE_URL=$db $BIN token --sub bench --scope 'system/*.cruds' --ttl 1h)
  local H=(-H "Authorization: Bearer $tok")
  local pid
  pid=$(curl -s "${H[@]}" -H 'Content-Type: application/fhir+json' -X POST \
    -d '{"resourceType":"Patient","name":[{"family":"Bench"}]}' http://127.0.0.1:$PORT/fhir/Patient |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  sed "s/PID/$pid/" "$WORK/post.lua" > "$WORK/post-$name.lua"
  local r w
  # Writes first: their AuditEvents are in their own transactions, so no queue is left behind.
  w=$(wrk -t2 -c"$CONN" -d"${DUR}s" "${H[@]}" -s "$WORK/post-$name.lua" "http://127.0.0.1:$PORT/fhir/Observation" | awk '/Requests\/sec/ {print $2}')
  r=$(wrk -t2 -c"$CONN" -d"${DUR}s" "${H[@]}" "http://127.0.0.1:$PORT/fhir/Patient/$pid" | awk '/Requests\/sec/ {print $2}')
  sleep 3
  local audits
  audits=$(curl -s "${H[@]}" "http://127.0.0.1:$PORT/fhir/AuditEvent?_summary=count" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("total"))')
  kill $SRV; wait $SRV 2>/dev/null || true
  printf '%-22s read %8s req/s   write %8s req/s   AuditEvents %s\n' "$name" "$r" "$w" "$audits"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, ${DUR}s, $CONN connections, ${DATABASE_URL_BENCH:-sqlite}"
run auth-off off off
run auth-on-audit-off on off
run auth-on-audit-on on on
