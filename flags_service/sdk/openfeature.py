"""An OpenFeature provider (PyPI ``openfeature-sdk``) backed by ``FlagsClient``'s local evaluation.

Provider events follow flagd's providers: ``initialize`` waits out the client's ``start_wait`` and fails
(``PROVIDER_ERROR``, code ``PROVIDER_NOT_READY``) if no snapshot came from the service, even when a disk
copy is served; later the client's sync outcomes become ``PROVIDER_READY`` (the service answered again),
``PROVIDER_STALE`` (it stopped answering; the last snapshot is served), ``PROVIDER_ERROR`` (it refused the
key or sent an unreadable snapshot, or never answered yet) and ``PROVIDER_CONFIGURATION_CHANGED`` with
``flags_changed``. Each status is emitted when it changes, not on every poll.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import (
    ErrorCode,
    FlagNotFoundError,
    GeneralError,
    InvalidContextError,
    ProviderNotReadyError,
    TargetingKeyMissingError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from flags_service.sdk.client import CONFIGURATION_CHANGED, ERROR, READY, STALE, ClientEvent, FlagsClient

_ERRORS = {
    "FLAG_NOT_FOUND": FlagNotFoundError,
    "PROVIDER_NOT_READY": ProviderNotReadyError,
    "TARGETING_KEY_MISSING": TargetingKeyMissingError,
    "INVALID_CONTEXT": InvalidContextError,
}


def _context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    if evaluation_context is None:
        return {}
    context = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key:
        context["targetingKey"] = evaluation_context.targeting_key
    return context


class VibeLuxProvider(AbstractProvider):
    """``api.set_provider_and_wait(VibeLuxProvider(FlagsClient(url, server_key)))``."""

    def __init__(self, client: FlagsClient) -> None:
        super().__init__()
        self.client = client
        self._status: str | None = None  # what OpenFeature was last told; None until initialize has answered
        self._status_lock = threading.Lock()
        client.add_listener(self._on_client_event)

    def get_metadata(self) -> Metadata:
        return Metadata(name="VibeLux flags (local evaluation)")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start the client if it is not, and wait out what is left of its ``start_wait``."""
        self.client.start()
        ready = self.client.wait_for_start()
        with self._status_lock:  # the client's outcomes wait here until OpenFeature knows the first status
            if ready or self.client.status == READY:
                self._status = READY
                return
            self._status = ERROR
        serving = "its last-known-good copy" if self.client.status == STALE else "the defaults"
        raise ProviderNotReadyError(
            f"no snapshot from the flag service at {self.client.base_url} within {self.client.start_wait} s; "
            f"serving {serving} until it answers"
        )

    def shutdown(self) -> None:
        self.client.close()

    def _on_client_event(self, event: ClientEvent) -> None:
        with self._status_lock:
            if self._status is None:
                return  # initialize's outcome is the first status OpenFeature hears
            if event.kind == CONFIGURATION_CHANGED:
                details = ProviderEventDetails(flags_changed=list(event.flags_changed), message=event.message)
                self.emit_provider_configuration_changed(details)
            elif event.kind != self._status:
                self._status = event.kind
                if event.kind == READY:
                    self.emit_provider_ready(ProviderEventDetails(message=event.message))
                elif event.kind == STALE:
                    self.emit_provider_stale(ProviderEventDetails(message=event.message))
                else:
                    never_ready = not self.client.wait_until_ready(0)
                    code = ErrorCode.PROVIDER_NOT_READY if never_ready else ErrorCode.GENERAL
                    self.emit_provider_error(ProviderEventDetails(message=event.message, error_code=code))

    def _resolve(
        self, key: str, context: EvaluationContext | None, expected: type | tuple[type, ...]
    ) -> FlagResolutionDetails[Any]:
        # OpenFeature serves the default itself on an error, so the client never needs it.
        details = self.client.evaluate(key, context=_context(context))
        if details.error_code:
            raise _ERRORS.get(details.error_code, GeneralError)(details.error_message)
        value = details.value
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise TypeMismatchError(f"flag {key!r} is {type(value).__name__}, not {expected}")
        return FlagResolutionDetails(
            value=value,
            reason=Reason(details.reason),
            variant=details.variant,
            flag_metadata=dict(details.flag_metadata),
        )

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, evaluation_context, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, evaluation_context, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, evaluation_context, int)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, evaluation_context, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, evaluation_context, (dict, list))
