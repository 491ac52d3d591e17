"""The SSH fix on an emulated account: revokes exactly internet TCP 22, keeps every other port."""

from __future__ import annotations

import contextlib
import json
import shlex
from typing import Any

import pytest
from botocore.exceptions import ClientError
from guardrail.model import Outcome, Status

from tests.aws_errors import answer_lost_once, error_answer, on_first_try, without_rule_ids

from .conftest import CORE

SSH = "ssh-open-to-internet"


def perm(protocol, low, high, cidr="0.0.0.0/0", description=None):
    rng = {"CidrIpv6" if ":" in cidr else "CidrIp": cidr}
    if description:
        rng["Description"] = description
    return {
        "IpProtocol": protocol,
        "FromPort": low,
        "ToPort": high,
        ("Ipv6Ranges" if ":" in cidr else "IpRanges"): [rng],
    }


def test_report_mode_changes_nothing(account, clients):
    gid = account.group(perm("tcp", 22, 22))
    account.instance([gid])
    before = account.ingress(gid)
    report = account.run(clients, "report", [SSH])
    assert report.fixes == [] and account.ingress(gid) == before
    assert all(e.remediation == "report only (mode report)" for e in report.left_failed)


def test_range_split_keeps_other_ports_and_descriptions(account, clients):
    gid = account.group(
        perm("tcp", 0, 65535, description="legacy"),
        perm("tcp", 22, 22, "10.0.0.0/8"),
        perm("udp", 22, 22),
    )
    account.instance([gid])
    report = account.run(clients, "enforce", [SSH])
    assert account.ingress(gid) == sorted(
        [
            ("tcp", 0, 21, "0.0.0.0/0", "legacy"),
            ("tcp", 23, 65535, "0.0.0.0/0", "legacy"),
            ("tcp", 22, 22, "10.0.0.0/8", None),  # private SSH is not touched
            ("udp", 22, 22, "0.0.0.0/0", None),  # UDP 22 is not SSH
        ]
    )
    (fix,) = report.fixes
    assert fix.outcome is Outcome.APPLIED and fix.before[0]["FromPort"] == 0
    assert all(e.remediated for e in report.evaluations if e.result.status is Status.FAILED)


def run_undo(account, reason: str) -> None:
    """The record's undo as a shell would split it, each command made through the client."""
    for command in reason.split(" (undo: ", 1)[1].removesuffix(")").split(" && "):
        words = shlex.split(command)
        assert words[:2] == ["aws", "ec2"] and words[words.index("--region") + 1] == "us-east-1"
        gid = words[words.index("--group-id") + 1]
        if words[2] == "revoke-security-group-ingress":
            ids = words[words.index("--security-group-rule-ids") + 1 :]
            account.ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=ids)
        elif words[2] == "modify-security-group-rules":
            back = json.loads(words[words.index("--security-group-rules") + 1])
            account.ec2.modify_security_group_rules(GroupId=gid, SecurityGroupRules=back)
        else:
            assert words[2] == "authorize-security-group-ingress"
            permissions = json.loads(words[words.index("--ip-permissions") + 1])
            tagged = {}
            if "--tag-specifications" in words:
                specs = json.loads(words[words.index("--tag-specifications") + 1])
                tagged = {"TagSpecifications": specs}
            account.ec2.authorize_security_group_ingress(
                GroupId=gid, IpPermissions=permissions, **tagged
            )


@pytest.mark.parametrize(
    "rules",
    [
        [perm("tcp", 0, 65535, description='bob\'s laptop; "legacy" & more')],
        [perm("-1", -1, -1), perm("tcp", 22, 22, "::/0", description="v6")],
        [perm("tcp", 22, 22)],  # nothing to re-add: only the authorize
    ],
)
def test_an_applied_ssh_fix_says_how_to_undo_it_and_the_undo_restores_the_group(
    account, clients, rules
):
    """The table and `replay` show the reason only: it names the rules the fix made and the
    rules it revoked, as commands a shell runs as they are (a quote in a description included).
    Following them puts the group's rules back as they were."""
    gid = account.group(*rules, perm("tcp", 443, 443, "10.0.0.0/8"))
    account.instance([gid])
    before = account.ingress(gid)
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.APPLIED and account.ingress(gid) != before
    assert all(i in fix.reason for i in fix.after["new_rule_ids"])
    run_undo(account, fix.reason)
    assert account.ingress(gid) == before


def test_all_traffic_rules_become_tcp_udp_icmp_for_v4_and_v6(account, clients):
    gid = account.group(perm("-1", -1, -1), perm("-1", -1, -1, "::/0"))
    account.instance([gid])
    report = account.run(clients, "enforce", [SSH])
    rules = account.ingress(gid)
    assert ("icmp", -1, -1, "0.0.0.0/0", None) in rules and (
        "icmpv6",
        -1,
        -1,
        "::/0",
        None,
    ) in rules
    assert ("udp", 0, 65535, "::/0", None) in rules and (
        "tcp",
        23,
        65535,
        "0.0.0.0/0",
        None,
    ) in rules
    assert not any(r[0] == "-1" for r in rules)
    # The note on the dropped protocols comes beside what the fix did, not instead of it.
    assert report.fixes[0].reason.startswith("revoked 2 rule(s); re-added 8 rule(s)")
    assert "other IP protocols" in report.fixes[0].reason


def test_second_run_changes_nothing(account, clients):
    gid = account.group(perm("tcp", 0, 1024, "::/0"))
    account.instance([gid])
    account.run(clients, "enforce", [SSH])
    after_first = account.ingress(gid)
    second = account.run(clients, "enforce", [SSH])
    assert second.fixes == [] and account.ingress(gid) == after_first
    assert not second.left_failed


def test_offending_group_on_secondary_interface_is_fixed(account, clients):
    bad = account.group(perm("tcp", 22, 22))
    ok = account.group(perm("tcp", 443, 443))
    iid = account.instance([ok])
    eni = account.ec2.create_network_interface(SubnetId=account.subnet, Groups=[bad])[
        "NetworkInterface"
    ]
    account.ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=iid, DeviceIndex=1
    )
    report = account.run(clients, "enforce", [SSH])
    failing = {e.result.resource_id for e in report.evaluations if e.result.status is Status.FAILED}
    assert {iid, bad} <= failing
    assert account.ingress(bad) == []


def test_severity_follows_the_interface_that_carries_the_open_group(account, clients):
    account.ec2.modify_subnet_attribute(
        SubnetId=account.subnet, MapPublicIpOnLaunch={"Value": True}
    )
    bad = account.group(perm("tcp", 22, 22))
    web = account.group(perm("tcp", 443, 443))
    iid = account.instance([web])  # the public IP is on this primary interface
    eni = account.ec2.create_network_interface(SubnetId=account.subnet, Groups=[bad])
    account.ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterface"]["NetworkInterfaceId"],
        InstanceId=iid,
        DeviceIndex=1,
    )
    results = {
        e.result.resource_id: e.result for e in account.run(clients, "report", [SSH]).evaluations
    }
    assert (results[iid].status, results[iid].severity) == (Status.FAILED, "HIGH")
    assert results[bad].severity == "HIGH"
    both = account.instance([web, bad])  # the open group on a public interface
    results = {
        e.result.resource_id: e.result for e in account.run(clients, "report", [SSH]).evaluations
    }
    assert results[both].severity == "CRITICAL" and results[bad].severity == "CRITICAL"
    assert results[iid].severity == "HIGH"


class FailingFor:
    """Wraps the EC2 client: AccessDenied on one group, the real call for the rest."""

    def __init__(self, ec2, group_id):
        self.ec2, self.group_id = ec2, group_id

    def __getattr__(self, name):
        return getattr(self.ec2, name)

    def authorize_security_group_ingress(self, **kwargs):
        if kwargs["GroupId"] == self.group_id:
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}},
                "AuthorizeSecurityGroupIngress",
            )
        return self.ec2.authorize_security_group_ingress(**kwargs)


def test_one_failing_group_does_not_stop_the_others(account, clients):
    denied = account.group(perm("tcp", 0, 65535))
    fine = account.group(perm("tcp", 0, 65535))
    account.instance([denied])
    account.instance([fine])
    before_denied = account.ingress(denied)
    clients.__dict__["ec2"] = FailingFor(clients.ec2, denied)
    report = account.run(clients, "enforce", [SSH])
    outcomes = {f.resource_id: f for f in report.fixes}
    assert outcomes[denied].outcome is Outcome.FAILED
    assert outcomes[denied].error_code == "UnauthorizedOperation"
    assert "nothing was revoked" in outcomes[denied].reason
    assert account.ingress(denied) == before_denied  # never revoked when re-adding failed
    assert outcomes[fine].outcome is Outcome.APPLIED
    assert ("tcp", 22, 22, "0.0.0.0/0", None) not in account.ingress(fine)
    assert {e.result.resource_id for e in report.left_failed} >= {denied}


@pytest.mark.usefixtures("managed_policies")
def test_an_answer_without_a_field_its_model_calls_optional_fails_one_control_not_the_run(
    account, clients
):
    """AuthorizeSecurityGroupIngress's answer without SecurityGroupRules[].SecurityGroupRuleId
    (optional in its model) raised KeyError out of the run: no control after it was judged or
    fixed, and nothing was published. Now the SSH fix is FAILED naming it, the internet rule is
    still there (the revoke comes after the re-adds), and the role fix still runs."""
    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    bare = account.instance()  # no instance profile

    clients.ec2.meta.events.register(
        "after-call.ec2.AuthorizeSecurityGroupIngress", without_rule_ids
    )
    account.role("guardrail-ec2", CORE, profile="guardrail-ec2")
    report = account.run(
        clients,
        "enforce",
        [SSH, "ssm-instance-role"],
        instance_profile="guardrail-ec2",
        instance_role="guardrail-ec2",
    )

    ssh = [f for f in report.fixes if f.control == SSH]
    assert ssh and all(f.outcome is Outcome.FAILED and f.error_code == "KeyError" for f in ssh)
    assert [str(c).split(":")[:2] for c in report.crashed] == [[f"{SSH} fix stopped", " KeyError"]]
    assert ("tcp", 0, 65535, "0.0.0.0/0", None) in account.ingress(gid)
    (role_fix,) = [f for f in report.fixes if f.resource_id == bare]
    assert role_fix.outcome is Outcome.APPLIED


def test_a_fix_finished_before_the_control_stopped_keeps_its_record(account, clients):
    """Two open groups; only the second group's AuthorizeSecurityGroupIngress answer lacks rule
    ids. The first group was really closed: its APPLIED record (what it changed, how to undo
    it) stands, and only the second group is FAILED. Before, both read FAILED and the first fix's
    record was lost (and FixesDeferred/FixesApplied counted wrong)."""
    first, second = (account.group(perm("tcp", 0, 1024)) for _ in range(2))
    instance_of = {first: account.instance([first]), second: account.instance([second])}
    answers = []

    def second_without_rule_ids(parsed, **kwargs):
        answers.append(1)
        if len(answers) == 2:
            without_rule_ids(parsed, **kwargs)

    clients.ec2.meta.events.register(
        "after-call.ec2.AuthorizeSecurityGroupIngress", second_without_rule_ids
    )
    report = account.run(clients, "enforce", [SSH])

    groups = {f.resource_id: f for f in report.fixes if f.resource_id in (first, second)}
    closed = [
        g for g in (first, second) if ("tcp", 0, 1024, "0.0.0.0/0", None) not in account.ingress(g)
    ]
    assert len(closed) == 1 and len(report.crashed) == 1
    (still_open,) = {first, second} - set(closed)
    assert groups[closed[0]].outcome is Outcome.APPLIED and groups[closed[0]].before
    assert groups[still_open].outcome is Outcome.FAILED
    assert groups[still_open].error_code == "KeyError"
    # Which of the stopped control's fixes an instance still waited for is not known: both
    # instances stay FAILED for the next run (never read fixed while a group may be open).
    left = {e.result.resource_id for e in report.left_failed}
    assert {instance_of[first], instance_of[second], still_open} <= left


