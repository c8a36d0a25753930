"""Demo upstream API that the proxy protects (port 8000): ordinary routes, AI routes, and the
behaviours a proxy must pass through faithfully (streamed downloads and uploads, slow answers,
several Set-Cookie headers, any status code).

Run: ``python -m demo.upstream [--port 8000]``. For releases through the proxy's pools, one process per
colour: ``--colour green`` (every answer carries ``X-Demo-Colour``), ``--fail-percent 20`` (that share of
the API's answers are 500, spread evenly: every 5th), ``--never-ready`` (``/readyz`` answers 503 for ever).
"""

from __future__ import annotations

import argparse
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request
from werkzeug.serving import run_simple

from service_kit.index import ServiceDocs, install_index
from service_kit.tiers import TIERS

CHUNK = 64 * 1024
DOCS = ServiceDocs(
    "Demo upstream API",
    "The stand-in platform API that the rate-limiting proxy protects under `make up`; call it through the proxy.",
    "Rate-limiting proxy (ratelimit_proxy/)",
)


def create_app(colour: str = "", fail_percent: int = 0, never_ready: bool = False) -> Flask:
    app = Flask("demo.upstream")
    served = Counter[str]()
    lock = threading.Lock()
    api_calls = [0]

    @app.before_request
    def count() -> Response | None:
        with lock:
            served[request.path] += 1
            if not request.path.startswith("/api/") or not fail_percent:
                return None
            api_calls[0] += 1
            number = api_calls[0]
        # Evenly spread: call n fails when floor(n * p / 100) moves, so 20% is exactly every 5th call.
        if (number * fail_percent) // 100 != ((number - 1) * fail_percent) // 100:
            response = jsonify(error="injected failure", colour=colour)
            response.status_code = 500
            return response
        return None

    @app.after_request
    def tag(response: Response) -> Response:
        if colour:
            response.headers["X-Demo-Colour"] = colour
        return response

    @app.get("/readyz")
    def readyz() -> Response:
        """Ready unless started with --never-ready (a colour whose start never completes)."""
        response = jsonify(status="not ready" if never_ready else "ok", colour=colour)
        response.status_code = 503 if never_ready else 200
        return response

    @app.get("/_demo/served")
    def served_counts() -> Response:
        """How many requests each path received: lets a test see what a proxy let through."""
        with lock:
            return jsonify(dict(served))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    install_index(app, "demo-api", DOCS)  # also what the proxy's port answers at `/`

    @app.get("/_demo/providers/<any(ai, payments):provider>/status")
    def provider_status(provider: str) -> Response:
        """Stand-in status pages of the AI and payments providers, so `make up` works offline."""
        return jsonify(status="ok", provider=provider)

    @app.get("/api/v1/users")
    def users() -> Response:
        return jsonify(users=[{"id": i, "name": f"user-{i}"} for i in range(1, 4)], query=request.args)

    @app.get("/api/v1/catalog")
    def catalog() -> Response:
        """The one answer a shared cache may store (``public``, 60 s), naming the colour that made it: the
        release tests check that the proxy's cache never serves one colour's answer to another's callers."""
        response = jsonify(plans=list(TIERS), colour=colour)
        response.headers["Cache-Control"] = "public, max-age=60"
        return response

    @app.route("/api/v1/echo", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def echo() -> Response:
        """What arrived: the proxy's tests check forwarded headers and bodies here."""
        digest, size = hashlib.sha256(), 0
        while chunk := request.stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        headers = {k: v for k, v in request.headers.items()}
        return jsonify(
            method=request.method,
            path=request.path,
            query=request.query_string.decode(),
            headers=headers,
            body_bytes=size,
            body_sha256=digest.hexdigest(),
        )

    @app.post("/api/ai/complete")
    def ai_complete() -> Response:
        prompt = (request.get_json(silent=True) or {}).get("prompt", "")
        return jsonify(model="demo-1", completion=f"echo: {prompt}"[:200])

    @app.post("/api/ai/embeddings")
    def ai_embeddings() -> Response:
        text = (request.get_json(silent=True) or {}).get("text", "")
        digest = hashlib.sha256(text.encode()).digest()
        return jsonify(model="demo-embed-1", embedding=[b / 255 for b in digest[:8]])

    @app.get("/api/v1/download")
    def download() -> Response:
        """``size`` bytes, generated chunk by chunk: a proxy that buffers shows up in its memory."""
        size = request.args.get("size", default=CHUNK, type=int)

        def body() -> Iterator[bytes]:
            left = size
            block = b"x" * CHUNK
            while left > 0:
                yield block[: min(left, CHUNK)]
                left -= CHUNK

        return Response(body(), mimetype="application/octet-stream", headers={"Content-Length": str(size)})

    @app.get("/api/v1/slow")
    def slow() -> Response:
        seconds = request.args.get("seconds", default=1.0, type=float)
        time.sleep(min(seconds, 30.0))
        return jsonify(slept=seconds)

    @app.get("/api/v1/session")
    def session() -> Response:
        response = jsonify(session="started")
        response.set_cookie("session", "abc", httponly=True)
        response.set_cookie("theme", "dark")
        return response

    @app.get("/api/v1/status/<int:code>")
    def status(code: int) -> Response:
        response = jsonify(status=code)
        response.status_code = code
        return response

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--colour", default="", help="name sent back in X-Demo-Colour (blue, green, ...)")
    parser.add_argument("--fail-percent", type=int, default=0, choices=range(101), metavar="0-100")
    parser.add_argument("--never-ready", action="store_true", help="/readyz answers 503 for ever")
    args = parser.parse_args()
    app = create_app(args.colour, args.fail_percent, args.never_ready)
    run_simple(args.host, args.port, app, threaded=True)


if __name__ == "__main__":
    main()
