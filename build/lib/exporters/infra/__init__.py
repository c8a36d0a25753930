"""Infrastructure exporter: node_exporter-compatible host metrics and per-process metrics via psutil."""
