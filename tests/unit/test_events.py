"""events.parse_event: every real CloudTrail shape maps to exactly the resources it touched."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from guardrail.controls import REGISTRY
from guardrail.events import (
    ALL_CONTROLS,
    EVENT_TYPES,
    LOGGING,
    MAX_SHOWN,
    PROFILE_CONTROLS,
    ROLE,
    SSH,
    Change,
    DropKind,
    Dropped,
    is_own_change,
    items,
    parse_event,
    principal_key,
)
from guardrail.scope import Scope
from guardrail.settings import Settings, SettingsError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.aws_events import AWS_NOTES_EVENTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
ACCOUNT = "111122223333"
I1, I2 = "i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002"
SG = "sg-0a1b2c3d4e5f60001"
ENI = "eni-0a1b2c3d4e5f60001"
GUARDRAIL_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail-OnChangeFunctionRole-1A2B3C4D5E6F"


def to_scope(event: Any, **kwargs: Any) -> Scope | Dropped:
    """The scope an event touched, or why it is dropped."""
    parsed = parse_event(event, **kwargs)
    return parsed.scope if isinstance(parsed, Change) else parsed


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def change(name: str, **kwargs: Any) -> Change:
    parsed = parse_event(load(name), **kwargs)
    assert isinstance(parsed, Change), parsed
    return parsed


def dropped(event: Any, **kwargs: Any) -> Dropped:
    parsed = parse_event(event, **kwargs)
    assert isinstance(parsed, Dropped), parsed
    return parsed


def malformed(fixture: str, field: str, value: Any) -> Dropped:
    """The fixture with one request field set to `value` (`...`: removed): dropped as bad
    input."""
    event = load(fixture)
    request = event["detail"]["requestParameters"]
    if value is ...:
        del request[field]
    else:
        request[field] = value
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED and result.bad_input
    return result


# --- security groups ---------------------------------------------------------------------------

SG_FIXTURES = [
    "authorize_ingress_ip_permissions",
    "authorize_ingress_ipv6",
    "authorize_ingress_flat_cidr",
    "authorize_ingress_group_name",
    "authorize_ingress_mixed_sources",
    "modify_security_group_rules",
    "revoke_ingress_rule_ids",
]


@pytest.mark.parametrize("name", SG_FIXTURES)
def test_security_group_events_touch_the_group_and_only_the_ssh_control(name):
    parsed = change(name, region="eu-west-1")
    assert parsed.scope == Scope(group_ids=frozenset({SG}), controls=frozenset({SSH}))
    assert parsed.account_id == ACCOUNT


def test_group_named_only_by_name_takes_the_id_from_the_response_rule_set():
    event = load("authorize_ingress_group_name")
    assert "groupId" not in event["detail"]["requestParameters"]
    assert to_scope(event).group_ids == {SG}


@pytest.mark.parametrize("named", [None, "default"], ids=["rule-ids-only", "group-name"])
def test_a_revoke_by_rule_ids_takes_the_group_from_the_revoked_rule_set(named):
    """RevokeSecurityGroupIngress whose request names no groupId (only the rule ids, or the
    default VPC's groupName): the group is the one of the rules the response says it revoked."""
    event = load("revoke_ingress_rule_ids")
    request = event["detail"]["requestParameters"]
    del request["groupId"]
    if named:
        request["groupName"] = named
    event["detail"]["responseElements"]["revokedSecurityGroupRuleSet"] = {
        "items": [
            {
                "groupOwnerId": ACCOUNT,
                "groupId": SG,
                "securityGroupRuleId": "sgr-0a1b2c3d4e5f60001",
                "isEgress": False,
                "ipProtocol": "tcp",
                "fromPort": 22,
                "toPort": 22,
                "cidrIpv4": "0.0.0.0/0",
            }
        ]
    }
    parsed = parse_event(event)
    assert isinstance(parsed, Change), parsed
    assert parsed.scope == Scope(group_ids=frozenset({SG}), controls=frozenset({SSH}))


def test_group_named_only_by_name_without_rule_set_is_dropped_as_unresolved():
    result = dropped(load("authorize_ingress_group_name_no_rule_set"))
    assert result.kind is DropKind.UNRESOLVED
    assert result.bad_input and "'default'" in result.reason


def test_referenced_groups_in_the_request_or_response_are_not_touched():
    # sg-0fedcba987654321f is a *source* of the new rule, not a changed group.
    assert to_scope(load("authorize_ingress_mixed_sources")).group_ids == {SG}


def rule_change(permission: dict[str, Any], rule_set: list[dict[str, Any]] | None = None):
    """authorize_ingress_ip_permissions with its one permission (and response rule set, when
    given, else none) replaced."""
    event = load("authorize_ingress_ip_permissions")
    detail = event["detail"]
    detail["requestParameters"]["ipPermissions"] = {"items": [permission]}
    if rule_set is None:
        del detail["responseElements"]["securityGroupRuleSet"]
    else:
        detail["responseElements"]["securityGroupRuleSet"] = {"items": rule_set}
    return parse_event(event)


def permission(protocol: Any = "tcp", low: Any = 22, high: Any = 22, **sources: Any):
    wrapped = {k: {"items": v} for k, v in sources.items()}
    return {"ipProtocol": protocol, "fromPort": low, "toPort": high, "groups": {}, **wrapped}


WORLD = [{"cidrIp": "0.0.0.0/0"}]


@pytest.mark.parametrize(
    "cannot",
    [
        permission("tcp", 443, 443, ipRanges=WORLD),
        permission("udp", 22, 22, ipRanges=WORLD),
        permission("17", 0, 65535, ipv6Ranges=[{"cidrIpv6": "::/0"}]),
        permission("icmp", -1, -1, ipRanges=WORLD),
        permission("tcp", 23, 65535, ipRanges=WORLD),
        permission("tcp", "0", "21", ipRanges=WORLD),  # ports as text
        permission(ipRanges=[{"cidrIp": "10.0.0.0/8"}, {"cidrIp": "203.0.113.0/24"}]),
        permission(ipv6Ranges=[{"cidrIpv6": "2001:db8::/32"}]),
        permission(groups=[{"groupId": "sg-0fedcba987654321f", "userId": ACCOUNT}]),
    ],
)
def test_a_rule_change_that_cannot_admit_internet_ssh_is_irrelevant(cannot):
    """Judged, it would import again every finding of the group's instances, unchanged: at
    thousands of instances behind a default group, each such edit cost Security Hub's 10 TPS
    and ingestion for every one of them."""
    result = rule_change(cannot)
    assert isinstance(result, Dropped), result
    assert result.kind is DropKind.IRRELEVANT and not result.bad_input
    assert result.reason == "the rules it changes cannot admit TCP 22 from the internet"


@pytest.mark.parametrize(
    "may",
    [
        permission(ipRanges=WORLD),
        permission(ipRanges=[{"cidrIp": "1.2.3.4/0"}]),
        permission(ipv6Ranges=[{"cidrIpv6": "2000::/3"}]),
        permission("-1", None, None, ipRanges=WORLD),
        permission("6", 0, 65535, ipRanges=WORLD),
        permission("tcp", "20", "25", ipRanges=WORLD),
        # a prefix list may hold the internet
        permission(prefixListIds=[{"prefixListId": "pl-0123456789abcdef0"}]),
        # one rule that may, beside one that cannot
        permission(ipRanges=[{"cidrIp": "10.0.0.0/8"}, {"cidrIp": "0.0.0.0/0"}]),
        # what the event does not show may: no ports, no protocol, no source, junk
        permission("tcp", None, None, ipRanges=WORLD),
        permission(None, 22, 22, ipRanges=WORLD),
        permission(),
        permission("tcp", "twenty-two", 22, ipRanges=WORLD),
        permission(ipRanges=[{"cidrIp": "not-a-cidr"}]),
    ],
)
def test_a_rule_change_that_may_admit_internet_ssh_is_judged(may):
    result = rule_change(may)
    assert isinstance(result, Change), result
    assert result.scope == Scope(group_ids=frozenset({SG}), controls=frozenset({SSH}))


def test_a_rule_change_is_read_from_every_rule_the_event_shows():
    """The request, its flat form and the response's rule set: any one that may admit internet
    SSH makes the event judged; a revoke by rule ids shows no content and is judged."""
    https = permission("tcp", 443, 443, ipRanges=WORLD)
    ssh_rule = {"groupId": SG, "ipProtocol": "tcp", "fromPort": 22, "toPort": 22}
    assert isinstance(rule_change(https, [{**ssh_rule, "cidrIpv4": "0.0.0.0/0"}]), Change)
    assert isinstance(rule_change(https, [{**ssh_rule, "cidrIpv4": "10.0.0.0/8"}]), Dropped)
    flat = load("authorize_ingress_flat_cidr")
    request = flat["detail"]["requestParameters"]
    assert isinstance(parse_event(flat), Change)  # tcp 0-1024 from 0.0.0.0/0
    request.update(fromPort=443, toPort=443)
    for item in flat["detail"]["responseElements"]["securityGroupRuleSet"]["items"]:
        item.update(fromPort=443, toPort=443)
    assert isinstance(parse_event(flat), Dropped)
    revoke = load("revoke_ingress_rule_ids")
    assert isinstance(parse_event(revoke), Change)
    # Even with a revoked rule set showing only tcp 443: the ids are what was asked for, and the
    # set may not show every rule they named.
    revoke["detail"]["responseElements"]["revokedSecurityGroupRuleSet"] = {
        "items": [{**ssh_rule, "fromPort": 443, "toPort": 443, "cidrIpv4": "0.0.0.0/0"}]
    }
    assert isinstance(parse_event(revoke), Change)


def test_modify_security_group_rules_without_the_pascal_wrapper_still_parses():
    event = load("modify_security_group_rules")
    inner = event["detail"]["requestParameters"].pop("ModifySecurityGroupRulesRequest")
    event["detail"]["requestParameters"] = {"groupId": inner["GroupId"]}
    assert to_scope(event).group_ids == {SG}


def test_interface_group_change_touches_the_instance_behind_the_interface_only():
    parsed = change("modify_network_interface_attribute", region="eu-west-1")
    # Not every instance of the new groups: the one the interface is attached to.
    assert parsed.scope == Scope(
        interface_ids=frozenset({"eni-0a1b2c3d4e5f60001"}), controls=frozenset({SSH})
    )


@pytest.mark.parametrize("value", [None, "", "eni-XYZ", "sg-0a1b2c3d4e5f60001"])
def test_interface_change_without_a_valid_interface_id_is_malformed(value):
    event = load("modify_network_interface_attribute")
    event["detail"]["requestParameters"]["networkInterfaceId"] = value
    assert dropped(event).kind is DropKind.MALFORMED


def test_interface_change_without_groups_cannot_affect_a_control():
    event = load("modify_network_interface_attribute")
    event["detail"]["requestParameters"] = {
        "networkInterfaceId": "eni-0a1b2c3d4e5f60001",
        "sourceDestCheck": {"value": False},
    }
    result = dropped(event)
    assert result.kind is DropKind.IRRELEVANT and not result.bad_input


@pytest.mark.parametrize(
    "name", ["modify_instance_attribute_groups", "modify_network_interface_attribute"]
)
@pytest.mark.parametrize(
    "group_set",
    [{"items": [SG]}, [SG], SG, {"items": [{"groupId": "sg-<script>"}]}],
    ids=["ids-not-objects", "bare-list", "bare-id", "invalid-id"],
)
def test_a_group_set_present_but_unreadable_is_malformed_not_irrelevant(name, group_set):
    """The groups changed to something we cannot read: bad input (EventsDropped, a warning), not
    a change that cannot matter (EventsIgnored)."""
    event = load(name)
    event["detail"]["requestParameters"]["groupSet"] = group_set
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED and result.bad_input
    assert "groupSet names no valid security group id" in result.reason


@pytest.mark.parametrize(
    "name", ["modify_instance_attribute_groups", "modify_network_interface_attribute"]
)
def test_an_empty_group_set_written_as_an_object_changes_no_groups(name):
    """CloudTrail writes an empty list as {}: no groups changed, nothing to judge."""
    event = load(name)
    event["detail"]["requestParameters"]["groupSet"] = {}
    result = dropped(event)
    assert result.kind is DropKind.IRRELEVANT and not result.bad_input


def test_an_invalid_group_beside_the_valid_one_is_named_not_lost():
    event = load("authorize_ingress_ip_permissions")
    rules = event["detail"]["responseElements"]["securityGroupRuleSet"]["items"]
    rules.append({**rules[0], "groupId": "sg-BOGUS"})
    parsed = change_of(event)
    assert parsed.scope.group_ids == {SG} and parsed.ignored == ("'sg-BOGUS'",)


# --- instances ---------------------------------------------------------------------------------


def test_run_instances_touches_every_launched_instance_with_every_control():
    parsed = change("run_instances_two")
    assert parsed.scope == Scope(instance_ids=frozenset({I1, I2}), controls=ALL_CONTROLS)
    assert parsed.event_name == "RunInstances"


def test_run_instances_from_a_launch_template_uses_the_response():
    event = load("run_instances_launch_template")
    assert "instancesSet" not in json.dumps(event["detail"]["requestParameters"]["launchTemplate"])
    assert to_scope(event).instance_ids == {I1}


def test_invalid_ids_beside_valid_ones_are_left_out_and_named():
    """The valid instances are evaluated; the others are carried for the log, not lost."""
    event = load("run_instances_two")
    event["detail"]["responseElements"]["instancesSet"]["items"][0]["instanceId"] = "i-BOGUS"
    parsed = change_of(event)
    assert parsed.scope.instance_ids == {I2}
    assert parsed.ignored == ("'i-BOGUS'",) and parsed.as_log()["ignored"] == ["'i-BOGUS'"]
    assert change("run_instances_two").ignored == ()


def test_hundreds_of_invalid_ids_are_named_up_to_a_few():
    event = load("run_instances_two")
    launched = event["detail"]["responseElements"]["instancesSet"]["items"]
    launched += [{"instanceId": f"i-bad{n}"} for n in range(500)]
    parsed = change_of(event)
    assert parsed.scope.instance_ids == {I1, I2}
    assert parsed.ignored == tuple(f"'i-bad{n}'" for n in range(MAX_SHOWN))


def test_run_instances_with_one_item_serialised_as_an_object():
    event = load("run_instances_two")
    only = event["detail"]["responseElements"]["instancesSet"]["items"][1]
    event["detail"]["responseElements"]["instancesSet"]["items"] = only
    assert to_scope(event).instance_ids == {I2}


@pytest.mark.parametrize("name", ["start_instances", "state_change_pending"])
def test_stray_whitespace_around_instance_ids_is_stripped(name):
    raw = json.dumps(load(name))
    assert f"{I1} " in raw or f" {I1}" in raw  # the fixture really carries the whitespace
    assert to_scope(load(name)).instance_ids == {I1}


def test_state_change_to_running_without_version_field():
    event = load("state_change_pending")
    assert "version" not in event
    assert change("state_change_pending").scope.instance_ids == {I1}
    assert change("state_change_running").event_name.endswith(":running")


def test_state_change_to_stopped_is_irrelevant_not_bad_input():
    result = dropped(load("state_change_stopped"))
    assert result.kind is DropKind.IRRELEVANT and not result.bad_input


def test_modify_instance_attribute_touches_the_instance_for_ssh_only():
    assert to_scope(load("modify_instance_attribute_groups")) == Scope(
        instance_ids=frozenset({I1}), controls=frozenset({SSH})
    )


@pytest.mark.parametrize(
    "attribute",
    [{"instanceType": {"value": "m7g.large"}}, {"disableApiTermination": {"value": True}}, {}],
)
def test_an_instance_attribute_other_than_its_groups_is_dropped_without_a_call(attribute):
    event = load("modify_instance_attribute_groups")
    request = event["detail"]["requestParameters"]
    del request["groupSet"]
    request.update(attribute)
    result = dropped(event)
    assert result.kind is DropKind.IRRELEVANT and "without a groupSet" in result.reason


def test_attached_interface_touches_the_instance_it_joins_for_ssh_only():
    parsed = change("attach_network_interface", region="eu-west-1")
    # The interface's groups now guard the instance the request names; only SSH can change.
    assert parsed.scope == Scope(instance_ids=frozenset({I1}), controls=frozenset({SSH}))
    assert parsed.event_name == "AttachNetworkInterface" and parsed.account_id == ACCOUNT


def test_attached_interface_with_stray_whitespace_around_the_instance_id():
    event = load("attach_network_interface")
    event["detail"]["requestParameters"]["instanceId"] = f" \t{I1}\n"
    assert to_scope(event) == Scope(instance_ids=frozenset({I1}), controls=frozenset({SSH}))


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (..., ""),  # no instanceId at all
        (None, ""),
        ("   ", " (got '   ')"),
        ("i-XYZ", " (got 'i-XYZ')"),
        ("eni-0a1b2c3d4e5f60001", " (got 'eni-0a1b2c3d4e5f60001')"),  # the interface, not it
        (7, " (got 7)"),
    ],
    ids=["missing", "null", "blank", "garbage", "interface-id", "number"],
)
def test_attached_interface_without_a_valid_instance_id_is_malformed(value, got):
    result = malformed("attach_network_interface", "instanceId", value)
    assert result.event_name == "AttachNetworkInterface"
    assert result.reason == f"AttachNetworkInterface: no valid instance id{got}"


