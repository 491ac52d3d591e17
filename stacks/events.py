"""The EventBridge events that can change a control's outcome, by CloudTrail event source.

A change that turns an instance non-compliant arrives as one of these CloudTrail management events
(detail-type "AWS API Call via CloudTrail", best effort, minutes late) or as an EC2 state change.
Security Hub's own "Security Hub Findings - Imported" events are deliberately absent: our own
imports would trigger us again.
"""

from __future__ import annotations

from guardrail.model import SESSION_DOCUMENT

CLOUDTRAIL_DETAIL_TYPE = "AWS API Call via CloudTrail"
STATE_CHANGE_DETAIL_TYPE = "EC2 Instance State-change Notification"

# event source (EventBridge `source`) -> CloudTrail eventSource -> event names
CLOUDTRAIL_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "aws.ec2": (
        "ec2.amazonaws.com",
        (
            "AuthorizeSecurityGroupIngress",
            "ModifySecurityGroupRules",
            "RevokeSecurityGroupIngress",
            "RunInstances",
            "StartInstances",
            "ModifyInstanceAttribute",
            "ModifyNetworkInterfaceAttribute",
            "AssociateIamInstanceProfile",
            "DisassociateIamInstanceProfile",
            "ReplaceIamInstanceProfileAssociation",
        ),
    ),
    # IAM is global: CloudTrail delivers these to the us-east-1 default bus only (see IamEventForwarder).
    "aws.iam": (
        "iam.amazonaws.com",
        ("DetachRolePolicy", "DeleteRolePolicy", "RemoveRoleFromInstanceProfile", "DeleteInstanceProfile"),
    ),
    "aws.ssm": (
        "ssm.amazonaws.com",
        ("CreateDocument", "UpdateDocument", "UpdateDocumentDefaultVersion", "DeleteDocument"),
    ),
}


def cloudtrail_pattern(source: str) -> dict[str, object]:
    """An event pattern for the successful calls of one event source (failed calls change nothing)."""
    event_source, names = CLOUDTRAIL_EVENTS[source]
    detail: dict[str, object] = {
        "eventSource": [event_source],
        "eventName": list(names),
        # A failed call carries errorCode and changed nothing; successful ones have none.
        "errorCode": [{"exists": False}],
    }
    if source == "aws.ssm":
        # Session Manager preferences live in one document; other documents are not ours to judge.
        detail["requestParameters"] = {"name": [SESSION_DOCUMENT]}
    return {"source": [source], "detail_type": [CLOUDTRAIL_DETAIL_TYPE], "detail": detail}
