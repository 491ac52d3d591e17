"""Every AWS API call the engine makes is allowed by the Lambdas' generated IAM.

The declared permissions (guardrail/permissions.py, the controls' Permission objects) are what the
stack grants; the calls are what the code does. This reads the calls from the source (boto3 method
names, called directly or handed to a paginator/helper as a string) and checks each one against the
synthesized template with every control in enforce mode. A call that is not declared is an
AccessDenied in a real account that moto never shows.
"""

from __future__ import annotations

import ast
import json
from functools import cached_property
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from guardrail.clients import AwsClients
from guardrail.permissions import required_permissions

from stacks.functions import DRIFT_SCAN, ON_CHANGE

from .conftest import MAIN, ROOT, Synth
from .policy_walker import granted_by_handler, identity_statements

pytestmark = pytest.mark.infra

ENGINE_SOURCES = [ROOT / "lambdas" / "guardrail", ROOT / "lambdas" / "handlers"]


def _boto3_operations() -> dict[str, set[str]]:
    """boto3 method name -> IAM actions, for the services AwsClients builds clients for."""
    session = botocore.session.get_session()
    available = set(session.get_available_services())
    services = [
        name
        for name, value in vars(AwsClients).items()
        if isinstance(value, cached_property) and name in available
    ]
    assert services, "AwsClients builds no client this test knows how to read"
    table: dict[str, set[str]] = {}
    for service in services:
        model = session.get_service_model(service)
        for operation in model.operation_names:
            # For these services the IAM action is the API operation under the endpoint prefix.
            table.setdefault(xform_name(operation), set()).add(
                f"{model.endpoint_prefix}:{operation}"
            )
    return table


def engine_calls() -> dict[str, set[str]]:
    """IAM action -> source files, for every AWS operation the engine's source names."""
    table = _boto3_operations()
    calls: dict[str, set[str]] = {}
    for folder in ENGINE_SOURCES:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    name = node.func.attr  # ec2.revoke_security_group_ingress(...)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    name = node.value  # pages(ec2, "describe_instances", ...)
                else:
                    continue
                for action in table.get(name, ()):
                    calls.setdefault(action, set()).add(str(path.relative_to(ROOT)))
    return calls


# GetCallerIdentity (the CLI's account id) needs no permission: STS answers it even under an
# explicit Deny. The Lambdas take the account from their ARN (test_on_change_calls: no STS call).
CALLS = {a: f for a, f in engine_calls().items() if a != "sts:GetCallerIdentity"}


def _granted(synth: Synth) -> dict[str, set[str]]:
    """Lambda policy logical id -> the actions it allows (enforce mode, so fixes included)."""
    t = synth.templates[MAIN]
    policies = {k for k, v in t["Resources"].items() if v["Type"] == "AWS::IAM::Policy"}
    granted: dict[str, set[str]] = {p: set() for p in policies}
    for logical_id, statement in identity_statements(t):
        if logical_id in policies and statement.get("Effect") == "Allow":
            actions = statement["Action"]
            granted[logical_id] |= set(actions if isinstance(actions, list) else [actions])
    return granted


def test_the_source_scan_finds_the_calls_we_know_of() -> None:
    # Guards the scanner itself: a refactor that hid the calls would make the test below vacuous.
    assert {
        "ec2:DescribeInstances",
        "ec2:RevokeSecurityGroupIngress",
        "iam:AttachRolePolicy",
        "ssm:UpdateDocumentDefaultVersion",
        "securityhub:BatchImportFindings",
    } <= set(CALLS)


# Reads only an event's targeted read makes: the drift scan's role goes without them.
EVENTS_ONLY = {a for p in required_permissions() if p.events_only for a in p.actions}


