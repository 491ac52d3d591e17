"""API calls per event: a single-resource event costs at most 8 AWS calls, Security Hub included.

Each case makes the change the event describes (so the guardrail has something to fix, mode
enforce), delivers it, and counts every botocore call the handler makes. No STS call is made:
the account comes from the event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.handlers import test_on_change
from tests.handlers.test_on_change import (
    ASSOC,
    CORE,
    DELIVERY,
    ENI,
    I1,
    PL,
    PREFS,
    SG,
    World,
    attach_interface,
    inline_deny_of_the_fixture,
    office_list_on_ssh,
    prefs_content,
)

MAX_CALLS = 8
DESCRIBE_ONLY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeTags", "Resource": "*"}],
    }
)
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)

world = test_on_change.world  # the emulated account fixture


def sg_open(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.launch(groups=[bad])
    w.open_ssh(bad)
    return {SG: bad}


def sg_range(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.launch(groups=[bad])
    w.open_ssh(bad, low=0, high=1024)
    return {SG: bad}


def instance_open_no_profile(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.open_ssh(bad)
    return {I1: w.launch(groups=[bad])[0]}


def instance_in_open_group(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.open_ssh(bad)
    instance = w.launch()[0]
    w.ec2.modify_instance_attribute(InstanceId=instance, Groups=[bad])
    return {I1: instance, SG: bad}


def elastic_ip_on_instance_in_open_group(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.open_ssh(bad)
    instance = w.launch(groups=[bad], public=False)[0]
    allocation = w.ec2.allocate_address(Domain="vpc")["AllocationId"]
    w.ec2.associate_address(AllocationId=allocation, InstanceId=instance)
    return {I1: instance}


def prefix_list_given_the_internet(w: World) -> dict[str, str]:
    """The fix is SKIPPED (a person's to change), its record still published."""
    pl = office_list_on_ssh(w)[0]
    w.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    return {PL: pl}


def ipv6_address_on_interface_in_ipv6_open_group(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.open_ssh(bad, cidr="::/0")
    eni = w.interface_of(w.launch(groups=[bad], public=False)[0])
    w.ec2.assign_ipv6_addresses(NetworkInterfaceId=eni, Ipv6Addresses=["2a05:d018::10"])
    return {ENI: eni}


def ipv6_address_removed_from_interface_in_ipv6_open_group(w: World) -> dict[str, str]:
    ids = ipv6_address_on_interface_in_ipv6_open_group(w)
    w.ec2.unassign_ipv6_addresses(NetworkInterfaceId=ids[ENI], Ipv6Addresses=["2a05:d018::10"])
    return ids


def interface_in_open_group(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.open_ssh(bad)
    instance = w.launch()[0]
    eni = w.interface_of(instance)
    w.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[bad])
    return {ENI: eni, SG: bad}


def interface_attached_from_open_group(w: World) -> dict[str, str]:
    bad = w.group("ops")
    w.open_ssh(bad)
    instance = w.launch()[0]
    return {I1: instance, ENI: attach_interface(w, instance, bad)}


def associated_role_without_core(w: World) -> dict[str, str]:
    w.app_role(core=False)
    instance = w.launch()[0]
    w.ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Name": "app-profile"}, InstanceId=instance
    )
    return {I1: instance}


def disassociated(w: World) -> dict[str, str]:
    w.app_role()
    instance = w.launch(profile="app-profile")[0]
    association = association_of(w, instance)
    w.ec2.disassociate_iam_instance_profile(AssociationId=association)
    return {I1: instance, ASSOC: association}


def replaced_with_bare_profile(w: World) -> dict[str, str]:
    w.app_role()
    w.iam.create_instance_profile(InstanceProfileName="bare-profile")
    instance = w.launch(profile="app-profile")[0]
    association = association_of(w, instance)
    w.ec2.replace_iam_instance_profile_association(
        IamInstanceProfile={"Name": "bare-profile"}, AssociationId=association
    )
    return {I1: instance, ASSOC: association}


def association_of(w: World, instance: str) -> str:
    return str(
        w.ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [instance]}]
        )["IamInstanceProfileAssociations"][0]["AssociationId"]
    )


def core_detached(w: World) -> dict[str, str]:
    w.app_role()
    w.launch(profile="app-profile")
    w.iam.detach_role_policy(RoleName="app-role", PolicyArn=CORE)
    return {}


