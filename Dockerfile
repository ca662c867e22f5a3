# The operator image for clusters (kind or real). Not built by `make test`: this
# machine has no Docker engine; tests/e2e/test_container_entrypoints.py runs the
# same entry points as processes, with the manifests' arguments and environment.
# `make lint` holds this file to hadolint.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="keyledger" \
      org.opencontainers.image.description="Kubernetes operator for per-tenant encryption keys in external KMSes" \
      org.opencontainers.image.licenses="Apache-2.0"
# SoftHSM2 only for trying the pkcs11 backend; a real HSM ships its own module.
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2=2.6.1-2.1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
COPY migrations /app/migrations
# The root filesystem is read-only in the Deployment: the data dir (a volume)
# and /tmp are the only places written, HOME included.
ENV KEYLEDGER_MIGRATIONS_DIR=/app/migrations \
    KEYLEDGER_DATA_DIR=/var/lib/keyledger \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["keyledger"]
# Standalone unless KEYLEDGER_PEERING names a peering (the manifests set it).
CMD ["run", "--liveness=http://0.0.0.0:8080/healthz"]
