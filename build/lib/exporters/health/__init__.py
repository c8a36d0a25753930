"""Service-health exporter: probes dependencies on their own schedule and serves the last results."""
