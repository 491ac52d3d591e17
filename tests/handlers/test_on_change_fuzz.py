"""Real event shapes naming the account's own non-compliant resources, mutated, delivered to the
handler in enforce mode: the parser never raises, an event the spec says must be dropped is
dropped and changes nothing, and any other changes at most what its ids lead to (a mutation
that wrongly reaches further, e.g. a bad group id read as "every group", changes the world).
Then the same shapes mutated so they must be dropped (failed call, the guardrail's own change,
another account or region): still no change.

Each example starts from the same account: what an evaluated event fixed is undone after it.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from guardrail.events import CLOUDTRAIL, STATE_CHANGE, Dropped, parse_event
from handlers import on_change
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from tests.handlers.test_on_change import (
    ACCOUNT,
    ENI,
    GUARDRAIL_ACTOR,
    I1,
    I2,
    REGION,
    SG,
    TEAM_POLICY,
    World,
    attach_interface,
    emulated_world,
)
from tests.unit.test_events import FIXTURE_NAMES, JSON, mutated

StateKey = tuple[str, str]  # (part of World.state(), the resource it is keyed by)


@dataclass
class FuzzWorld:
    world: World
    before: dict[str, Any]  # World.state() as built
    real: dict[str, dict[str, str]]  # per fixture: placeholder -> this account's id
    reach: dict[str, set[StateKey]]  # per real id or name: what an event naming it may change

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("fuzz_world")  # Hypothesis's report of an example: the event, not the account


def _role_reach(role: str, profile: str) -> set[StateKey]:
    """A role's policies and its profile: what a fix for the role's instances may change."""
    return {("roles", role), ("inline", role), ("profiles", profile)}


@pytest.fixture(scope="module")
def fuzz_world() -> Iterator[FuzzWorld]:
    patch = pytest.MonkeyPatch()
    with emulated_world(patch) as world:
        # Non-compliant on purpose: internet SSH, instances without a profile, team roles
        # without the core policy. Only an event naming them could lead to a fix.
        ops = world.group("ops")
        world.open_ssh(ops)
        bare = world.launch(groups=[ops])[0]
        side = world.group("ops-side")
        world.open_ssh(side)
        joined = world.launch()[0]  # in `web`, then given a second interface in `ops-side`
        eni = attach_interface(world, joined, side)
        reach = {
            ops: {("ingress", ops)},
            bare: {("ingress", ops), ("associations", bare)},
            world.interface_of(bare): {("ingress", ops)},
            side: {("ingress", side)},
            joined: {("ingress", side), ("associations", joined)},  # `web` has no SSH open
            eni: {("ingress", side)},
        }
        # One role without the core policy per IAM shape, so each still has something to fix
        # when the last test delivers them all unmutated.
        launched = {}
        for team in ("team", "crew", "cast", "deck"):
            role, profile = f"{team}-role", f"{team}-profile"
            world.app_role(name=role, profile=profile, core=False)
            launched[team] = world.launch(profile=profile)[0]
            reach[launched[team]] = reach[role] = reach[profile] = _role_reach(role, profile)
        # Found only through the team policy attached to it (a policy-version event).
        deck = world.iam.create_policy(PolicyName="deck-policy", PolicyDocument=TEAM_POLICY)
        world.iam.attach_role_policy(RoleName="deck-role", PolicyArn=deck["Policy"]["Arn"])
        reach["deck-policy"] = reach["deck-role"]
        ids = {
            SG: ops,
            I1: bare,
            I2: launched["team"],
            ENI: world.interface_of(bare),
            '"roleName": "app-role"': '"roleName": "team-role"',
            '"instanceProfileName": "app-profile"': '"instanceProfileName": "team-profile"',
            ":policy/app-policy": ":policy/deck-policy",
        }
        # The ids each real shape is given: the attach names the instance its interface joined.
        real = {name: ids for name in FIXTURE_NAMES}
        real["attach_network_interface"] = {**ids, I1: joined, ENI: eni}
        real["iam_attach_role_policy"] = {'"roleName": "app-role"': '"roleName": "crew-role"'}
        real["iam_add_role_to_instance_profile"] = {
            '"instanceProfileName": "app-profile"': '"instanceProfileName": "cast-profile"',
            '"roleName": "app-role"': '"roleName": "cast-role"',
        }
        yield FuzzWorld(world, world.state(), real, reach)
    patch.undo()


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[StateKey]:
    """What differs between two World.state()s, by resource."""
    keys: set[StateKey] = set()
    for part in ("ingress", "roles", "inline", "profiles"):
        old, new = before[part], after[part]
        keys |= {(part, k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    keys |= {
        ("associations", a[0]) for a in set(before["associations"]) ^ set(after["associations"])
    }
    if before["prefs"] != after["prefs"]:
        keys.add(("prefs", ""))
    return keys


def restore(world: World, before: dict[str, Any]) -> None:
    """Undo what the fixes changed: revoked rules back, associations, policies and roles added
    taken away (what World.state() shows; the next example starts from `before`)."""
    after = world.state()
    for gid, rules in before["ingress"].items():
        for protocol, low, high, cidr in set(rules) - set(after["ingress"][gid]):
            world.open_ssh(gid, cidr, low, high, protocol)
        for protocol, low, high, cidr in set(after["ingress"][gid]) - set(rules):
            ranges = (
                {"Ipv6Ranges": [{"CidrIpv6": cidr}]}
                if ":" in cidr
                else {"IpRanges": [{"CidrIp": cidr}]}
            )
            world.ec2.revoke_security_group_ingress(
                GroupId=gid,
                IpPermissions=[{"IpProtocol": protocol, "FromPort": low, "ToPort": high, **ranges}],
            )
    for instance, _, _ in set(after["associations"]) - set(before["associations"]):
        associations = world.ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [instance]}]
        )["IamInstanceProfileAssociations"]
        for association in associations:
            world.ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
    for role, arns in after["roles"].items():
        for arn in set(arns) - set(before["roles"][role]):
            world.iam.detach_role_policy(RoleName=role, PolicyArn=arn)
    for role, names in after["inline"].items():
        for name in set(names) - set(before["inline"][role]):
            world.iam.delete_role_policy(RoleName=role, PolicyName=name)
    for profile, roles in after["profiles"].items():
        for role in set(roles) - set(before["profiles"][profile]):
            world.iam.remove_role_from_instance_profile(InstanceProfileName=profile, RoleName=role)
    assert world.state() == before, "restore left the account changed"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def must_be_dropped(event: Any) -> str:
    """Why the spec says `event` may lead to no evaluation ("" if it does not say so): a
    CloudTrail call with an errorCode failed; an event of another account or (IAM aside)
    another region is not this function's."""
    detail = event.get("detail") if isinstance(event, dict) else None
    if not isinstance(detail, dict):
        return ""
    detail_type = _text(event.get("detail-type"))
    if detail_type == CLOUDTRAIL and detail.get("errorCode") is not None:
        return "failed call"
    account = _text(event.get("account"))
    if re.fullmatch("[0-9]{12}", account) and account != ACCOUNT:
        return "other account"
    region = _text(event.get("region")) or _text(detail.get("awsRegion"))
    regional = (
        detail_type == STATE_CHANGE or _text(detail.get("eventSource")) != "iam.amazonaws.com"
    )
    if region and region != REGION and regional:
        return "other region"
    return ""