def test_an_elastic_ip_associated_touches_its_instance_or_interface_for_ssh_only():
    """A public address where there was none makes internet SSH CRITICAL: the instance (or the
    interface) the request names, ssh only."""
    parsed = change("associate_address", region="eu-west-1")
    assert parsed.event_name == "AssociateAddress"
    assert parsed.scope == Scope(instance_ids=frozenset({I1}), controls=frozenset({SSH}))
    event = load("associate_address")
    request = event["detail"]["requestParameters"]
    del request["instanceId"]
    request["networkInterfaceId"] = f" {ENI} "
    assert to_scope(event) == Scope(interface_ids=frozenset({ENI}), controls=frozenset({SSH}))
    request["networkInterfaceId"] = "i-XYZ"
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED
    assert (
        result.reason == "AssociateAddress: no valid instance or network interface id (got 'i-XYZ')"
    )


@pytest.mark.parametrize("wrapped", [False, True], ids=["camelCase", "PascalCase-wrapper"])
def test_an_ipv6_address_assigned_touches_its_interface_for_ssh_only(wrapped):
    """An IPv6 address where there was none makes internet SSH through a ::/0 rule CRITICAL: the
    interface the call names, ssh only, in either casing CloudTrail may use."""
    event = load("assign_ipv6_addresses")
    detail = event["detail"]
    if wrapped:
        request = {"NetworkInterfaceId": f" {ENI} ", "Ipv6AddressCount": 1}
        detail["requestParameters"] = {"AssignIpv6AddressesRequest": request}
        detail["responseElements"] = {"AssignIpv6AddressesResponse": {"networkInterfaceId": ENI}}
    parsed = parse_event(event)
    assert isinstance(parsed, Change) and parsed.event_name == "AssignIpv6Addresses"
    assert parsed.scope == Scope(interface_ids=frozenset({ENI}), controls=frozenset({SSH}))