def inline_deleted(w: World) -> dict[str, str]:
    w.app_role()
    w.launch(profile="app-profile")
    w.iam.delete_role_policy(RoleName="app-role", PolicyName="session-log-delivery")
    return {}


def policy_attached_to_role_without_delivery(w: World) -> dict[str, str]:
    """A person attaches a policy of theirs (neither the core nor a delivery one) to a role that
    cannot deliver session logs: the role is judged again and the log-delivery policy attached."""
    w.app_role(delivery_inline=False)
    w.launch(profile="app-profile")
    policy = w.iam.create_policy(PolicyName="app-policy", PolicyDocument=DESCRIBE_ONLY)
    w.iam.attach_role_policy(RoleName="app-role", PolicyArn=policy["Policy"]["Arn"])
    return {}


def inline_deny_put_on_role_without_delivery(w: World) -> dict[str, str]:
    """The fixture's inline Deny (ssmmessages:*) put on a role with the core policy but no log
    delivery: two verdicts, the agent refused (left to a person) and delivery (fixed)."""
    w.app_role(delivery_inline=False)
    w.launch(profile="app-profile")
    name, document = inline_deny_of_the_fixture()
    w.iam.put_role_policy(RoleName="app-role", PolicyName=name, PolicyDocument=document)
    return {}


def trust_narrowed_to_lambda(w: World) -> dict[str, str]:
    """The fixture's trust (Lambda only) set on a role with the core policy: EC2 may no longer
    assume it (left to a person)."""
    w.app_role()
    w.launch(profile="app-profile")
    request = w.event("iam_update_assume_role_policy")["detail"]["requestParameters"]
    w.iam.update_assume_role_policy(RoleName="app-role", PolicyDocument=request["policyDocument"])
    return {}


def boundary_put_on_role_without_delivery(w: World) -> dict[str, str]:
    w.app_role(delivery_inline=False)
    w.launch(profile="app-profile")
    boundary = w.iam.create_policy(PolicyName="app-boundary", PolicyDocument=ALLOW_ALL)
    w.iam.put_role_permissions_boundary(
        RoleName="app-role", PermissionsBoundary=boundary["Policy"]["Arn"]
    )
    return {}


def boundary_deleted_from_role_without_delivery(w: World) -> dict[str, str]:
    boundary_put_on_role_without_delivery(w)
    w.iam.delete_role_permissions_boundary(RoleName="app-role")
    return {}


def team_delivery_policy(w: World, v1: str, v2: str) -> str:
    """A role with the core policy whose log delivery comes from the team's own managed policy
    (the fixtures' app-policy), v1 then v2 made the default, on a running instance."""
    w.app_role(delivery_inline=False)
    w.launch(profile="app-profile")
    policy = w.iam.create_policy(PolicyName="app-policy", PolicyDocument=v1)["Policy"]["Arn"]
    w.iam.attach_role_policy(RoleName="app-role", PolicyArn=policy)
    w.iam.create_policy_version(PolicyArn=policy, PolicyDocument=v2, SetAsDefault=True)
    return str(policy)


def delivery_policy_edited_to_drop_delivery(w: World) -> dict[str, str]:
    """The team's delivery policy gets a new default version that grants something else: the
    role is found through the policy, judged again, and the log-delivery policy attached."""
    team_delivery_policy(w, DELIVERY, DESCRIBE_ONLY)
    return {}


def delivery_policy_rolled_back_to_a_version_without_delivery(w: World) -> dict[str, str]:
    policy = team_delivery_policy(w, DESCRIBE_ONLY, DELIVERY)
    w.iam.set_default_policy_version(PolicyArn=policy, VersionId="v1")
    return {}


def role_without_delivery_added_to_empty_profile(w: World) -> dict[str, str]:
    w.app_role(delivery_inline=False)
    w.iam.remove_role_from_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    w.launch(profile="app-profile")
    w.iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    return {}


def role_removed(w: World) -> dict[str, str]:
    w.app_role()
    w.launch(profile="app-profile")
    w.iam.remove_role_from_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    return {}


def profile_deleted(w: World) -> dict[str, str]:
    role_removed(w)
    w.iam.delete_instance_profile(InstanceProfileName="app-profile")
    return {}


