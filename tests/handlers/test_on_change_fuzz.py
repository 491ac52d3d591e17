"""Arbitrary JSON and mutated real event shapes, delivered to the handler in enforce mode over an
account with things to fix: no unhandled exception, and no change to the account.

The fixtures' placeholder ids (i-0a1b2c3d4e5f6000N, sg-0a1b2c3d4e5f60001, app-role, ...) name no
resource of this account, so a mutated event can only reach the account's real resources by
inventing their ids, which it cannot; its preferences already log sessions, so a preferences
event (which names the region, not an id) has nothing to change either.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from handlers import on_change
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label

from tests.handlers.test_on_change import (
    ACCOUNT,
    DELIVERY,
    LOGGED,
    PLACEHOLDER_ACCOUNT,
    PREFS,
    REGION,
    World,
    _core_policy_only,
    prefs_content,
    session_with_shared_models,
)
from tests.unit.test_events import ANY_EVENT


@pytest.fixture(scope="module")
def fuzz_world() -> Iterator[tuple[World, dict[str, Any]]]:
    from moto import mock_aws
    from moto.iam import models as iam_models

    from emulator.extension import install

    patch = pytest.MonkeyPatch()
    patch.setattr(iam_models.IAMBackend, "_init_aws_policies", _core_policy_only)
    install()
    with mock_aws():
        session = session_with_shared_models()
        session.client("securityhub", region_name=REGION).enable_security_hub()
        ec2 = session.client("ec2", region_name=REGION)
        iam = session.client("iam", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
        policy = iam.create_policy(PolicyName="log-delivery", PolicyDocument=DELIVERY)["Policy"][
            "Arn"
        ]
        session.client("ssm", region_name=REGION).create_document(
            Name=PREFS,
            Content=prefs_content(**LOGGED),
            DocumentType="Session",
            DocumentFormat="JSON",
        )
        world = World(session, vpc, subnet, web, policy)
        # Non-compliant on purpose: internet SSH, an instance without a profile, a team role
        # without the core policy. Only an event naming them could lead to a fix.
        ops = world.group("ops")
        world.open_ssh(ops)
        world.launch(groups=[ops])
        world.app_role(name="team-role", profile="team-profile", core=False)
        world.launch(profile="team-profile")
        yield world, world.state()
    patch.undo()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event=ANY_EVENT)
def test_any_event_neither_raises_nor_changes_the_account(fuzz_world, event):
    world, before = fuzz_world
    if isinstance(event, dict) and event.get("account") == PLACEHOLDER_ACCOUNT:
        event["account"] = ACCOUNT  # else most real shapes stop at the account check
    with contextlib.redirect_stdout(io.StringIO()):  # Powertools prints metrics
        result = on_change.handle(event, world.guardrail("enforce"), home_account=ACCOUNT)
    assert isinstance(result, dict)
    label(f"dropped: {result['dropped']}" if "dropped" in result else "evaluated")
    assert "dropped" in result or result["fixes"] == {} or set(result["fixes"]) <= {"skipped"}
    assert world.state() == before
