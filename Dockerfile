# meshsearch: the all-in-one Flow (flows/meshsearch.yml) over gRPC on port 54321.
#   CPU (default): docker build -t meshsearch:0.1.0 .
#   CUDA:          docker build -t meshsearch:0.1.0-cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#   Run:           docker run -p 54321:54321 -v meshsearch-data:/workspace meshsearch:0.1.0
# The same image runs any single executor (flows/executor.yml, MESHSEARCH_EXECUTOR) for Kubernetes.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Where torch comes from: the CPU wheels by default, a CUDA index (cu126, ...) for GPU images.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} PIP_DISABLE_PIP_VERSION_CHECK=1
# hnswlib ships as source only: it needs a C++ compiler to build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt ./
# The README's install steps: upgrade pip (pip 23 cannot resolve jina's pins), then the pins.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --upgrade pip \
    && pip install --no-cache-dir -r requirements.txt
COPY pyproject.toml README.md ./
COPY meshsearch ./meshsearch
COPY executors ./executors
COPY flows ./flows
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN useradd --create-home --uid ${UID} meshsearch \
    && mkdir -p /workspace \
    && chown meshsearch:meshsearch /workspace
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The installed package carries the Flows (package data); the executor config for Kubernetes pods
# is linked from there.
RUN /opt/venv/bin/python -c "import flows, os; os.symlink(os.path.join(os.path.dirname(flows.__file__), 'executor.yml'), 'config.yml')"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    JINA_OPTOUT_TELEMETRY=1 \
    MESHSEARCH_HOST=0.0.0.0 \
    MESHSEARCH_PORT=54321 \
    MESHSEARCH_WORKSPACE=/workspace \
    MESHSEARCH_DATA_ROOTS=/data
USER ${UID}
VOLUME ["/workspace"]
EXPOSE 54321
HEALTHCHECK --interval=30s --timeout=20s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys; from jina import Client; sys.exit(not Client(host='grpc://127.0.0.1:' + os.environ['MESHSEARCH_PORT']).is_flow_ready())"]
CMD ["meshsearch", "serve", "meshsearch.yml", "--workspace", "/workspace"]
