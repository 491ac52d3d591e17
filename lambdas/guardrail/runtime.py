"""What the Lambda handlers share: the composition root and the metrics of a report."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from .clients import AwsClients
from .controls.base import OUT_OF_TIME
from .engine import Guardrail, ScanReport
from .model import Outcome, Status
from .publisher import FindingPublisher
from .settings import Settings

PACKAGE = __name__.split(".")[0]  # guardrail: the engine's loggers are its children


def log_engine_through(logger: Any) -> None:
    """The engine's loggers (`guardrail.*`) write through the handler's Powertools logger: JSON
    with their `extra` fields (each fix's record: what changed, before and after), at its level,
    and only there. Left alone, in Lambda they reach only the runtime's root logger, which keeps
    WARNING and up without their fields: the fix records were never in the log."""
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logging.getLogger(PACKAGE)  # registered, so the copy finds it
    copy_config_to_registered_loggers(source_logger=logger, include={PACKAGE})


def account_of(function_arn: str) -> str | None:
    """The account id in a Lambda function's ARN (None when it names none)."""
    parts = function_arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else None


def build_guardrail(invoked_function_arn: str = "") -> Guardrail:
    """Settings from the environment (fail fast), clients for the function's region, and the
    account id from the function's own ARN so no STS call is needed."""
    settings = Settings.from_env(required=("GUARDRAIL_MODE",))
    clients = AwsClients.create()
    return Guardrail(
        clients,
        settings,
        account_id=account_of(invoked_function_arn),
        publisher=FindingPublisher(clients.securityhub),
    )


class ControlCrashed(RuntimeError):
    """A control's step stopped on something other than an AWS error (engine.Stop). Raised
    after the report is published and logged, so the invocation fails and the Lambda's Errors
    alarm fires."""


def fail_if_crashed(report: ScanReport) -> None:
    if report.crashed:
        raise ControlCrashed("see the log: " + "; ".join(report.stopped[:5]))


def report_counts(report: ScanReport) -> dict[str, Counter[str]]:
    """Per control: FindingsFailed / FindingsPassed / FixesApplied / FixesFailed /
    FixesDeferred / StepsStopped counts."""
    counts: dict[str, Counter[str]] = {}
    for evaluation in report.evaluations:
        c = counts.setdefault(evaluation.result.control, Counter())
        if evaluation.result.status is Status.FAILED:
            c["FindingsFailed"] += 1
        elif evaluation.result.status is Status.PASSED:
            c["FindingsPassed"] += 1
    for fix in report.fixes:
        c = counts.setdefault(fix.control, Counter())
        if fix.outcome is Outcome.APPLIED:
            c["FixesApplied"] += 1
        elif fix.outcome is Outcome.FAILED:
            c["FixesFailed"] += 1
        elif fix.reason == OUT_OF_TIME:  # a drift scan near its time limit: the next makes it
            c["FixesDeferred"] += 1
    for stop in report.crashed:
        counts.setdefault(stop.control, Counter())["StepsStopped"] += 1
    return counts


def record_metrics(report: ScanReport, metrics: Any) -> None:
    """Emit the report's counts as Powertools metrics, one `control` dimension each."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    for control, counts in report_counts(report).items():
        for name, value in counts.items():
            with single_metric(
                name=name, unit=MetricUnit.Count, value=value, namespace=metrics.namespace
            ) as metric:
                metric.add_dimension(name="control", value=control)
    published = report.published
    if published is None:
        return
    # Failed calls, and findings not imported or not marked RESOLVED.
    problems = len(published.errors) + len(published.failed) + len(published.unresolved)
    if problems:
        metrics.add_metric(name="PublishErrors", unit=MetricUnit.Count, value=problems)


def summary(report: ScanReport) -> dict[str, Any]:
    """The handler's return value: small, JSON-safe, useful in the Lambda console."""
    published = report.published
    return {
        "account": report.account_id,
        "region": report.region,
        "results": len(report.evaluations),
        "left_failed": len(report.left_failed),
        "fixes": Counter(f.outcome.value for f in report.fixes),
        "stopped": report.stopped,
        "published": None
        if published is None
        else {
            "imported": published.imported,
            "unchanged": published.unchanged,
            "superseded": published.superseded,
            "failed": len(published.failed),
            "resolved": published.resolved,
            "unresolved": len(published.unresolved),
            "reopened": published.reopened,
            "errors": published.errors,
        },
    }
