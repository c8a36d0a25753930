"""The ``abuse`` settings at work: bans (manual, automatic, escalating), the allow and deny lists, and the
rules that detect abusive clients (limit breaches, scanning, attack paths, many keys).

The ban list is served from an in-process cache refreshed every ``ban_refresh_seconds`` by the runtime (and
on every announced change), so checking a proxied request costs Redis nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ratelimit_proxy.clientip import Network, matches, parse_networks
from ratelimit_proxy.key_ban_storage import Ban, Store
from ratelimit_proxy.limiter_storage import StorageUnavailable
from ratelimit_proxy.policy import compile_glob
from ratelimit_proxy.settings import AbuseSettings, RuleSettings

log = logging.getLogger("ratelimit_proxy")


USER_AGENT_PRODUCT = re.compile(r"([A-Za-z][\w.-]{0,31})/(\d{1,6})")
Fingerprint = Callable[[], str]


def request_fingerprint(ip: str, user_agent: str, header_names: Iterable[str]) -> str:
    """Client IP, User-Agent reduced to product/major version, and a short hash of the set of header
    names: at most ~90 characters whatever the client sends (it goes into logs and ban records)."""
    match = USER_AGENT_PRODUCT.match(user_agent)
    agent = f"{match.group(1)}/{match.group(2)}" if match else ("other" if user_agent else "none")
    names = ",".join(sorted({n.lower() for n in header_names}))
    return f"{ip[:45]}|{agent}|{hashlib.sha256(names.encode()).hexdigest()[:12]}"


def escalated_ban_seconds(offenses: int, settings: AbuseSettings) -> int:
    """``ban_seconds * ban_factor ** (offenses - 1)``, capped at ``ban_max_seconds``. The exponent is
    compared with the cap's first: the power itself overflows a float after a few hundred offenses."""
    base, factor, cap = settings.ban_seconds, settings.ban_factor, settings.ban_max_seconds
    exponent = offenses - 1
    if exponent <= 0 or factor <= 1.0 or base >= cap:
        return max(1, min(base, cap))
    if exponent > math.log(cap / base, factor):
        return cap
    return max(1, int(min(base * factor**exponent, cap)))