def read(clients, scope):
    from guardrail.reader import SnapshotReader
    from guardrail.settings import Settings

    return SnapshotReader(clients, Settings(), "123456789012", "aws").read(scope, {SSH})


def fix(clients, snapshot):
    from guardrail.controls.base import FixContext
    from guardrail.controls.ssh_open import SSH_OPEN
    from guardrail.settings import Settings

    failed = [r for r in SSH_OPEN.check(snapshot, Settings()) if r.status is Status.FAILED]
    return SSH_OPEN.remediate(failed, snapshot, FixContext(clients, Settings(mode="enforce")))


def test_rule_revoked_meanwhile_counts_as_done(account, clients):
    from guardrail.scope import Scope

    gid = account.group()
    account.instance([gid])
    for scope, reason in (
        (Scope.everything(), "no rule admits internet SSH any more"),  # re-read before acting
        (Scope(group_ids=frozenset({gid})), "rule already revoked"),  # an event: revoke says so
    ):
        account.ec2.authorize_security_group_ingress(
            GroupId=gid, IpPermissions=[perm("tcp", 22, 22)]
        )
        snapshot = read(clients, scope)
        account.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm("tcp", 22, 22)])
        (record,) = fix(clients, snapshot)
        assert record.outcome is Outcome.ALREADY_COMPLIANT and record.reason == reason
        assert account.ingress(gid) == []


def test_one_rule_gone_meanwhile_does_not_leave_the_others_open(account, clients):
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 1024), perm("tcp", 22, 22, "::/0"))
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    # Someone revokes the wide IPv4 rule between the read and the fix.
    account.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm("tcp", 0, 1024)])
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.APPLIED  # the ::/0 rule was revoked
    # ...and what the guardrail re-added for the vanished rule went again: nothing widened.
    assert account.ingress(gid) == []


def test_a_drift_scan_acts_on_the_rules_as_they_are_when_it_fixes(account, clients):
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    snapshot = read(clients, Scope.everything())
    (rule_id,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid)]
    # The owner narrows the rule to private SSH while the scan is busy with other fixes.
    narrow(account, gid, rule_id, 22, 22, "10.0.0.0/8")
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.ALREADY_COMPLIANT
    # The owner's private rule is untouched and no port was reopened to the internet.
    assert account.ingress(gid) == [("tcp", 22, 22, "10.0.0.0/8", None)]


def rules_of(account, gid):
    """The group's ingress rules as DescribeSecurityGroupRules returns them."""
    raw = account.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])
    return [r for r in raw["SecurityGroupRules"] if not r["IsEgress"]]


@pytest.mark.parametrize("cidr", ["0::/0", "0:0:0:0:0:0:0:0/0", "1.2.3.4/0", "2000::/3"])
def test_internet_written_another_way_is_closed_and_the_rest_kept(account, clients, cidr):
    gid = account.group(perm("tcp", 0, 1024, cidr))
    iid = account.instance([gid])
    report = account.run(clients, "enforce", [SSH])
    failed = {e.result.resource_id for e in report.evaluations if e.result.status is Status.FAILED}
    assert failed == {gid, iid}
    assert report.fixes[0].outcome is Outcome.APPLIED
    # EC2 keeps the source as written: the re-added ports keep it too, port 22 is gone
    assert account.ingress(gid) == [("tcp", 0, 21, cidr, None), ("tcp", 23, 1024, cidr, None)]


def test_readded_rules_keep_the_owners_tags(account, clients):
    gid = account.group()
    account.ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[perm("tcp", 0, 65535, description="legacy")],
        TagSpecifications=[
            {
                "ResourceType": "security-group-rule",
                "Tags": [{"Key": "owner", "Value": "team-a"}, {"Key": "ticket", "Value": "OPS-1"}],
            }
        ],
    )
    (old,) = rules_of(account, gid)
    account.instance([gid])
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    readded = rules_of(account, gid)
    assert sorted((r["FromPort"], r["ToPort"]) for r in readded) == [(0, 21), (23, 65535)]
    runs = set()
    for r in readded:
        tags = {t["Key"]: t["Value"] for t in r["Tags"]}
        runs.add(tags.pop("ssm-guardrail:run"))
        assert tags == {
            "owner": "team-a",
            "ticket": "OPS-1",
            "ssm-guardrail:replaces": old["SecurityGroupRuleId"],
        }
    assert len(runs) == 1 and len(runs.pop()) == 12  # one token for the fix's rules
    assert fix.before[0]["Tags"] == {"owner": "team-a", "ticket": "OPS-1"}


def tagged_rules(account, gid):
    return sorted(
        (
            r["FromPort"],
            r["ToPort"],
            r.get("CidrIpv4") or r.get("CidrIpv6"),
            r.get("Description"),
            *sorted((t["Key"], t["Value"]) for t in r.get("Tags", [])),
        )
        for r in rules_of(account, gid)
    )


def test_the_undo_gives_the_revoked_rules_back_their_owners_tags(account, clients):
    """Cost allocation, ownership and ABAC read rule tags: the undo re-creates each revoked rule
    with its own tags (one call per set of tags), not bare. It restored them untagged."""
    gid = account.group()
    for permission, team in (
        (perm("tcp", 0, 65535, description="legacy"), "team-a"),
        (perm("tcp", 22, 22, "::/0"), "team-b"),
    ):
        account.ec2.authorize_security_group_ingress(
            GroupId=gid,
            IpPermissions=[permission],
            TagSpecifications=[
                {"ResourceType": "security-group-rule", "Tags": [{"Key": "owner", "Value": team}]}
            ],
        )
    account.instance([gid])
    before = tagged_rules(account, gid)
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.APPLIED and tagged_rules(account, gid) != before
    assert fix.reason.count("--tag-specifications") == 2
    run_undo(account, fix.reason)
    assert tagged_rules(account, gid) == before


def narrow(account, gid, rule_id, low, high, cidr, description=None):
    """The owner changes the rule in place (ModifySecurityGroupRules keeps its id)."""
    rule = {"IpProtocol": "tcp", "FromPort": low, "ToPort": high, "CidrIpv4": cidr}
    if description:
        rule["Description"] = description
    account.ec2.modify_security_group_rules(
        GroupId=gid,
        SecurityGroupRules=[{"SecurityGroupRuleId": rule_id, "SecurityGroupRule": rule}],
    )


class RevokeAnswersLikeEc2:
    """Wraps the emulator's EC2 client: RevokeSecurityGroupIngress by IpPermissions answers as
    EC2 does in a default VPC (revokes what matches, success with UnknownIpPermissions for the
    rest) where moto raises InvalidPermission.NotFound, as EC2 does in other VPCs."""

    def __init__(self, ec2):
        self.ec2 = ec2

    def __getattr__(self, name):
        return getattr(self.ec2, name)

    def revoke_security_group_ingress(self, **kwargs):
        if "IpPermissions" not in kwargs:
            return self.ec2.revoke_security_group_ingress(**kwargs)
        unknown = []
        for permission in kwargs["IpPermissions"]:
            try:
                self.ec2.revoke_security_group_ingress(
                    GroupId=kwargs["GroupId"], IpPermissions=[permission]
                )
            except ClientError:
                unknown.append(permission)
        return {"Return": True, "UnknownIpPermissions": unknown}


@pytest.mark.parametrize("answer", ["moto", "ec2"])
@pytest.mark.parametrize(
    ("changed_to", "outcome"),
    [
        (("tcp", 0, 65535, "10.0.0.0/8"), Outcome.ALREADY_COMPLIANT),
        (("tcp", 20, 30, "0.0.0.0/0"), Outcome.SKIPPED),  # still open: not what was judged
    ],
)
def test_a_rule_changed_between_the_read_and_the_revoke_is_left_as_its_owner_set_it(
    account, clients, changed_to, outcome, answer
):
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535))
    (rule_id,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid)]
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))  # an event: no re-read
    changed: list[bool] = []

    def owner_changes_it_now(**_):
        if not changed:  # after the other ports were re-added, before the revoke
            changed.append(True)
            narrow(account, gid, rule_id, *changed_to[1:])

    clients.ec2.meta.events.register(
        "before-call.ec2.RevokeSecurityGroupIngress", owner_changes_it_now
    )
    if answer == "ec2":
        clients.__dict__["ec2"] = RevokeAnswersLikeEc2(clients.ec2)
    (record,) = fix(clients, snapshot)
    # The owner's rule stands as they set it; nothing re-added for the internet stays.
    assert account.ingress(gid) == [(*changed_to, None)]
    assert record.outcome is outcome and f"{rule_id} changed meanwhile" in record.reason
    assert record.outcome.ok is (outcome is Outcome.ALREADY_COMPLIANT)


def test_a_drift_scan_does_not_revoke_a_rule_changed_while_it_fixed_another_group(account, clients):
    first, second = account.group(perm("tcp", 0, 65535)), account.group(perm("tcp", 0, 65535))
    account.instance([first])
    account.instance([second])
    rule_ids = {gid: rules_of(account, gid)[0]["SecurityGroupRuleId"] for gid in (first, second)}
    changed: list[str] = []

    def owner_changes_the_other_group(params, **_):
        # The scan has re-read both groups and now re-adds the first one's other ports.
        if not changed:
            other = second if params["GroupId"] == first else first
            narrow(account, other, rule_ids[other], 0, 65535, "10.0.0.0/8")
            changed.append(other)

    clients.ec2.meta.events.register(
        "before-parameter-build.ec2.AuthorizeSecurityGroupIngress", owner_changes_the_other_group
    )
    report = account.run(clients, "enforce", [SSH])
    (other,) = changed
    assert account.ingress(other) == [("tcp", 0, 65535, "10.0.0.0/8", None)]
    outcomes = {f.resource_id: f.outcome for f in report.fixes}
    assert outcomes[other] is Outcome.ALREADY_COMPLIANT
    assert outcomes[first if other == second else second] is Outcome.APPLIED


def test_undo_for_a_vanished_rule_keeps_what_a_revoked_rule_still_needs(account, clients):
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 100), perm("tcp", 0, 200))
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    account.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm("tcp", 0, 100)])
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.APPLIED
    # tcp 0-21 was re-added once for both rules; the 0-200 rule still admitted it
    assert account.ingress(gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", None),
        ("tcp", 23, 200, "0.0.0.0/0", None),
    ]


