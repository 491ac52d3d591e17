"""Internet SSH through a managed prefix list, on an emulated account: caught by what the list
holds, and left to a person (its rule and the list are never changed)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from guardrail.clients import AwsClients
from guardrail.model import Outcome, ResourceType, Status
from guardrail.scope import Scope

from emulator.calls import CallCounter
from tests.aws_errors import error_answer

from .conftest import OPEN_SSH

SSH = "ssh-open-to-internet"


def prefix_list(account, *cidrs):
    family = "IPv6" if any(":" in c for c in cidrs) else "IPv4"
    return account.ec2.create_managed_prefix_list(
        PrefixListName=f"pl{len(cidrs)}{cidrs[0]}".replace("/", "-").replace(":", "-"),
        MaxEntries=10,
        AddressFamily=family,
        Entries=[{"Cidr": c} for c in cidrs],
    )["PrefixList"]["PrefixListId"]


def via(pl, low=22, high=22, protocol="tcp"):
    return {
        "IpProtocol": protocol,
        "FromPort": low,
        "ToPort": high,
        "PrefixListIds": [{"PrefixListId": pl, "Description": "office and more"}],
    }


def rules(account, gid):
    """(rule id, prefix list id or CIDR) of each ingress rule."""
    raws = account.ec2.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [gid]}]
    )["SecurityGroupRules"]
    return sorted(
        (r["SecurityGroupRuleId"], r.get("PrefixListId") or r.get("CidrIpv4") or r.get("CidrIpv6"))
        for r in raws
        if not r["IsEgress"]
    )


def entries(account, pl):
    return sorted(
        e["Cidr"] for e in account.ec2.get_managed_prefix_list_entries(PrefixListId=pl)["Entries"]
    )


def evaluation(report, resource_type, resource_id):
    (found,) = (
        e
        for e in report.evaluations
        if (e.result.resource_type, e.result.resource_id) == (resource_type, resource_id)
    )
    return found


def test_ssh_through_a_list_holding_the_internet_is_failed_and_left_to_a_person(account, clients):
    pl = prefix_list(account, "0.0.0.0/0", "203.0.113.0/24")
    gid = account.group(via(pl))
    iid = account.instance([gid])
    before = rules(account, gid)
    report = account.run(clients, "enforce", [SSH])
    # Nothing changed: neither the rule (its other entries would lose SSH) nor the list.
    assert rules(account, gid) == before
    assert entries(account, pl) == ["0.0.0.0/0", "203.0.113.0/24"]
    (record,) = report.fixes
    assert record.outcome is Outcome.SKIPPED
    assert f"{pl} holds 0.0.0.0/0" in record.reason
    assert f"--prefix-list-id {pl}" in record.reason and "Cidr=0.0.0.0/0" in record.reason
    assert record.before[0]["PrefixListId"] == pl
    for kind, rid in ((ResourceType.SECURITY_GROUP, gid), (ResourceType.INSTANCE, iid)):
        found = evaluation(report, kind, rid)
        assert found.result.status is Status.FAILED and found.left_failed
    assert (
        f"0.0.0.0/0 (in prefix list {pl})"
        in evaluation(report, ResourceType.SECURITY_GROUP, gid).result.reason
    )


def test_the_cidr_rule_is_closed_and_the_list_rule_stays_failed(account, clients):
    pl = prefix_list(account, "::/0")
    gid = account.group(OPEN_SSH, via(pl))
    iid = account.instance([gid])
    ((listed, _),) = [(r, src) for r, src in rules(account, gid) if src == pl]
    report = account.run(clients, "enforce", [SSH])
    assert rules(account, gid) == [(listed, pl)]  # 0.0.0.0/0 revoked, the list's rule kept
    assert sorted(f.outcome for f in report.fixes) == [Outcome.APPLIED, Outcome.SKIPPED]
    # Judged as the fix left it: only the list's rule is named, and it is still open.
    group = evaluation(report, ResourceType.SECURITY_GROUP, gid)
    assert group.result.status is Status.FAILED and not group.remediated
    assert group.result.details["rule_ids"] == [listed]
    assert "0.0.0.0/0" not in group.result.reason.replace(f"::/0 (in prefix list {pl})", "")
    instance = evaluation(report, ResourceType.INSTANCE, iid)
    assert instance.result.details["rule_ids"] == [listed] and instance.left_failed
    # The next run changes nothing more and still reports it.
    again = account.run(clients, "enforce", [SSH])
    assert rules(account, gid) == [(listed, pl)]
    assert [f.outcome for f in again.fixes] == [Outcome.SKIPPED]


def test_an_instance_behind_a_closed_group_and_a_list_group_is_judged_as_the_fix_left_it(
    account, clients
):
    """Its fixes are one applied (the CIDR group closed) and one skipped (the list's group): its
    finding names only what is still open, and that list admits IPv6 only while the instance has
    a public IPv4 address and no IPv6 one: HIGH, not the CRITICAL the closed rule made it."""
    account.ec2.modify_subnet_attribute(
        SubnetId=account.subnet, MapPublicIpOnLaunch={"Value": True}
    )
    pl = prefix_list(account, "::/0")
    listed, closed = account.group(via(pl)), account.group(OPEN_SSH)
    iid = account.instance([listed, closed])
    ((list_rule, _),) = rules(account, listed)
    report = account.run(clients, "enforce", [SSH])
    assert (
        rules(account, closed) == []
        and evaluation(report, ResourceType.SECURITY_GROUP, closed).remediated
    )
    instance = evaluation(report, ResourceType.INSTANCE, iid)
    assert instance.left_failed and instance.result.details["rule_ids"] == [list_rule]
    assert instance.result.severity == "HIGH" and closed not in instance.result.reason


def test_the_record_names_every_internet_entry_of_every_list(account, clients):
    both = prefix_list(account, "::/0", "2000::/3")
    world = prefix_list(account, "0.0.0.0/0")
    gid = account.group(via(both), via(world))
    account.instance([gid])
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert (
        f"--prefix-list-id {both} --current-version <version> --remove-entries Cidr=::/0 Cidr=2000::/3"
        in record.reason
    )
    assert (
        f"--prefix-list-id {world} --current-version <version> --remove-entries Cidr=0.0.0.0/0"
        in record.reason
    )


def test_a_list_edited_to_drop_the_internet_passes_at_the_next_run(account, clients):
    pl = prefix_list(account, "0.0.0.0/0", "198.51.100.0/24")
    gid = account.group(via(pl))
    account.instance([gid])
    assert account.run(clients, "report", [SSH]).left_failed
    account.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=1, RemoveEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    report = account.run(clients, "enforce", [SSH])
    assert not report.left_failed and report.fixes == []


def test_each_list_an_ssh_rule_references_is_read_once_and_no_other(aws, account):
    world = prefix_list(account, "0.0.0.0/0")
    office = prefix_list(account, "192.0.2.0/24")
    web = prefix_list(account, "0.0.0.0/0", "198.51.100.0/24")
    first, second = account.group(via(world), via(office)), account.group(via(world, 0, 1024))
    third = account.group(via(web, 443, 443), via(web, 22, 22, "udp"))  # not SSH: never read
    account.instance([first, second, third])
    counter = CallCounter(aws)
    report = account.run(AwsClients(session=aws, region="us-east-1"), "report", [SSH])
    assert counter.by_operation()["ec2:GetManagedPrefixListEntries"] == 2  # world, office
    failed = {e.result.resource_id for e in report.left_failed}
    assert {first, second} <= failed and third not in failed
    (snapshot,) = [report.snapshot]
    assert snapshot.prefix_lists == {world: ("0.0.0.0/0",), office: ()}


def test_no_list_read_when_no_rule_references_one(aws, account):
    gid = account.group(OPEN_SSH)
    account.instance([gid])
    counter = CallCounter(aws)
    account.run(AwsClients(session=aws, region="us-east-1"), "report", [SSH])
    assert "ec2:GetManagedPrefixListEntries" not in counter.by_operation()


def test_the_lockout_guard_asks_systems_manager_only_about_groups_it_would_close(
    aws, managed_policies, account
):
    """GUARDRAIL_SSH_REQUIRE_SSM_ONLINE protects the people a revoke would cut off. A list's
    rule is never revoked, so its group's instances are not looked up in Systems Manager, and
    their SSH stays as it is, reported."""
    pl = prefix_list(account, "0.0.0.0/0")
    listed = account.group(via(pl))
    iid = account.instance([listed])  # no profile: not Online, yet nobody is locked out
    counter = CallCounter(aws)
    clients = AwsClients(session=aws, region="us-east-1")
    report = account.run(clients, "enforce", [SSH], ssh_require_ssm_online=True)
    assert "ssm:DescribeInstanceInformation" not in counter.by_operation()
    (record,) = report.fixes
    assert record.outcome is Outcome.SKIPPED and "lock out" not in record.reason
    assert iid in {e.result.resource_id for e in report.left_failed}
    # A CIDR rule beside it is closed only when its users are reachable: this one is not.
    account.ec2.authorize_security_group_ingress(GroupId=listed, IpPermissions=[OPEN_SSH])
    again = account.run(clients, "enforce", [SSH], ssh_require_ssm_online=True)
    assert counter.by_operation()["ssm:DescribeInstanceInformation"] == 1
    assert sorted(f.outcome for f in again.fixes) == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert any(f"would lock out {iid}" in f.reason for f in again.fixes)
    assert "0.0.0.0/0" in [src for _, src in rules(account, listed)]


@pytest.mark.parametrize("code", ["InvalidPrefixListID.NotFound", "InvalidPrefixListId.NotFound"])
def test_a_list_deleted_or_no_longer_shared_holds_nothing(account, clients, code):
    pl = prefix_list(account, "0.0.0.0/0")
    gid = account.group(via(pl))
    account.instance([gid])
    clients.ec2.meta.events.register(
        "before-call.ec2.GetManagedPrefixListEntries", error_answer(code)
    )
    report = account.run(clients, "enforce", [SSH], scope=Scope(group_ids=frozenset({gid})))
    assert not report.left_failed and report.fixes == []


def test_any_other_error_reading_a_list_is_raised_not_read_as_empty(account, clients):
    pl = prefix_list(account, "0.0.0.0/0")
    gid = account.group(via(pl))
    account.instance([gid])
    clients.ec2.meta.events.register(
        "before-call.ec2.GetManagedPrefixListEntries", error_answer("UnauthorizedOperation")
    )
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        account.run(clients, "report", [SSH])
