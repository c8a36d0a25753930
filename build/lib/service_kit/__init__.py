"""What every VibeLux Ops service needs: config, errors, metrics, health, logs, Sentry, auth, audit, DB."""

__version__ = "0.1.0"
