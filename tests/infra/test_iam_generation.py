"""The Lambdas' IAM is generated from the engine's declared permissions: pure checks, no synth."""

from __future__ import annotations

import string

import pytest
from guardrail.controls.base import Permission
from guardrail.permissions import required_permissions

from stacks.functions import WILDCARD_REASONS, _nag_form
from stacks.iam import PLACEHOLDERS, PermissionTemplateError, is_mutating, render

VALUES = {name: f"<{name}>" for name in PLACEHOLDERS}


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def test_every_placeholder_the_engine_uses_is_filled_by_the_stack() -> None:
    used = set()
    for permission in required_permissions():
        for text in _strings([permission.resources, dict(permission.conditions)]):
            used |= {n for _, n, _, _ in string.Formatter().parse(text) if n}
    assert used <= set(PLACEHOLDERS)
    for permission in required_permissions():
        body = render(permission, VALUES)
        assert not [t for t in _strings(body) if "{" in t], body


def test_render_fills_resources_and_condition_values() -> None:
    permission = Permission(
        ("iam:AttachRolePolicy",),
        resources=("arn:{partition}:iam::{account}:role/*",),
        conditions={
            "ArnEquals": {"iam:PolicyARN": ["{core_policy_arn}", "{log_delivery_policy_arn}"]}
        },
    )
    body = render(permission, VALUES)
    assert body["resources"] == ["arn:<partition>:iam::<account>:role/*"]
    assert body["conditions"] == {
        "ArnEquals": {"iam:PolicyARN": ["<core_policy_arn>", "<log_delivery_policy_arn>"]}
    }


def test_unknown_placeholder_fails_naming_it() -> None:
    with pytest.raises(PermissionTemplateError, match="session_bucket_arn"):
        render(Permission(("s3:PutObject",), resources=("{session_bucket_arn}/*",)), VALUES)


def test_a_mutating_action_on_star_without_condition_is_never_generated() -> None:
    with pytest.raises(PermissionTemplateError, match="ec2:RevokeSecurityGroupIngress"):
        render(Permission(("ec2:DescribeInstances", "ec2:RevokeSecurityGroupIngress")), VALUES)
    conditioned = Permission(
        ("ec2:CreateTags",), conditions={"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    )
    assert render(conditioned, VALUES)["resources"] == ["*"]


@pytest.mark.parametrize(
    ("action", "mutating"),
    [
        ("ec2:DescribeInstances", False),
        ("iam:ListAttachedRolePolicies", False),
        ("iam:SimulatePrincipalPolicy", False),
        ("ec2:CreateTags", True),
        ("iam:PassRole", True),
        ("ec2:Describe*", True),
        ("*", True),
        ("s3:*", True),
    ],
)
def test_is_mutating(action: str, mutating: bool) -> None:
    assert is_mutating(action) is mutating


def test_every_wildcard_resource_of_the_engine_has_a_reviewed_reason() -> None:
    wildcards = {_nag_form(r) for p in required_permissions() for r in p.resources if "*" in r}
    assert wildcards <= set(WILDCARD_REASONS)
    assert all(len(reason) > 80 for reason in WILDCARD_REASONS.values())


def _actions(permissions: list[Permission]) -> set[str]:
    return {a for p in permissions for a in p.actions}


def test_report_mode_grants_reads_and_publishing_but_no_fix() -> None:
    from stacks.config import GuardrailConfig
    from stacks.iam import needed_permissions

    report = needed_permissions(GuardrailConfig().enforced())
    mutating = {a for a in _actions(report) if is_mutating(a)}
    assert mutating == {"securityhub:BatchImportFindings", "securityhub:BatchUpdateFindings"}
    reads = {a for p in required_permissions() for a in p.actions if not is_mutating(a)}
    assert reads <= _actions(report)


def test_enforce_grants_exactly_the_enforced_controls_fixes() -> None:
    from guardrail.controls import REGISTRY

    from stacks.config import GuardrailConfig
    from stacks.iam import needed_permissions

    config = GuardrailConfig(control_modes={"ssh-open-to-internet": "enforce"})
    assert config.enforced() == ["ssh-open-to-internet"]
    granted = _actions(needed_permissions(config.enforced()))
    assert _actions(list(REGISTRY["ssh-open-to-internet"].fix_permissions)) <= granted
    assert "iam:PassRole" not in granted and "ssm:CreateDocument" not in granted
    everything = needed_permissions(list(REGISTRY))
    assert everything == required_permissions()
    disabled = GuardrailConfig(guardrail_mode="enforce", controls=("ssm-instance-role",))
    assert disabled.enforced() == ["ssm-instance-role"]
