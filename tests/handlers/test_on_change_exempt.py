"""An instance exempt from fixes (tag ssm-guardrail:exempt) in the event path: an event about
its group, or about another instance in it, never closes the group (that would close SSH on
the exempt one too). The targeted read finds the group's other instances, as the guard does."""

from __future__ import annotations

from guardrail.model import EXEMPT_TAG

from tests.handlers import test_on_change
from tests.handlers.test_on_change import I1, SG, World

world = test_on_change.world  # the emulated account fixture


def exempt_bastion_in(w: World) -> tuple[str, str]:
    bad = w.group("ops")
    (bastion,) = w.launch(groups=[bad], profile="app-profile")
    w.ec2.create_tags(Resources=[bastion], Tags=[{"Key": EXEMPT_TAG, "Value": "sanctioned"}])
    w.open_ssh(bad)
    return bad, bastion


def test_a_group_event_leaves_the_group_of_an_exempt_instance_open(world: World):
    world.app_role()
    bad, _ = exempt_bastion_in(world)
    result = world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    assert world.internet_ssh(bad)
    assert result["fixes"] == {"skipped": 2}  # the group's fix and the instance's


def test_an_event_about_another_instance_in_its_group_leaves_it_open(world: World):
    world.app_role()
    bad, _ = exempt_bastion_in(world)
    (app,) = world.launch(groups=[bad], profile="app-profile")
    world.deliver("state_change_running", {I1: app})
    assert world.internet_ssh(bad)


def test_without_the_tag_the_same_event_closes_the_group(world: World):
    world.app_role()
    bad, bastion = exempt_bastion_in(world)
    world.ec2.delete_tags(Resources=[bastion], Tags=[{"Key": EXEMPT_TAG}])
    world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    assert not world.internet_ssh(bad)


def test_an_event_does_not_give_a_role_to_a_profile_an_exempt_instance_shares(world: World):
    """The event names only the other instance: the profile's users are read before a role is
    added to it (one DescribeInstances by its ARN), and the exempt one among them keeps the
    profile empty."""
    world.iam.create_instance_profile(InstanceProfileName="shared-empty")
    (appliance,) = world.launch(profile="shared-empty")
    world.ec2.create_tags(Resources=[appliance], Tags=[{"Key": EXEMPT_TAG, "Value": "vendor"}])
    (app,) = world.launch(profile="shared-empty")
    result = world.deliver("state_change_running", {I1: app})
    roles = world.iam.get_instance_profile(InstanceProfileName="shared-empty")
    assert roles["InstanceProfile"]["Roles"] == []
    assert result["fixes"].get("skipped")
