"""The reports service's errors: the kit's types (service_kit.errors), so every body has the kit's shape."""

from __future__ import annotations

from service_kit.errors import ExternalAPIError, NotFoundError, ValidationError


class ReportNotFoundError(NotFoundError):
    """No such report, or one the caller may not see (the same answer, so ids reveal nothing)."""

    def __init__(self, report_id: int) -> None:
        super().__init__(f"No report {report_id}.")


class ScheduleNotFoundError(NotFoundError):
    def __init__(self, schedule_id: int) -> None:
        super().__init__(f"No schedule {schedule_id}.")


class RunNotFoundError(NotFoundError):
    def __init__(self, run_id: int) -> None:
        super().__init__(f"No run {run_id}.")


class ReportTooExpensiveError(ValidationError):
    """The report ran past the time limit: a 422 naming the spec, since narrowing it is the fix."""

    code = "report_too_expensive"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            {"spec": f"the report ran longer than {seconds:g} s; narrow the time range or add filters"},
            "The report is too expensive to run.",
        )


class PlatformUnavailableError(ExternalAPIError):
    """The platform database failed (down, or a table missing): 502, reported to Sentry."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"The platform database failed: {type(cause).__name__}.")
