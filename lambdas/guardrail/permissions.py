"""Every IAM permission the guardrail's Lambdas need, derived from the controls and the publisher.

The CDK stack turns these into policy statements; placeholders are documented on `Permission`.
"""

from __future__ import annotations

from .controls import REGISTRY
from .controls.base import Permission

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
