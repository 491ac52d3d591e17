"""Every IAM permission the guardrail's Lambdas need, derived from the controls and the publisher.

The CDK stack turns these into policy statements; placeholders are documented on `Permission`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

from .controls import REGISTRY
from .controls.base import Permission


class PermissionTemplateError(ValueError):
    """A declared permission cannot become a least-privilege statement."""


PUBLISH_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        ("securityhub:BatchImportFindings",),
        resources=("{product_arn}",),
        why="import the guardrail's findings into its own account's default product",
    ),
    Permission(
        ("securityhub:GetFindings",),
        resources=("arn:{partition}:securityhub:{region}:{account}:hub/default",),
        why="what Security Hub already holds, so a drift scan imports only what changed",
    ),
    Permission(
        ("securityhub:BatchUpdateFindings",),
        resources=("arn:{partition}:securityhub:{region}:{account}:hub/default",),
        why="mark findings the guardrail fixed as RESOLVED with a note",
    ),
)


def required_permissions() -> list[Permission]:
    """Read and fix permissions of every registered control, then the publisher's."""
    # The CLI's sts:GetCallerIdentity needs none (STS answers it whatever IAM says); the Lambdas
    # take the account from their own ARN and never call it.
    permissions: list[Permission] = []
    for control in REGISTRY.values():
        permissions.extend(control.read_permissions)
        permissions.extend(control.fix_permissions)
    permissions.extend(PUBLISH_PERMISSIONS)
    return permissions


def fill(value: Any, values: Mapping[str, str]) -> Any:
    """Fill placeholders in a string, or recursively in a list/dict of strings."""
    if isinstance(value, str):
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        missing = names - set(values)
        if missing:
            raise PermissionTemplateError(
                f"placeholder(s) {sorted(missing)} in {value!r} are not provided; "
                f"known: {sorted(values)}"
            )
        return value.format(**values)
    if isinstance(value, list | tuple):
        return [fill(v, values) for v in value]
    if isinstance(value, Mapping):
        return {k: fill(v, values) for k, v in value.items()}
    return value


def distinct(permissions: Iterable[Permission]) -> list[Permission]:
    """The permissions without repeats (two controls declare SimulatePrincipalPolicy), in order."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for permission in permissions:
        key = (
            permission.actions,
            permission.resources,
            repr(sorted(permission.conditions.items())),
        )
        if key not in seen:
            seen.add(key)
            out.append(permission)
    return out


def report_policy(partition: str = "aws") -> dict[str, Any]:
    """The IAM policy `guardrail scan` and `guardrail replay` need in report mode, in any account
    and region: every control's reads (an event's targeted reads included) and the publisher's
    calls. Fixing needs the stack's role (its statements name the guardrail's own role, profile
    and log-delivery policy)."""
    values = {
        "partition": partition,
        "region": "*",
        "account": "*",
        "product_arn": f"arn:{partition}:securityhub:*:*:product/*/default",
    }
    reads = [p for control in REGISTRY.values() for p in control.read_permissions]
    statements = []
    for permission in distinct([*reads, *PUBLISH_PERMISSIONS]):
        statement: dict[str, Any] = {
            "Effect": "Allow",
            "Action": list(permission.actions),
            "Resource": fill(list(permission.resources), values),
        }
        if permission.conditions:
            statement["Condition"] = fill(dict(permission.conditions), values)
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}
