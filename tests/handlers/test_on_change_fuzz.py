"""Arbitrary JSON and mutated real event shapes, delivered to the handler in enforce mode over an
account with things to fix: no unhandled exception, and no change to the account. Then real
shapes naming the account's real non-compliant resources, mutated so they must be dropped
(failed call, the guardrail's own change, another account or region): still no change.

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
from hypothesis import strategies as st

from tests.handlers.test_on_change import (
    ACCOUNT,
    ENI,
    GUARDRAIL_ACTOR,
    I1,
    PLACEHOLDER_ACCOUNT,
    SG,
    TEAM_POLICY,
    World,
    attach_interface,
    emulated_world,
)
from tests.unit.test_events import ANY_EVENT


@pytest.fixture(scope="module")
def fuzz_world() -> Iterator[tuple[World, dict[str, Any], dict[str, dict[str, str]]]]:
    patch = pytest.MonkeyPatch()
    with emulated_world(patch) as world:
        # Non-compliant on purpose: internet SSH, an instance without a profile, a team role
        # without the core policy. Only an event naming them could lead to a fix.
        ops = world.group("ops")
        world.open_ssh(ops)
        bare = world.launch(groups=[ops])[0]
        side = world.group("ops-side")
        world.open_ssh(side)
        joined = world.launch()[0]  # in `web`, then given a second interface in `ops-side`
        eni = attach_interface(world, joined, side)
        world.app_role(name="team-role", profile="team-profile", core=False)
        world.launch(profile="team-profile")
        # One role without the core policy per IAM shape, so each still has something to fix
        # when the last test delivers them all unmutated.
        world.app_role(name="crew-role", profile="crew-profile", core=False)
        world.launch(profile="crew-profile")
        world.app_role(name="cast-role", profile="cast-profile", core=False)
        world.launch(profile="cast-profile")
        # Found only through the team policy attached to it (a policy-version event).
        world.app_role(name="deck-role", profile="deck-profile", core=False)
        world.launch(profile="deck-profile")
        deck = world.iam.create_policy(PolicyName="deck-policy", PolicyDocument=TEAM_POLICY)
        world.iam.attach_role_policy(RoleName="deck-role", PolicyArn=deck["Policy"]["Arn"])
        ids = {SG: ops, I1: bare, '"roleName": "app-role"': '"roleName": "team-role"'}
        # The ids each real shape is given: the attach names the instance its interface joined.
        real = {name: ids for name in REAL_SHAPES}
        real["attach_network_interface"] = {**ids, I1: joined, ENI: eni}
        real["iam_attach_role_policy"] = {'"roleName": "app-role"': '"roleName": "crew-role"'}
        real["iam_add_role_to_instance_profile"] = {
            '"instanceProfileName": "app-profile"': '"instanceProfileName": "cast-profile"',
            '"roleName": "app-role"': '"roleName": "cast-role"',
        }
        real["iam_create_policy_version"] = {":policy/app-policy": ":policy/deck-policy"}
        yield world, world.state(), real
    patch.undo()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event=ANY_EVENT)
def test_any_event_neither_raises_nor_changes_the_account(fuzz_world, event):
    world, before, _ = fuzz_world
    if isinstance(event, dict) and event.get("account") == PLACEHOLDER_ACCOUNT:
        event["account"] = ACCOUNT  # else most real shapes stop at the account check
    with contextlib.redirect_stdout(io.StringIO()):  # Powertools prints metrics
        result = on_change.handle(event, world.guardrail("enforce"), home_account=ACCOUNT)
    assert isinstance(result, dict)
    label(f"dropped: {result['dropped']}" if "dropped" in result else "evaluated")
    assert "dropped" in result or result["fixes"] == {} or set(result["fixes"]) <= {"skipped"}
    assert world.state() == before


# Real shapes that, with the world's ids, would lead to a fix if they were not dropped.
REAL_SHAPES = [
    "authorize_ingress_ip_permissions",
    "attach_network_interface",
    "start_instances",
    "iam_detach_role_policy",
    # The IAM calls the guardrail makes itself (its own are dropped, as "own change" shows).
    "iam_attach_role_policy",
    "iam_add_role_to_instance_profile",
    # A new default version of a policy: its roles, then their instances.
    "iam_create_policy_version",
]
OWN_SESSION = GUARDRAIL_ACTOR.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")


def must_drop(event: dict[str, Any], how: str) -> None:
    detail = event["detail"]
    if how == "failed call":
        detail["errorCode"] = "Client.UnauthorizedOperation"
        detail["errorMessage"] = "You are not authorized to perform this operation."
    elif how == "own change":
        detail["userIdentity"]["arn"] = f"{OWN_SESSION}/1700000000000000000"
    elif how == "other account":
        event["account"] = "999999999999"
    elif how == "other region":
        event["region"] = detail["awsRegion"] = "ap-south-1"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(REAL_SHAPES),
    how=st.sampled_from(["failed call", "own change", "other account", "other region"]),
)
def test_real_events_that_must_be_dropped_change_nothing(fuzz_world, name, how):
    world, before, real = fuzz_world
    if name.startswith("iam_") and how == "other region":
        how = "failed call"  # IAM is global: its events are evaluated in every region
    event = world.event(name, real[name])
    findings = len(world.findings())
    must_drop(event, how)
    with contextlib.redirect_stdout(io.StringIO()):
        result = on_change.handle(event, world.guardrail("enforce"), home_account=ACCOUNT)
    label(f"{name}: {how}")
    assert "dropped" in result, (how, result)
    assert world.state() == before and len(world.findings()) == findings


def test_the_same_real_events_unmutated_would_fix_something(fuzz_world):
    """The property above is meaningful: without the mutation each event changes the account.
    (Runs last in this module: it fixes the world.)"""
    world, before, real = fuzz_world
    for name in REAL_SHAPES:
        with contextlib.redirect_stdout(io.StringIO()):
            result = on_change.handle(
                world.event(name, real[name]), world.guardrail("enforce"), home_account=ACCOUNT
            )
        # each reaches a fix
        assert "dropped" not in result and result["fixes"], (name, result)
    assert world.state() != before
