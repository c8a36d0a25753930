"""Names shared by the CLI and the WSGI module (kept apart: importing wsgi builds the apps)."""

PROXY_TARGET = "ratelimit_proxy.wsgi:app"
ADMIN_TARGET = "ratelimit_proxy.admin_wsgi:app"
EMBEDDED_ADMIN = "VIBELUX_PROXY_EMBEDDED_ADMIN"
