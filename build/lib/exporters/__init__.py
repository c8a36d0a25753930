"""Prometheus exporters of the VibeLux operations stack: infrastructure, service health, business."""