def test_an_ipv6_assignment_naming_no_interface_is_malformed():
    event = load("assign_ipv6_addresses")
    event["detail"]["requestParameters"]["networkInterfaceId"] = "i-XYZ"
    event["detail"]["responseElements"] = None
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED
    assert result.reason == "AssignIpv6Addresses: no valid network interface id (got 'i-XYZ')"


PL = "pl-0a1b2c3d4e5f60001"


@pytest.mark.parametrize(
    ("name", "request_", "response"),
    [
        ("ModifyManagedPrefixList", "wrapped", "wrapped"),
        ("ModifyManagedPrefixList", "camelCase", None),  # the response alone may name it too
        ("RestoreManagedPrefixListVersion", "wrapped", "wrapped"),
        ("RestoreManagedPrefixListVersion", None, "camelCase"),
    ],
)
def test_a_prefix_lists_entries_changed_touch_the_groups_that_reference_it(
    name, request_, response
):
    """A list's entries are the source of every rule referencing it (0.0.0.0/0 added opens
    them all): the list, ssh only, its id read in either casing from request or response."""
    event = load("modify_managed_prefix_list")
    detail = event["detail"]
    detail["eventName"] = name
    requests = {
        "wrapped": {f"{name}Request": {"PrefixListId": f" {PL} ", "CurrentVersion": 1}},
        "camelCase": {"prefixListId": PL},
        None: {},
    }
    responses = {
        "wrapped": {f"{name}Response": {"prefixList": {"prefixListId": PL}}},
        "camelCase": {"prefixList": {"prefixListId": PL}},
        None: None,
    }
    detail["requestParameters"] = requests[request_]
    detail["responseElements"] = responses[response]
    parsed = parse_event(event)
    assert isinstance(parsed, Change) and parsed.event_name == name
    assert parsed.scope == Scope(prefix_list_ids=frozenset({PL}), controls=frozenset({SSH}))
    assert parsed.as_log()["prefix_list_ids"] == [PL]


