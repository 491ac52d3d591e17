"""Walks every IAM policy of a CloudFormation template and reports least-privilege violations.

Identity policies (roles, managed policies, inline policies): no mutating action on Resource "*"
without a condition, no wildcard or NotAction/NotResource, iam:PassRole only on the allowed roles
and only to EC2, iam:AttachRolePolicy only with an iam:PolicyARN condition. Resource policies
(bucket, queue, topic, key): never Allow to Principal "*".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

READ_VERBS = ("Describe", "Get", "List", "Simulate")
IDENTITY_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
INLINE_TYPES = ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group")
RESOURCE_POLICY_TYPES = {
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::KMS::Key": "KeyPolicy",
}
POLICY_ARN_OPERATORS = ("ArnEquals", "ArnLike", "StringEquals", "StringLike")


@dataclass(frozen=True)
class Violation:
    resource: str
    rule: str
    detail: str


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def is_mutating(action: str) -> bool:
    if action == "*" or ":" not in action:
        return True
    verb = action.split(":", 1)[1]
    return "*" in verb or not verb.startswith(READ_VERBS)


def identity_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(logical id, statement) for every statement of every identity policy in the template."""
    for logical_id, resource in template.get("Resources", {}).items():
        kind, props = resource.get("Type"), resource.get("Properties", {})
        documents = []
        if kind in IDENTITY_TYPES:
            documents.append(props.get("PolicyDocument", {}))
        elif kind in INLINE_TYPES:
            documents += [p.get("PolicyDocument", {}) for p in props.get("Policies", [])]
        for document in documents:
            for statement in _list(document.get("Statement")):
                yield logical_id, statement


def _text(value: Any) -> str:
    """A condition value as text, CloudFormation pseudo parameters (Fn::Join's Refs) left out:
    arn:${Partition}:ec2:*:${AccountId}:instance/* reads arn::ec2:*::instance/*."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(p for p in value["Fn::Join"][1] if isinstance(p, str))
    return ""


def violations(template: dict[str, Any], *, pass_roles: set[str]) -> list[Violation]:
    """Every least-privilege violation; `pass_roles` are the logical ids iam:PassRole may target."""
    found: list[Violation] = []
    for logical_id, statement in identity_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            found.append(Violation(logical_id, "not-action", "Allow with NotAction/NotResource"))
            continue
        actions = [a for a in _list(statement.get("Action")) if isinstance(a, str)]
        resources = _list(statement.get("Resource"))
        conditions = statement.get("Condition") or {}
        for action in actions:
            if action == "*" or "*" in action.split(":", 1)[-1]:
                found.append(Violation(logical_id, "wildcard-action", action))
        mutating = [a for a in actions if is_mutating(a)]
        if mutating and "*" in resources and not conditions:
            found.append(Violation(logical_id, "mutating-on-star", ", ".join(mutating)))
        lowered = {a.lower() for a in actions}
        if "iam:passrole" in lowered or "iam:*" in lowered:
            for resource in resources:
                target = (
                    resource.get("Fn::GetAtt", [None])[0] if isinstance(resource, dict) else None
                )
                if target not in pass_roles:
                    found.append(
                        Violation(logical_id, "passrole-scope", f"iam:PassRole on {resource!r}")
                    )
            passed = conditions.get("StringEquals", {}).get("iam:PassedToService")
            associated = _text(conditions.get("ArnLike", {}).get("iam:AssociatedResourceArn"))
            for_instances = associated.startswith("arn:") and associated.endswith(
                ":ec2:*::instance/*"
            )
            if passed not in ("ec2.amazonaws.com", ["ec2.amazonaws.com"]) and not for_instances:
                found.append(
                    Violation(
                        logical_id,
                        "passrole-service",
                        f"iam:PassedToService is {passed!r}, iam:AssociatedResourceArn {associated!r}",
                    )
                )
        if "iam:attachrolepolicy" in lowered:
            values = [
                v
                for op in POLICY_ARN_OPERATORS
                for v in _list(conditions.get(op, {}).get("iam:PolicyARN"))
            ]
            if not values:
                found.append(
                    Violation(
                        logical_id,
                        "attach-unconditioned",
                        "iam:AttachRolePolicy without an iam:PolicyARN condition",
                    )
                )
            elif any(isinstance(v, str) and "*" in v for v in values):
                found.append(Violation(logical_id, "attach-wildcard", f"iam:PolicyARN {values!r}"))
    for logical_id, resource in template.get("Resources", {}).items():
        key = RESOURCE_POLICY_TYPES.get(resource.get("Type", ""))
        if not key:
            continue
        for statement in _list(resource.get("Properties", {}).get(key, {}).get("Statement")):
            principal = statement.get("Principal")
            if (
                statement.get("Effect") == "Allow"
                and principal in ("*", {"AWS": "*"})
                and not _own_account_only(statement.get("Condition") or {})
            ):
                found.append(
                    Violation(logical_id, "public-resource-policy", "Allow to Principal *")
                )
    return found


# Condition keys that limit a Principal "*" to callers of one account (StringEquals on the
# account id): the pattern of AWS managed keys' "all principals in the account" statements.
ACCOUNT_KEYS = ("kms:CallerAccount", "aws:PrincipalAccount")


def _own_account_only(conditions: dict[str, Any]) -> bool:
    equals = conditions.get("StringEquals") or {}
    return any(
        isinstance(equals.get(key), (str, dict)) and equals.get(key) != "*" for key in ACCOUNT_KEYS
    )


def granted_by_handler(template: dict[str, Any]) -> dict[str, set[str]]:
    """Lambda handler (e.g. handlers.drift_scan.lambda_handler) -> the actions its role's
    identity policies (inline or attached AWS::IAM::Policy) allow."""
    roles = {
        resource["Properties"]["Handler"]: resource["Properties"]["Role"]["Fn::GetAtt"][0]
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::Lambda::Function"
    }
    granted: dict[str, set[str]] = {}
    for handler, role in roles.items():
        policies = {
            logical_id
            for logical_id, resource in template["Resources"].items()
            if resource.get("Type") == "AWS::IAM::Policy"
            and {"Ref": role} in resource["Properties"].get("Roles", [])
        }
        granted[handler] = {
            action
            for logical_id, statement in identity_statements(template)
            if logical_id in policies | {role} and statement.get("Effect") == "Allow"
            for action in _list(statement.get("Action"))
        }
    return granted
