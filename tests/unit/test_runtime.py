"""The Lambdas' PublishErrors metric counts every Security Hub problem the summary reports."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from guardrail.engine import ScanReport
from guardrail.runtime import record_metrics


class Metrics:
    namespace = "SsmGuardrail"

    def __init__(self) -> None:
        self.added: dict[str, float] = {}

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.added[name] = value


def published(**problems: list[Any]) -> SimpleNamespace:
    empty: dict[str, list[Any]] = {"errors": [], "failed": [], "unresolved": []}
    return SimpleNamespace(**{**empty, **problems})


@pytest.mark.parametrize(
    ("problems", "count"),
    [
        ({}, None),
        # A fixed finding left NEW: BatchUpdateFindings throttled to the end, or unprocessed.
        ({"unresolved": [{"Id": "f-1", "ErrorCode": "ThrottlingException"}]}, 1),
        # The stored findings could not be read: every finding imported, none compared.
        ({"errors": ["could not read stored findings (AccessDeniedException)"]}, 1),
        ({"errors": ["e"], "failed": [{"Id": "f-2"}], "unresolved": [{"Id": "f-3"}]}, 3),
    ],
)
def test_publish_errors_counts_failed_calls_and_findings_not_imported_or_resolved(
    problems: dict[str, list[Any]], count: int | None
) -> None:
    metrics = Metrics()
    report = ScanReport("111122223333", "us-east-1", published=published(**problems))
    record_metrics(report, metrics)
    assert metrics.added.get("PublishErrors") == count


def test_a_stop_is_named_on_one_line_and_counted_per_control() -> None:
    """The CLI prints each stop as one stderr line; a multi-line message (a traceback-like
    repr) would split it. Each stop counts as StepsStopped for its control."""
    from guardrail.controls import REGISTRY
    from guardrail.engine import stopped
    from guardrail.runtime import report_counts

    report = ScanReport("111122223333", "eu-west-1")
    stopped(REGISTRY["ssm-instance-role"], "check", ValueError("a\nb"), report.crashed)

    assert [str(s) for s in report.crashed] == ["ssm-instance-role check stopped: ValueError: a b"]
    assert report_counts(report) == {"ssm-instance-role": {"StepsStopped": 1}}


def test_the_handlers_summary_and_replay_say_when_fixed_findings_were_not_resolved() -> None:
    """BatchUpdateFindings left fixed findings NEW (unprocessed, throttled to the end): the
    Lambda's return value and log line, and replay's text and JSON, say how many, not only
    the PublishErrors metric."""
    from guardrail.events import Change
    from guardrail.publisher import PublishSummary
    from guardrail.replay import EventOutcome, format_outcome, outcome_dict
    from guardrail.runtime import summary
    from guardrail.scope import Scope

    left = [{"Id": "f-1", "ErrorCode": "FindingNotFound", "ErrorMessage": ""}] * 2
    report = ScanReport("111122223333", "us-east-1")
    report.published = PublishSummary(imported=2, unresolved=left)
    assert summary(report)["published"]["unresolved"] == 2
    outcome = EventOutcome(Change(Scope(instance_ids=frozenset({"i-1"})), "StartInstances"), report)
    assert "2 imported, 0 failed, 0 resolved, 2 not resolved" in format_outcome(outcome)
    assert outcome_dict(outcome)["published"]["unresolved"] == left