def test_a_prefix_list_change_naming_no_list_is_malformed():
    event = load("modify_managed_prefix_list")
    event["detail"]["requestParameters"] = {
        "ModifyManagedPrefixListRequest": {"PrefixListId": "sg-1"}
    }
    event["detail"]["responseElements"] = None
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED and result.bad_input
    assert result.reason == "ModifyManagedPrefixList: no valid prefix list id (got 'sg-1')"


def test_failed_attach_is_dropped_as_a_failed_call():
    event = load("attach_network_interface")
    event["detail"]["errorCode"] = "Client.InvalidParameterValue"
    event["detail"]["errorMessage"] = (
        f"Instance '{I1}' already has an interface attached at device index '1'."
    )
    event["detail"]["responseElements"] = None
    result = dropped(event)
    assert result.kind is DropKind.FAILED_CALL and not result.bad_input
    assert "Client.InvalidParameterValue" in result.reason


@pytest.mark.parametrize(
    "name",
    [
        "associate_iam_instance_profile",
        "disassociate_iam_instance_profile",
        "replace_iam_instance_profile_association",
    ],
)
def test_instance_profile_calls_touch_the_instance_for_the_role_controls(name):
    assert to_scope(load(name)) == Scope(instance_ids=frozenset({I1}), controls=PROFILE_CONTROLS)


def test_disassociate_names_the_instance_only_in_the_response():
    event = load("disassociate_iam_instance_profile")
    assert I1 not in json.dumps(event["detail"]["requestParameters"])
    event["detail"]["responseElements"] = None  # e.g. CloudTrail omitted it
    assert dropped(event).kind is DropKind.MALFORMED


# --- IAM and SSM -------------------------------------------------------------------------------


def test_iam_events_are_global_and_evaluated_in_the_receiving_region():
    parsed = change("iam_detach_role_policy", region="eu-west-1")
    assert parsed.region == "us-east-1" and parsed.global_service
    assert parsed.scope.role_names == {"app-role"}


def test_detaching_the_core_policy_can_only_affect_the_ssm_role():
    event = load("iam_detach_role_policy")
    assert to_scope(event) == Scope(role_names=frozenset({"app-role"}), controls=frozenset({ROLE}))
    event["detail"]["requestParameters"]["policyArn"] = (
        f"arn:aws:iam::{ACCOUNT}:policy/ssm-guardrail-log-delivery"
    )
    assert to_scope(event).controls == PROFILE_CONTROLS


def test_attaching_the_core_policy_can_only_affect_the_ssm_role():
    parsed = change("iam_attach_role_policy_core", region="eu-west-1")
    assert parsed.scope == Scope(role_names=frozenset({"app-role"}), controls=frozenset({ROLE}))
    assert parsed.event_name == "AttachRolePolicy" and parsed.global_service
    assert parsed.actor and "alice@example.com" in parsed.actor


@pytest.mark.parametrize(
    "policy_arn",
    [
        f"arn:aws:iam::{ACCOUNT}:policy/app-policy",  # the fixture's: may Deny the agent
        f"arn:aws:iam::{ACCOUNT}:policy/ssm-guardrail-log-delivery",
        # The account's own policy of the same name is not AWS's: it may grant or Deny anything.
        f"arn:aws:iam::{ACCOUNT}:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/AmazonS3FullAccess",
    ],
)
def test_attaching_any_other_policy_may_affect_the_ssm_role_and_log_delivery(policy_arn):
    event = load("iam_attach_role_policy")
    event["detail"]["requestParameters"]["policyArn"] = policy_arn
    assert to_scope(event) == Scope(role_names=frozenset({"app-role"}), controls=PROFILE_CONTROLS)


def test_attaching_the_core_policy_is_recognised_in_every_partition():
    event = load("iam_attach_role_policy_core")
    event["detail"]["requestParameters"]["policyArn"] = (
        "arn:aws-us-gov:iam::aws:policy/AmazonSSMManagedInstanceCore"
    )
    assert to_scope(event).controls == frozenset({ROLE})


@pytest.mark.parametrize(
    ("name", "event_name"),
    [
        ("iam_put_role_policy", "PutRolePolicy"),
        ("iam_delete_role_policy", "DeleteRolePolicy"),
        ("iam_put_role_permissions_boundary", "PutRolePermissionsBoundary"),
        ("iam_delete_role_permissions_boundary", "DeleteRolePermissionsBoundary"),
        ("iam_update_assume_role_policy", "UpdateAssumeRolePolicy"),
    ],
)
def test_inline_policy_and_boundary_events_may_affect_the_ssm_role_and_log_delivery(
    name, event_name
):
    """Both checks simulate the role's inline policies and boundary: an inline Deny or a boundary
    can refuse the SSM Agent (ssm-instance-role) as well as log delivery."""
    parsed = change(name, region="eu-west-1")
    assert parsed.event_name == event_name and parsed.global_service
    assert parsed.scope == Scope(role_names=frozenset({"app-role"}), controls=PROFILE_CONTROLS)


# --- a customer-managed policy edited in place ------------------------------------------------

POLICY = f"arn:aws:iam::{ACCOUNT}:policy/app-policy"
POLICY_VERSION_FIXTURES = [
    ("iam_create_policy_version", "CreatePolicyVersion"),
    ("iam_set_default_policy_version", "SetDefaultPolicyVersion"),
]


