"""What the stores refuse, as the kit's API errors: the kit's one error handler answers them, so the
service needs no handlers of its own (``InvalidDocument``, the 422, lives with the model)."""

from __future__ import annotations

from service_kit.errors import ConflictError, NotFoundError, PreconditionFailedError


class FlagNotFound(NotFoundError):
    """No flag (or segment, environment, version or SDK key) by that name."""

    def __init__(self, what: str) -> None:
        super().__init__(f"Not found: {what}.")


class StaleVersion(PreconditionFailedError):
    """The caller's If-Match version is not the current one; ``current`` is (None: raced, unknown)."""

    def __init__(self, current: int | None) -> None:
        details = {} if current is None else {"current_version": current}
        super().__init__("The resource changed since you read it; read it again and retry.", details)
        self.current = current


class AlreadyExists(ConflictError):
    """A flag or segment with that key exists."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} already exists.", {"key": "already exists"})


class InUse(ConflictError):
    """Deleting would break other flags (prerequisites or segment references)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"Still in use: {why}.")