def test_the_record_names_only_the_rules_the_fix_created(account, clients):
    """The owner already admits tcp 0-21 from the internet on a rule of their own. The record
    must not claim it: an undo that follows the record would delete the owner's rule."""
    gid = account.group(perm("tcp", 0, 65535, description="legacy"), perm("tcp", 0, 21))
    (owners,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid) if r["ToPort"] == 21]
    account.instance([gid])
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.APPLIED
    assert [(p["FromPort"], p["ToPort"]) for p in record.after["readded"]] == [(23, 65535)]
    assert [(p["FromPort"], p["ToPort"]) for p in record.after["already_present"]] == [(0, 21)]
    assert "re-added 1 rule(s)" in record.reason and "1 already present" in record.reason
    created = set(record.after["new_rule_ids"])
    assert len(created) == 1 and owners not in created
    # Undoing by the record brings back the wide rule and leaves the owner's own rule alone.
    account.ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=sorted(created))
    assert {r["SecurityGroupRuleId"] for r in rules_of(account, gid)} == {owners}


def test_two_rules_keeping_the_same_ports_are_recorded_once_as_the_fixs_own(account, clients):
    """tcp 0-65535 and all traffic, both from the internet: both keep tcp 0-21 and 23-65535,
    which the fix creates once, for the first. The record lists each created rule once and
    calls none of them "already present, not ours": an undo by the record takes them all."""
    gid = account.group(perm("tcp", 0, 65535, description="A"), perm("-1", -1, -1))
    account.instance([gid])
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.APPLIED
    assert "already_present" not in record.after and "already present" not in record.reason
    readded = [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in record.after["readded"]]
    assert len(readded) == len(set(readded)) == len(record.after["new_rule_ids"])
    assert f"re-added {len(readded)} rule(s)" in record.reason
    # Every rule in the group now is one the fix created: an undo by the record removes all.
    assert {r["SecurityGroupRuleId"] for r in rules_of(account, gid)} == set(
        record.after["new_rule_ids"]
    )


def refused():
    return ClientError(
        {"Error": {"Code": "UnauthorizedOperation", "Message": "no"}},
        "RevokeSecurityGroupIngress",
    )


def unreachable():
    """No answer past botocore's retries: a BotoCoreError, not a ClientError."""
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")


class TakeBackFails:
    """Wraps the EC2 client: revoking anything that does not cover port 22 (taking back the
    re-added rules) is refused, or (`error=unreachable`) never answered."""

    def __init__(self, ec2, error=refused):
        self.ec2, self.error = ec2, error

    def __getattr__(self, name):
        return getattr(self.ec2, name)

    def revoke_security_group_ingress(self, **kwargs):
        if all(not p["FromPort"] <= 22 <= p["ToPort"] for p in kwargs["IpPermissions"]):
            raise self.error()
        return self.ec2.revoke_security_group_ingress(**kwargs)


def before_its_revoke(clients, action):
    """Runs `action` once, just before the next RevokeSecurityGroupIngress these clients send
    (after the fix re-added the other ports): another run, or a person, acting in between."""
    event = "before-call.ec2.RevokeSecurityGroupIngress"

    def once(**_):
        clients.ec2.meta.events.unregister(event, once)
        action()

    clients.ec2.meta.events.register(event, once)


def throttled_once(clients, operation):
    """EC2 turns the next `operation` away (RequestLimitExceeded, HTTP 503): botocore retries."""
    from botocore.awsrequest import AWSResponse

    body = (
        b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit "
        b"exceeded.</Message></Error></Errors><RequestID>r</RequestID></Response>"
    )

    class Raw:
        def stream(self, **_):
            yield body

    on_first_try(clients, operation, lambda _, request: AWSResponse(request.url, 503, {}, Raw()))


@pytest.mark.parametrize(
    "permissions",
    [
        [perm("tcp", 0, 65535, description="web+ssh")],
        [perm("tcp", 0, 65535, description="web+ssh"), perm("tcp", 20, 30, "::/0")],  # one call
    ],
)
def test_a_revoke_whose_answer_was_lost_keeps_the_other_ports(account, clients, permissions):
    """EC2 revoked the rules but its answer never arrived; the retry answers "not found". That is
    this fix's own revoke, not someone else's: the ports re-added for the rules stay open (taking
    them back closed every port but SSH), and the record says how the revoke was counted."""
    gid = account.group(*permissions)
    account.instance([gid])
    answer_lost_once(account, clients, "RevokeSecurityGroupIngress")
    report = account.run(clients, "enforce", [SSH])
    (record,) = report.fixes
    left = account.ingress(gid)
    assert ("tcp", 23, 65535, "0.0.0.0/0", "web+ssh") in left
    assert not any(r[1] <= 22 <= r[2] for r in left)
    assert record.outcome is Outcome.APPLIED
    assert "the answer to a try of the revoke was lost" in record.reason
    assert len(record.after["new_rule_ids"]) == 2 * len(permissions)


def test_a_retried_revoke_still_tells_the_owners_revoke_from_its_own(account, clients):
    """The owner revoked one rule just before the fix's call, and that call was sent twice: EC2
    refused both whole (one rule matched nothing), so the rule still there goes alone now, and
    the owner's is theirs: what was re-added for it is taken back, nothing stays wider."""
    wide, other = perm("tcp", 0, 65535), perm("tcp", 20, 30, "::/0")
    gid = account.group(wide, other)
    account.instance([gid])
    answer_lost_once(account, clients, "RevokeSecurityGroupIngress")
    owner_revokes_before_the_fix_does(account, clients, gid, wide)
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert account.ingress(gid) == [
        ("tcp", 20, 21, "::/0", None),
        ("tcp", 23, 30, "::/0", None),
    ]
    assert "already revoked" in record.reason and "was lost" not in record.reason


def test_re_adds_whose_answer_was_lost_are_the_fixs_own(account, clients):
    """EC2 created the re-added rules but the answer was lost; the retry answers "duplicate".
    They are this fix's (tagged for the rule they replace), ids and all: the record's undo
    takes them, and when the owner then revokes the wide rule they go again."""
    wide = perm("tcp", 0, 65535)
    gid = account.group(wide)
    account.instance([gid])
    answer_lost_once(account, clients, "AuthorizeSecurityGroupIngress")
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.APPLIED and "already_present" not in record.after
    created = {r["SecurityGroupRuleId"] for r in rules_of(account, gid)}
    assert set(record.after["new_rule_ids"]) == created and len(created) == 2

    wide_again = account.group(wide)
    account.instance([wide_again])
    answer_lost_once(account, clients, "AuthorizeSecurityGroupIngress")
    owner_revokes_before_the_fix_does(account, clients, wide_again, wide)
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert account.ingress(wide_again) == []  # nothing wider than the owner left it


def every_answer_lost(account, clients, monkeypatch, operation, carried_out_once, then=None):
    """No try of `operation` is ever answered, past botocore's retries (its backoff not slept):
    a read timeout each time, or after the first `then` (a retry never sent, say); the first
    is carried out when `carried_out_once`."""
    import time

    from botocore import xform_name
    from botocore.exceptions import ReadTimeoutError

    monkeypatch.setattr(time, "sleep", lambda _: None)
    done, tries = [], []

    def lost(request, **_):
        tries.append(request)
        if carried_out_once and not done:
            params = json.loads(json.dumps(sent))
            done.append(getattr(account.ec2, xform_name(operation))(**params))
        if then and len(tries) > 1:
            raise then(endpoint_url=request.url)
        raise ReadTimeoutError(endpoint_url=request.url)

    sent = {}
    events = clients.ec2.meta.events
    events.register(
        f"before-parameter-build.ec2.{operation}", lambda params, **_: sent.update(params)
    )
    events.register_first(f"before-send.ec2.{operation}", lost)
    return done


def never_sent(endpoint_url):
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url=endpoint_url)


@pytest.mark.parametrize("then", [None, never_sent], ids=["all-lost", "then-never-sent"])
@pytest.mark.parametrize("carried_out", [True, False], ids=["made", "never-made"])
def test_re_adds_whose_every_answer_was_lost_are_judged_by_what_the_group_holds(
    account, clients, monkeypatch, carried_out, then
):
    """AuthorizeSecurityGroupIngress was carried out but no try was ever answered (the retries
    lost too, or never sent): the group holds the run's re-adds, so they are this fix's and the
    rule is revoked (it was a bare error, or "nothing was revoked" with the re-adds left behind
    unnamed). Never carried out: FAILED, naming the error, nothing revoked, nothing left."""
    wide = perm("tcp", 0, 65535)
    gid = account.group(wide)
    account.instance([gid])
    every_answer_lost(
        account, clients, monkeypatch, "AuthorizeSecurityGroupIngress", carried_out, then
    )
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    if carried_out:
        assert record.outcome is Outcome.APPLIED, record.reason
        created = {r["SecurityGroupRuleId"] for r in rules_of(account, gid)}
        assert set(record.after["new_rule_ids"]) == created and len(created) == 2
        assert not any(r[1] <= 22 <= r[2] for r in account.ingress(gid))
    else:
        code = "EndpointConnectionError" if then else "ReadTimeoutError"
        assert (record.outcome, record.error_code) == (Outcome.FAILED, code)
        assert record.reason == "could not re-add the other ports; nothing was revoked"
        assert account.ingress(gid) == [("tcp", 0, 65535, "0.0.0.0/0", None)]


def test_a_throttled_revoke_that_finds_the_rule_gone_is_the_owners_revoke(account, clients):
    """EC2 turned the first try away (throttling: nothing done) and the owner revoked the rule
    meanwhile: the retry's "not found" is the owner's doing. What was re-added for the other
    ports goes again: the group stays as closed as they left it."""
    wide = perm("tcp", 0, 65535)
    gid = account.group(wide)
    account.instance([gid])
    throttled_once(clients, "RevokeSecurityGroupIngress")
    owner_revokes_before_the_fix_does(account, clients, gid, wide)
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert account.ingress(gid) == []
    assert record.outcome is Outcome.ALREADY_COMPLIANT and record.reason == "rule already revoked"


def test_a_rule_changed_while_a_revoke_answer_was_lost_is_not_counted_revoked(account, clients):
    """The owner narrowed the rule to tcp 20-30 (still SSH) just before the fix's revoke, whose
    answer was then lost. The rule is still there under its id: changed, not revoked. Nothing
    re-added for it stays, and the fix says the rule is left for the next run to judge."""
    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    (rule_id,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid)]
    answer_lost_once(account, clients, "RevokeSecurityGroupIngress")
    before_its_revoke(clients, lambda: narrow(account, gid, rule_id, 20, 30, "0.0.0.0/0"))
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert account.ingress(gid) == [("tcp", 20, 30, "0.0.0.0/0", None)]
    assert record.outcome is Outcome.SKIPPED and "was lost" not in record.reason
    assert "still admitting internet SSH" in record.reason


