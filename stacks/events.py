"""The EventBridge patterns of the change rules, derived from the engine's event registry.

`guardrail.events.EVENT_TYPES` names every CloudTrail event the on-change parser handles; routing
exactly those (and the EC2 state changes it evaluates) keeps the rules and the parser in step.
Security Hub's own "Security Hub Findings - Imported" events are deliberately absent: our own
imports would trigger us again.
"""

from __future__ import annotations

from guardrail.events import ACTIVE_STATES, CLOUDTRAIL, EVENT_TYPES, STATE_CHANGE
from guardrail.model import SESSION_DOCUMENT

CLOUDTRAIL_DETAIL_TYPE = CLOUDTRAIL
STATE_CHANGE_DETAIL_TYPE = STATE_CHANGE


def _event_bridge_source(event_source: str) -> str:
    """CloudTrail's eventSource (ec2.amazonaws.com) as EventBridge's source (aws.ec2)."""
    return "aws." + event_source.split(".", 1)[0]


def _by_source() -> dict[str, tuple[str, tuple[str, ...]]]:
    grouped: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, event_type in EVENT_TYPES.items():
        source = _event_bridge_source(event_type.source)
        _, names = grouped.get(source, (event_type.source, ()))
        grouped[source] = (event_type.source, (*names, name))
    return grouped


# EventBridge source -> (CloudTrail eventSource, event names). IAM is global: its events reach
# the us-east-1 default bus only (see triggers.IamEventForwarder).
CLOUDTRAIL_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = _by_source()


def cloudtrail_pattern(source: str) -> dict[str, object]:
    """The successful calls of one event source that the engine handles (failed calls carry
    errorCode and changed nothing; the engine would drop them)."""
    event_source, names = CLOUDTRAIL_EVENTS[source]
    detail: dict[str, object] = {
        "eventSource": [event_source],
        "eventName": list(names),
        "errorCode": [{"exists": False}],
    }
    if source == "aws.ssm":
        # Of the SSM document calls only the preferences document's matter: an account whose
        # Quick Setup, Config remediation or Automation churns documents would otherwise invoke
        # the Lambda for each (the parser drops them). By name or ARN, in either spelling the
        # parser reads.
        named = [SESSION_DOCUMENT, {"suffix": f"/{SESSION_DOCUMENT}"}]
        detail["$or"] = [{"requestParameters": {key: named}} for key in ("name", "Name")]
    return {"source": [source], "detail_type": [CLOUDTRAIL_DETAIL_TYPE], "detail": detail}


def state_change_pattern() -> dict[str, object]:
    """Instances entering the states the engine evaluates (later states are the drift scan's)."""
    return {
        "source": ["aws.ec2"],
        "detail_type": [STATE_CHANGE_DETAIL_TYPE],
        "detail": {"state": sorted(ACTIVE_STATES)},
    }
