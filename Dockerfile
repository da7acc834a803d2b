# syntax=docker/dockerfile:1
# icm-fhir: multi-stage build. Dependencies are built in their own layer so that a source change
# does not rebuild them; the runtime image is slim and runs as a non-root user.

FROM rust:1-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# 1. dependencies only (cached until Cargo.toml/Cargo.lock change)
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && mkdir -p migrations/postgres migrations/sqlite fhir-profiles \
 && cargo build --release --locked || true
# 2. the application
COPY src ./src
COPY migrations ./migrations
COPY fhir-profiles ./fhir-profiles
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin icm-fhir

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/icm-fhir --create-home icm
COPY --from=build /src/target/release/icm-fhir /usr/local/bin/icm-fhir
USER 10001
WORKDIR /var/lib/icm-fhir
VOLUME ["/var/lib/icm-fhir/data"]
ENV ICM_BIND=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///var/lib/icm-fhir/data/icm.db \
    RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/icm-fhir"]
CMD ["serve"]
