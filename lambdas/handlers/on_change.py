"""Event-driven guardrail: evaluates (and in enforce mode fixes) exactly what one event touched.

Receives the CloudTrail API-call events and EC2 state-change notifications the stack routes here
(IAM events forwarded from us-east-1 are evaluated in this function's region). A malformed or
unknown event is logged, counted (EventsDropped) and dropped; one whose instances carry more
roles than an event evaluates is counted (EventsDeferred) and its role and logging checks are left
to the drift scan (internet SSH is still judged). AWS throttling or an outage that outlasts the
retries raises, so Lambda retries the event twice and then dead-letters it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from guardrail.engine import Guardrail
from guardrail.replay import RetryableEventError, process_event
from guardrail.runtime import (
    account_of,
    build_guardrail,
    fail_if_crashed,
    log_engine_through,
    record_metrics,
    summary,
)

logger = Logger()
log_engine_through(logger)
metrics = Metrics()
tracer = Tracer()


def handle(event: Any, guardrail: Guardrail, *, home_account: str | None = None) -> dict[str, Any]:
    outcome = process_event(event, guardrail, home_account=home_account)
    dropped = outcome.dropped
    if dropped is not None:
        name = dropped.kind.metric
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
        log = logger.info if name == "EventsIgnored" else logger.warning
        log("event dropped", extra=dropped.as_log())
        return {"dropped": dropped.kind.value, "reason": dropped.reason}
    change, report = outcome.change, outcome.report
    assert change is not None and report is not None
    metrics.add_metric(name="EventsEvaluated", unit=MetricUnit.Count, value=1)
    if outcome.deferred:  # SSH judged; its roles wait for the drift scan
        metrics.add_metric(name="EventsDeferred", unit=MetricUnit.Count, value=1)
        logger.warning("event partly deferred", extra={"reason": outcome.deferred})
    record_metrics(report, metrics)
    result = {
        **summary(report),
        "event": change.as_log(),
        "archived": sorted({r.resource_id for r in outcome.archived_in_hub()}),
    }
    logger.info("event evaluated", extra=result)
    failures = outcome.retryable_failures()
    if failures:
        metrics.add_metric(name="EventsRetried", unit=MetricUnit.Count, value=1)
    fail_if_crashed(report)  # a defect or a malformed answer: retried, then dead-lettered
    if failures:
        raise RetryableEventError("AWS throttled or was unavailable: " + "; ".join(failures[:10]))
    return result


@cache
def _guardrail(function_arn: str) -> Guardrail:
    """The composition root, built once per cold start: settings from the environment, clients
    for this function's region, the account from the function's own ARN (no STS call)."""
    return build_guardrail(function_arn)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    function_arn = getattr(context, "invoked_function_arn", "")
    return handle(event, _guardrail(function_arn), home_account=account_of(function_arn))
