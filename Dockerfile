# syntax=docker/dockerfile:1
# The musicgen-jax server (python serve.py), configured through MUSICGEN_* environment variables
# (docs/serving.md#settings). One Dockerfile, two variants:
#   docker build -t musicgen-jax:cpu .                              # CPU: jax + PyTorch's CPU pin
#   docker build --build-arg VARIANT=cuda -t musicgen-jax:cuda .    # NVIDIA GPU: jax[cuda12]
# The CUDA libraries come as pip wheels with jax[cuda12], so both variants share the slim Python base;
# the GPU image needs only the host's driver (the NVIDIA container toolkit). See docs/deployment.md.

ARG PYTHON_VERSION=3.11

# ------------------------------------------------------------------ build: the project in a venv
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints/ constraints/
COPY musicgen_jax/ musicgen_jax/
# cpu: the CPU constraints (PyTorch's CPU build); cuda: the cuda extra (jax[cuda12]).
RUN case "${VARIANT}" in \
      cpu) pip install --no-cache-dir . -c constraints/cpu.txt ;; \
      cuda) pip install --no-cache-dir "./[cuda]" ;; \
      *) echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2; exit 2 ;; \
    esac

# ------------------------------------------------------------------ runtime: non-root, volumes, probe
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="musicgen-jax" \
      org.opencontainers.image.description="MusicGen text-to-music server in JAX (${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 musicgen \
    && useradd --system --uid 10001 --gid musicgen --create-home --home-dir /home/musicgen musicgen \
    && mkdir -p /data /cache/xla /cache/huggingface \
    && chown -R musicgen:musicgen /data /cache
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY serve.py ./
# Listen on every interface (the default, 127.0.0.1, is unreachable from outside a container); the
# task store and audio in /data; compiled XLA programs in /cache/xla, so a restarted container
# skips compilation; downloaded hub models in /cache/huggingface. Mount volumes on /data and /cache.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MUSICGEN_HOST=0.0.0.0 \
    MUSICGEN_PORT=8000 \
    MUSICGEN_DATA_DIR=/data \
    MUSICGEN_COMPILATION_CACHE_DIR=/cache/xla \
    HF_HOME=/cache/huggingface
VOLUME ["/data", "/cache"]
USER 10001:10001
EXPOSE 8000
# /health answers 200 once the model is loaded (503 before; nothing listens while it loads):
# start-period covers a model download and load.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MUSICGEN_PORT', '8000') + '/health', timeout=4)"]
CMD ["python", "serve.py"]
