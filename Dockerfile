# The operator image for clusters (kind or real). Not built by `make test`: this
# machine has no Docker engine; the tests run the same code as a process.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# SoftHSM2 only for trying the pkcs11 backend; a real HSM ships its own module.
RUN apt-get update && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
COPY migrations /app/migrations
ENV KEYLEDGER_MIGRATIONS_DIR=/app/migrations \
    KEYLEDGER_DATA_DIR=/var/lib/keyledger \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["keyledger"]
CMD ["run", "--standalone"]
