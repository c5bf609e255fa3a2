# syntax=docker/dockerfile:1
# vitserve image: the service (`vitserve serve`) and the trainer (`vitserve train` under msrun) in one runtime.
#
#   CPU (default):  docker build -t vitserve:cpu .
#   Ascend:         docker build -t vitserve:ascend --build-arg BASE_IMAGE=<a CANN image with Python 3.11> .
#   run:            docker run -p 8000:8000 -v vitserve-models:/models vitserve:cpu
#
# Every build step is deploy/scripts/build.sh, which also runs outside Docker (CI runs it); the container's start
# is deploy/scripts/start.sh. See deploy/README.md.

# Any image with Python 3.11 (with venv and pip) and bash. For Ascend: a CANN image matching the hosts' driver, with
# Python 3.11 (MindSpore's Ascend backend finds CANN through its set_env.sh, which start.sh sources).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# The interpreter the environment is built on, and optional extras (e.g. "convert": torch, to import .pth checkpoints).
ARG PYTHON=python3
ARG VITSERVE_EXTRAS=""
WORKDIR /src
COPY . /src
RUN PYTHON="${PYTHON}" VITSERVE_EXTRAS="${VITSERVE_EXTRAS}" bash deploy/scripts/build.sh /opt/vitserve /src

FROM ${BASE_IMAGE} AS runtime
# A fixed numeric uid/gid, so Kubernetes' runAsUser/fsGroup and volume ownership can name it.
ARG VITSERVE_UID=10001
RUN groupadd --system --gid "${VITSERVE_UID}" vitserve \
    && useradd --system --uid "${VITSERVE_UID}" --gid vitserve --home-dir /var/lib/vitserve --create-home vitserve \
    && mkdir -p /models \
    && chown vitserve:vitserve /models
# Only the built environment crosses over: no compilers, no source tree, no pip cache.
COPY --from=build /opt/vitserve /opt/vitserve

ENV PATH=/opt/vitserve/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VITSERVE_HOST=0.0.0.0 \
    VITSERVE_PORT=8000 \
    VITSERVE_STORE_ROOT=/models \
    VITSERVE_BOOTSTRAP=1
# The model store lives outside the image: a named volume here, a ReadWriteMany claim on Kubernetes.
VOLUME ["/models"]
USER vitserve
# MindSpore writes its graph-compile scratch (kernel_meta/, rank_0/) into the working directory.
WORKDIR /var/lib/vitserve
EXPOSE 8000

# Liveness only (the process answers); readiness is /readyz, which Kubernetes probes. The start period covers a
# first-run bootstrap (training the digits model) plus graph compilation. No curl in the image: Python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VITSERVE_PORT', '8000'), timeout=4)"]

# dumb-init is PID 1: it reaps orphaned processes (MindSpore's compile helpers, a bootstrap's workers) and forwards
# SIGTERM to its single child; start.sh `exec`s `vitserve serve`, so that child is the server itself, which drains.
# --single-child: the signal goes to the server only, not its whole process group, so nothing the server started
# dies under in-flight requests; the server stops it when its drain is done.
ENTRYPOINT ["/opt/vitserve/bin/dumb-init", "--single-child", "--"]
CMD ["/opt/vitserve/scripts/start.sh"]
