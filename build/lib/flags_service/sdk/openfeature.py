"""An OpenFeature provider (PyPI ``openfeature-sdk``) backed by ``FlagsClient``'s local evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    FlagNotFoundError,
    GeneralError,
    InvalidContextError,
    ProviderNotReadyError,
    TargetingKeyMissingError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from flags_service.sdk.client import FlagsClient

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
    """``api.set_provider(VibeLuxProvider(FlagsClient(url, server_key)))``."""

    def __init__(self, client: FlagsClient) -> None:
        self.client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name="VibeLux flags (local evaluation)")

    def shutdown(self) -> None:
        self.client.close()

    def _resolve(
        self, key: str, default: Any, context: EvaluationContext | None, expected: type | tuple[type, ...]
    ) -> FlagResolutionDetails[Any]:
        details = self.client.evaluate(key, _context(context), default)
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
        return self._resolve(flag_key, default_value, evaluation_context, bool)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, str)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, int)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, (dict, list))