class BanList:
    """Deny-list from config, bans from the store (refreshed lazily), allow-list that auto bans skip."""

    def __init__(
        self,
        store: Store,
        settings: AbuseSettings,
        on_ban: Callable[[str], None] = lambda source: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._on_ban = on_ban
        self.settings = settings
        self._allow = parse_networks(settings.allow)
        self._deny = parse_networks(settings.deny)
        self._clock = clock
        self._cached: list[tuple[Network, Ban]] = []
        self._refresh_lock = threading.Lock()

    def check(self, ip: str) -> str | None:
        """Why ``ip`` is refused ("deny-list", "ban"), or None. Reads the cache that ``refresh`` fills."""
        if self._deny and matches(ip, self._deny):
            return "deny-list"
        now = self._clock()
        for network, ban in self._cached:
            if ban.expires_at > now and matches(ip, (network,)):
                return "ban"
        return None

    def refresh(self, now: float | None = None) -> None:
        """Reload the bans from the store; on a store error keep enforcing what we knew."""
        now = self._clock() if now is None else now
        # One refresh at a time (the change listener and the poll both call this): the later one reads
        # the store after the earlier one, so an older list never replaces a newer one.
        with self._refresh_lock:
            try:
                bans = self.store.bans(now)
            except StorageUnavailable:
                return
            self._cached = [(parse_networks([b.network])[0], b) for b in bans]

    def active(self) -> list[Ban]:
        return self.store.bans(self._clock())

    def ban(self, network: str, reason: str, source: str, seconds: int | None = None) -> Ban | None:
        """Ban a network. Automatic bans skip allow-listed addresses and escalate with each offense."""
        if source == "auto" and matches(network, self._allow):
            return None
        if seconds is None:
            seconds = escalated_ban_seconds(self.store.count_offense(network), self.settings)
        now = self._clock()
        ban = Ban(str(parse_networks([network])[0]), reason, source, now, now + seconds)
        self.store.add_ban(ban)
        self._on_ban(source)
        log.warning("banned %s for %ds (%s, %s)", ban.network, seconds, reason, source)
        self.refresh(now)
        return ban

    def unban(self, network: str) -> bool:
        removed = self.store.remove_ban(str(parse_networks([network])[0]))
        self.refresh()
        return removed


class AbuseDetector:
    """The rules of the abuse settings; each one enforces (bans), shadows (log + metric) or is off."""

    def __init__(
        self,
        settings: AbuseSettings,
        bans: BanList,
        on_detect: Callable[[str, str], None],
        store_available: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._store_available = store_available
        self.bans = bans
        self._on_detect = on_detect
        self._clock = clock
        patterns = [compile_glob(p.lower()).pattern for p in settings.attack_path_patterns]
        self._attack = re.compile("|".join(patterns)) if patterns else None
        self._seen_pairs: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._local_breaches: dict[str, tuple[float, int]] = {}  # ip -> (window start, 429s from the cache)

    def attack_path(self, ip: str, raw_path: str, fingerprint: Fingerprint) -> bool:
        """A known attack path; True when the request must be refused now (rule enforced)."""
        rule = self.settings.attack_paths
        if rule.mode == "off" or self._attack is None or not self._attack.match(raw_path.lower()):
            return False
        return self._event("attack_paths", rule, ip, raw_path[:256], fingerprint)

    def response(self, ip: str, status: int, path: str, fingerprint: Fingerprint) -> None:
        """Count what the response says about the client: limit breaches and scanning."""
        if status == 429 and self.settings.limit_breaches.mode != "off":
            self._event("limit_breaches", self.settings.limit_breaches, ip, f"{self._clock():.6f}", fingerprint)
        elif status in (401, 403, 404) and self.settings.scanning.mode != "off":
            self._event("scanning", self.settings.scanning, ip, path[:256], fingerprint)

    def key_seen(self, ip: str, digest: str, fingerprint: Fingerprint) -> None:
        """Many distinct keys (valid or not) from one address. Only pairs new to this process reach the
        store, so a client reusing its key costs nothing here."""
        rule = self.settings.many_keys
        pair = (ip, digest)
        if rule.mode == "off" or pair in self._seen_pairs:
            return
        self._seen_pairs[pair] = None
        if len(self._seen_pairs) > 50_000:
            self._seen_pairs.popitem(last=False)
        self._event("many_keys", rule, ip, digest[:16], fingerprint)

    def local_breach(self, ip: str, fingerprint: Fingerprint) -> None:
        """A 429 from the over-limit cache: counted towards ``limit_breaches`` in this process (fixed
        windows of the rule's period), so a flood of refusals costs Redis nothing until it bans."""
        rule = self.settings.limit_breaches
        if rule.mode == "off":
            return
        now = self._clock()
        started, count = self._local_breaches.get(ip, (now, 0))
        if now - started >= rule.period_seconds:
            started, count = now, 0
        if len(self._local_breaches) > 50_000:
            self._local_breaches.clear()
        self._local_breaches[ip] = (started, count + 1)
        if count + 1 >= rule.threshold:
            try:
                self._matched("limit_breaches", rule, ip, count + 1, fingerprint)
            except StorageUnavailable:
                log.warning("abuse rule limit_breaches skipped: store unavailable")

    def _event(self, name: str, rule: RuleSettings, ip: str, member: str, fingerprint: Fingerprint) -> bool:
        if not self._store_available():
            return False  # the circuit to Redis is open: no request waits for a timeout here
        try:
            count = self.bans.store.record_event(name, ip, member, self._clock(), rule.period_seconds)
            if count < rule.threshold:
                return False
            return self._matched(name, rule, ip, count, fingerprint)
        except StorageUnavailable:
            log.warning("abuse rule %s skipped: store unavailable", name)
            return False

    def _matched(self, name: str, rule: RuleSettings, ip: str, count: int, fingerprint: Fingerprint) -> bool:
        """A rule's threshold was reached: count it, log it, and ban when the rule enforces."""
        self._on_detect(name, rule.mode)
        seen = fingerprint()
        log.warning("abuse rule %s matched %s (%d in %ds, mode %s)", name, seen, count, rule.period_seconds, rule.mode)
        if rule.mode != "enforce":
            return False
        return self.bans.ban(ip, f"{name}: {seen}", "auto") is not None