@pytest.mark.parametrize(("name", "event_name"), POLICY_VERSION_FIXTURES)
def test_a_new_default_policy_version_leads_to_the_roles_using_the_policy(name, event_name):
    """The policy may be an equivalent of the core policy, a Deny, a boundary or a delivery
    grant: both checks are judged again on the roles it reaches (found by the reader)."""
    parsed = change(name, region="eu-west-1")
    assert parsed.event_name == event_name and parsed.global_service
    assert parsed.scope == Scope(policy_arns=frozenset({POLICY}), controls=PROFILE_CONTROLS)
    assert not parsed.scope.empty
    assert parsed.as_log()["policy_arns"] == [POLICY]


@pytest.mark.parametrize("value", [True, "true", "True", " TRUE\n"], ids=repr)
def test_set_as_default_is_read_as_a_boolean_or_as_a_string(value):
    event = load("iam_create_policy_version")
    event["detail"]["requestParameters"]["setAsDefault"] = value
    event["detail"]["responseElements"] = None  # the request alone decides
    assert to_scope(event).policy_arns == {POLICY}


@pytest.mark.parametrize("value", [..., False, "false", None, "", "yes", {}], ids=repr)
def test_a_policy_version_not_made_the_default_changes_nothing(value):
    event = load("iam_create_policy_version_not_default")
    request = event["detail"]["requestParameters"]
    assert "setAsDefault" not in request  # as the CLI records it without --set-as-default
    if value is not ...:
        request["setAsDefault"] = value
    result = dropped(event, region="eu-west-1")
    assert result.kind is DropKind.IRRELEVANT and not result.bad_input
    assert result.event_name == "CreatePolicyVersion" and "not set as the default" in result.reason


def test_a_version_the_response_names_the_default_is_routed_without_set_as_default():
    event = load("iam_create_policy_version_not_default")
    event["detail"]["responseElements"]["policyVersion"]["isDefaultVersion"] = True
    assert to_scope(event).policy_arns == {POLICY}


@pytest.mark.parametrize(("name", "event_name"), POLICY_VERSION_FIXTURES)
@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/service-role/AmazonEC2RoleforSSM",
        "arn:aws-us-gov:iam::aws:policy/AmazonSSMManagedInstanceCore",
    ],
)
def test_aws_managed_policies_are_changed_by_aws_not_by_this_account(name, event_name, arn):
    event = load(name)
    event["detail"]["requestParameters"]["policyArn"] = arn
    result = dropped(event)
    assert result.kind is DropKind.IRRELEVANT and not result.bad_input
    assert result.event_name == event_name and "AWS managed policy" in result.reason


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:iam::{ACCOUNT}:policy/team/app/app-policy",  # a path
        f"arn:aws-cn:iam::{ACCOUNT}:policy/app-policy",
        f"arn:aws-us-gov:iam::{ACCOUNT}:policy/app+policy=,.@_-",  # every name character
        f"arn:aws:iam::{ACCOUNT}:policy/" + "p" * 128,  # the longest name
        f"  arn:aws:iam::{ACCOUNT}:policy/app-policy\t",
    ],
)
def test_every_shape_of_a_customer_managed_policy_arn_is_accepted(arn):
    event = load("iam_set_default_policy_version")
    event["detail"]["requestParameters"]["policyArn"] = arn
    assert to_scope(event).policy_arns == {arn.strip()}


@pytest.mark.parametrize(("name", "event_name"), POLICY_VERSION_FIXTURES)
@pytest.mark.parametrize(
    "value",
    [
        ...,  # no policyArn at all
        None,
        "",
        "app-policy",  # a name, not an ARN
        f"arn:aws:iam::{ACCOUNT}:role/app-role",
        f"arn:aws:iam::{ACCOUNT}:policy/",
        f"arn:aws:iam::{ACCOUNT}:policy//app-policy",  # an empty path segment
        f"arn:aws:iam::{ACCOUNT}:policy/app policy",
        f"arn:aws:iam::{ACCOUNT}:policy/" + "p" * 129,
        "arn:aws:iam::1111:policy/app-policy",
        "arn:aws:iam::*:policy/app-policy",
        f"arn:aws:iam:us-east-1:{ACCOUNT}:policy/app-policy",  # IAM ARNs name no region
        "arn:aws:s3:::app-policy",
        [POLICY],
        7,
    ],
    ids=repr,
)
def test_policy_version_events_without_a_valid_policy_arn_are_malformed(name, event_name, value):
    result = malformed(name, "policyArn", value)
    assert result.event_name == event_name
    assert result.reason.startswith(f"{event_name}: no valid managed policy ARN")


@pytest.mark.parametrize(
    "document",
    [
        # As a client may send it: URL-encoded (CloudTrail usually records it decoded).
        "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D",
        {"Version": "2012-10-17", "Statement": []},  # already parsed
        "not a policy",
        None,
    ],
    ids=["url-encoded", "object", "junk", "null"],
)
def test_put_role_policy_is_routed_whatever_its_document_looks_like(document):
    """The document is not read here: the checks simulate what IAM holds after the call."""
    event = load("iam_put_role_policy")
    event["detail"]["requestParameters"]["policyDocument"] = document
    assert to_scope(event) == Scope(role_names=frozenset({"app-role"}), controls=PROFILE_CONTROLS)


@pytest.mark.parametrize(
    ("name", "deleted"),
    [
        ("iam_remove_role_from_instance_profile", False),
        ("iam_delete_instance_profile", True),
        ("iam_add_role_to_instance_profile", False),
    ],
)
def test_profile_events_lead_to_instances_through_the_profile(name, deleted):
    # AddRoleToInstanceProfile names the role too, but only the profile leads to the instances
    # that just gained it. A deleted profile is found through its instances' associations (its
    # name may already be a new profile's); one that exists is read by name.
    assert to_scope(load(name)) == Scope(
        profile_names=frozenset({"app-profile"}),
        profiles_deleted=deleted,
        controls=PROFILE_CONTROLS,
    )


@pytest.mark.parametrize(
    "name",
    [
        "ssm_create_document",
        "ssm_update_document",
        "ssm_update_document_default_version",
        "ssm_delete_document",
    ],
)
def test_session_document_events_touch_the_region_preferences(name):
    assert to_scope(load(name), region="eu-west-1") == Scope(
        preferences=True, controls=frozenset({LOGGING})
    )


def test_session_document_named_by_arn():
    event = load("ssm_update_document")
    event["detail"]["requestParameters"]["name"] = (
        f"arn:aws:ssm:eu-west-1:{ACCOUNT}:document/SSM-SessionManagerRunShell"
    )
    assert to_scope(event).preferences


