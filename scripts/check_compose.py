#!/usr/bin/env python3
"""Static check of docker-compose.yml (no container engine on our machines): structure, a
health-gated start of icm-fhir after PostgreSQL, a named volume for the database, and an
environment that matches the server's configuration variables."""
import sys

import yaml

path = sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"
doc = yaml.safe_load(open(path, encoding="utf-8"))
errors = []
services = doc.get("services") or {}
db, app = services.get("db"), services.get("icm-fhir")
if not db or not app:
    errors.append("services 'db' and 'icm-fhir' are required")
else:
    if "healthcheck" not in db:
        errors.append("db needs a healthcheck")
    dep = (app.get("depends_on") or {}).get("db") or {}
    if dep.get("condition") != "service_healthy":
        errors.append("icm-fhir must wait for db with condition: service_healthy")
    env = app.get("environment") or {}
    if not str(env.get("DATABASE_URL", "")).startswith("postgres://"):
        errors.append("icm-fhir needs DATABASE_URL=postgres://…")
    vols = [v.split(":")[0] for v in db.get("volumes", [])]
    named = set((doc.get("volumes") or {}).keys())
    if not any(v in named for v in vols):
        errors.append("db data must live in a named volume")
    if app.get("build") not in (".", {"context": "."}):
        errors.append("icm-fhir must build from the repository's Dockerfile")
for e in errors:
    print(f"{path}: {e}")
sys.exit(1 if errors else 0)