def prefs_without_logging(w: World) -> dict[str, str]:
    w.ssm.delete_document(Name=PREFS)
    w.ssm.create_document(
        Name=PREFS, Content=prefs_content(), DocumentType="Session", DocumentFormat="JSON"
    )
    return {}


def prefs_deleted(w: World) -> dict[str, str]:
    w.ssm.delete_document(Name=PREFS)
    return {}


def running_role_without_delivery(w: World) -> dict[str, str]:
    w.app_role(delivery_inline=False)
    return {I1: w.launch(profile="app-profile")[0]}


def associated_role_without_core_or_delivery(w: World) -> dict[str, str]:
    w.app_role(core=False, delivery_inline=False)
    instance = w.launch()[0]
    w.ec2.associate_iam_instance_profile(
        IamInstanceProfile={"Name": "app-profile"}, InstanceId=instance
    )
    return {I1: instance}


def everything_wrong(w: World) -> dict[str, str]:
    """One new instance that fails all three controls: a range with port 22 open, a role
    without the core policy or log delivery. Each control's fix costs its own call(s)."""
    w.app_role(core=False, delivery_inline=False)
    bad = w.group("ops")
    w.open_ssh(bad, low=0, high=1024)
    return {I1: w.launch(groups=[bad], profile="app-profile")[0]}


CASES: list[tuple[str, Callable[[World], dict[str, str]]]] = [
    ("authorize_ingress_ip_permissions", sg_open),
    ("authorize_ingress_ipv6", sg_open),
    ("authorize_ingress_group_name", sg_open),
    ("modify_security_group_rules", sg_open),
    ("revoke_ingress_rule_ids", sg_open),
    ("authorize_ingress_flat_cidr", sg_range),
    ("run_instances_launch_template", instance_open_no_profile),
    ("start_instances", instance_open_no_profile),
    ("state_change_running", instance_open_no_profile),
    ("modify_instance_attribute_groups", instance_in_open_group),
    ("modify_network_interface_attribute", interface_in_open_group),
    ("attach_network_interface", interface_attached_from_open_group),
    ("associate_address", elastic_ip_on_instance_in_open_group),
    ("assign_ipv6_addresses", ipv6_address_on_interface_in_ipv6_open_group),
    ("unassign_ipv6_addresses", ipv6_address_removed_from_interface_in_ipv6_open_group),
    ("modify_managed_prefix_list", prefix_list_given_the_internet),
    ("associate_iam_instance_profile", associated_role_without_core),
    ("disassociate_iam_instance_profile", disassociated),
    ("replace_iam_instance_profile_association", replaced_with_bare_profile),
    ("iam_detach_role_policy", core_detached),
    ("iam_delete_role_policy", inline_deleted),
    ("iam_remove_role_from_instance_profile", role_removed),
    ("iam_delete_instance_profile", profile_deleted),
    ("iam_add_role_to_instance_profile", role_without_delivery_added_to_empty_profile),
    ("iam_attach_role_policy", policy_attached_to_role_without_delivery),
    ("iam_put_role_policy", inline_deny_put_on_role_without_delivery),
    ("iam_put_role_permissions_boundary", boundary_put_on_role_without_delivery),
    ("iam_delete_role_permissions_boundary", boundary_deleted_from_role_without_delivery),
    ("iam_update_assume_role_policy", trust_narrowed_to_lambda),
    ("ssm_create_document", prefs_without_logging),
    ("ssm_update_document_default_version", prefs_without_logging),
    ("ssm_delete_document", prefs_deleted),
]
# Events whose one instance needs its role's log delivery evaluated (GetDocument and
# SimulatePrincipalPolicy) *and* a fix, or several fixes (EC2 and IAM have no batch form for
# them), or a policy's roles found first: over 8. Each is held to what was measured, so any new
# call shows.
HEAVY_CASES: list[tuple[str, Callable[[World], dict[str, str]]]] = [
    ("state_change_running", running_role_without_delivery),
    ("associate_iam_instance_profile", associated_role_without_core_or_delivery),
    ("state_change_running", everything_wrong),
    ("iam_create_policy_version", delivery_policy_edited_to_drop_delivery),
    ("iam_set_default_policy_version", delivery_policy_rolled_back_to_a_version_without_delivery),
]
MEASURED = {
    # 8 reads and Security Hub + 1 fix. The role carries the core policy, so the SSM Agent's
    # actions are simulated for it too (a boundary, Deny or SCP can still refuse them), in the
    # same SimulatePrincipalPolicy as its log delivery (10 with a call each).
    "running_role_without_delivery": 9,
    "associated_role_without_core_or_delivery": 9,  # 7 + 2 fixes
    # 9 reads and Security Hub (the group's other users are read: closing it changes theirs too)
    # + 4 fixes: revoke the 0-1024 rule, re-add 0-21 and 23-1024, two policies on the role.
    "everything_wrong": 13,
    # AttachRolePolicy's 8 for the same role (a delivery fix), + ListEntitiesForPolicy: the
    # event names the policy, not the role.
    "delivery_policy_edited_to_drop_delivery": 9,
    "delivery_policy_rolled_back_to_a_version_without_delivery": 9,
}


