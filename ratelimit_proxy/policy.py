"""Which limits a request meets: its tier's windows, the AI quota on AI routes, and route overrides.

Built once from settings (validated there: a bad tier file stops start-up, and so does a tier table whose
names are not exactly the platform's, service_kit.tiers.TIERS), then asked per request;
answers are cached per (tier, matched route, AI) so the hot path does one dict lookup and a few regexes.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ratelimit_proxy.limiter import Limit
from ratelimit_proxy.settings import LimitSettings
from service_kit.tiers import TIERS

WINDOWS = (("burst", "burst_per_second", 1), ("minute", "per_minute", 60), ("hour", "per_hour", 3600))
AI_WINDOW = ("ai-day", "ai_per_day", 86400)


class PolicyError(ValueError):
    """A tier file that cannot be used; ``key`` names the setting."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        self.key, self.expected, self.got = key, expected, got
        super().__init__(f"{key}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class RoutePlan:
    """Everything the limiter needs for one request."""

    limits: tuple[Limit, ...]
    cost: int
    is_ai: bool
    policy_header: str


def compile_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True)
class _Route:
    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    cost: int
    limits: tuple[Limit, ...]


class Policy:
    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.tiers: dict[str, tuple[Limit, ...]] = {}
        self._ai: dict[str, Limit] = {}
        for name in settings.tiers:
            if name not in TIERS:
                raise PolicyError(f"limits.tiers.{name}", f"only the platform's tiers: {', '.join(TIERS)}")
        for tier in TIERS:
            if tier not in settings.tiers:
                raise PolicyError(f"limits.tiers.{tier}", f"limits for every platform tier: {', '.join(TIERS)}")
            values = settings.tiers[tier]
            limits = []
            for name, attr, seconds in WINDOWS:
                limits.append(self._limit(f"limits.tiers.{tier}.{attr}", name, getattr(values, attr), seconds))
            self.tiers[tier] = tuple(limits)
            name, attr, seconds = AI_WINDOW
            self._ai[tier] = self._limit(f"limits.tiers.{tier}.{attr}", name, values.ai_per_day, seconds)
        self._ai_patterns = [compile_glob(p) for p in settings.ai_paths]
        self._routes = []
        shared: dict[str, Limit] = {}
        for i, route in enumerate(settings.routes):
            key = f"limits.routes[{i}]"
            if route.cost < 1:
                raise PolicyError(f"{key}.cost", "at least 1", route.cost)
            smallest = min(lim.quota for lims in self.tiers.values() for lim in lims)
            if route.cost > smallest:
                raise PolicyError(f"{key}.cost", f"at most the smallest quota ({smallest})", route.cost)
            extra = tuple(
                self._limit(f"{key}.limits[{j}]", f"route-{lim.name}", lim.quota, lim.window_seconds)
                for j, lim in enumerate(route.limits)
            )
            for j, lim in enumerate(extra):
                # A limit's name is its counter's key: one name shared by routes is one shared quota, so
                # it must mean the same quota over the same window everywhere.
                other = shared.setdefault(lim.name, lim)
                if (other.quota, other.window_seconds) != (lim.quota, lim.window_seconds):
                    expected = (
                        f"the quota and window of the other {lim.name[6:]!r} ({other.quota}/{other.window_seconds}s)"
                    )
                    raise PolicyError(f"{key}.limits[{j}]", expected, f"{lim.quota}/{lim.window_seconds}s")
            methods = frozenset(m.upper() for m in route.methods)
            self._routes.append(_Route(route.name, methods, compile_glob(route.path), route.cost, extra))
        self._plans: dict[tuple[str, int, bool], RoutePlan] = {}

    def _limit(self, key: str, name: str, quota: int, seconds: int) -> Limit:
        buckets = self.settings.buckets
        if quota < 1:
            raise PolicyError(key, "a quota of at least 1", quota)
        if seconds < 1 or (seconds * 1000) % buckets:
            raise PolicyError(key, f"a window in whole seconds that {buckets} buckets divide into whole ms", seconds)
        return Limit(name, quota, seconds, buckets)

    def plan(self, tier: str, method: str, path: str) -> RoutePlan:
        """Limits, cost and policy header of a request (``tier`` must be known)."""
        route_index = next(
            (i for i, r in enumerate(self._routes) if (not r.methods or method in r.methods) and r.pattern.match(path)),
            -1,
        )
        is_ai = any(p.match(path) for p in self._ai_patterns)
        cache_key = (tier, route_index, is_ai)
        plan = self._plans.get(cache_key)
        if plan is None:
            limits = list(self.tiers[tier])
            if is_ai:
                limits.append(self._ai[tier])
            cost = 1
            if route_index >= 0:
                limits += self._routes[route_index].limits
                cost = self._routes[route_index].cost
            plan = RoutePlan(tuple(limits), cost, is_ai, policy_header(limits))
            self._plans[cache_key] = plan
        return plan


def policy_header(limits: list[Limit]) -> str:
    """``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers-10): one item per window."""
    return ", ".join(f'"{lim.name}";q={lim.quota};w={lim.window_seconds}' for lim in limits)
