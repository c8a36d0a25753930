"""WSGI target for granian: the proxy (``ratelimit_proxy.wsgi:app``).

Without Redis (memory backend) everything lives in one process: ``serve`` runs one worker and the admin
API is served from a thread of that worker, sharing its counters, keys and bans.
"""

from __future__ import annotations

import os
import threading

from werkzeug.serving import make_server

from ratelimit_proxy.admin import create_admin_app
from ratelimit_proxy.app import create_app
from ratelimit_proxy.config import load
from ratelimit_proxy.wsgi_names import EMBEDDED_ADMIN

settings = load()
app = create_app(settings, reload=load)

if os.environ.get(EMBEDDED_ADMIN) == "1":
    admin_app = create_admin_app(settings, runtime=app.extensions["ratelimit_proxy"], reload=load)
    admin_server = make_server(settings.admin.server.host, settings.admin.server.port, admin_app, threaded=True)
    threading.Thread(target=admin_server.serve_forever, name="admin", daemon=True).start()
