# The oscar-faas gateway: the Flask API and the /run fast path under gunicorn, talking to
# OpenFaaS over its REST API (OPENFAAS_URL). Built by `faas-cli up -f stack.yml`
# (lang: dockerfile) or by hand:  docker build -t oscar-faas .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build the wheel (sources and build tools stay in this stage)
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the gateway
FROM ${PYTHON_IMAGE}
# PROMETHEUS_MULTIPROC_DIR: the gunicorn workers add up their /metrics there (a fresh
# container has a fresh /tmp).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/oscar-faas-metrics
COPY --from=build /wheels/ /wheels/
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd -l --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin oscar
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: ask /health (open, answers "Ok") with the stdlib.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
# Event-loop workers (uvicorn's, on uvloop + httptools): /run waits on the loop for as long as
# a function runs, so --timeout only catches a hung loop; RUN_TIMEOUT bounds a call.
CMD ["gunicorn", "--worker-class", "oscar_faas.worker.GatewayWorker", "--workers", "2", "--timeout", "30", "--keep-alive", "75", "--bind", "0.0.0.0:8080", "oscar_faas.api:create_asgi_app()"]
