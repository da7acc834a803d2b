#!/usr/bin/env bash
# Soak: a steady mixed load for 10 minutes (default) against one server on PostgreSQL; reports
# the error rate, p99 per interval and start/end RSS (bench/soak.py --help for every option).
#   bench/soak.sh                              # 600 s, 40 requests/s, PostgreSQL on 127.0.0.1:5432
#   bench/soak.sh --seconds 60 --interval 10   # the short version
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/soak.py "$@"
