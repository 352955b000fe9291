# OncoNode: DICOM listener + analysis + HTTP API in one process. Research use only, not for diagnosis.
# Build: docker build -t onconode:0.1.0 .      Run: see README.md ("Docker") or compose.yaml.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY onconode ./onconode
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ONCONODE_CONFIG=/etc/onconode/onconode.yaml \
    ONCONODE_NODE__HOST=0.0.0.0 \
    ONCONODE_API__HOST=0.0.0.0 \
    ONCONODE_API__PORT=8080 \
    ONCONODE_STORAGE__ROOT=/var/lib/onconode/store \
    ONCONODE_STORAGE__RESULTS=/var/lib/onconode/results \
    ONCONODE_STATE__DATABASE=/var/lib/onconode/onconode.db \
    ONCONODE_AUDIT__PATH=/var/lib/onconode/audit.jsonl \
    ONCONODE_ANALYSIS__MODELS=/opt/onconode/models
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/onconode --create-home onconode
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/onconode.yaml /etc/onconode/onconode.yaml
# The released models (ONNX + manifest + card); verified against their sha256 at every start.
COPY models/ /opt/onconode/models/
USER onconode
WORKDIR /var/lib/onconode
VOLUME ["/var/lib/onconode"]
EXPOSE 11112 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["onconode", "serve"]