def test_other_documents_are_irrelevant():
    result = dropped(load("ssm_update_other_document"))
    assert result.kind is DropKind.IRRELEVANT and "MyRunbook" in result.reason


# --- what changes nothing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["failed_authorize_ingress", "failed_run_instances", "failed_detach_role_policy"]
)
def test_failed_calls_are_dropped(name):
    result = dropped(load(name))
    assert result.kind is DropKind.FAILED_CALL and not result.bad_input
    assert load(name)["detail"]["errorCode"] in result.reason


NEW_IAM_FIXTURES = [
    "iam_attach_role_policy",
    "iam_attach_role_policy_core",
    "iam_put_role_policy",
    "iam_put_role_permissions_boundary",
    "iam_delete_role_permissions_boundary",
    "iam_update_assume_role_policy",
    "iam_add_role_to_instance_profile",
    "iam_create_policy_version",
    "iam_create_policy_version_not_default",
    "iam_set_default_policy_version",
]


@pytest.mark.parametrize("name", NEW_IAM_FIXTURES)
def test_failed_iam_role_and_profile_calls_are_dropped(name):
    event = load(name)
    event["detail"]["errorCode"] = "AccessDenied"
    event["detail"]["errorMessage"] = (
        "User: arn:aws:sts::111122223333:assumed-role/dev/bob is not authorized to perform: "
        "iam:" + event["detail"]["eventName"]
    )
    result = dropped(event, region="eu-west-1")
    assert result.kind is DropKind.FAILED_CALL and not result.bad_input
    assert result.event_name == event["detail"]["eventName"] and "AccessDenied" in result.reason


@pytest.mark.parametrize(
    "code", ["", " ", 0, False, {}, [], "AccessDenied", "NoSuchEntity"], ids=repr
)
def test_any_error_code_but_null_means_the_call_failed(code):
    """The stack's rule passes only events without an errorCode: one present, however odd its
    value, is a failed call (read as a success, what it names would be fixed)."""
    event = load("authorize_ingress_ip_permissions")
    event["detail"].update(errorCode=code, responseElements=None)
    assert dropped(event).kind is DropKind.FAILED_CALL
    event["detail"]["errorCode"] = None
    assert isinstance(parse_event(event), Change)


def test_failure_is_judged_by_error_code_not_by_a_null_response():
    event = load("iam_detach_role_policy")
    assert event["detail"]["responseElements"] is None
    assert isinstance(parse_event(event), Change)


@pytest.mark.parametrize(
    "name",
    [
        "own_revoke_ingress",
        "own_authorize_ingress",
        "own_attach_role_policy",  # the core policy it attached to a role
        "own_add_role_to_instance_profile",  # its role, added to an empty profile
    ],
)
def test_the_guardrails_own_changes_are_not_refixed(name):
    result = dropped(load(name), actor_arns=[GUARDRAIL_ROLE])
    assert result.kind is DropKind.OWN_CHANGE
    # Without the setting they are ordinary changes; but a re-added range (tcp 23-1024) cannot
    # admit SSH, so that one is not judged even then.
    parsed = parse_event(load(name))
    if name == "own_authorize_ingress":
        assert isinstance(parsed, Dropped) and parsed.kind is DropKind.IRRELEVANT
    else:
        assert isinstance(parsed, Change)


def test_actor_match_by_assumed_role_arn_alone():
    event = load("own_revoke_ingress")
    del event["detail"]["userIdentity"]["sessionContext"]
    assert dropped(event, actor_arns=[GUARDRAIL_ROLE]).kind is DropKind.OWN_CHANGE