def test_a_fix_left_partly_done_by_a_change_meanwhile_still_says_how_to_undo_it(account, clients):
    """Two internet rules; the owner narrows one (still SSH) just before the revoke. The other
    is revoked and its other ports re-added: SKIPPED (the changed rule is the next run's), yet
    the account changed, so the record says how to undo what this run did; followed, the group
    is as the owner's change left it."""
    gid = account.group(perm("tcp", 0, 65535, description="wide"), perm("tcp", 22, 22))
    account.instance([gid])
    (ssh,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid) if r["FromPort"] == 22]
    before_its_revoke(clients, lambda: narrow(account, gid, ssh, 20, 30, "0.0.0.0/0"))
    owners = sorted([("tcp", 0, 65535, "0.0.0.0/0", "wide"), ("tcp", 20, 30, "0.0.0.0/0", None)])
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.SKIPPED and "still admitting internet SSH" in record.reason
    assert ("tcp", 0, 65535, "0.0.0.0/0", "wide") not in account.ingress(gid)  # revoked
    assert ("tcp", 23, 65535, "0.0.0.0/0", "wide") in account.ingress(gid)  # its other ports
    run_undo(account, record.reason)
    assert account.ingress(gid) == owners


def owner_revokes_before_the_fix_does(account, clients, gid, *permissions):
    before_its_revoke(
        clients,
        lambda: account.ec2.revoke_security_group_ingress(
            GroupId=gid, IpPermissions=list(permissions)
        ),
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [(refused, "UnauthorizedOperation"), (unreachable, "EndpointConnectionError")],
)
def test_rules_re_added_for_a_vanished_rule_that_cannot_be_taken_back_are_reported(
    account, clients, error, code
):
    """The owner revokes the wide rule while the fix runs; what the fix re-added for it would
    now admit the internet to 65,534 ports they closed. Not "already compliant": FAILED, with
    the rules to revoke by hand, whether EC2 refused the take-back or never answered it (a
    network error past the retries was a bare error with no rules named, and the next run,
    finding no internet SSH, left them open)."""
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    owner_revokes_before_the_fix_does(account, clients, gid, perm("tcp", 0, 65535))
    clients.__dict__["ec2"] = TakeBackFails(clients.ec2, error)
    (record,) = fix(clients, snapshot)
    left = account.ingress(gid)
    assert left == [("tcp", 0, 21, "0.0.0.0/0", None), ("tcp", 23, 65535, "0.0.0.0/0", None)]
    assert record.outcome is Outcome.FAILED and not record.outcome.ok
    assert f"could not be taken back ({code})" in record.reason
    assert "revoke them by hand" in record.reason
    assert [(p["FromPort"], p["ToPort"]) for p in record.after["left_open"]] == [
        (0, 21),
        (23, 65535),
    ]
    assert set(record.after["left_open_rule_ids"]) == {
        r["SecurityGroupRuleId"] for r in rules_of(account, gid)
    }
    # The reason gives the command: followed, the group is as closed as the owner left it.
    clients.__dict__["ec2"] = account.ec2
    run_undo(account, record.reason)
    assert account.ingress(gid) == []


def test_taking_back_goes_rule_by_rule_when_one_of_them_is_already_gone(account, clients):
    """Outside a default VPC one permission that matches nothing refuses the whole revoke: the
    owner removing one re-added rule too must not keep the other one open."""
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    owner_revokes_before_the_fix_does(
        account, clients, gid, perm("tcp", 0, 65535), perm("tcp", 0, 21)
    )
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.ALREADY_COMPLIANT
    assert account.ingress(gid) == []


def test_two_runs_closing_one_group_at_once_keep_the_other_ports(account, clients, aws):
    """Two invocations (an event delivered twice, or an event and the drift scan) fix the same
    group in the same instant. A re-adds tcp 0-21/23-65535; B finds them there, marks them as
    relied on and revokes the wide rule; A's revoke then finds it gone. A keeps the rules B
    counts on: the web ports stay open, only SSH closes."""
    from guardrail.clients import AwsClients
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535, description="web+ssh"))
    account.instance([gid])
    other = AwsClients(session=aws, region="us-east-1")  # the other invocation's clients
    mine = read(clients, Scope(group_ids=frozenset({gid})))
    theirs = read(other, Scope(group_ids=frozenset({gid})))
    b: list[Any] = []
    before_its_revoke(clients, lambda: b.extend(fix(other, theirs)))
    (a,) = fix(clients, mine)
    (b_record,) = b
    assert account.ingress(gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", "web+ssh"),
        ("tcp", 23, 65535, "0.0.0.0/0", "web+ssh"),
    ]
    assert b_record.outcome is Outcome.APPLIED and len(b_record.after["already_present"]) == 2
    assert a.outcome is Outcome.ALREADY_COMPLIANT and "by another run" in a.reason
    kept = {r["SecurityGroupRuleId"] for r in a.after["kept_for_another_run"]}
    assert kept == {r["SecurityGroupRuleId"] for r in rules_of(account, gid)}
    old = mine.security_groups[gid].ingress[0].rule_id
    for r in rules_of(account, gid):
        marks = [t for t in r["Tags"] if t["Key"].startswith("ssm-guardrail:relied-on:")]
        assert [m["Value"] for m in marks] == [old]  # B's own key, naming the rule it revoked


def test_a_person_deleting_the_rule_meanwhile_leaves_no_relied_on_mark_to_keep(account, clients):
    """Without another run's mark, what was re-added for a rule a person revoked is taken
    back, and an owner's own rule is never tagged by the guardrail."""
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535), perm("tcp", 0, 21, description="ftp"))
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    owner_revokes_before_the_fix_does(account, clients, gid, perm("tcp", 0, 65535))
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.ALREADY_COMPLIANT and record.reason == "rule already revoked"
    assert account.ingress(gid) == [("tcp", 0, 21, "0.0.0.0/0", "ftp")]
    assert [r["Tags"] for r in rules_of(account, gid)] == [[]]


def test_three_runs_at_once_one_taking_its_mark_off_leaves_the_others(account, clients, aws):
    """A re-adds; B finds A's re-adds and marks them; C does too and revokes the wide rule; B's
    revoke then misses, so B takes its own mark off, not C's; A's revoke misses and A keeps what
    C counts on."""
    from guardrail.clients import AwsClients
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535, description="web+ssh"))
    account.instance([gid])
    b_clients = AwsClients(session=aws, region="us-east-1")
    c_clients = AwsClients(session=aws, region="us-east-1")
    a_read, b_read, c_read = (
        read(c, Scope(group_ids=frozenset({gid}))) for c in (clients, b_clients, c_clients)
    )
    records: dict[str, Any] = {}

    def b_runs():
        before_its_revoke(b_clients, lambda: records.update(c=fix(c_clients, c_read)[0]))
        (records["b"],) = fix(b_clients, b_read)

    before_its_revoke(clients, b_runs)
    (a,) = fix(clients, a_read)
    assert records["c"].outcome is Outcome.APPLIED  # C revoked the wide rule
    assert records["b"].outcome is Outcome.ALREADY_COMPLIANT  # B's revoke missed
    assert a.outcome is Outcome.ALREADY_COMPLIANT and "by another run" in a.reason
    assert account.ingress(gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", "web+ssh"),
        ("tcp", 23, 65535, "0.0.0.0/0", "web+ssh"),
    ]


@pytest.mark.parametrize("person", ["revokes", "narrows to 443"])
def test_a_person_closing_the_rule_while_two_runs_fix_it_is_never_widened_again(
    account, clients, aws, person
):
    """B has marked A's re-adds as relied on; then a person revokes (or narrows) the wide rule
    before either run's revoke. Both revokes miss: B takes its mark off, so A takes its re-adds
    back and the group is as the person left it."""
    from guardrail.clients import AwsClients
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535, description="web+ssh"))
    (rule_id,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid)]
    account.instance([gid])
    other = AwsClients(session=aws, region="us-east-1")
    mine = read(clients, Scope(group_ids=frozenset({gid})))
    theirs = read(other, Scope(group_ids=frozenset({gid})))
    b: list[Any] = []

    def the_person_acts():
        if person == "revokes":
            account.ec2.revoke_security_group_ingress(
                GroupId=gid, IpPermissions=[perm("tcp", 0, 65535)]
            )
        else:
            narrow(account, gid, rule_id, 443, 443, "0.0.0.0/0")

    def the_other_run_fixes_now():
        before_its_revoke(other, the_person_acts)
        b.extend(fix(other, theirs))

    before_its_revoke(clients, the_other_run_fixes_now)
    (a,) = fix(clients, mine)
    left = [r[:4] for r in account.ingress(gid)]
    assert left == ([] if person == "revokes" else [("tcp", 443, 443, "0.0.0.0/0")])
    assert "another run" not in a.reason
    assert all("ssm-guardrail:relied-on" not in str(r["Tags"]) for r in rules_of(account, gid))


def test_a_relied_on_tag_on_the_owners_rule_is_neither_copied_nor_honoured(account, clients):
    """A rule that carries the mark already (an earlier re-add the owner widened again; tags
    copied by their tooling): the re-adds do not inherit it, and a person revoking the rule
    meanwhile gets every re-add taken back."""
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535))
    (rule_id,) = [r["SecurityGroupRuleId"] for r in rules_of(account, gid)]
    account.ec2.create_tags(
        Resources=[rule_id],
        Tags=[{"Key": "ssm-guardrail:relied-on:0123456789ab", "Value": rule_id}],
    )
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    owner_revokes_before_the_fix_does(account, clients, gid, perm("tcp", 0, 65535))
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.ALREADY_COMPLIANT and record.reason == "rule already revoked"
    assert account.ingress(gid) == []


class TagCallsFail:
    """Wraps the EC2 client: CreateTags or DeleteTags (`operation`) is refused."""

    def __init__(self, ec2, operation, code):
        self.ec2, self.operation, self.code = ec2, operation, code

    def __getattr__(self, name):
        if name != self.operation:
            return getattr(self.ec2, name)

        def refused(**_):
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, name)

        return refused


def two_runs(account, clients, aws, gid):
    """The other invocation's clients, and each run's reading of the group."""
    from guardrail.clients import AwsClients
    from guardrail.scope import Scope

    other = AwsClients(session=aws, region="us-east-1")
    scope = Scope(group_ids=frozenset({gid}))
    return other, read(clients, scope), read(other, scope)


def test_a_run_that_cannot_mark_the_other_runs_re_adds_leaves_the_rule_to_it(account, clients, aws):
    """B finds A's re-adds but cannot mark them (the rule's 50 tags, throttling): revoking
    would let A take them back. B revokes nothing (SKIPPED); A closes the rule, ports kept."""
    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    other, mine, theirs = two_runs(account, clients, aws, gid)
    b: list[Any] = []

    def the_other_run_fixes_now():
        other.__dict__["ec2"] = TagCallsFail(other.ec2, "create_tags", "TagLimitExceeded")
        b.extend(fix(other, theirs))

    before_its_revoke(clients, the_other_run_fixes_now)
    (a,) = fix(clients, mine)
    (b_record,) = b
    assert b_record.outcome is Outcome.SKIPPED and "could not be marked" in b_record.reason
    assert a.outcome is Outcome.APPLIED
    assert account.ingress(gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", None),
        ("tcp", 23, 65535, "0.0.0.0/0", None),
    ]