def allowed(fw: FuzzWorld, event: Any) -> set[StateKey]:
    """What the real ids `event` names lead to: all a fix for it may change."""
    text = repr(event)
    return set().union(*(keys for rid, keys in fw.reach.items() if rid in text))


def deliver(world: World, event: Any) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()):  # Powertools prints logs and metrics
        return on_change.handle(event, world.guardrail("enforce"), home_account=ACCOUNT)


# Mostly real shapes; now and then arbitrary JSON (the parser's own fuzz test has many more).
SHAPES = [None] * 4 + FIXTURE_NAMES


@settings(
    max_examples=125,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=st.sampled_from(SHAPES), data=st.data())
def test_any_event_changes_at_most_what_it_names(fuzz_world, name, data):
    fw, world = fuzz_world, fuzz_world.world
    event = data.draw(JSON if name is None else mutated(world.event(name, fw.real[name])))
    # Directly: the handler's path turns a parser exception into a "malformed" drop.
    parsed = parse_event(event, actor_arns=(GUARDRAIL_ACTOR,), region=REGION)
    result = deliver(world, event)
    changes = changed(fw.before, world.state())
    if changes:
        restore(world, fw.before)
    label(f"dropped: {result['dropped']}" if "dropped" in result else "evaluated")
    if isinstance(parsed, Dropped):
        assert result.get("dropped") == parsed.kind.value, (parsed, result)
    why = must_be_dropped(event)
    assert not why or ("dropped" in result and not changes), (why, result, changes)
    assert changes <= allowed(fw, event), (changes - allowed(fw, event), result)


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
# errorCode as EC2 and IAM record a failed call, and present but empty: all failed calls.
ERROR_CODES = {
    "failed call": "Client.UnauthorizedOperation",
    "access denied": "AccessDenied",
    "no such entity": "NoSuchEntity",
    "empty error code": "",
}


def must_drop(event: dict[str, Any], how: str) -> None:
    detail = event["detail"]
    if how in ERROR_CODES:  # IAM's failed calls (and most others) have no response
        detail.update(errorCode=ERROR_CODES[how], errorMessage="denied", responseElements=None)
    elif how == "own change":
        detail["userIdentity"]["arn"] = f"{OWN_SESSION}/1700000000000000000"
    elif how == "other account":
        event["account"] = "999999999999"
    elif how == "other region":
        event["region"] = detail["awsRegion"] = "ap-south-1"
    elif how == "other region, CloudTrail's only":
        del event["region"]
        detail["awsRegion"] = "ap-south-1"


@settings(
    max_examples=48,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(REAL_SHAPES),
    how=st.sampled_from(
        [
            *ERROR_CODES,
            "own change",
            "other account",
            "other region",
            "other region, CloudTrail's only",
        ]
    ),
)
def test_real_events_that_must_be_dropped_change_nothing(fuzz_world, name, how):
    world, before = fuzz_world.world, fuzz_world.before
    if name.startswith("iam_") and how.startswith("other region"):
        how = "failed call"  # IAM is global: its events are evaluated in every region
    event = world.event(name, fuzz_world.real[name])
    findings = len(world.findings())
    must_drop(event, how)
    result = deliver(world, event)
    label(f"{name}: {how}")
    assert "dropped" in result, (how, result)
    assert world.state() == before and len(world.findings()) == findings


def test_the_same_real_events_unmutated_would_fix_something(fuzz_world):
    """The properties above are meaningful: without the mutation each event changes the
    account, and only where its ids lead. (Runs last in this module: it fixes the world.)"""
    world = fuzz_world.world
    for name in REAL_SHAPES:
        event = world.event(name, fuzz_world.real[name])
        before = world.state()
        result = deliver(world, event)
        assert "dropped" not in result and result["fixes"], (name, result)  # each reaches a fix
        assert changed(before, world.state()) <= allowed(fuzz_world, event), name
    assert world.state() != fuzz_world.before