# The mutating calls fixes make: one per change (EC2 and IAM have no batch form for them).
FIX_CALLS = {
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:AssociateIamInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:AttachRolePolicy",
    "ssm:CreateDocument",
    "ssm:UpdateDocument",
    "ssm:UpdateDocumentDefaultVersion",
}


def case_ids(cases: list[tuple[str, Any]]) -> list[str]:
    return [f"{name}-{setup.__name__}" for name, setup in cases]


@pytest.mark.parametrize(
    ("name", "setup", "strict"),
    [(n, s, True) for n, s in CASES] + [(n, s, False) for n, s in HEAVY_CASES],
    ids=case_ids(CASES) + case_ids(HEAVY_CASES),
)
def test_single_resource_event_costs_at_most_8_calls(
    world: World, name: str, setup: Any, strict: bool
):
    ids = setup(world)
    result = world.deliver(name, ids)
    calls = dict(world.calls)
    assert "dropped" not in result, result
    assert result["results"] > 0  # the event was really evaluated
    assert result["fixes"]  # and something was fixed (mode enforce), calls included
    assert "sts:GetCallerIdentity" not in calls
    fixes = sum(n for op, n in calls.items() if op in FIX_CALLS)
    total = sum(calls.values())
    print(f"\nCALLS {name}/{setup.__name__} {total} (fixes {fixes}) {calls}")  # pytest -s
    assert calls.get("securityhub:BatchUpdateFindings", 0) <= 1  # one note: one call
    assert total <= (MAX_CALLS if strict else MEASURED[setup.__name__]), calls


def test_dropped_events_cost_no_call(world: World):
    for name in ("failed_authorize_ingress", "own_revoke_ingress", "state_change_stopped"):
        world.deliver(name)
        assert sum(world.calls.values()) == 0, name


def test_a_rule_change_that_cannot_admit_internet_ssh_costs_no_call(world: World):
    """tcp 443 from 10.0.0.0/8 added to a group whose internet SSH stays open (FAILED) behind
    many instances: judging it would only import every one of their findings again, unchanged.
    The same event for tcp 22 from the internet is judged and fixed."""
    bad = world.group("default-like")
    world.launch(count=3, groups=[bad])
    world.open_ssh(bad)
    world.open_ssh(bad, cidr="10.0.0.0/8", low=443, high=443)
    event = world.event("authorize_ingress_ip_permissions", {SG: bad})
    detail = event["detail"]
    (asked,) = detail["requestParameters"]["ipPermissions"]["items"]
    asked.update(fromPort=443, toPort=443, ipRanges={"items": [{"cidrIp": "10.0.0.0/8"}]})
    (made,) = detail["responseElements"]["securityGroupRuleSet"]["items"]
    made.update(fromPort=443, toPort=443, cidrIpv4="10.0.0.0/8")
    result = world.deliver(event)
    assert result["dropped"] == "irrelevant"
    assert result["reason"] == "the rules it changes cannot admit TCP 22 from the internet"
    assert sum(world.calls.values()) == 0
    result = world.deliver("authorize_ingress_ip_permissions", {SG: bad})
    assert result["results"] == 4 and result["fixes"]  # the group and its 3 instances