def test_a_mark_that_cannot_be_taken_off_is_a_failed_fix_naming_the_rules(account, clients, aws):
    """B marked A's re-adds, then a person revoked the wide rule: B must take its mark off,
    and cannot. A keeps what the mark names, wider than the person left it; B's record is
    FAILED and names those rules, to revoke by hand."""
    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    other, mine, theirs = two_runs(account, clients, aws, gid)
    b: list[Any] = []

    def the_other_run_fixes_now():
        before_its_revoke(
            other,
            lambda: account.ec2.revoke_security_group_ingress(
                GroupId=gid, IpPermissions=[perm("tcp", 0, 65535)]
            ),
        )
        other.__dict__["ec2"] = TagCallsFail(other.ec2, "delete_tags", "RequestLimitExceeded")
        b.extend(fix(other, theirs))

    before_its_revoke(clients, the_other_run_fixes_now)
    fix(clients, mine)
    (b_record,) = b
    assert b_record.outcome is Outcome.FAILED and "revoke them by hand" in b_record.reason
    assert "(RequestLimitExceeded)" in b_record.reason
    assert set(b_record.after["left_open_rule_ids"]) == {
        r["SecurityGroupRuleId"] for r in rules_of(account, gid)
    }


class RevokeAnswersWithRevokedRules:
    """Wraps the emulator's EC2 client: RevokeSecurityGroupIngress answers, as EC2 does, with
    the rules it revoked (RevokedSecurityGroupRules: ids and content); moto leaves them out."""

    def __init__(self, ec2, before_revoke=None):
        self.ec2, self.before_revoke = ec2, before_revoke

    def __getattr__(self, name):
        return getattr(self.ec2, name)

    def revoke_security_group_ingress(self, **kwargs):
        if self.before_revoke:
            self.before_revoke()
            self.before_revoke = None
        gid = kwargs["GroupId"]
        held = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [gid]}]
        )["SecurityGroupRules"]
        answer = self.ec2.revoke_security_group_ingress(**kwargs)
        now = self.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [gid]}]
        )["SecurityGroupRules"]
        left = {r["SecurityGroupRuleId"] for r in now}
        return {
            **answer,
            "RevokedSecurityGroupRules": [r for r in held if r["SecurityGroupRuleId"] not in left],
        }


def test_a_rule_re_created_as_it_was_meanwhile_is_revoked_and_the_rest_kept(account, clients):
    """The owner deletes the wide rule and adds it again (a new id) between the read and the
    revoke. The revoke, by content, removes the new one: its access was the one judged, so the
    re-added ports stay and the fix is APPLIED (it was taken back, closing every port)."""
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 0, 65535))
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))

    def re_create():
        account.ec2.revoke_security_group_ingress(
            GroupId=gid, IpPermissions=[perm("tcp", 0, 65535)]
        )
        account.ec2.authorize_security_group_ingress(
            GroupId=gid, IpPermissions=[perm("tcp", 0, 65535)]
        )

    clients.__dict__["ec2"] = RevokeAnswersWithRevokedRules(clients.ec2, re_create)
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.APPLIED
    assert account.ingress(gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", None),
        ("tcp", 23, 65535, "0.0.0.0/0", None),
    ]


def test_a_group_owned_by_another_account_is_not_changed(account, clients):
    from dataclasses import replace

    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 22, 22))
    account.instance([gid])
    before = account.ingress(gid)
    snapshot = read(clients, Scope.everything())
    # A group shared with this account (VPC sharing): DescribeSecurityGroupRules' GroupOwnerId
    shared = replace(snapshot.security_groups[gid], owner_id="999988887777")
    snapshot = replace(snapshot, security_groups={gid: shared})
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.SKIPPED and "owned by account 999988887777" in record.reason
    assert account.ingress(gid) == before


def test_a_readd_failing_part_way_leaves_nothing_behind(account, clients):
    # All traffic from the internet; tcp 0-21 already admitted on its own. Re-adding meets the
    # duplicate, goes one permission at a time, and the group's rule quota (60) stops it midway;
    # narrowing in place would need 61 rules too (two added, the rule itself made icmp).
    gid = account.group(perm("-1", -1, -1), perm("tcp", 0, 21))
    fillers = [perm("tcp", 1000 + n, 1000 + n, "10.0.0.0/8") for n in range(57)]
    account.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=fillers)
    before = account.ingress(gid)
    account.instance([gid])
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.FAILED
    assert record.error_code == "RulesPerSecurityGroupLimitExceeded"
    assert "nothing was revoked" in record.reason
    assert account.ingress(gid) == before  # what it added before failing was taken back


# --- GUARDRAIL_SSH_REQUIRE_SSM_ONLINE: never close the only way in ---------------------------
# The emulator reports an instance Online in Systems Manager when its role may make the SSM
# Agent's calls, as its SimulatePrincipalPolicy judges them (emulator/extension.py).


def guarded_group(account):
    from .conftest import CORE

    account.role("core", CORE, profile="core")
    gid = account.group(perm("tcp", 22, 22))
    reachable = account.instance([gid], profile="core")
    return gid, reachable


def held_open(account, clients, gid, online, controls=(SSH, "ssm-instance-role"), **settings):
    """An enforce run with the lockout guard on, where `online` is Online in Systems Manager:
    the report, and the group's fix, SKIPPED with internet SSH left open."""
    report = account.run(clients, "enforce", controls, ssh_require_ssm_online=True, **settings)
    assert report.snapshot is not None and report.snapshot.is_online(online)
    (fix,) = [f for f in report.fixes if f.resource_id == gid]
    assert fix.outcome is Outcome.SKIPPED and account.ingress(gid) != []
    return report, fix


def test_guard_leaves_ssh_open_while_a_running_instance_has_no_session_manager(
    managed_policies, account, clients
):
    gid, _ = guarded_group(account)
    stranded = account.instance([gid])  # no profile: SSH is its only way in
    before = account.ingress(gid)
    report = account.run(clients, "enforce", [SSH], ssh_require_ssm_online=True)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and f"would lock out {stranded}" in fix.reason
    assert account.ingress(gid) == before
    assert {e.result.resource_id for e in report.left_failed} >= {gid, stranded}


def test_guard_does_not_hold_back_a_group_closed_since_the_scan_read_it(
    managed_policies, account, clients
):
    """The owner revoked the rule between the drift scan's read and its fix: nothing is left
    to revoke and nobody to lock out, so the group is done, not skipped as a lockout."""
    from guardrail.scope import Scope

    gid, _ = guarded_group(account)
    account.instance([gid])  # not Online: the guard would hold an open group back
    snapshot = read(clients, Scope.everything())
    account.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[perm("tcp", 22, 22)])
    from guardrail.controls.base import FixContext
    from guardrail.controls.ssh_open import SSH_OPEN
    from guardrail.settings import Settings

    guarded = Settings(mode="enforce", ssh_require_ssm_online=True)
    failed = [r for r in SSH_OPEN.check(snapshot, guarded) if r.status is Status.FAILED]
    (record,) = SSH_OPEN.remediate(failed, snapshot, FixContext(clients, guarded))
    assert record.outcome is Outcome.ALREADY_COMPLIANT and "lock out" not in record.reason
    assert record.before == [] and account.ingress(gid) == []


def test_guard_closes_ssh_when_every_running_instance_is_reachable(
    managed_policies, account, clients
):
    gid, _ = guarded_group(account)
    stopped = account.instance([gid])
    account.ec2.stop_instances(InstanceIds=[stopped])  # nobody is connected to a stopped one
    report = account.run(clients, "enforce", [SSH], ssh_require_ssm_online=True)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.APPLIED and account.ingress(gid) == []


KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_guard_leaves_ssh_open_where_the_preferences_key_refuses_every_session(
    managed_policies, account, clients
):
    """The owners' preferences name their KMS key, which the instance's role may not use: the
    agent is Online, yet every session fails at its encryption handshake. The logging check
    says so; the guard only asked whether it was Online, and closed the only way in."""
    from tests.kms_keys import key_at

    from .test_session_logging_fix import create_preferences

    create_preferences(
        account, {"s3BucketName": "owners-logs", "kmsKeyId": key_at(account.session, KEY)}
    )
    gid, online = guarded_group(account)  # the core policy, nothing of the key
    before = account.ingress(gid)
    report = account.run(
        clients, "enforce", [SSH, "ssm-session-logging"], ssh_require_ssm_online=True
    )
    (fix,) = [f for f in report.fixes if f.resource_id == gid]
    assert fix.outcome is Outcome.SKIPPED and account.ingress(gid) == before
    assert f"would lock out {online} (role core is not allowed kms:" in fix.reason
    assert KEY in fix.reason


def test_guard_leaves_ssh_open_where_the_role_is_refused_the_session_channels(
    managed_policies, account, clients, monkeypatch
):
    """A Deny of ssmmessages:* (here an SCP's answer): the agent's heartbeat
    (ssm:UpdateInstanceInformation) still goes through, so Systems Manager shows it Online, as
    AWS does, but no session can open. The role check reports it; the guard closed SSH."""
    from .conftest import answer_simulations

    answer_simulations(
        monkeypatch,
        "ssmmessages:",
        "implicitDeny",
        OrganizationsDecisionDetail={"AllowedByOrganizations": False},
    )
    gid, online = guarded_group(account)
    _, fix = held_open(account, clients, gid, online)
    assert f"would lock out {online} (role core is refused ssmmessages:" in fix.reason
    # Not Online as well (the heartbeat refused too): named once, for that.
    answer_simulations(monkeypatch, "ssm:UpdateInstanceInformation", "explicitDeny")
    report = account.run(
        clients, "enforce", [SSH, "ssm-instance-role"], ssh_require_ssm_online=True
    )
    (fix,) = [f for f in report.fixes if f.resource_id == gid]
    assert fix.reason.count(online) == 1 and f"{online} (not Online" in fix.reason


def test_guard_leaves_ssh_open_where_a_deny_the_simulation_cannot_evaluate_meets_the_agent(
    managed_policies, account, clients, monkeypatch
):
    """IAM lists every policy's missing context keys, so a plain Deny of ssmmessages:* beside
    any statement naming aws:SourceVpce answers as a Deny that may not apply. Over the core
    policy the role passes (a perimeter may well exempt the agent's calls); the guard cannot
    tell either, and guessing wrong locks people out: SSH stays open, the reason says why."""
    from .conftest import answer_simulations

    answer_simulations(
        monkeypatch, "ssmmessages:", "explicitDeny", MissingContextValues=["aws:SourceVpce"]
    )
    gid, online = guarded_group(account)
    report, fix = held_open(account, clients, gid, online)
    (role,) = [e for e in report.evaluations if e.result.control == "ssm-instance-role"]
    assert role.result.status is Status.PASSED  # the role control's call, unchanged
    assert (
        f"{online} (role core meets a Deny the simulation cannot evaluate on "
        "ssmmessages:CreateControlChannel" in fix.reason
    )


