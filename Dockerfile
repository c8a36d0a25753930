# One image for every Python service of the stack; docker-compose.yml picks the command per service.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VIBELUX_RUN_DIR=/var/run/vibelux
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service_kit ./service_kit
COPY exporters ./exporters
COPY ratelimit_proxy ./ratelimit_proxy
COPY tickets_app ./tickets_app
COPY flags_service ./flags_service
COPY demo ./demo
RUN pip install --no-cache-dir '.[postgres]' && useradd --system --uid 10001 vibelux \
    && mkdir -p /var/run/vibelux /data && chown vibelux /var/run/vibelux /data
COPY config ./config
COPY docs/runbooks ./docs/runbooks
USER vibelux
EXPOSE 8000 8080 8081 8082 9101 9102 9103 9180
