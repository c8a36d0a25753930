"""Grafana dashboards as code: `python -m grafana` regenerates grafana/dashboards/*.json (committed)."""