@pytest.mark.parametrize("gone", ["role", "profile"])
def test_guard_leaves_ssh_open_on_an_online_instance_without_a_role_to_judge(
    managed_policies, account, clients, monkeypatch, gone
):
    """Systems Manager's Online is the last heartbeat's (every 5 minutes): a role taken out of
    the profile, or the profile taken off the instance, since then leaves the instance Online
    with no role the reader can judge (as Default Host Management's is not judged). The guard
    counted it reachable and closed SSH."""
    import emulator.extension as extension

    gid, online = guarded_group(account)
    me = account.session.client("sts").get_caller_identity()["Account"]
    heard = extension.managed_instances(me, account.session.region_name)  # heard with its role
    assert [i["InstanceId"] for i in heard] == [online]
    monkeypatch.setattr(extension, "managed_instances", lambda *_args, **_kwargs: heard)
    if gone == "role":
        account.iam.remove_role_from_instance_profile(InstanceProfileName="core", RoleName="core")
    else:
        (association,) = account.ec2.describe_iam_instance_profile_associations()[
            "IamInstanceProfileAssociations"
        ]
        account.ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
    _, fix = held_open(account, clients, gid, online, controls=[SSH])
    assert f"{online} (Online, no instance role: its session calls are not judged)" in fix.reason


def test_guard_leaves_ssh_open_on_an_online_instance_whose_role_it_did_not_simulate(
    account, clients
):
    """A role of the owners' with only the heartbeat (no core policy, and existing roles not to
    be modified, so nothing will give it one): Systems Manager shows the instance Online, the
    role is never simulated for the session calls, and the guard took "Online" for reachable."""
    heartbeat = {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": "*"}
    account.role("minimal", profile="minimal")
    account.iam.put_role_policy(
        RoleName="minimal",
        PolicyName="heartbeat",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [heartbeat]}),
    )
    gid = account.group(perm("tcp", 22, 22))
    online = account.instance([gid], profile="minimal")
    _, fix = held_open(account, clients, gid, online, modify_existing_roles=False)
    assert f"{online} (Online, role minimal: its session calls are not judged)" in fix.reason


def test_guard_leaves_ssh_open_on_an_instance_default_host_management_put_online(
    managed_policies, account, clients
):
    """Default Host Management brings an IMDSv2 instance without a profile Online with the role
    its setting names, which the guardrail does not read: the role control passes it (DHMC
    accepted), and the guard, unable to judge its session calls, keeps SSH open."""
    account.role("dhmc", CORE)
    account.ssm.update_service_setting(
        SettingId="/ssm/managed-instance/default-ec2-instance-management-role",
        SettingValue="service-role/dhmc",
    )
    gid = account.group(perm("tcp", 22, 22))
    managed = account.instance([gid], imds_tokens="required")  # no profile
    report, fix = held_open(account, clients, gid, managed, accept_dhmc=True)
    (role,) = [e.result for e in report.evaluations if e.result.control == "ssm-instance-role"]
    assert role.status is Status.PASSED and "Default Host Management" in role.reason
    assert report.fixes == [fix]
    assert f"{managed} (Online, no instance role: its session calls are not judged)" in fix.reason


def test_guard_counts_an_instance_of_unknown_state_as_maybe_running(account, clients):
    """DescribeInstances leaves State out: the instance is judged (its group FAILED), and the
    guard counted only pending and running, so it closed the only way in to one not Online."""
    gid = account.group(perm("tcp", 22, 22))
    iid = account.instance([gid])  # no profile: not Online

    def without_state(parsed, **_):
        for reservation in parsed.get("Reservations", []):
            for instance in reservation["Instances"]:
                instance.pop("State", None)

    clients.ec2.meta.events.register("after-call.ec2.DescribeInstances", without_state)
    before = account.ingress(gid)
    report = account.run(clients, "enforce", [SSH], ssh_require_ssm_online=True)
    (fix,) = [f for f in report.fixes if f.resource_id == gid]
    assert fix.outcome is Outcome.SKIPPED and account.ingress(gid) == before
    assert f"would lock out {iid} (not Online in Systems Manager)" in fix.reason


def test_guard_survives_an_instance_terminated_between_the_reads(
    managed_policies, account, clients
):
    """Systems Manager fails a whole DescribeInstanceInformation batch with InvalidInstanceId
    when one id is terminated: the scan reads its managed instances unfiltered instead of
    stopping, and only the instance that went away is missing from them. That one still reads
    as running (DescribeInstances came first), so the guard keeps the group open until the next
    run, the cautious side of a race of seconds."""
    gid, reachable = guarded_group(account)
    leaving = account.instance([gid], profile="core")

    def terminate_once(**_):
        if account.ec2.describe_instances(InstanceIds=[leaving])["Reservations"][0]["Instances"][0][
            "State"
        ]["Name"] in ("pending", "running"):
            account.ec2.terminate_instances(InstanceIds=[leaving])

    clients.ssm.meta.events.register("before-call.ssm.DescribeInstanceInformation", terminate_once)
    report = account.run(clients, "enforce", [SSH], ssh_require_ssm_online=True)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and leaving in fix.reason
    assert reachable not in fix.reason  # its Online status was still read


def test_guard_sees_instances_outside_a_targeted_scope(managed_policies, account, clients):
    from guardrail.scope import Scope

    gid, reachable = guarded_group(account)
    stranded = account.instance([gid])
    # An event about the reachable instance alone still must not cut the other one off.
    scope = Scope(instance_ids=frozenset({reachable}))
    report = account.run(clients, "enforce", [SSH], scope=scope, ssh_require_ssm_online=True)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and stranded in fix.reason
    judged = {
        e.result.resource_id: e
        for e in report.evaluations
        if e.result.resource_type.value == "AwsEc2Instance"
    }
    assert set(judged) == {reachable, stranded}
    # The stranded one is reported only because the group's fix concerned it: with the reason.
    assert judged[stranded].result.follows_fix and judged[stranded].fixes == (fix,)
    # Without the guard (the default) the same event closes the group.
    report = account.run(clients, "enforce", [SSH], scope=scope)
    assert report.fixes[0].outcome is Outcome.APPLIED and account.ingress(gid) == []


# --- the real fix, on random groups: never widens, closes internet SSH, keeps the rest ---------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.unit.test_ssh_open import PROBES, _admits, rules  # noqa: E402


def as_permission(r):
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": r.cidr_ipv6}]}
        if r.cidr_ipv6
        else {"IpRanges": [{"CidrIp": r.cidr_ipv4}]}
    )
    return {"IpProtocol": r.protocol, "FromPort": r.from_port, "ToPort": r.to_port, **ranges}


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        rules(),
        min_size=1,
        max_size=5,
        # EC2 holds one rule per (protocol, ports, source): "6" is tcp, "17" udp
        unique_by=lambda r: (
            {"6": "tcp", "17": "udp"}.get(r.protocol, r.protocol),
            r.from_port,
            r.to_port,
            r.cidr,
        ),
    )
)
def test_the_fix_as_applied_never_widens_and_only_drops_internet_ssh(account, clients, group_rules):
    from guardrail.model import SecurityGroupRule
    from guardrail.scope import Scope

    gid = account.group()
    account.ec2.authorize_security_group_ingress(
        GroupId=gid, IpPermissions=[as_permission(r) for r in group_rules]
    )

    def current():
        raw = account.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [gid]}]
        )
        return [
            r for r in map(SecurityGroupRule.from_api, raw["SecurityGroupRules"]) if not r.is_egress
        ]

    before = current()
    account.instance([gid])
    account.run(clients, "enforce", [SSH], scope=Scope(group_ids=frozenset({gid})))
    after = current()
    for probe in PROBES:
        protocol, port, source = probe
        now, was = any(_admits(r, *probe) for r in after), any(_admits(r, *probe) for r in before)
        assert was or not now, f"the fix widened access to {probe}"
        if protocol == "tcp" and port == 22:
            # closed to the internet; a private source keeps SSH only through its own rule
            if source in ("8.8.8.8", "2600::1"):
                assert not now, f"internet SSH still open: {probe}"
        elif was and protocol != "esp" and not (protocol == "icmpv6") ^ (":" in source):
            assert now, f"the fix broke {probe}"  # (exotic protocols of all-traffic rules go)


@pytest.mark.parametrize(
    "rule",
    [perm("tcp", 22, 22), perm("tcp", 0, 65535)],
    ids=["revoke", "re-add"],  # the first call that finds the group gone
)
def test_a_group_deleted_between_the_read_and_the_fix_counts_as_done(account, clients, rule):
    """The owner moves the instance off the open group and deletes it while the event is read:
    EC2 answers InvalidGroup.NotFound to the fix's first call (the re-add of the other ports, or
    the revoke when there are none). Nothing admits internet SSH any more: done, not FAILED."""
    from guardrail.scope import Scope

    gid = account.group(rule)
    iid = account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    account.move(iid, [account.group()])
    account.ec2.delete_security_group(GroupId=gid)
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.ALREADY_COMPLIANT and record.outcome.ok
    assert record.reason == "security group no longer exists" and record.error_code is None
    assert record.gone  # the group's own result is archived, not PASSED as if fixed


def fill(account, gid, rules):
    """Private rules up to `rules` inbound rules in all (EC2's default quota is 60)."""
    room = rules - len(account.ingress(gid))
    fillers = [perm("tcp", 9000 + n, 9000 + n, "10.0.0.0/8") for n in range(room)]
    account.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=fillers)


def internet_rules(account, gid):
    return [r for r in account.ingress(gid) if r[3] == "0.0.0.0/0"]


def rule_ids(account, gid):
    return {
        r["SecurityGroupRuleId"]
        for r in account.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [gid]}]
        )["SecurityGroupRules"]
        if r.get("CidrIpv4") == "0.0.0.0/0" and not r["IsEgress"]
    }


@pytest.mark.parametrize("order", ["wide rule listed first", "narrow rule listed first"])
def test_at_the_quota_two_rules_are_narrowed_in_place_whatever_order_ec2_lists_them(
    account, clients, order
):
    """tcp 0-65535 and tcp 0-22 from the internet in a full group: 0-22 narrowed to 0-21 and
    0-65535 to 23-65535 need no new rule. With the wide rule listed first it was planned first
    (23-65535 in place, 0-21 to add), the add went over the quota and the fix FAILED, SSH left
    open, asking to free rules that were not needed."""
    wide, narrow = perm("tcp", 0, 65535, description="wide"), perm("tcp", 0, 22, description="n")
    gid = account.group(*([wide, narrow] if order.startswith("wide") else [narrow, wide]))
    fill(account, gid, 60)
    account.instance([gid])
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.APPLIED, fix.reason
    assert sorted(r[:4] for r in internet_rules(account, gid)) == [
        ("tcp", 0, 21, "0.0.0.0/0"),
        ("tcp", 23, 65535, "0.0.0.0/0"),
    ]
    assert len(account.ingress(gid)) == 60


