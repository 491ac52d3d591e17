"""The Lambdas' IAM statements, generated from the permissions the engine's controls declare.

`guardrail.permissions.required_permissions()` is the single source: each `Permission` carries
symbolic resources and conditions ({partition}, {guardrail_role_arn}, ...) that are formatted here
with CloudFormation tokens. A new control therefore gets its IAM without touching the stack, and
cdk-nag plus tests/infra/test_least_privilege.py judge the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import aws_iam as iam
from guardrail.controls import REGISTRY
from guardrail.controls.base import Permission
from guardrail.permissions import PermissionTemplateError, distinct, fill, required_permissions

READ_VERBS = ("Describe", "Get", "List", "Simulate")
PLACEHOLDERS = (
    "partition",
    "region",
    "account",
    "guardrail_role_arn",
    "guardrail_profile_arn",
    "log_delivery_policy_arn",
    "core_policy_arn",
    "product_arn",
)


def is_mutating(action: str) -> bool:
    """True unless the action only reads (Describe*/Get*/List*/Simulate*); wildcards count as mutating."""
    if action == "*" or ":" not in action:
        return True
    verb = action.split(":", 1)[1]
    return "*" in verb or not verb.startswith(READ_VERBS)


def render(permission: Permission, values: Mapping[str, str]) -> dict[str, Any]:
    """A permission as an IAM statement body (actions, resources, conditions) with values filled in.

    Refuses a mutating action on Resource "*" without a condition: that must never be generated.
    """
    resources = [fill(r, values) for r in permission.resources]
    conditions = fill(dict(permission.conditions), values)
    mutating = [a for a in permission.actions if is_mutating(a)]
    if mutating and "*" in resources and not conditions:
        raise PermissionTemplateError(
            f"{mutating} on Resource '*' without a condition ({permission.why!r}); scope it"
        )
    return {"actions": list(permission.actions), "resources": resources, "conditions": conditions}


def needed_permissions(enforced: Iterable[str]) -> list[Permission]:
    """`required_permissions()` minus the fix permissions of controls that do not enforce.

    A control in report mode (or disabled) never remediates, so its Lambdas get its reads but
    none of its mutating actions; switching a control to enforce is a context change and a deploy.
    Reads are always kept: the snapshot reader serves every control.
    """
    enforced = set(enforced)
    unused = [p for cid, c in REGISTRY.items() if cid not in enforced for p in c.fix_permissions]
    used = [p for cid, c in REGISTRY.items() if cid in enforced for p in c.fix_permissions]
    return [p for p in required_permissions() if p in used or p not in unused]


def statements(
    permissions: Iterable[Permission], values: Mapping[str, str]
) -> list[iam.PolicyStatement]:
    """One PolicyStatement per declared permission (duplicates dropped, order kept)."""
    out: list[iam.PolicyStatement] = []
    for permission in distinct(permissions):
        body = render(permission, values)
        out.append(
            iam.PolicyStatement(
                actions=body["actions"],
                resources=body["resources"],
                conditions=body["conditions"] or None,
            )
        )
    return out
