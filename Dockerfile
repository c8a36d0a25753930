# One image for every Python service of the stack; docker-compose.yml picks the command per service.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VIBELUX_RUN_DIR=/var/run/vibelux
WORKDIR /app
# Pango and a font for weasyprint, which renders the reports service's PDFs
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY service_kit ./service_kit
COPY exporters ./exporters
COPY ratelimit_proxy ./ratelimit_proxy
COPY tickets_app ./tickets_app
COPY flags_service ./flags_service
COPY reports_service ./reports_service
COPY demo ./demo
COPY backups ./backups
# /var/lib/vibelux-*: where compose mounts the backup tool's and the local S3's volumes (a new volume takes
# the owner of the directory it is mounted on)
RUN pip install --no-cache-dir '.[postgres,local-s3]' && useradd --system --uid 10001 vibelux \
    && mkdir -p /var/run/vibelux /data /srv/grafana-dashboards /var/lib/vibelux-backup /var/lib/vibelux-s3 \
        /var/lib/vibelux-s3-ca \
    && chown vibelux /var/run/vibelux /data /srv/grafana-dashboards /var/lib/vibelux-backup /var/lib/vibelux-s3 \
        /var/lib/vibelux-s3-ca
COPY config ./config
# `python -m grafana --out` (compose's grafana-dashboards) renders the dashboards with the public addresses
COPY grafana ./grafana
COPY docs/runbooks ./docs/runbooks
USER vibelux
EXPOSE 8000 8080 8081 8082 8083 8333 9101 9102 9103 9104 9180