@pytest.mark.parametrize(
    ("low", "high", "kept"),
    [
        (22, 8080, [("tcp", 23, 8080, "0.0.0.0/0", "app")]),  # ends with as many rules
        (0, 1024, [("tcp", 0, 21, "0.0.0.0/0", "app"), ("tcp", 23, 1024, "0.0.0.0/0", "app")]),
    ],
)
def test_a_group_at_its_rules_quota_is_closed_by_narrowing_the_rule_in_place(
    account, clients, low, high, kept
):
    """Re-adding the other ports before the revoke needs a free rule per range, which a group at
    or near EC2's quota of 60 inbound rules lacks (RulesPerSecurityGroupLimitExceeded): the rule
    is narrowed in place (ModifySecurityGroupRules), its other range added first. The group
    ends within the quota with every other port still open, and the rule keeps its id and
    description; a second run has nothing to do."""
    gid = account.group(perm("tcp", low, high, description="app"))
    fill(account, gid, 60 - len(kept) + 1)  # the end state fits; the re-add-first path does not
    (rule_id,) = rule_ids(account, gid)
    account.instance([gid])
    before = account.ingress(gid)
    report = account.run(clients, "enforce", [SSH])
    (fix,) = report.fixes
    assert fix.outcome is Outcome.APPLIED, fix.reason
    assert "quota" in fix.reason and "in place" in fix.reason
    assert fix.after["narrowed_in_place"][0]["SecurityGroupRuleId"] == rule_id
    assert internet_rules(account, gid) == kept
    assert rule_id in rule_ids(account, gid) and len(account.ingress(gid)) <= 60
    assert account.run(clients, "enforce", [SSH]).fixes == []
    # The reason says how to undo it (the rule it added, by id; the narrowed one set back):
    # followed, the group is as it was, the rule with its id.
    assert all(i in fix.reason for i in fix.after["new_rule_ids"])
    run_undo(account, fix.reason)
    assert account.ingress(gid) == before and rule_id in rule_ids(account, gid)


def test_two_runs_narrowing_one_rule_at_the_quota_keep_the_other_ports(
    account, clients, aws, monkeypatch
):
    """An all-traffic rule in a group near its quota; two runs fix it at once (an event
    delivered twice). Run X adds tcp and udp for it, then re-reads the group; before that, run
    Y finds those rules in place and narrows the rule itself to icmp. X finds the rule changed
    and takes back what it added, except what Y marked as relied on: tcp and udp stay open."""
    from guardrail.clients import AwsClients
    from guardrail.controls.ssh_open import SshOpenToInternet

    gid = account.group(perm("-1", -1, -1, description="app"))
    fill(account, gid, 57)  # re-adding before revoking needs 61 rules: both narrow in place
    account.instance([gid])
    read, reads, y_fixes = SshOpenToInternet._current_rules, [], []

    def y_runs_before_xs_re_read(ec2, group_ids):
        reads.append(group_ids)
        if len(reads) == 3:  # X: the scan's re-read, the quota's, then this one after adding
            other = AwsClients(session=aws, region="us-east-1")
            y_fixes.extend(account.run(other, "enforce", [SSH]).fixes)
        return read(ec2, group_ids)

    monkeypatch.setattr(SshOpenToInternet, "_current_rules", staticmethod(y_runs_before_xs_re_read))
    (x,) = account.run(clients, "enforce", [SSH]).fixes
    (y,) = y_fixes
    assert y.outcome is Outcome.APPLIED and "narrowed 1 rule(s) in place" in y.reason
    assert x.outcome is Outcome.SKIPPED and "changed or revoked meanwhile" in x.reason
    left = internet_rules(account, gid)
    assert ("tcp", 0, 21, "0.0.0.0/0", "app") in left and (
        "tcp",
        23,
        65535,
        "0.0.0.0/0",
        "app",
    ) in left
    assert ("udp", 0, 65535, "0.0.0.0/0", "app") in left
    assert not any(r[0] in ("-1", "tcp") and r[1] <= 22 <= r[2] for r in left)


def test_a_group_too_full_even_to_narrow_is_left_as_it_was_saying_so(account, clients):
    """60 rules, one of them 0-1024 from the internet: keeping 0-21 and 23-1024 needs a 61st
    rule. Nothing is revoked or narrowed (less access than before is never the way out), and
    the record says what to do."""
    gid = account.group(perm("tcp", 0, 1024, description="app"))
    fill(account, gid, 60)
    account.instance([gid])
    before = account.ingress(gid)
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.FAILED and fix.error_code == "RulesPerSecurityGroupLimitExceeded"
    assert "quota" in fix.reason and "remove rules" in fix.reason
    assert account.ingress(gid) == before


@pytest.mark.parametrize("reads", [2, 3], ids=["before-the-add", "after-the-add"])
def test_a_rule_changed_before_it_is_narrowed_is_not_written_over(
    account, clients, monkeypatch, reads
):
    """ModifySecurityGroupRules writes whatever the rule holds: an owner who changed the rule
    meanwhile (here to a private network) keeps their change, and what the fix added is taken
    back. The change lands before the narrowing's first read of the group, or between its
    re-add and its last read."""
    from guardrail.controls.ssh_open import SshOpenToInternet

    gid = account.group(perm("tcp", 0, 1024, description="app"))
    fill(account, gid, 59)
    (rule_id,) = rule_ids(account, gid)
    account.instance([gid])
    read = SshOpenToInternet._current_rules
    calls = []

    def owner_changes_it_first(ec2, group_ids):
        calls.append(group_ids)  # the drift scan's read, then the narrowing's two
        if len(calls) == reads:
            narrow(account, gid, rule_id, 0, 1024, "10.1.0.0/16")
        return read(ec2, group_ids)

    monkeypatch.setattr(SshOpenToInternet, "_current_rules", staticmethod(owner_changes_it_first))
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.SKIPPED and "changed or revoked meanwhile" in fix.reason
    assert ("tcp", 0, 1024, "10.1.0.0/16") in [r[:4] for r in account.ingress(gid)]
    assert internet_rules(account, gid) == []  # the 0-21 the fix added taken back
    assert len(calls) == 3  # the change was made where the test meant it


def test_a_rule_narrowed_in_place_keeps_the_description_its_owner_gave_it_meanwhile(
    account, clients
):
    """At the quota the rule is narrowed in place, and ModifySecurityGroupRules writes its
    description too. The owner renamed it after the read: the narrowed rule keeps their name (it
    went back to the one read), and the undo restores the rule with it."""
    from guardrail.scope import Scope

    gid = account.group(perm("tcp", 22, 8080, description="app"))
    fill(account, gid, 60)
    (rule_id,) = rule_ids(account, gid)
    account.instance([gid])
    snapshot = read(clients, Scope(group_ids=frozenset({gid})))
    narrow(account, gid, rule_id, 22, 8080, "0.0.0.0/0", description="owner-edited")
    (record,) = fix(clients, snapshot)
    assert record.outcome is Outcome.APPLIED, record.reason
    assert internet_rules(account, gid) == [("tcp", 23, 8080, "0.0.0.0/0", "owner-edited")]
    run_undo(account, record.reason)
    assert internet_rules(account, gid) == [("tcp", 22, 8080, "0.0.0.0/0", "owner-edited")]


def test_an_all_traffic_rule_at_the_quota_becomes_its_last_kept_protocol_in_place(account, clients):
    """All traffic from the internet in a group of 57 rules: re-adding tcp 0-21, tcp 23-65535,
    udp and icmp first needs 61. Narrowed in place, the rule itself becomes icmp (its id kept)
    and the other three are added: 60 rules, every protocol but internet SSH still admitted."""
    gid = account.group(perm("-1", -1, -1, description="all"))
    fill(account, gid, 57)
    (rule_id,) = rule_ids(account, gid)
    account.instance([gid])
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.APPLIED, fix.reason
    assert "other IP protocols" in fix.reason  # what an all-traffic rule cannot keep
    assert internet_rules(account, gid) == [
        ("icmp", -1, -1, "0.0.0.0/0", "all"),
        ("tcp", 0, 21, "0.0.0.0/0", "all"),
        ("tcp", 23, 65535, "0.0.0.0/0", "all"),
        ("udp", 0, 65535, "0.0.0.0/0", "all"),
    ]
    assert rule_id in rule_ids(account, gid) and len(account.ingress(gid)) == 60


def test_narrowing_never_makes_a_rule_a_copy_of_another(account, clients):
    """tcp 0-65535 and all traffic, both from the internet, at the quota: both would keep tcp
    23-65535. One rule takes it, the other is narrowed to what it alone keeps (or revoked): no
    duplicate rule (EC2 refuses one, and the whole narrowing with it), every port kept."""
    gid = account.group(perm("tcp", 0, 65535, description="a"), perm("-1", -1, -1, description="c"))
    fill(account, gid, 57)
    account.instance([gid])
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.APPLIED, fix.reason
    internet = [r[:4] for r in internet_rules(account, gid)]
    assert sorted(internet) == [
        ("icmp", -1, -1, "0.0.0.0/0"),
        ("tcp", 0, 21, "0.0.0.0/0"),
        ("tcp", 23, 65535, "0.0.0.0/0"),
        ("udp", 0, 65535, "0.0.0.0/0"),
    ]
    assert len(account.ingress(gid)) <= 60


def test_a_rule_admitting_only_ssh_is_revoked_first_to_make_room(account, clients):
    """60 rules, among them tcp 22 and tcp 0-1024 from the internet: revoking the first frees
    the rule that keeping 0-21 needs. The group ends at 60 rules, internet SSH closed."""
    gid = account.group(perm("tcp", 22, 22), perm("tcp", 0, 1024, description="app"))
    fill(account, gid, 60)
    account.instance([gid])
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.APPLIED, fix.reason
    assert internet_rules(account, gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", "app"),
        ("tcp", 23, 1024, "0.0.0.0/0", "app"),
    ]
    assert len(account.ingress(gid)) == 60


def test_a_group_deleted_while_narrowing_is_done(account, clients, monkeypatch):
    """DescribeSecurityGroupRules answers a deleted group with no rules, not an error: the
    exposure is gone, and the finding with it (not left FAILED for the next run)."""
    from guardrail.controls.ssh_open import SshOpenToInternet

    gid = account.group(perm("tcp", 22, 8080, description="app"))
    fill(account, gid, 60)
    account.instance([gid])
    read = SshOpenToInternet._current_rules
    calls = []

    def deleted_at_the_last_read(ec2, group_ids):
        calls.append(group_ids)  # the drift scan's read, then the narrowing's two
        return {} if len(calls) == 3 else read(ec2, group_ids)

    monkeypatch.setattr(SshOpenToInternet, "_current_rules", staticmethod(deleted_at_the_last_read))
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.ALREADY_COMPLIANT and len(calls) == 3


def test_re_adds_that_cannot_be_taken_back_are_named_for_a_person(account, clients):
    """All traffic from the internet, tcp 0-21 already admitted apart: re-adding goes one
    permission at a time, tcp 23-65535 gets in, udp is refused (InternalError), and taking tcp
    23-65535 back is refused too. Nothing was revoked, and the record names the rule a person
    must revoke (the all-traffic rule still admits it, so no access was widened)."""
    gid = account.group(perm("-1", -1, -1), perm("tcp", 0, 21))
    account.instance([gid])
    internal_error = error_answer("InternalError", 500)

    def udp_refused(params, **_):
        # The query-protocol body: IpPermissions.1.IpProtocol, IpPermissions.2.IpProtocol ...
        sent = [v for k, v in params["body"].items() if k.endswith(".IpProtocol")]
        return internal_error() if sent == ["udp"] else None

    events = clients.ec2.meta.events
    events.register("before-call.ec2.AuthorizeSecurityGroupIngress", udp_refused)
    events.register(
        "before-call.ec2.RevokeSecurityGroupIngress", error_answer("UnauthorizedOperation", 500)
    )
    (fix,) = account.run(clients, "enforce", [SSH]).fixes
    assert fix.outcome is Outcome.FAILED and "nothing was revoked" in fix.reason
    assert "could not be taken back (UnauthorizedOperation)" in fix.reason
    assert "revoke tcp 23-65535 from 0.0.0.0/0" in fix.reason
    assert ("-1", -1, -1, "0.0.0.0/0", None) in account.ingress(gid)  # still there


