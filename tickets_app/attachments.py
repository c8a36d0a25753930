"""Attachment intake and storage, after the OWASP file upload checklist.

The client's file name and Content-Type are never trusted: the extension must be on the allow-list
after decoding and stripping paths, the bytes must start with that type's signature, and the file is
stored under a random id outside any served folder. Only sanitised metadata keeps the original name.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service_kit.errors import ValidationError
from tickets_app.models import Attachment

# extension -> (MIME type we serve it as, accepted leading byte signatures; empty = checked as text)
ALLOWED_TYPES: dict[str, tuple[str, tuple[bytes, ...]]] = {
    "png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    "jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    "jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    "gif": ("image/gif", (b"GIF87a", b"GIF89a")),
    "pdf": ("application/pdf", (b"%PDF-",)),
    "zip": ("application/zip", (b"PK\x03\x04",)),
    "txt": ("text/plain; charset=utf-8", ()),
    "log": ("text/plain; charset=utf-8", ()),
    "csv": ("text/csv; charset=utf-8", ()),
    "json": ("application/json", ()),
}
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._ -]+")
ID_BYTES = 24  # of randomness: secrets.token_urlsafe makes 32 characters of them
ATTACHMENT_ID_PATTERN = "^[A-Za-z0-9_-]{32}$"


class AttachmentRejected(ValidationError):
    """Why an upload was refused: a 422 naming the form field (``file``, or the web UI's ``files``)."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__({field: message})


@dataclass(frozen=True)
class Accepted:
    filename: str
    content_type: str
    size_bytes: int
    sha256: str


# A virus scanner hook: given the bytes, return None if clean or the reason to refuse.
Scanner = Callable[[bytes], str | None]


def sanitise_filename(raw: str, field: str = "file") -> tuple[str, str]:
    """Return (safe display name, lower-case extension) or raise AttachmentRejected naming `field`."""
    if "\x00" in raw:
        raise AttachmentRejected("file name contains a NUL byte", field)
    name = unicodedata.normalize("NFKC", raw).replace("\\", "/").rsplit("/", 1)[-1].strip().strip(".")
    if not name or "." not in name:
        raise AttachmentRejected("file name needs an extension", field)
    extension = name.rsplit(".", 1)[1].lower()
    if extension not in ALLOWED_TYPES:
        raise AttachmentRejected(
            f"files of type .{extension[:10]} are not accepted; allowed: " + ", ".join(sorted(ALLOWED_TYPES)), field
        )
    stem = _UNSAFE_NAME_CHARS.sub("_", name.rsplit(".", 1)[0])[:100].strip(" _") or "file"
    return f"{stem}.{extension}", extension


def inspect(
    raw_name: str, data: bytes, max_bytes: int, scanner: Scanner | None = None, field: str = "file"
) -> Accepted:
    """Validate one upload completely before anything is written; refusals name the form `field`."""
    filename, extension = sanitise_filename(raw_name, field)
    if len(data) == 0:
        raise AttachmentRejected("file is empty", field)
    if len(data) > max_bytes:
        raise AttachmentRejected(f"file is larger than {max_bytes} bytes", field)
    content_type, signatures = ALLOWED_TYPES[extension]
    if signatures and not any(data.startswith(sig) for sig in signatures):
        raise AttachmentRejected(f"file content is not a .{extension} file", field)
    if not signatures:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AttachmentRejected(f"a .{extension} file must be UTF-8 text", field) from exc
        if b"\x00" in data:
            raise AttachmentRejected(f"a .{extension} file must not contain NUL bytes", field)
    if scanner is not None:
        reason = scanner(data)
        if reason:
            raise AttachmentRejected(f"file refused by the virus scanner: {reason}", field)
    return Accepted(filename, content_type, len(data), hashlib.sha256(data).hexdigest())


class AttachmentStore:
    """Files under `root/<2 chars>/<id>`; ids are random, so names never reach the filesystem."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def new_id(self) -> str:
        return secrets.token_urlsafe(ID_BYTES)

    def _path(self, attachment_id: str) -> Path:
        if not re.match(ATTACHMENT_ID_PATTERN, attachment_id):
            raise FileNotFoundError(attachment_id)
        return self.root / attachment_id[:2] / attachment_id

    def save(self, attachment_id: str, data: bytes) -> None:
        path = self._path(attachment_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".part")
        temporary.write_bytes(data)
        os.replace(temporary, path)  # readers never see half a file

    def read(self, attachment_id: str) -> bytes:
        return self._path(attachment_id).read_bytes()

    def remove(self, attachment_id: str) -> None:
        self._path(attachment_id).unlink(missing_ok=True)


def accept_upload(
    session: Session,
    store: AttachmentStore,
    uploader_id: str,
    raw_name: str,
    data: bytes,
    limits: tuple[int, int],
    scanner: Scanner | None,
    now: datetime,
    field: str = "file",
) -> Attachment:
    """Check one upload against the rules and the uploader's daily quota, then store it unattached.

    `limits` is (max bytes per file, max bytes per uploader per day); refusals are 422s naming `field`.
    """
    max_file_bytes, max_daily_bytes = limits
    accepted = inspect(raw_name, data, max_file_bytes, scanner, field)
    used = session.scalar(
        select(func.coalesce(func.sum(Attachment.size_bytes), 0)).where(
            Attachment.uploader_id == uploader_id, Attachment.created_at >= now - timedelta(days=1)
        )
    )
    if (used or 0) + accepted.size_bytes > max_daily_bytes:
        raise AttachmentRejected(f"daily upload quota of {max_daily_bytes} bytes reached", field)
    attachment = Attachment(
        id=store.new_id(),
        uploader_id=uploader_id,
        filename=accepted.filename,
        content_type=accepted.content_type,
        size_bytes=accepted.size_bytes,
        sha256=accepted.sha256,
        created_at=now,
    )
    store.save(attachment.id, data)
    session.add(attachment)
    session.flush()
    return attachment
