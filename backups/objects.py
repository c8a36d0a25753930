"""The object store for what the tool writes itself (Redis exports, attachment files and their manifests).

boto3, configured from the same ``s3`` settings pgBackRest and Litestream use, so one configuration points all
of them at AWS S3, GCS, MinIO or SeaweedFS. Every object carries the SHA-256 of its bytes in its metadata
and every read checks it: a truncated or altered object is an error, never a silently short restore.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from backups.settings import S3Settings
from backups.store import ArchiverStatus, BackupError, Listed, RestorePlan, run_service_command

CHECKSUM_KEY = "sha256"
STAMP = "%Y%m%dT%H%M%S.%fZ"  # a document's name: its time, so names sort in time order
DOCUMENT = ".json.gz"


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the area
    size_bytes: int
    modified_at: datetime


@dataclass(frozen=True)
class Document:
    """A gzipped JSON document the tool wrote (an export, a manifest), named by the time it was taken."""

    item: StoredObject
    taken_at: datetime


def _taken_at(item: StoredObject, folder: str) -> datetime | None:
    name = item.key[len(folder) :]
    if "/" in name or not name.endswith(DOCUMENT):
        return None
    try:
        return datetime.strptime(name[: -len(DOCUMENT)], STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message') or exc}"
    return str(exc)


class ObjectArea:
    """The objects under ``<prefix>/<area>/`` in the bucket; errors become one-line BackupErrors."""

    def __init__(self, s3: S3Settings, area: str) -> None:
        self.bucket = s3.bucket
        self.base = f"{s3.prefix.strip('/')}/{area}/"
        credentials = {"aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key}
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=f"https://{s3.endpoint}:{s3.port}",
            region_name=s3.region,
            verify=s3.ca_file or True,
            **(credentials if s3.key_type == "shared" else {}),  # "auto": the instance or pod role
            config=Config(
                s3={"addressing_style": "path" if s3.uri_style == "path" else "virtual"},
                connect_timeout=s3.timeout_seconds,
                read_timeout=s3.timeout_seconds,
                retries={"mode": "standard", "max_attempts": s3.retries + 1},
                # the SHA-256 in the metadata is our check; the newer default CRC headers are not in every S3 API
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise BackupError(f"object store, {what}: {_reason(exc)}") from None

    def put(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._call(f"writing {key}", "put_object", Key=self.base + key, Body=data, Metadata={CHECKSUM_KEY: digest})

    def get(self, key: str) -> bytes:
        """The object's bytes, after checking them against the SHA-256 written with them."""
        response = self._call(f"reading {key}", "get_object", Key=self.base + key)
        try:
            data: bytes = response["Body"].read()
        except (BotoCoreError, ClientError, OSError) as exc:
            raise BackupError(f"object store, reading {key}: {exc}") from None
        expected = response.get("Metadata", {}).get(CHECKSUM_KEY)
        if expected is None:
            raise BackupError(f"object store: {key} has no checksum; it was not written by this tool")
        if hashlib.sha256(data).hexdigest() != expected:
            raise BackupError(f"object store: {key} does not match its checksum ({len(data)} bytes): damaged")
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.base + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise BackupError(f"object store, looking for {key}: {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise BackupError(f"object store, looking for {key}: {exc}") from None
        return True

    def objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object under ``prefix``, in key order."""
        token: dict[str, str] = {}
        while True:
            page = self._call(f"listing {prefix or '/'}", "list_objects_v2", Prefix=self.base + prefix, **token)
            for item in page.get("Contents", []):
                yield StoredObject(item["Key"][len(self.base) :], int(item["Size"]), item["LastModified"])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # the API's limit per request
            batch = [{"Key": self.base + key} for key in keys[start : start + 1000]]
            self._call("deleting expired objects", "delete_objects", Delete={"Objects": batch, "Quiet": True})

    def put_document(self, folder: str, document: Mapping[str, object], taken_at: datetime) -> Document:
        data = gzip.compress(json.dumps(document, sort_keys=True).encode(), mtime=0)
        key = f"{folder}{taken_at.astimezone(UTC).strftime(STAMP)}{DOCUMENT}"
        self.put(key, data)
        return Document(StoredObject(key, len(data), taken_at), taken_at)

    def documents(self, folder: str) -> list[Document]:
        """The documents in ``folder`` (ends in ``/``, or empty), oldest first."""
        found = [Document(item, when) for item in self.objects(folder) if (when := _taken_at(item, folder))]
        return sorted(found, key=lambda document: document.taken_at)

    def get_document(self, key: str) -> dict[str, object]:
        try:
            document = json.loads(gzip.decompress(self.get(key)))
        except (OSError, EOFError, ValueError) as exc:
            raise BackupError(f"object store: {key} cannot be read: {exc}") from None
        if not isinstance(document, dict):
            raise BackupError(f"object store: {key} is not a document of this tool")
        return document

    def keep_newest(self, folder: str, count: int) -> list[Document]:
        """Delete all but the newest ``count`` documents in ``folder``; returns the deleted ones."""
        documents = self.documents(folder)
        expired = documents[: max(0, len(documents) - count)]
        self.delete([document.item.key for document in expired])
        return expired


class DocumentedStore:
    """What stores made of this tool's own documents (Redis exports, file manifests) share: listing,
    choosing one for a restore, the recovery point (the newest document) and the service commands."""

    name: str
    area: ObjectArea
    folder: str  # where the documents are in the area
    noun: str  # "export", "manifest"
    check: str  # what a restore checks
    stop_command: list[str]
    start_command: list[str]

    def location(self) -> tuple[str, str]:
        """What a restore replaces, and where the current data goes first."""
        raise NotImplementedError

    def listing(self) -> list[Listed]:
        return [
            Listed(doc.item.key, self.noun, None, doc.taken_at, None, doc.item.size_bytes)
            for doc in self.area.documents(self.folder)
        ]

    def plan_restore(self, to: datetime | None) -> RestorePlan[Document]:
        usable = [doc for doc in self.area.documents(self.folder) if to is None or doc.taken_at <= to]
        if not usable:
            raise BackupError(f"{self.name}: no {self.noun}{f' taken before {to.isoformat()}' if to else ''}")
        chosen = usable[-1]
        location, set_aside = self.location()
        return RestorePlan(
            self.name, chosen, f"{self.noun} {chosen.item.key} (taken {chosen.taken_at.isoformat()})", to,
            f"the newest {self.noun}", location, set_aside, self.check,
        )  # fmt: skip

    def archiver_status(self) -> ArchiverStatus | None:
        """The recovery point is the newest document: what changed since exists only in the live store."""
        try:
            documents = self.area.documents(self.folder)
        except BackupError:
            return None
        if not documents:
            return ArchiverStatus(float("inf"), 0)
        return ArchiverStatus(max(0.0, (datetime.now(UTC) - documents[-1].taken_at).total_seconds()), 0)

    def service(self, action: str) -> None:
        argv = self.stop_command if action == "stop" else self.start_command
        if argv:
            run_service_command(self.name, action, argv)
