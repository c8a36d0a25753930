"""Evaluation counts per environment and flag, and the stale flags they reveal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, scoped_session

from flags_service.storage.tables import aware, evaluation_stats_table, flags_table, utc_now


class EvaluationStatsStore:
    def __init__(self, session: Session | scoped_session[Session]) -> None:
        self.session = session

    def record_evaluations(self, environment: str, counts: Mapping[str, int], at: dt.datetime | None = None) -> None:
        """Add ``counts`` (flag key -> evaluations) to the totals; keys of no stored flag are dropped."""
        at = at or utc_now()
        known = set(self.session.scalars(select(flags_table.c.key).where(flags_table.c.key.in_(list(counts)))))
        for key in sorted(known):
            result = self.session.execute(
                update(evaluation_stats_table)
                .where(
                    evaluation_stats_table.c.environment == environment,
                    evaluation_stats_table.c.flag_key == key,
                )
                .values(evaluations=evaluation_stats_table.c.evaluations + counts[key], last_evaluated_at=at)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                self.session.execute(
                    insert(evaluation_stats_table).values(
                        environment=environment, flag_key=key, evaluations=counts[key], last_evaluated_at=at
                    )
                )

    def stale_flags(
        self, environment: str, *, stale_after_days: int, now: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """Flags past their expiry date, or release/experiment flags not evaluated for ``stale_after_days``
        (ops and permission flags live for as long as the system; they only go stale by expiry)."""
        now = now or utc_now()
        cutoff = now - dt.timedelta(days=stale_after_days)
        last_seen = {
            key: aware(at)
            for key, at in self.session.execute(
                select(evaluation_stats_table.c.flag_key, evaluation_stats_table.c.last_evaluated_at).where(
                    evaluation_stats_table.c.environment == environment
                )
            )
        }
        stale = []
        for key, document, created_at in self.session.execute(
            select(flags_table.c.key, flags_table.c.document, flags_table.c.created_at).order_by(flags_table.c.key)
        ):
            seen_at = last_seen.get(key)
            reason = None
            expires = document.get("expiresAt")
            if expires and dt.datetime.fromisoformat(expires.replace("Z", "+00:00")).astimezone(dt.UTC) < now:
                reason = "expired"
            elif document["kind"] in ("release", "experiment"):
                if seen_at is None and aware(created_at) < cutoff:
                    reason = "never-evaluated"
                elif seen_at is not None and seen_at < cutoff:
                    reason = "not-evaluated-recently"
            if reason:
                stale.append(
                    {
                        "key": key,
                        "kind": document["kind"],
                        "owner": document.get("owner", ""),
                        "reason": reason,
                        "lastEvaluatedAt": seen_at.isoformat() if seen_at else None,
                        "expiresAt": expires,
                    }
                )
        return stale