# --- answers lost while another run fixes the same rule -------------------------------------------


def test_a_lost_re_add_answer_never_claims_another_runs_re_adds(account, clients, aws):
    """Run B closes the rule first (its re-adds are tagged for the same rule). Run A's re-add is
    refused as a duplicate, and that answer is lost; the retry answers "duplicate" again. Those
    rules are B's, not A's lost try's (their run tag says so): A counts on them and, finding
    the rule gone, leaves them. Before, A claimed them and took them back: web ports closed."""
    gid = account.group(perm("tcp", 0, 65535, description="web+ssh"))
    account.instance([gid])
    other, mine, theirs = two_runs(account, clients, aws, gid)
    b = []

    def b_closes_then_the_answer_is_lost(params, request):
        from botocore.exceptions import ReadTimeoutError

        b.extend(fix(other, theirs))
        with contextlib.suppress(ClientError):  # A's try: a duplicate of B's re-adds
            account.ec2.authorize_security_group_ingress(**params)
        raise ReadTimeoutError(endpoint_url=request.url)

    on_first_try(clients, "AuthorizeSecurityGroupIngress", b_closes_then_the_answer_is_lost)
    (a,) = fix(clients, mine)
    assert [r.outcome for r in b] == [Outcome.APPLIED]
    assert a.outcome is Outcome.ALREADY_COMPLIANT
    assert account.ingress(gid) == [
        ("tcp", 0, 21, "0.0.0.0/0", "web+ssh"),
        ("tcp", 23, 65535, "0.0.0.0/0", "web+ssh"),
    ]


def test_a_revoke_answer_lost_to_an_ssl_error_keeps_the_other_ports(account, clients):
    """An SSL error while reading the answer comes after EC2 acted: like a read timeout."""
    from botocore.exceptions import SSLError

    gid = account.group(perm("tcp", 0, 65535, description="web+ssh"))
    account.instance([gid])

    def done_unanswered(params, request):
        account.ec2.revoke_security_group_ingress(**params)
        raise SSLError(endpoint_url=request.url, error="decryption failed or bad record mac")

    on_first_try(clients, "RevokeSecurityGroupIngress", done_unanswered)
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.APPLIED
    assert ("tcp", 23, 65535, "0.0.0.0/0", "web+ssh") in account.ingress(gid)


def test_narrowing_given_up_takes_its_marks_off_every_rule_it_left(account, clients, monkeypatch):
    """At the quota, this run counts on another run's re-adds for rule L (marked) and narrows
    L and M. A person changes M first: the run gives up and takes its marks off L's re-adds
    too (left, they would keep those rules open after the person closes L)."""
    from guardrail.controls.ssh_open import GUARDRAIL_TAG, RELIED_ON_TAG, SshOpenToInternet

    gid = account.group(perm("-1", -1, -1, description="L"), perm("tcp", 0, 1024, description="M"))
    ids = {r["Description"]: r["SecurityGroupRuleId"] for r in rules_of(account, gid)}
    account.ec2.authorize_security_group_ingress(  # another run's re-adds for L
        GroupId=gid,
        IpPermissions=[
            perm("tcp", 0, 21, description="L"),
            perm("tcp", 23, 65535, description="L"),
            perm("udp", 0, 65535, description="L"),
        ],
        TagSpecifications=[
            {
                "ResourceType": "security-group-rule",
                "Tags": [{"Key": GUARDRAIL_TAG, "Value": ids["L"]}],
            }
        ],
    )
    theirs = {r["SecurityGroupRuleId"] for r in rules_of(account, gid)} - set(ids.values())
    fill(account, gid, 59)
    account.instance([gid])
    read_rules, reads = SshOpenToInternet._current_rules, []

    def person_changes_m_before_the_last_read(ec2, group_ids):
        reads.append(group_ids)
        if len(reads) == 4:  # scan, quota, marking, then the read before narrowing
            narrow(account, gid, ids["M"], 20, 30, "0.0.0.0/0")
        return read_rules(ec2, group_ids)

    monkeypatch.setattr(
        SshOpenToInternet, "_current_rules", staticmethod(person_changes_m_before_the_last_read)
    )
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.SKIPPED and f"{ids['M']} changed" in record.reason
    marks = [
        t["Key"]
        for r in rules_of(account, gid)
        if r["SecurityGroupRuleId"] in theirs
        for t in r.get("Tags", [])
        if t["Key"].startswith(RELIED_ON_TAG)
    ]
    assert len(theirs) == 3 and marks == []


def test_narrowing_marks_the_other_runs_re_adds_it_finds_while_adding(
    account, clients, monkeypatch
):
    """At the quota, another run re-adds tcp and udp for the rule just after this run read the
    group; this run's own re-add of them is refused as a duplicate (EC2 may answer so at the
    quota). It narrows the rule counting on them, so it marks them as relied on: the other run,
    finding the rule narrowed, keeps them."""
    from botocore.awsrequest import AWSResponse
    from guardrail.controls.ssh_open import GUARDRAIL_TAG, RELIED_ON_TAG, SshOpenToInternet

    gid = account.group(perm("-1", -1, -1, description="app"))
    fill(account, gid, 57)
    (rule_id,) = rule_ids(account, gid)
    account.instance([gid])
    theirs = [perm("tcp", 0, 21), perm("tcp", 23, 65535), perm("udp", 0, 65535)]
    read_rules, reads = SshOpenToInternet._current_rules, []

    def the_other_run_adds_after_the_quota_read(ec2, group_ids):
        rules = read_rules(ec2, group_ids)
        reads.append(group_ids)
        if len(reads) == 2:  # the scan's read, then the one planning the narrowing
            account.ec2.authorize_security_group_ingress(
                GroupId=gid,
                IpPermissions=theirs,
                TagSpecifications=[
                    {
                        "ResourceType": "security-group-rule",
                        "Tags": [{"Key": GUARDRAIL_TAG, "Value": rule_id}],
                    }
                ],
            )
        return rules

    sent = {}

    def duplicate(request, **_):  # at the quota, EC2 may refuse a duplicate as a duplicate
        held = {r[:4] for r in account.ingress(gid)}
        wanted = {
            (p["IpProtocol"], p["FromPort"], p["ToPort"], r["CidrIp"])
            for p in sent["IpPermissions"]
            for r in p.get("IpRanges", [])
        }
        if not wanted <= held:
            return None
        body = b"<Response><Errors><Error><Code>InvalidPermission.Duplicate</Code></Error></Errors></Response>"

        class Raw:
            def stream(self, **_):
                yield body

        return AWSResponse(request.url, 400, {}, Raw())

    monkeypatch.setattr(
        SshOpenToInternet,
        "_current_rules",
        staticmethod(the_other_run_adds_after_the_quota_read),
    )
    events = clients.ec2.meta.events
    events.register(
        "before-parameter-build.ec2.AuthorizeSecurityGroupIngress",
        lambda params, **_: sent.update(params),
    )
    events.register_first("before-send.ec2.AuthorizeSecurityGroupIngress", duplicate)
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.APPLIED, record.reason
    assert "narrowed 1 rule(s) in place" in record.reason
    marked = [
        r
        for r in rules_of(account, gid)
        if any(t["Key"] == GUARDRAIL_TAG for t in r.get("Tags", []))
        and any(t["Key"].startswith(RELIED_ON_TAG) for t in r.get("Tags", []))
    ]
    assert len(marked) == 3


def test_a_narrowing_re_add_failing_part_way_leaves_nothing_behind(account, clients):
    """At the quota, the narrowing's re-adds go one at a time (a duplicate refused the batch):
    tcp 0-21 gets in, the next is refused. Nothing was revoked, and what got in is taken back."""
    gid = account.group(perm("-1", -1, -1, description="app"))
    fill(account, gid, 57)
    before = account.ingress(gid)
    account.instance([gid])
    calls = []
    duplicate = error_answer("InvalidPermission.Duplicate")
    denied = error_answer("UnauthorizedOperation")

    def answer(params, **kwargs):
        calls.append(params)
        return {2: duplicate, 4: denied}.get(len(calls), lambda **_: None)(**kwargs)

    clients.ec2.meta.events.register("before-call.ec2.AuthorizeSecurityGroupIngress", answer)
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is Outcome.FAILED and "nothing was revoked" in record.reason
    assert account.ingress(gid) == before


@pytest.mark.parametrize("fails", ["marking", "narrowing", "changed"])
def test_a_narrowing_stopped_after_revoking_ssh_only_rules_records_them(
    account, clients, monkeypatch, fails
):
    """At the quota, the SSH-only rule S goes first (it keeps nothing) to free room; the fix
    then stops before narrowing the all-traffic rule A: marking another run's re-adds fails,
    EC2 refuses the narrowing, or a person changes A meanwhile. S stays revoked (it admitted
    nothing else) and the record says so, with S under After for an undo; A is as it was (or
    as the person left it), and what was added is taken back."""
    from guardrail.controls.ssh_open import SshOpenToInternet

    gid = account.group(perm("tcp", 22, 22, description="S"), perm("-1", -1, -1, description="A"))
    ids = {r["Description"]: r["SecurityGroupRuleId"] for r in rules_of(account, gid)}
    fill(account, gid, 58)  # re-adding A's ports first needs 62 rules: narrowing in place
    account.instance([gid])
    before = [r for r in account.ingress(gid) if r[4] != "S"]
    if fails == "marking":
        mark, calls = SshOpenToInternet._mark_relied_on, []

        def second_refused(ec2, gid_, added, key):
            calls.append(added)
            return ({}, "UnauthorizedOperation") if len(calls) == 2 else mark(ec2, gid_, added, key)

        monkeypatch.setattr(SshOpenToInternet, "_mark_relied_on", staticmethod(second_refused))
    elif fails == "narrowing":
        clients.ec2.meta.events.register(
            "before-call.ec2.ModifySecurityGroupRules", error_answer("UnauthorizedOperation")
        )
    else:
        read_rules, reads = SshOpenToInternet._current_rules, []
        changed = ("tcp", 0, 1024, "0.0.0.0/0", "A")

        def person_changes_a_before_the_last_read(ec2, group_ids):
            reads.append(group_ids)
            if len(reads) == 3:  # the scan's, the quota's, then the read before narrowing
                narrow(account, gid, ids["A"], 0, 1024, "0.0.0.0/0")
                before[before.index(("-1", -1, -1, "0.0.0.0/0", "A"))] = changed
            return read_rules(ec2, group_ids)

        monkeypatch.setattr(
            SshOpenToInternet,
            "_current_rules",
            staticmethod(person_changes_a_before_the_last_read),
        )
    (record,) = account.run(clients, "enforce", [SSH]).fixes
    assert record.outcome is (Outcome.FAILED if fails == "narrowing" else Outcome.SKIPPED)
    assert "revoked only 1 rule(s) admitting nothing else" in record.reason, record.reason
    assert "nothing was revoked" not in record.reason
    assert [r["SecurityGroupRuleId"] for r in record.after] == [ids["S"]]
    assert account.ingress(gid) == before
