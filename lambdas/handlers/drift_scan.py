"""Scheduled drift scan: evaluates (and in enforce mode fixes) the whole account-region.

Accepts a schedule rule event (source aws.events, detail {}), an EventBridge Scheduler payload
(source aws.scheduler, detail the string "{}") and a manual invocation with {}.
"""

from __future__ import annotations

import json
import math
import time
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from guardrail.controls.base import OUT_OF_TIME
from guardrail.engine import Guardrail
from guardrail.runtime import (
    build_guardrail,
    fail_if_crashed,
    log_engine_through,
    record_metrics,
    summary,
)
from guardrail.scope import Scope

PUBLISH_RESERVE_SECONDS, PUBLISH_RESERVE_SHARE = 120.0, 0.3

logger = Logger()
log_engine_through(logger)
metrics = Metrics()
tracer = Tracer()


def trigger(event: Any) -> str:
    """Name what invoked the scan; every payload means the same thing: scan everything."""
    if not isinstance(event, dict):
        return "unknown"
    detail = event.get("detail")
    if isinstance(detail, str):  # EventBridge Scheduler sends detail as the string "{}"
        try:
            json.loads(detail)
        except (ValueError, RecursionError):  # JSONDecodeError, or nesting past the stack
            logger.warning("detail is not JSON; scanning anyway", extra={"detail": detail[:200]})
    return str(event.get("source") or "manual")


def fix_deadline(context: Any, now: float) -> float:
    """When (time.monotonic) to stop starting fixes: the invocation's remaining time less what
    is kept to publish (30%, at least 2 minutes). A run Lambda kills at its timeout after fixing
    and before publishing loses the record of its fixes; the next scan finds them done."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining_ms):
        return math.inf
    remaining = remaining_ms() / 1000
    return now + remaining - max(PUBLISH_RESERVE_SECONDS, PUBLISH_RESERVE_SHARE * remaining)


def handle(event: Any, guardrail: Guardrail, deadline: float = math.inf) -> dict[str, Any]:
    source = trigger(event)
    report = guardrail.run(Scope.everything(), fix_deadline=deadline, retire_disabled=True)
    # A scan Lambda killed at its timeout never counts: Invocations less this is what was lost.
    # (Without it a clean scan flushed no metric of its own, and Powertools warned every run.)
    metrics.add_metric(name="ScansCompleted", unit=MetricUnit.Count, value=1)
    record_metrics(report, metrics)
    result = summary(report)
    late = sum(f.reason == OUT_OF_TIME for f in report.fixes)
    if late:
        logger.warning(
            "out of time for fixes: the next scan makes the rest", extra={"not_started": late}
        )
    logger.info("drift scan done", extra={"trigger": source, **result})
    fail_if_crashed(report)
    return result


@cache
def _guardrail(function_arn: str) -> Guardrail:
    return build_guardrail(function_arn)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    guardrail = _guardrail(getattr(context, "invoked_function_arn", ""))
    return handle(event, guardrail, fix_deadline(context, time.monotonic()))
