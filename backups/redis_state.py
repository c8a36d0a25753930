"""Redis stores: a logical export of what must survive, through the proxy's own storage interface.

What must survive, and is exported: the API keys (id = SHA-256 of the key, tier, owner, status, creation
time) and the bans still in force, with their reasons. What is ephemeral by design, and is not: the limiter
counters (a window of at most a day, refilled by traffic; restoring old counts would refuse or allow calls
wrongly), the abuse event windows and offence counts (they decay within a week), and the flag snapshots (a
cache of the flags database, which is backed up itself and rebuilds them at start).

Why an export and not the RDB file: managed Redis hides the file, a cluster keeps one per shard, and an RDB
would restore the counters too. The export goes through ``ratelimit_proxy.key_ban_storage.RedisStore``, so
it works on a single server, Sentinel and Cluster alike and a restore announces every change to the
proxies' replicas as the admin API does.

An export is one gzipped JSON document, ``<prefix>/redis/<store>/<time>.json.gz``, with its SHA-256. A
drill writes a sentinel, exports, reads the newest export back from the object store, loads it into the
storage's in-memory twin (the scratch instance) and compares it with what was read from Redis.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from backups.objects import Document, DocumentedStore, ObjectArea
from backups.settings import BackupSettings, RedisStoreSettings
from backups.store import BackupError, Done, Drilled, RestorePlan
from ratelimit_proxy.key_ban_storage import KEYS_TAG, Ban, KeyRecord, MemoryStore
from ratelimit_proxy.key_ban_storage import RedisStore as KeyBanStorage
from ratelimit_proxy.limiter_storage import StorageUnavailable
from service_kit.redis_connect import REDIS_ERRORS, connect

FORMAT = "vibelux-redis-state/1"


class RedisStateStore(DocumentedStore):
    folder, noun, check = "", "export", "checksum, format, and every key read back"

    def __init__(self, name: str, settings: BackupSettings) -> None:
        self.name = name
        self.config: RedisStoreSettings = settings.redis[name]
        self.area = ObjectArea(settings.s3, f"redis/{name}")
        self.stop_command, self.start_command = self.config.stop_command, self.config.start_command
        self.sentinel_key = f"{KEYS_TAG}:backup-sentinel:{name}"  # in the keys' slot: read with them

    def schedule(self) -> dict[str, float]:
        return {"export": self.config.export_every_seconds, "drill": self.config.drill_every_seconds}

    def _client(self) -> Any:
        return connect(self.config, timeout_seconds=self.config.timeout_seconds, decode_responses=True)

    def read_state(self) -> dict[str, Any]:
        """Keys, bans in force and the sentinel, as the document an export writes."""
        client = self._client()
        try:
            storage = KeyBanStorage(client)
            keys = storage.list_keys()
            bans = storage.bans(time.time())
            sentinel = client.get(self.sentinel_key)
        except (StorageUnavailable, *REDIS_ERRORS) as exc:
            raise BackupError(
                f"{self.name}: Redis cannot be read: {str(exc)[:200]}"
            ) from None  # redis-py's can be long
        finally:
            client.close()
        return {
            "format": FORMAT,
            "store": self.name,
            "exported_at": datetime.now(UTC).isoformat(),
            "sentinel": json.loads(sentinel) if sentinel else None,
            "keys": [asdict(record) for record in keys],
            "bans": [ban.as_dict() for ban in bans],
        }

    def export(self) -> tuple[Document, dict[str, Any]]:
        document = self.read_state()
        written = self.area.put_document("", document, datetime.fromisoformat(document["exported_at"]))
        self.area.keep_newest("", self.config.retention)
        return written, document

    def load(self, key: str) -> dict[str, Any]:
        """An export read back and checked: checksum, format, and the store it was taken from."""
        document = self.area.get_document(key)
        if document.get("format") != FORMAT or document.get("store") != self.name:
            raise BackupError(f"{self.name}: {key} is not an export of this store")
        return document

    def objective_seconds(self) -> float:
        return float(self.config.export_every_seconds)

    def back_up(self, kind: str) -> Done:
        item, document = self.export()
        return Done(f"exported {len(document['keys'])} keys, {len(document['bans'])} bans to {item.item.key}", None)

    def drill(self) -> Drilled:
        token = secrets.token_hex(8)
        written_at = datetime.now(UTC)
        sentinel = {"token": token, "written_at": written_at.isoformat()}
        client = self._client()
        try:
            client.set(self.sentinel_key, json.dumps(sentinel))
        except REDIS_ERRORS as exc:
            raise BackupError(f"{self.name}: could not write the sentinel: {exc}") from None
        finally:
            client.close()
        exported, live = self.export()
        started = time.perf_counter()
        newest = self.area.documents("")
        if not newest or newest[-1].item.key != exported.item.key:
            raise BackupError(f"{self.name}: the export just written ({exported.item.key}) is not the newest listed")
        document = self.load(exported.item.key)
        scratch = MemoryStore()
        apply(scratch, document, time.time())
        if document.get("sentinel") != sentinel:
            raise BackupError(f"{self.name}: the sentinel written at {written_at:%H:%M:%S} did not come back")
        restored = key_rows(scratch.list_keys())
        if restored != sorted(live["keys"], key=lambda row: row["key_id"]):
            raise BackupError(f"{self.name}: {len(restored)} keys came back of {len(live['keys'])} exported")
        return Drilled(self.name, exported.item.key, time.perf_counter() - started, written_at)

    def location(self) -> tuple[str, str]:
        return self.config.url, "an export taken just before the restore"

    def restore(self, plan: RestorePlan[Any]) -> None:
        """Fence, export the current state (the set-aside copy), make Redis hold exactly the export, start."""
        document = self.load(plan.point.item.key)  # before anything changes: a damaged export changes nothing
        self.service("stop")
        self.export()
        client = self._client()
        try:
            storage = KeyBanStorage(client)
            apply(storage, document, time.time())
            back = key_rows(storage.list_keys())
        except (StorageUnavailable, *REDIS_ERRORS) as exc:
            raise BackupError(f"{self.name}: restore stopped part way, rerun it: {exc}") from None
        finally:
            client.close()
        if back != sorted(document["keys"], key=lambda row: row["key_id"]):
            exported = len(document["keys"])
            raise BackupError(f"{self.name}: {len(back)} keys in Redis after the restore, {exported} exported")
        self.service("start")


def key_rows(records: list[KeyRecord]) -> list[dict[str, Any]]:
    return sorted((asdict(record) for record in records), key=lambda row: row["key_id"])


def apply(storage: KeyBanStorage | MemoryStore, document: dict[str, Any], now: float) -> None:
    """Make ``storage`` hold exactly the export's keys and bans (bans that have expired since stay out)."""
    keys = [KeyRecord(**record) for record in document["keys"]]
    wanted = {record.key_id for record in keys}
    for record in storage.list_keys():
        if record.key_id not in wanted:
            storage.delete_key(record.key_id)
    for record in keys:
        storage.put_key(record)
    bans = [Ban(**ban) for ban in document["bans"] if ban["expires_at"] > now]
    kept = {ban.network for ban in bans}
    for ban in storage.bans(now):
        if ban.network not in kept:
            storage.remove_ban(ban.network)
    for ban in bans:
        storage.add_ban(ban)