def test_actor_arns_with_path_and_wildcards():
    detail = load("own_revoke_ingress")["detail"]
    assert is_own_change(
        detail,
        [f"arn:aws:iam::{ACCOUNT}:role/service/ssm-guardrail-OnChangeFunctionRole-1A2B3C4D5E6F"],
    )
    assert is_own_change(detail, [f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail-*"])
    assert not is_own_change(detail, [f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail-Other"])
    assert not is_own_change(detail, ["arn:aws:iam::999999999999:role/ssm-guardrail-*"])
    assert not is_own_change(load("authorize_ingress_ip_permissions")["detail"], [GUARDRAIL_ROLE])


def test_a_wildcard_beside_a_role_path_matches_only_roles_on_that_path():
    """`role/ssm-guardrail/*` reduced to the role's name was `role/*`: a person's change (here an
    SSO administrator's) was dropped as the guardrail's own, and internet SSH left open. It is
    matched against the session issuer's ARN, which carries the path."""
    person = load("authorize_ingress_ip_permissions")["detail"]
    person["userIdentity"] = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/"
                "AWSReservedSSO_Admin_0123",
            }
        },
    }
    ours = load("own_revoke_ingress")["detail"]
    ours["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = (
        f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail/OnChange-1A2B"
    )
    for pattern in (
        f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail/*",
        f"arn:aws:iam::{ACCOUNT}:role/ssm-guardrail/On*",
    ):
        assert not is_own_change(person, [pattern]), pattern
        assert is_own_change(ours, [pattern]), pattern
    assert not is_own_change(ours, [f"arn:aws:iam::{ACCOUNT}:role/other-path/*"])


def test_actor_arns_written_as_alternatives_are_spelled_out_exactly():
    """How the stack writes its roles in every guarded region (one ARN a region would pass
    Lambda's 4 KB environment limit): each combination is the guardrail's, a role someone names
    with the same prefix, or the role of a region not guarded, is not."""
    written = f"arn:aws:iam::{ACCOUNT}:role/{{scan-|change-}}{{us-east-1|eu-west-1}}"
    actors = Settings.from_env({"GUARDRAIL_ACTOR_ARNS": f"{written}, {GUARDRAIL_ROLE}"}).actor_arns
    assert actors == (
        *(
            f"arn:aws:iam::{ACCOUNT}:role/{name}-{region}"
            for name in ("scan", "change")
            for region in ("us-east-1", "eu-west-1")
        ),
        GUARDRAIL_ROLE,
    )
    for name, own in [
        ("change-eu-west-1", True),
        ("scan-us-east-1", True),
        ("change-ap-south-1", False),
        ("change-mine", False),
        ("{scan-|change-}{us-east-1|eu-west-1}", False),
    ]:
        detail = {"userIdentity": {"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}"}}
        assert is_own_change(detail, actors) is own, name
    spaced = Settings.from_env({"GUARDRAIL_ACTOR_ARNS": "arn:aws:iam::1:role/{ a | b }"})
    assert spaced.actor_arns == ("arn:aws:iam::1:role/a", "arn:aws:iam::1:role/b")
    for bad in ("role/{a|b", "role/a}b", "role/{a{b}}"):
        with pytest.raises(SettingsError, match="unbalanced braces"):
            Settings.from_env({"GUARDRAIL_ACTOR_ARNS": bad})


def test_principal_key_normalises_assumed_roles_and_paths():
    assert principal_key("arn:aws:sts::123456789012:assumed-role/R/session") == (
        "arn:aws:iam::123456789012:role/R"
    )
    assert principal_key("arn:aws-us-gov:iam::123456789012:role/a/b/R") == (
        "arn:aws-us-gov:iam::123456789012:role/R"
    )
    assert (
        principal_key("arn:aws:iam::123456789012:user/bob") == "arn:aws:iam::123456789012:user/bob"
    )
    assert principal_key(" not-an-arn ") == "not-an-arn"


def test_regional_event_for_another_region_is_dropped_but_iam_is_not():
    assert dropped(load("authorize_ingress_ip_permissions"), region="us-west-2").kind is (
        DropKind.OTHER_REGION
    )
    assert dropped(load("state_change_running"), region="us-west-2").kind is DropKind.OTHER_REGION
    assert isinstance(parse_event(load("iam_delete_role_policy"), region="us-west-2"), Change)


def test_an_event_without_region_is_placed_by_cloudtrails_aws_region():
    event = load("authorize_ingress_ip_permissions")
    del event["region"]
    event["detail"]["awsRegion"] = "ap-south-1"
    assert dropped(event, region="eu-west-1").kind is DropKind.OTHER_REGION
    event["detail"]["awsRegion"] = "eu-west-1"
    parsed = parse_event(event, region="eu-west-1")
    assert isinstance(parsed, Change) and parsed.region == "eu-west-1"
    # Neither (a hand-made event): evaluated where it arrives, the only region looked at.
    del event["detail"]["awsRegion"]
    parsed = parse_event(event, region="eu-west-1")
    assert isinstance(parsed, Change) and parsed.region is None


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "text",
        42,
        {},
        {"detail-type": "AWS API Call via CloudTrail"},
        {"detail-type": "AWS API Call via CloudTrail", "detail": "not json"},
        {"detail-type": "AWS API Call via CloudTrail", "detail": []},
    ],
)
def test_malformed_events_are_bad_input(event):
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED and result.bad_input and result.reason


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 5_000], ids=["lists", "objects"])
def test_a_detail_string_nested_too_deeply_is_malformed(text):
    """Past its nesting limit json.loads raises RecursionError, not ValueError."""
    result = dropped({"detail-type": "AWS API Call via CloudTrail", "detail": text})
    assert result.kind is DropKind.MALFORMED and "detail is not an object" in result.reason


@pytest.mark.parametrize("digit", ["\u0661", "\uff11"], ids=["arabic-indic", "fullwidth"])
def test_digits_of_other_scripts_make_no_account_id_or_policy_arn(digit):
    """No AWS account id has them, though `\\d` matches them."""
    event = load("state_change_running")
    event["account"] = digit * 12
    assert change_of(event).account_id is None
    event = load("iam_set_default_policy_version")
    event["detail"]["requestParameters"]["policyArn"] = f"arn:aws:iam::{digit * 12}:policy/p"
    assert dropped(event).kind is DropKind.MALFORMED


@pytest.mark.parametrize("name", ["schedule_rule", "scheduler"])
def test_schedule_payloads_are_unknown_to_on_change(name):
    result = dropped(load(name))
    assert result.kind is DropKind.UNKNOWN and "Scheduled Event" in result.reason


def test_unknown_event_name_and_wrong_source_are_unknown():
    event = load("authorize_ingress_ip_permissions")
    event["detail"]["eventName"] = "AuthorizeSecurityGroupEgress"
    assert dropped(event).kind is DropKind.UNKNOWN
    event = load("authorize_ingress_ip_permissions")
    event["detail"]["eventSource"] = "iam.amazonaws.com"
    assert dropped(event).kind is DropKind.UNKNOWN


@pytest.mark.parametrize(
    "value",
    [
        "i-XYZ",
        "sg-0a1b2c3d4e5f60001",
        "",
        "   ",
        7,
        None,
        ["i-0a1b2c3d4e5f60001"],
        "i-0a1b2c3d4e5f60001;rm",
    ],
)
def test_invalid_instance_ids_are_malformed(value):
    event = load("state_change_running")
    event["detail"]["instance-id"] = value
    assert dropped(event).kind is DropKind.MALFORMED


def test_invalid_group_id_is_malformed_and_names_the_value():
    event = load("authorize_ingress_ip_permissions")
    event["detail"]["requestParameters"]["groupId"] = "sg-<script>"
    event["detail"]["responseElements"] = {}
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED and "sg-<script>" in result.reason


@pytest.mark.parametrize(
    ("fixture", "field", "value"),
    [
        ("iam_detach_role_policy", "roleName", "rôle-ünicode"),  # IAM names are ASCII
        ("iam_detach_role_policy", "roleName", "r" * 65),  # roles: at most 64 characters
        ("iam_delete_instance_profile", "instanceProfileName", "p" * 129),
        ("iam_delete_instance_profile", "instanceProfileName", "a/b"),
    ],
)
def test_names_iam_would_refuse_are_malformed_not_sent_to_iam(fixture, field, value):
    event = load(fixture)
    event["detail"]["requestParameters"][field] = value
    assert dropped(event).kind is DropKind.MALFORMED


@pytest.mark.parametrize(
    ("fixture", "field"),
    [
        ("iam_attach_role_policy", "roleName"),
        ("iam_attach_role_policy_core", "roleName"),
        ("iam_put_role_policy", "roleName"),
        ("iam_put_role_permissions_boundary", "roleName"),
        ("iam_delete_role_permissions_boundary", "roleName"),
        ("iam_update_assume_role_policy", "roleName"),
        ("iam_add_role_to_instance_profile", "instanceProfileName"),
    ],
)
@pytest.mark.parametrize(
    "value", [..., None, "", "app role", "rôle", "r" * 129, ["app-role"], 7], ids=repr
)
def test_new_iam_events_without_a_valid_name_are_malformed(fixture, field, value):
    result = malformed(fixture, field, value)
    assert result.event_name == load(fixture)["detail"]["eventName"]
    assert result.reason.startswith("IAM event without a valid role or instance profile name")


def test_a_role_added_to_a_profile_is_not_what_leads_to_the_instances():
    """AddRoleToInstanceProfile with a valid role but a broken profile name cannot be evaluated:
    the role's other profiles did not change."""
    event = load("iam_add_role_to_instance_profile")
    event["detail"]["requestParameters"]["instanceProfileName"] = "a/b"
    result = dropped(event)
    assert result.kind is DropKind.MALFORMED and "'a/b'" in result.reason


def test_longest_valid_iam_names_are_accepted():
    event = load("iam_delete_instance_profile")
    event["detail"]["requestParameters"]["instanceProfileName"] = "p" * 128
    assert parse_event(event).scope.profile_names == frozenset({"p" * 128})


def test_empty_lists_encoded_as_objects():
    assert items({}) == [] and items({"items": {}}) == [] and items(None) == []
    assert items({"items": [{"a": 1}, "junk"]}) == [{"a": 1}]
    event = load("run_instances_two")
    event["detail"]["responseElements"]["instancesSet"] = {}
    assert dropped(event).kind is DropKind.MALFORMED


def test_detail_as_json_string_is_read():
    event = load("state_change_running")
    event["detail"] = json.dumps(event["detail"])
    assert to_scope(event).instance_ids == {I1}


def test_missing_account_leaves_the_account_to_the_engine():
    event = load("state_change_running")
    del event["account"]
    assert change_of(event).account_id is None


def change_of(event: dict[str, Any]) -> Change:
    parsed = parse_event(event)
    assert isinstance(parsed, Change)
    return parsed


# --- the registry ------------------------------------------------------------------------------


def test_every_event_name_in_aws_notes_is_handled():
    assert set(EVENT_TYPES) == set().union(*AWS_NOTES_EVENTS.values())


def test_every_fixture_of_a_handled_event_parses_to_a_scope_or_a_reasoned_drop():
    for path in sorted(FIXTURES.glob("*.json")):
        parsed = parse_event(json.loads(path.read_text()), actor_arns=[GUARDRAIL_ROLE])
        if isinstance(parsed, Change):
            assert not parsed.scope.empty, path.name
        else:
            assert parsed.reason, path.name


def test_event_controls_are_registered_controls():
    assert {SSH, ROLE, LOGGING} <= set(REGISTRY)


def test_parser_does_not_mutate_the_event():
    for path in sorted(FIXTURES.glob("*.json")):
        event = json.loads(path.read_text())
        before = copy.deepcopy(event)
        parse_event(event, actor_arns=[GUARDRAIL_ROLE], region="eu-west-1")
        assert event == before, path.name


# --- fuzzing: arbitrary JSON and mutated real shapes never raise ----------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


# Where a mutation changes what an event means; the rest of an event (userAgent, tlsDetails,
# eventTime ...) is read by nothing. Keys that may be absent are added by a mutation.
DECIDING = [("account",), ("region",), ("detail-type",), ("detail", "errorCode")]
DECIDING_TREES = [("detail", "requestParameters"), ("detail", "responseElements")]
# Whitespace str.strip() removes, ASCII or not (CloudTrail copies ids as callers typed them).
WHITESPACE = [" \t", "\n", "\u00a0", "\u2003", "\u3000"]
# How failed calls are recorded: EC2's Client.* codes, IAM's bare ones, and odd values.
ERROR_CODES = ["Client.UnauthorizedOperation", "AccessDenied", "NoSuchEntity", "", 0, False, {}, []]
# What each operation puts in place of a value; the others need no operand.
OPERANDS = {
    "whitespace": st.sampled_from(WHITESPACE),
    "number": st.integers(-(2**63), 2**63) | st.floats(allow_nan=False),
    "replace": JSON,
    "failed": st.sampled_from(ERROR_CODES) | JSON,
}
OPERATIONS = ["delete", "empty", "wrap", "many", *OPERANDS]


def _mutate(event: Any, path: tuple[Any, ...], operation: str, value: Any) -> None:
    if operation == "failed":  # as CloudTrail records a failed call: errorCode, no response
        if isinstance(event.get("detail"), dict):
            event["detail"].update(errorCode=value, responseElements=None)
        return
    parent = event
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    current = parent.get(last) if isinstance(parent, dict) else parent[last]
    if operation == "delete":
        if isinstance(parent, dict):
            parent.pop(last, None)
        else:
            del parent[last]
    elif operation == "empty":  # CloudTrail's empty list
        parent[last] = {}
    elif operation == "wrap":  # a single entry where a list was, or the other way round
        parent[last] = current[0] if isinstance(current, list) and current else [current]
    elif operation == "many":  # hundreds of entries (copies) where there were a few
        entries = current if isinstance(current, list) and current else [current]
        parent[last] = (entries * 501)[:501]
    elif operation == "whitespace":
        if isinstance(current, str):
            parent[last] = f"{value}{current}{value}"
    elif operation == "number":  # a string given as a number: "123456789012" as 123456789012
        if isinstance(current, str):
            parent[last] = int(current) if current.isascii() and current.isdigit() else value
    else:
        parent[last] = value


def _deciding_paths(event: Any) -> list[tuple[Any, ...]]:
    found = [p for p in DECIDING if len(p) == 1 or isinstance(event.get(p[0]), dict)]
    for tree in DECIDING_TREES:
        node = event.get(tree[0])
        if isinstance(node, dict) and tree[1] in node:
            found += [tree, *_paths(node[tree[1]], tree)]
    return found


@st.composite
def mutated(draw: st.DrawFn, event: dict[str, Any]) -> dict[str, Any]:
    """A copy of `event` with one to three edits, three in four of them where the meaning is."""
    event = copy.deepcopy(event)
    for _ in range(draw(st.integers(1, 3))):
        deciding = _deciding_paths(event)
        pool = draw(st.sampled_from([deciding, deciding, deciding, _paths(event) or deciding]))
        path = draw(st.sampled_from(pool))
        operation = draw(st.sampled_from(OPERATIONS))
        _mutate(event, path, operation, draw(OPERANDS.get(operation, st.none())))
    return event


ANY_EVENT = JSON | st.sampled_from(FIXTURE_NAMES).map(load).flatmap(mutated)


@settings(max_examples=400, deadline=None)
@given(ANY_EVENT)
def test_parser_never_raises_and_always_explains(event):
    parsed = parse_event(event, actor_arns=[GUARDRAIL_ROLE], region="eu-west-1")
    if isinstance(parsed, Dropped):
        assert parsed.reason and isinstance(parsed.kind, DropKind)
    else:
        scope = parsed.scope
        assert not scope.empty and not scope.full
        assert len(parsed.ignored) <= MAX_SHOWN  # a log line, not a copy of the event
        # Whatever the event said, only well-formed ids reach the reader's filters.
        assert all(i.startswith("i-") and i == i.strip() for i in scope.instance_ids)
        assert all(g.startswith("sg-") and g == g.strip() for g in scope.group_ids)
        assert all(
            a.startswith("arn:") and ":iam::aws:" not in a and a == a.strip()
            for a in scope.policy_arns
        )
