"""Admin API of the upstream colours and releases (``/api/v1/upstreams``, ``/api/v1/releases``), beside the
proxy's other admin routes (ratelimit_proxy/admin.py): bodies declared once with pydantic, admin role,
every change audited. A release started here is carried out by the controller holding the lease
(``vibelux-release run``, or ``vibelux-release start --wait``); commands are queued for it in Redis."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ratelimit_proxy.admin_common import STORAGE_DOWN, Body, _value_only, api, audit, current_runtime
from ratelimit_proxy.limiter_storage import StorageUnavailable
from ratelimit_proxy.runtime import Runtime
from releases.controller import ReleaseRefused, queue_command, start_release
from releases.store import ReleaseCollector, ReleaseStore
from service_kit.auth import require_role
from service_kit.errors import ConflictError, NotFoundError, ServiceUnavailableError
from service_kit.redis_connect import REDIS_ERRORS

bp = Blueprint("ratelimit_releases", __name__, url_prefix="/api/v1")
POOL_NAME = "^[a-z][a-z0-9-]{0,15}$"
NO_POOL = "a colour named is not one of upstream.pools (details name the field)"
STARTS = {404: NO_POOL, 409: "a release is running already, or it would go from a colour to itself", 503: STORAGE_DOWN}
COMMANDS = {409: "no release is running (or, to resume, none is paused)", 503: STORAGE_DOWN}


def _weights_schema(schema: dict[str, Any]) -> None:
    """In the document as in the checks: names only of the pool-name pattern (pydantic states the key
    pattern as patternProperties alone, which lets any other name through), and not every weight 0."""
    schema["additionalProperties"] = False
    schema["not"] = {"additionalProperties": {"const": 0}}


class PoolWeights(Body):
    weights: dict[Annotated[str, Field(pattern=POOL_NAME)], Annotated[int, Field(ge=0, le=10_000)]] = Field(
        min_length=1,
        description="weight per configured pool, at least one above 0; pools not named get 0",
        json_schema_extra=_weights_schema,
    )

    @field_validator("weights")
    @classmethod
    def some_weight(cls, value: dict[str, int]) -> dict[str, int]:
        if not any(value.values()):
            raise ValueError("at least one pool needs a weight above 0")
        return value


class NewRelease(Body):
    model_config = ConfigDict(populate_by_name=True)

    to: str = Field(pattern=POOL_NAME, description="the colour to release")
    from_: str | None = Field(
        None,
        alias="from",
        pattern=POOL_NAME,
        description="default: the colour with the most weight",
        json_schema_extra=_value_only,
    )


class PoolOut(BaseModel):
    name: str
    url: str
    weight: int
    ready_path: str


class PoolsOut(BaseModel):
    version: int = Field(description="0: the configured weights, nothing stored yet")
    pools: list[PoolOut]


class ReleaseEvent(BaseModel):
    event: str
    at: float = Field(description="epoch seconds")
    message: str


class ReleaseOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    status: Literal["gating", "progressing", "paused", "succeeded", "aborted", "rolled_back", "gate_failed"]
    weight: int = Field(description="the new colour's weight now")
    message: str
    events: list[ReleaseEvent]
    last_analysis: dict[str, Any] | None


def release_collector(runtime: Runtime) -> ReleaseCollector:
    """Release events and colour weights for the admin API's /metrics (read from Redis at scrape time)."""
    assert runtime.redis is not None
    return ReleaseCollector(ReleaseStore(runtime.redis), lambda: runtime.pools.read().weights)


def store() -> ReleaseStore:
    runtime = current_runtime()
    if runtime.redis is None:
        raise NotFoundError("Releases need redis.url: weights and release state are shared there.")
    return ReleaseStore(runtime.redis)


def pools_answer() -> dict[str, Any]:
    pools = current_runtime().pools
    table = pools.read()
    rows = [
        {"name": n, "url": pools.pools[n].url, "weight": table.weights.get(n, 0), "ready_path": pools.ready_paths[n]}
        for n in pools.names
    ]
    return {"version": table.version, "pools": rows}


@bp.get("/upstreams")
@require_role("admin")
@api.validate(responses={200: PoolsOut}, tags=("releases",), security="bearer", extra={503: STORAGE_DOWN})
def list_upstreams() -> ResponseReturnValue:
    """The upstream colours and their weights as every replica reads them."""
    return jsonify(pools_answer())


@bp.put("/upstreams/weights")
@require_role("admin")
@api.validate(
    json=PoolWeights,
    responses={200: PoolsOut},
    tags=("releases",),
    security="bearer",
    extra={404: NO_POOL, 503: STORAGE_DOWN},
)
def set_weights() -> ResponseReturnValue:
    """Set the weights by hand (every replica follows at once); a running release overwrites them at its next step."""
    body: PoolWeights = request.context.json  # type: ignore[attr-defined]
    pools = current_runtime().pools
    for name in body.weights:
        if name not in pools.names:
            problem = f"not a configured pool (pools: {', '.join(pools.names)})"
            raise NotFoundError(f"No pool {name!r}.", {f"weights.{name}": problem})
    before = pools_answer()
    try:
        pools.write(body.weights)
    except StorageUnavailable as exc:
        raise ServiceUnavailableError(f"Redis is unavailable: {exc}") from None
    after = pools_answer()
    audit("pools.weights", "upstream", "weights", before=before, after=after)
    return jsonify(after)


@bp.get("/releases/current")
@require_role("admin")
@api.validate(
    responses={200: ReleaseOut}, tags=("releases",), security="bearer", extra={404: "no release yet", 503: STORAGE_DOWN}
)
def current_release() -> ResponseReturnValue:
    """The running release, or the last one."""
    try:
        state = store().state()
    except REDIS_ERRORS as exc:
        raise ServiceUnavailableError(f"Redis is unavailable: {exc}") from None
    if state is None:
        raise NotFoundError("No release has been started.")
    return jsonify(state)


@bp.post("/releases")
@require_role("admin")
@api.validate(json=NewRelease, responses={201: ReleaseOut}, tags=("releases",), security="bearer", extra=STARTS)
def create_release() -> ResponseReturnValue:
    """Start a release to ``to``: the health gate first, then the configured steps with analysis."""
    body: NewRelease = request.context.json  # type: ignore[attr-defined]
    try:
        state = start_release(store(), current_runtime().pools, body.to, body.from_)
    except ReleaseRefused as exc:
        if exc.status == 404:
            raise NotFoundError(str(exc), {exc.field: str(exc)}) from None
        raise ConflictError(str(exc), {exc.field: str(exc)}) from None
    except (*REDIS_ERRORS, StorageUnavailable) as exc:
        raise ServiceUnavailableError(f"Redis is unavailable: {exc}") from None
    audit("release.start", "release", state["id"], after={"from": state["from"], "to": state["to"]})
    return jsonify(state), 201


@bp.post("/releases/current/<any(pause, resume, abort, promote):action>")
@require_role("admin")
@api.validate(responses={202: ReleaseOut}, tags=("releases",), security="bearer", extra=COMMANDS)
def command_release(action: str) -> ResponseReturnValue:
    """Queue pause, resume, abort or promote for the controller (taken at its next round)."""
    try:
        state = queue_command(store(), action)
    except ReleaseRefused as exc:
        raise ConflictError(str(exc)) from None
    except REDIS_ERRORS as exc:
        raise ServiceUnavailableError(f"Redis is unavailable: {exc}") from None
    audit(f"release.{action}", "release", state["id"], before={"status": state["status"], "weight": state["weight"]})
    return jsonify(state), 202