def test_run_instances_with_two_instances_costs_the_same_reads_as_one(world: World):
    """Reads are batched: a second instance adds fixes, never describe calls."""
    from tests.handlers.test_on_change import I2

    bad = world.group("ops")
    world.open_ssh(bad)
    first, second = world.launch(2, groups=[bad])
    world.deliver("run_instances_two", {I1: first, I2: second})
    two = dict(world.calls)
    reads = {k: v for k, v in two.items() if ":Describe" in k or ":Get" in k or ":List" in k}
    # The instances, then the other users of their open group: one call each, for any number.
    assert reads == {"ec2:DescribeInstances": 2, "ec2:DescribeSecurityGroupRules": 1}, reads
    assert two.get("ec2:AssociateIamInstanceProfile") == 2  # one per instance: the only way


def test_a_role_no_instance_profile_carries_costs_one_call(world: World):
    """AttachRolePolicy on a role that no profile carries (so no instance can use it): the one
    ListInstanceProfilesForRole, then nothing to evaluate and nothing to publish."""
    world.iam.create_role(RoleName="app-role", AssumeRolePolicyDocument=test_on_change.TRUST)
    policy = world.iam.create_policy(PolicyName="app-policy", PolicyDocument=DESCRIBE_ONLY)
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=policy["Policy"]["Arn"])
    result = world.deliver("iam_attach_role_policy")
    assert result["results"] == 0 and not result["fixes"]
    assert dict(world.calls) == {"iam:ListInstanceProfilesForRole": 1}


def test_a_person_attaching_the_core_policy_costs_5_calls(world: World):
    """A verdict without a fix (the role now passes): the role's instances, its policies, one
    simulation of the agent's actions, one import; nothing of log delivery."""
    world.app_role(core=False)
    world.launch(profile="app-profile")
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=CORE)
    result = world.deliver("iam_attach_role_policy_core")
    assert result["results"] == 1 and result["left_failed"] == 0 and not result["fixes"]
    assert dict(world.calls) == {
        "iam:ListInstanceProfilesForRole": 1,
        "ec2:DescribeInstances": 1,
        "iam:ListAttachedRolePolicies": 1,
        "iam:SimulatePrincipalPolicy": 1,
        "securityhub:BatchImportFindings": 1,
    }


def test_a_compliant_role_added_to_an_empty_profile_costs_6_calls(world: World):
    """A verdict without a fix: the profile by name (its roles come with it), its instances by
    its ARN, the role's policies, one simulation for both the agent's actions and log delivery,
    the preferences, one import. Not the region's profile associations: their pages grow with
    the region's instances."""
    world.app_role()
    world.iam.remove_role_from_instance_profile(
        InstanceProfileName="app-profile", RoleName="app-role"
    )
    world.launch(profile="app-profile")
    world.iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    result = world.deliver("iam_add_role_to_instance_profile")
    # The instance's role and logging results, and the region's logging one (the preferences).
    assert result["results"] == 3 and result["left_failed"] == 0 and not result["fixes"]
    assert dict(world.calls) == {
        "iam:GetInstanceProfile": 1,
        "ec2:DescribeInstances": 1,
        "iam:ListAttachedRolePolicies": 1,
        "iam:SimulatePrincipalPolicy": 1,
        "ssm:GetDocument": 1,
        "securityhub:BatchImportFindings": 1,
    }


def test_a_new_default_policy_version_costs_one_call_more_than_attaching_it(world: World):
    """The policy's roles (ListEntitiesForPolicy), then exactly AttachRolePolicy's path for the
    one role: its profiles, its instances, its policies, one simulation for the agent's actions
    and log delivery, the preferences, the delivery fix, the import and its RESOLVED note."""
    delivery_policy_edited_to_drop_delivery(world)
    result = world.deliver("iam_create_policy_version")
    assert result["fixes"] == {"applied": 1} and result["left_failed"] == 0
    assert dict(world.calls) == {
        "iam:ListEntitiesForPolicy": 1,
        "iam:ListInstanceProfilesForRole": 1,
        "ec2:DescribeInstances": 1,
        "iam:ListAttachedRolePolicies": 1,
        "iam:SimulatePrincipalPolicy": 1,
        "ssm:GetDocument": 1,
        "iam:AttachRolePolicy": 1,
        "securityhub:BatchImportFindings": 1,
        "securityhub:BatchUpdateFindings": 1,
    }
