"""Scheduled drift scan: evaluates (and in enforce mode fixes) the whole account-region.

Accepts a schedule rule event (source aws.events, detail {}), an EventBridge Scheduler payload
(source aws.scheduler, detail the string "{}") and a manual invocation with {}.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from guardrail.engine import Guardrail
from guardrail.runtime import build_guardrail, record_metrics, summary
from guardrail.scope import Scope

logger = Logger()
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
        except json.JSONDecodeError:
            logger.warning("detail is not JSON; scanning anyway", extra={"detail": detail[:200]})
    return str(event.get("source") or "manual")


def handle(event: Any, guardrail: Guardrail) -> dict[str, Any]:
    source = trigger(event)
    report = guardrail.run(Scope.everything())
    record_metrics(report, metrics)
    result = summary(report)
    logger.info("drift scan done", extra={"trigger": source, **result})
    return result


@cache
def _guardrail(function_arn: str) -> Guardrail:
    return build_guardrail(function_arn)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, _guardrail(getattr(context, "invoked_function_arn", "")))