@pytest.mark.parametrize("action", sorted(CALLS))
def test_every_call_the_engine_makes_is_granted_to_the_lambdas_that_make_it(
    synth: Synth, action: str
) -> None:
    granted = granted_by_handler(synth.templates[MAIN])
    assert set(granted) == {DRIFT_SCAN.handler, ON_CHANGE.handler}
    needed_by = [ON_CHANGE.handler] + ([] if action in EVENTS_ONLY else [DRIFT_SCAN.handler])
    missing = [handler for handler in needed_by if action not in granted[handler]]
    assert missing == [], f"{action} (called in {sorted(CALLS[action])}) is not granted"


def test_the_lambdas_are_granted_nothing_of_sts(synth: Synth) -> None:
    """They never call STS (the account comes from their ARN), and GetCallerIdentity, the one
    call the CLI makes, needs no grant: none is given."""
    granted = granted_by_handler(synth.templates[MAIN])
    assert {a for actions in granted.values() for a in actions if a.startswith("sts:")} == set()


def _statements(synth: Synth, action: str) -> list[dict[str, Any]]:
    granted = _granted(synth)
    return [
        s
        for lid, s in identity_statements(synth.templates[MAIN])
        if lid in granted
        and action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]


def _resources(statement: dict[str, Any]) -> list[str]:
    resources = (
        statement["Resource"]
        if isinstance(statement["Resource"], list)
        else [statement["Resource"]]
    )
    return [
        r if isinstance(r, str) else "".join(p for p in r["Fn::Join"][1] if isinstance(p, str))
        for r in resources
    ]


def _fix_tags_rules_on_create() -> bool:
    """Whether the SSH fix passes TagSpecifications for security-group-rule to
    AuthorizeSecurityGroupIngress (tag on create)."""
    source = (ROOT / "lambdas" / "guardrail" / "controls" / "ssh_open.py").read_text()
    return "TagSpecifications" in source and '"security-group-rule"' in source


def test_the_relied_on_mark_is_the_only_tag_the_fix_may_take_off(synth: Synth) -> None:
    statements = _statements(synth, "ec2:DeleteTags")
    assert statements, "a run that did not revoke the rule takes its relied-on mark off"
    for statement in statements:
        assert [r.endswith(":security-group-rule/*") for r in _resources(statement)] == [True]
        assert statement["Condition"] == {
            "ForAllValues:StringLike": {"aws:TagKeys": ["ssm-guardrail:relied-on:*"]},
            # without a key named, DeleteTags would take every tag off
            "Null": {"ec2:ResourceTag/ssm-guardrail:replaces": "false", "aws:TagKeys": "false"},
        }


def test_rules_may_be_tagged_only_at_creation_or_with_the_relied_on_mark(synth: Synth) -> None:
    """ec2:CreateTags reaches security group rules only: at creation (the re-adds), or to add
    the one relied-on key to a rule the guardrail re-added (tagged with the rule it replaces);
    never an owner's rule, never another key."""
    assert _fix_tags_rules_on_create(), "the premise changed: revisit these two tests"
    statements = _statements(synth, "ec2:CreateTags")
    assert statements, "the fix tags the rules it re-adds: ec2:CreateTags must be granted"
    for statement in statements:
        assert [r.endswith(":security-group-rule/*") for r in _resources(statement)] == [True]
    # Each fixing Lambda has both statements.
    assert {json.dumps(s["Condition"], sort_keys=True) for s in statements} == {
        json.dumps(c, sort_keys=True)
        for c in (
            {"StringEquals": {"ec2:CreateAction": "AuthorizeSecurityGroupIngress"}},
            {
                "ForAllValues:StringLike": {"aws:TagKeys": ["ssm-guardrail:relied-on:*"]},
                "Null": {"ec2:ResourceTag/ssm-guardrail:replaces": "false"},
            },
        )
    }


def test_tagged_authorize_is_allowed_on_the_rules_it_creates(synth: Synth) -> None:
    assert _fix_tags_rules_on_create()
    resources = [
        r for s in _statements(synth, "ec2:AuthorizeSecurityGroupIngress") for r in _resources(s)
    ]
    assert any(r.endswith(":security-group/*") for r in resources)
    assert any(r.endswith(":security-group-rule/*") for r in resources)
