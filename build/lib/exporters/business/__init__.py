"""Business exporter: named SQL queries run on their own schedule, results served from cache."""
