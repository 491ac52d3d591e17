"""ssh-open-to-internet: TCP 22 admitted from 0.0.0.0/0 or ::/0 by a security group of an instance.

Counts only tcp (or all-traffic, protocol -1) rules whose range includes 22 and whose source is the
whole internet (any /0), written as a CIDR or held by a prefix list the rule references; UDP 22,
private CIDRs and group references are not internet SSH. The fix revokes exactly the offending
CIDR rule (by its content as read: protocol, ports, CIDR) after re-adding whatever else that rule
admitted, so no other port or protocol loses access; in a group at its rules quota it narrows the
rule in place instead. A prefix list's rule is left to a person: revoking it would cut off the
list's other entries, and editing the list changes everything else that uses it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from ..model import (
    AccountSnapshot,
    FixRecord,
    Instance,
    Outcome,
    ResourceType,
    Result,
    SecurityGroup,
    SecurityGroupRule,
    Status,
    exempt_named,
    is_internet,
    network,
    undo_part,
)
from ..paging import security_group_rules
from ..settings import Settings
from .base import (
    AWS_ERRORS,
    OUT_OF_TIME,
    FixContext,
    Permission,
    answer_may_be_lost,
    error_code,
)
from .session_logging import stops_sessions, unusable_key

logger = logging.getLogger(__name__)

SSH_PORT = 22
ALL_TRAFFIC = ("-1", "all")
TCP = ("tcp", "6")
ALREADY_GONE = ("InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound")
GROUP_GONE = ("InvalidGroup.NotFound", "InvalidGroupId.NotFound")
GROUP_DELETED = "security group no longer exists"
DUPLICATE = ("InvalidPermission.Duplicate",)
RULE_QUOTA = "RulesPerSecurityGroupLimitExceeded"  # inbound rules per group (60 by default)
GUARDRAIL_TAG = "ssm-guardrail:replaces"
# Put on re-added rules a run found already there (another run's, for the same rule) before it
# revokes that rule counting on them: the run that made them must not take them back. Each run
# writes its own key (the prefix and a token), so taking its mark off never takes another's.
RELIED_ON_TAG = "ssm-guardrail:relied-on"
# The run that re-added the rule (the token its marks use too): a retry that answers "duplicate"
# after a lost answer finds the rules its own lost try made, not another run's for the same rule.
RUN_TAG = "ssm-guardrail:run"
MAX_TAGS = 50  # tags per EC2 resource (a security group rule included)
MARK_ROOM = 5  # tags left free on a re-added rule for runs' marks
OURS = 2  # tags of ours on a re-added rule: GUARDRAIL_TAG and RUN_TAG
ADDRESS = {4: "a public IPv4 address", 6: "a global IPv6 address"}
NO_ADDRESS = {4: "no public IPv4 address", 6: "no global IPv6 address"}
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": "-1"}


def admits_internet_ssh(rule: SecurityGroupRule) -> bool:
    """True when an ingress rule's CIDR lets the whole internet reach TCP 22."""
    return is_internet(rule.cidr) and reaches_ssh_port(rule)


def reaches_ssh_port(rule: SecurityGroupRule) -> bool:
    """True when an ingress rule admits TCP 22, whatever its source."""
    if rule.is_egress:
        return False
    protocol = rule.protocol.lower()
    if protocol in ALL_TRAFFIC:
        return True
    if protocol not in TCP:
        return False
    low, high = rule.ports
    return low <= SSH_PORT <= high


def internet_ssh_rules(
    group: SecurityGroup, prefix_lists: Mapping[str, Sequence[str]]
) -> list[SecurityGroupRule]:
    """The group's ingress rules that admit TCP 22 from the internet: by their CIDR, or through
    a prefix list (`prefix_lists`: the internet CIDRs each list holds, as read) holding one; such
    a rule is listed once per internet entry, that entry as its source (its PrefixListId stays,
    so it is never revoked by content as a CIDR rule would be)."""
    found = []
    for rule in group.ingress:
        if admits_internet_ssh(rule):
            found.append(rule)
        elif rule.prefix_list_id and reaches_ssh_port(rule):
            for cidr in prefix_lists.get(rule.prefix_list_id, ()):
                v6 = ":" in cidr
                found.append(
                    replace(rule, cidr_ipv4=None if v6 else cidr, cidr_ipv6=cidr if v6 else None)
                )
    return found


def source(rule: SecurityGroupRule) -> str:
    """A rule's internet source as a person reads it: the CIDR, and the prefix list holding it."""
    via = f" (in prefix list {rule.prefix_list_id})" if rule.prefix_list_id else ""
    return f"{rule.cidr or ''}{via}"


def ssh_exposed_running(snapshot: AccountSnapshot, group_id: str | None = None) -> list[Instance]:
    """Instances that may be running (Instance.may_be_running) behind a group (`group_id`, or
    any) whose internet SSH the fix would revoke: a CIDR rule (a prefix list's rule is never
    revoked, so it locks nobody out)."""
    groups = [group_id] if group_id else list(snapshot.security_groups)
    open_groups = {
        gid
        for gid in groups
        if (g := snapshot.security_groups.get(gid)) and any(map(admits_internet_ssh, g.ingress))
    }
    everyone = {**snapshot.bystanders, **snapshot.instances}
    return [
        i
        for i in everyone.values()
        if i.may_be_running and open_groups.intersection(i.security_group_ids)
    ]


@dataclass
class Readded:
    """What the fix added for one revoked rule: new rule ids (when EC2 says) and permissions."""

    rule_ids: list[str] = field(default_factory=list)
    permissions: list[dict[str, Any]] = field(default_factory=list)
    present: list[dict[str, Any]] = field(default_factory=list)  # already in the group


@dataclass(frozen=True)
class PortRange:
    protocol: str
    from_port: int
    to_port: int


def remaining_access(rule: SecurityGroupRule) -> tuple[list[PortRange], str]:
    """What the rule admitted besides TCP 22, as rules to re-add; and what cannot be kept."""
    if rule.protocol.lower() in ALL_TRAFFIC:
        icmp = "icmpv6" if rule.cidr_ipv6 else "icmp"
        kept = [
            PortRange("tcp", 0, SSH_PORT - 1),
            PortRange("tcp", SSH_PORT + 1, 65535),
            PortRange("udp", 0, 65535),
            PortRange(icmp, -1, -1),
        ]
        return (
            kept,
            "other IP protocols (not tcp, udp or icmp) were dropped with the all-traffic rule",
        )
    low, high = rule.ports
    kept = []
    if low < SSH_PORT:
        kept.append(PortRange("tcp", low, SSH_PORT - 1))
    if high > SSH_PORT:
        kept.append(PortRange("tcp", SSH_PORT + 1, high))
    return kept, ""


def ip_permission(rule: SecurityGroupRule, ports: PortRange) -> dict[str, Any]:
    """The AuthorizeSecurityGroupIngress IpPermission re-adding `ports` for the rule's source."""
    source: dict[str, Any] = (
        {"CidrIpv6": rule.cidr_ipv6} if rule.cidr_ipv6 else {"CidrIp": rule.cidr_ipv4}
    )
    if rule.description:
        source["Description"] = rule.description
    key = "Ipv6Ranges" if rule.cidr_ipv6 else "IpRanges"
    return {
        "IpProtocol": ports.protocol,
        "FromPort": ports.from_port,
        "ToPort": ports.to_port,
        key: [source],
    }


def described(permission: Mapping[str, Any], description: str | None) -> dict[str, Any]:
    """An IpPermission of one source, with `description` (or none) in place of its own."""
    key = "Ipv6Ranges" if permission.get("Ipv6Ranges") else "IpRanges"
    source = {k: v for k, v in permission[key][0].items() if k != "Description"}
    return {
        **permission,
        key: [{**source, **({"Description": description} if description else {})}],
    }


def rule_request(permission: Mapping[str, Any]) -> dict[str, Any]:
    """An IpPermission of one source as ModifySecurityGroupRules' SecurityGroupRuleRequest (which
    replaces the rule's content, its description included). A rule of every protocol (-1) has
    no ports; the request gives them as -1."""
    v6 = bool(permission.get("Ipv6Ranges"))
    source = permission["Ipv6Ranges" if v6 else "IpRanges"][0]
    request = {
        "IpProtocol": permission["IpProtocol"],
        "FromPort": permission.get("FromPort", -1),
        "ToPort": permission.get("ToPort", -1),
        ("CidrIpv6" if v6 else "CidrIpv4"): source["CidrIpv6" if v6 else "CidrIp"],
    }
    if source.get("Description"):
        request["Description"] = source["Description"]
    return request


def rule_permission(rule: SecurityGroupRule) -> dict[str, Any]:
    """The rule's content as an IpPermission. RevokeSecurityGroupIngress by content matches only
    a rule with exactly this protocol, these ports and this CIDR, so a rule changed since it was
    read (ModifySecurityGroupRules keeps the rule id) is not revoked."""
    source = (
        {"Ipv6Ranges": [{"CidrIpv6": rule.cidr_ipv6}]}
        if rule.cidr_ipv6
        else {"IpRanges": [{"CidrIp": rule.cidr_ipv4}]}
    )
    ports = {"FromPort": rule.from_port, "ToPort": rule.to_port}
    return {
        "IpProtocol": rule.protocol,
        **{k: v for k, v in ports.items() if v is not None},
        **source,
    }


def undo_hint(
    gid: str,
    region: str,
    revoked: Sequence[SecurityGroupRule],
    new_ids: Sequence[str],
    narrowed: Sequence[SecurityGroupRule] = (),
) -> str:
    """How a person puts the group back: revoke the rules the fix made, set the rules it
    narrowed in place back as they were, authorize the revoked ones again, each with its
    description and its owner's tags (not "aws:" ones, which EC2 reserves). Shell-quoted."""

    def quoted(value: Any) -> str:
        return "'" + json.dumps(value, separators=(",", ":")).replace("'", "'\\''") + "'"

    where = f"--group-id {gid} --region {region}"
    steps = []
    if new_ids:
        ids = " ".join(new_ids)
        steps.append(
            f"aws ec2 revoke-security-group-ingress {where} --security-group-rule-ids {ids}"
        )
    if narrowed:
        back = [
            {
                "SecurityGroupRuleId": r.rule_id,
                "SecurityGroupRule": rule_request(authorizing(r)),
            }
            for r in narrowed
        ]
        steps.append(
            f"aws ec2 modify-security-group-rules {where} --security-group-rules {quoted(back)}"
        )
    # One call per set of tags: a call's TagSpecifications tag every rule it creates.
    by_tags: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
    for rule in revoked:
        tags = tuple((k, v) for k, v in rule.tags if not k.lower().startswith("aws:"))
        by_tags.setdefault(tags, []).append(authorizing(rule))
    for tags, permissions in by_tags.items():
        step = f"aws ec2 authorize-security-group-ingress {where} --ip-permissions {quoted(permissions)}"
        if tags:
            specs = [
                {
                    "ResourceType": "security-group-rule",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags],
                }
            ]
            step += f" --tag-specifications {quoted(specs)}"
        steps.append(step)
    return undo_part(*steps)


def authorizing(rule: SecurityGroupRule) -> dict[str, Any]:
    """The IpPermission that authorizes the rule again, its description included."""
    return described(rule_permission(rule), rule.description)


def permission_keys(permission: Mapping[str, Any]) -> set[tuple[Any, ...]]:
    """(protocol, from, to, network) per source of an IpPermission, in one spelling: EC2 may
    answer with another form than it was sent (UnknownIpPermissions: "tcp" for "6", a CIDR
    rewritten). Descriptions do not take part in matching."""
    protocol = str(permission.get("IpProtocol", "-1")).lower()
    protocol = PROTOCOL_NAMES.get(protocol, protocol)
    ports = (
        (None, None) if protocol == "-1" else (permission.get("FromPort"), permission.get("ToPort"))
    )
    cidrs = [r.get("CidrIp") for r in permission.get("IpRanges", [])]
    cidrs += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges", [])]
    keys = set()
    for cidr in cidrs:
        read = network(cidr)
        keys.add((protocol, *ports, str(read) if read is not None else cidr or ""))
    return keys


def rule_keys(rule: SecurityGroupRule) -> set[tuple[Any, ...]]:
    """permission_keys of a rule's content (how a revoke by content matches it)."""
    return permission_keys(rule_permission(rule))


def readd_tags(rule: SecurityGroupRule, run: str = "") -> tuple[list[dict[str, str]], list[str]]:
    """Tags for the rules re-added in place of `rule` by `run`: its owner's (not "aws:" ones,
    which EC2 reserves) and ours naming the rule they replace and the run; and the owner's keys
    dropped to stay within EC2's 50 tags per resource (ours stay: they let a person trace and
    undo the fix, and room is kept for runs' RELIED_ON_TAG marks)."""
    owners = [
        {"Key": k, "Value": v}
        for k, v in rule.tags
        if not k.lower().startswith("aws:")
        and k not in (GUARDRAIL_TAG, RUN_TAG)
        and not k.startswith(RELIED_ON_TAG)
    ]
    room = MAX_TAGS - OURS - MARK_ROOM
    ours = [{"Key": GUARDRAIL_TAG, "Value": rule.rule_id}, {"Key": RUN_TAG, "Value": run}]
    return [*owners[:room], *ours], [t["Key"] for t in owners[room:]]


def made_for(rules: Iterable[SecurityGroupRule], rule_id: str) -> list[SecurityGroupRule]:
    """The rules re-added (by any run) in place of the rule `rule_id`."""
    return [c for c in rules if dict(c.tags).get(GUARDRAIL_TAG) == rule_id]


def not_marked(code: str | None, done: str = "nothing was revoked") -> str:
    """Why a fix stops before changing the rule: it could not mark another run's re-adds."""
    return (
        "another run's re-added rules are in place and could not be marked as relied on "
        f"({code}): {done}; that run, or the next, closes the rule"
    )


def revoked_only(revoked: Sequence[SecurityGroupRule]) -> str:
    """What a narrowing that stops short did: only SSH-only rules go before anything else."""
    if not revoked:
        return "nothing was revoked"
    return f"revoked only {len(revoked)} rule(s) admitting nothing else"


def readded_record(
    rules: Iterable[SecurityGroupRule],
    added: Mapping[str, Readded],
    kept: Sequence[SecurityGroupRule] = (),
) -> dict[str, Any]:
    """What the fix re-added for `rules` (an undo revokes exactly these), the new rule ids, and
    what was planned but already in the group (a person's rule, or another run's): not created
    here, so an undo must leave it; and, under `kept_for_another_run`, rules made here for a rule
    another run revoked counting on them."""
    readded: list[dict[str, Any]] = []
    new_ids: list[str] = []
    present: list[dict[str, Any]] = []
    for rule in rules:
        made = added.get(rule.rule_id, Readded())
        readded += made.permissions
        new_ids += made.rule_ids
        present += made.present
    record: dict[str, Any] = {"readded": distinct(readded), "new_rule_ids": new_ids}
    if present:
        record["already_present"] = present
    if kept:
        record["kept_for_another_run"] = [describe_rule(r) for r in kept]
    return record


def distinct(permissions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The permissions without repeats (two rules' re-adds can overlap: EC2 holds one copy)."""
    seen: list[set[tuple[Any, ...]]] = []
    kept = []
    for p in permissions:
        if (keys := permission_keys(p)) not in seen:
            seen.append(keys)
            kept.append(p)
    return kept


def lost_answer(rules: Iterable[SecurityGroupRule]) -> str:
    """The note on rules counted as revoked though EC2 answered that nothing matched."""
    return (
        f"{', '.join(r.rule_id for r in rules)}: the answer to a try of the revoke was lost and "
        "the retry found the rule gone: counted as revoked by this fix (had someone else "
        "revoked it at that moment, revoke by hand what this fix re-added for it)"
    )


def as_written(rule: SecurityGroupRule) -> tuple[Any, ...]:
    """A rule's content exactly as EC2 holds it (no spelling normalised): a rule deleted and added
    again as it was has the same; two spellings of one source do not."""
    return (rule.protocol, rule.from_port, rule.to_port, rule.cidr_ipv4, rule.cidr_ipv6)


def relied_on_for(rule: SecurityGroupRule) -> set[str]:
    """The rule ids runs' marks on `rule` say they revoked counting on it."""
    return {v for k, v in rule.tags if k.startswith(f"{RELIED_ON_TAG}:")}


def describe_rule(rule: SecurityGroupRule) -> dict[str, Any]:
    """A rule as a person (and an undo) needs it: id, protocol, ports, source, description, and
    its tags when it has any."""
    described: dict[str, Any] = {
        "SecurityGroupRuleId": rule.rule_id,
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port,
        "ToPort": rule.to_port,
        "Source": rule.cidr,
        "Description": rule.description,
    }
    if rule.prefix_list_id:
        described["PrefixListId"] = rule.prefix_list_id
    if rule.tags:
        described["Tags"] = dict(rule.tags)
    return described


def exposure(
    instance: Instance, offending: Mapping[str, Sequence[SecurityGroupRule]]
) -> tuple[bool, str]:
    """Whether the internet rules of these groups reach the instance now, and how to say so: a
    group applies on the interfaces that carry it; an IPv4 rule needs a public IPv4 address
    there, a ::/0 rule a global IPv6 address."""
    versions = {r.ip_version for rules in offending.values() for r in rules}
    over = {
        v
        for gid, rules in offending.items()
        for v in instance.exposed_over({r.ip_version for r in rules}, gid)
    }
    if over:
        return True, "running with " + " and ".join(ADDRESS[v] for v in sorted(over))
    # Not reachable this minute, and exposed the moment that changes: said so, never "safe".
    wanted = " or ".join(ADDRESS[v] for v in (4, 6) if v in versions)
    if instance.exposed_over(versions):  # the address is on another interface
        return False, (
            f"running, but no interface with these groups has {wanted} (exposed once one does)"
        )
    if instance.exposed:  # reachable over the other family only
        (version,) = (v for v in (4, 6) if v in versions)
        return False, (
            f"running with {NO_ADDRESS[version]}, and the rules admit IPv{version} only "
            "(exposed once it gets one)"
        )
    if instance.state != "running":
        return False, f"{instance.state or 'not running'} (exposed once it runs with {wanted})"
    without = " and ".join(NO_ADDRESS[v] for v in (4, 6) if v in versions)
    return False, f"running with {without} (exposed once it gets one)"


class SshOpenToInternet:
    id = "ssh-open-to-internet"
    # Requirement-style, as Security Hub's own controls: the title shows on PASSED findings too.
    title = "Security groups and EC2 instances should not admit SSH (TCP 22) from the internet"
    description = (
        "A security group attached to a network interface of the instance admits TCP port 22 "
        "from 0.0.0.0/0 or ::/0, directly or through a prefix list that holds it. Use Session "
        "Manager instead of internet-facing SSH."
    )
    related_requirements = (
        "AWS Foundational Security Best Practices v1.0.0/EC2.13",
        "CIS AWS Foundations Benchmark v3.0.0/5.2",
        "CIS AWS Foundations Benchmark v3.0.0/5.3",
    )
    finding_types = (
        "Software and Configuration Checks/AWS Security Best Practices/Network Reachability",
        "Effects/Data Exposure",
    )
    recommendation = (
        "Remove the ingress rules that admit TCP 22 from 0.0.0.0/0 or ::/0 (for a prefix "
        "list's rule, the list's internet entry) and connect with Session Manager (aws ssm "
        "start-session)."
    )
    recommendation_url = (
        "https://docs.aws.amazon.com/securityhub/latest/userguide/ec2-controls.html#ec2-13"
    )
    read_permissions = (
        Permission(
            (
                "ec2:DescribeInstances",
                "ec2:DescribeSecurityGroupRules",
            ),
            why="instances, their network interfaces' groups, and the groups' rules",
        ),
        Permission(
            ("ec2:GetManagedPrefixListEntries",),
            why="the entries of prefix lists that SSH rules reference (one may hold 0.0.0.0/0)",
        ),
        Permission(
            ("ec2:DescribeManagedPrefixLists", "ec2:GetManagedPrefixListAssociations"),
            why="for a list an event changed, whether the change has completed and which groups "
            "reference it",
            events_only=True,
        ),
    )
    fix_permissions = (
        Permission(
            ("ec2:AuthorizeSecurityGroupIngress",),
            resources=("arn:{partition}:ec2:{region}:{account}:security-group-rule/*",),
            why="with TagSpecifications EC2 also authorizes the call on the rules it creates",
        ),
        Permission(
            ("ec2:RevokeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupIngress"),
            resources=("arn:{partition}:ec2:{region}:{account}:security-group/*",),
            why="revoke the offending rule; re-add the other ports it admitted",
        ),
        Permission(
            ("ec2:ModifySecurityGroupRules",),
            resources=(
                "arn:{partition}:ec2:{region}:{account}:security-group/*",
                "arn:{partition}:ec2:{region}:{account}:security-group-rule/*",
            ),
            why="narrow the offending rule in place when the group is at its rules quota (EC2 "
            "authorizes it on the group and on the rule)",
        ),
        Permission(
            ("ec2:CreateTags",),
            resources=("arn:{partition}:ec2:{region}:{account}:security-group-rule/*",),
            conditions={"StringEquals": {"ec2:CreateAction": "AuthorizeSecurityGroupIngress"}},
            why="tag re-added rules with the rule they replace (so a person can undo)",
        ),
        Permission(
            ("ec2:CreateTags",),
            resources=("arn:{partition}:ec2:{region}:{account}:security-group-rule/*",),
            conditions={
                "ForAllValues:StringLike": {"aws:TagKeys": [f"{RELIED_ON_TAG}:*"]},
                "Null": {f"ec2:ResourceTag/{GUARDRAIL_TAG}": "false"},
            },
            why="mark another run's re-added rules as relied on before revoking the rule they "
            "replace (only that tag, only on rules the guardrail re-added)",
        ),
        Permission(
            ("ec2:DeleteTags",),
            resources=("arn:{partition}:ec2:{region}:{account}:security-group-rule/*",),
            conditions={
                "ForAllValues:StringLike": {"aws:TagKeys": [f"{RELIED_ON_TAG}:*"]},
                # DeleteTags without Tags would take every tag off: the key must be named.
                "Null": {f"ec2:ResourceTag/{GUARDRAIL_TAG}": "false", "aws:TagKeys": "false"},
            },
            why="take that mark off again when this run did not revoke the rule after all",
        ),
    )
    no_fix_reason = ""
    fix_changes: tuple[str, ...] = ("IpPermissions",)  # the group's rules

    def check(self, snapshot: AccountSnapshot, settings: Settings) -> list[Result]:
        offending: dict[str, list[SecurityGroupRule]] = {
            gid: internet_ssh_rules(group, snapshot.prefix_lists)
            for gid, group in snapshot.security_groups.items()
        }
        results: list[Result] = []
        group_users: dict[str, list[str]] = {}
        everyone = [*snapshot.instances.values(), *snapshot.bystanders.values()]
        for instance in everyone:
            bystander = instance.instance_id in snapshot.bystanders
            if not instance.evaluated:
                if not bystander:
                    results.append(snapshot.not_evaluated(self.id, instance))
                continue
            for gid in instance.security_group_ids:
                group_users.setdefault(gid, []).append(instance.instance_id)
            if bystander and not set(instance.security_group_ids) <= set(offending):
                continue  # a group of its own was not read: its exposure is unknown here
            results.append(self._instance_result(snapshot, instance, offending, bystander))
        by_id = {i.instance_id: i for i in everyone}
        for gid, users in sorted(group_users.items()):
            group = snapshot.security_groups.get(gid)
            if group is None:
                continue
            rules = offending.get(gid, [])
            if not rules:
                results.append(
                    snapshot.result(
                        self.id,
                        ResourceType.SECURITY_GROUP,
                        gid,
                        Status.PASSED,
                        "INFORMATIONAL",
                        "no ingress rule admits TCP 22 from the internet",
                        details={"instance_ids": users},
                    )
                )
                continue
            results.append(
                snapshot.result(
                    self.id,
                    ResourceType.SECURITY_GROUP,
                    gid,
                    Status.FAILED,
                    "CRITICAL"
                    if any(exposure(by_id[u], {gid: rules})[0] for u in users)
                    else "HIGH",
                    f"rules {', '.join(dict.fromkeys(r.rule_id for r in rules))} admit TCP 22 "
                    f"from {', '.join(sorted({source(r) for r in rules}))}; used by {len(users)} "
                    "instance(s)",
                    details={
                        "rule_ids": list(dict.fromkeys(r.rule_id for r in rules)),
                        "instance_ids": users,
                    },
                )
            )
        return results

    def _instance_result(
        self,
        snapshot: AccountSnapshot,
        instance: Instance,
        offending: Mapping[str, list[SecurityGroupRule]],
        bystander: bool,
    ) -> Result:
        bad_groups = [g for g in instance.security_group_ids if offending.get(g)]
        if not bad_groups:
            result = snapshot.result(
                self.id,
                ResourceType.INSTANCE,
                instance.instance_id,
                Status.PASSED,
                "INFORMATIONAL",
                "no security group admits TCP 22 from the internet",
                details={"security_group_ids": list(instance.security_group_ids)},
            )
        else:
            rule_ids = list(dict.fromkeys(r.rule_id for g in bad_groups for r in offending[g]))
            reachable, how = exposure(instance, {g: offending[g] for g in bad_groups})
            result = snapshot.result(
                self.id,
                ResourceType.INSTANCE,
                instance.instance_id,
                Status.FAILED,
                "CRITICAL" if reachable else "HIGH",
                f"TCP 22 open to the internet through {', '.join(bad_groups)} "
                f"(rules {', '.join(rule_ids)}); instance is {how}",
                details={"security_group_ids": bad_groups, "rule_ids": rule_ids},
            )
        return replace(result, follows_fix=bystander)

    def settle(self, snapshot: AccountSnapshot, records: Sequence[FixRecord]) -> AccountSnapshot:
        """When some fixes closed rules and others were deliberately left (SKIPPED: a group's
        prefix-list rule, an instance's other group owned elsewhere), a result they both cover
        is re-judged without the rules the applied fixes revoked or narrowed. Not after a FAILED
        fix: which rules its results still wait for is not known, so they stay as read."""
        closed = {
            rule["SecurityGroupRuleId"]
            for record in records
            if record.outcome is Outcome.APPLIED
            for rule in record.before or ()
        }
        outcomes = {r.outcome for r in records}
        if not closed or Outcome.SKIPPED not in outcomes or Outcome.FAILED in outcomes:
            return snapshot
        groups = {
            gid: replace(group, rules=tuple(r for r in group.rules if r.rule_id not in closed))
            for gid, group in snapshot.security_groups.items()
        }
        return replace(snapshot, security_groups=groups)

    def remediate(
        self, failed: Sequence[Result], snapshot: AccountSnapshot, ctx: FixContext
    ) -> list[FixRecord]:
        users: dict[str, list[str]] = {}
        for result in failed:
            if result.resource_type is ResourceType.INSTANCE:
                for gid in result.details.get("security_group_ids", []):
                    users.setdefault(gid, []).append(result.resource_id)
        groups = [r.resource_id for r in failed if r.resource_type is ResourceType.SECURITY_GROUP]
        groups += [g for g in users if g not in groups]
        groups = [g for g in groups if g in snapshot.security_groups]
        foreign = {
            gid: owner
            for gid in groups
            if (owner := snapshot.security_groups[gid].owner_id) not in (None, snapshot.account_id)
        }
        # A drift scan read the rules minutes ago (and the other fixes ran since): act on what
        # the groups hold now, so a rule an owner changed meanwhile is never revoked or widened.
        own = [g for g in groups if g not in foreign]
        current = self._current_rules(ctx.clients.ec2, own) if snapshot.full and own else {}
        records = ctx.made
        for gid in groups:
            group = snapshot.security_groups[gid]
            ingress = current.get(gid, []) if snapshot.full and gid in own else group.ingress
            found = internet_ssh_rules(replace(group, rules=tuple(ingress)), snapshot.prefix_lists)
            rules = [r for r in found if not r.prefix_list_id]
            listed = [r for r in found if r.prefix_list_id]
            covers = (gid, *users.get(gid, ()))
            if listed and gid not in foreign:
                records.append(replace(self._listed(gid, listed), covers=covers))
                if not rules:
                    continue
            unreachable = (
                self._unreachable(snapshot, gid) if ctx.settings.ssh_require_ssm_online else []
            )
            everyone = {**snapshot.bystanders, **snapshot.instances}  # an event's too
            exempt = exempt_named(i for i in everyone.values() if gid in i.security_group_ids)
            if gid in foreign:
                # A group shared from another account (VPC or security group sharing): only its
                # owner may change its rules; EC2 would refuse, and it is not ours to change.
                record = self._skipped(
                    gid,
                    found,
                    f"security group is owned by account {foreign[gid]}, not this one: only its "
                    "owner can change its rules; ask them to remove internet SSH",
                )
            elif not rules:  # closed since the scan read it: nothing to revoke, nobody to lock out
                record = self._close(group, rules, ctx)
            elif exempt:
                record = self._skipped(
                    gid,
                    rules,
                    f"used by {', '.join(exempt)}, exempt from fixes: revoking would close SSH on "
                    "them too; give them a group of their own, or take the tag off",
                )
            elif unreachable:
                record = self._skipped(
                    gid,
                    rules,
                    f"would lock out {', '.join(unreachable)}: running, and Session Manager "
                    "cannot open a session on them (GUARDRAIL_SSH_REQUIRE_SSM_ONLINE); give them "
                    "a working SSM role first",
                )
            elif ctx.out_of_time():
                record = self._skipped(gid, rules, OUT_OF_TIME)
            else:
                record = self._close(group, rules, ctx)
            records.append(replace(record, covers=covers))
        return records

    def _listed(self, gid: str, listed: list[SecurityGroupRule]) -> FixRecord:
        """Rules admitting internet SSH through a prefix list are a person's to change: revoking
        one cuts off every other entry of its list, and removing the entry from the list changes
        every group and route table that references it."""
        held: dict[str, dict[str, None]] = {}
        for rule in listed:
            held.setdefault(rule.prefix_list_id or "", {})[rule.cidr or ""] = None
        lists = "; ".join(f"{pl} holds {', '.join(cidrs)}" for pl, cidrs in held.items())
        commands = "; ".join(
            f"aws ec2 modify-managed-prefix-list --prefix-list-id {pl} --current-version "
            f"<version> --remove-entries {' '.join(f'Cidr={c}' for c in cidrs)}"
            for pl, cidrs in held.items()
        )
        return self._skipped(
            gid,
            listed,
            f"internet SSH through a prefix list ({lists}) is not changed: revoking the rule "
            "would cut off the list's other entries, and editing the list changes everything "
            f"that references it; remove the entries ({commands}) or replace the rule",
        )

    def _skipped(self, gid: str, rules: list[SecurityGroupRule], reason: str) -> FixRecord:
        return FixRecord(
            self.id,
            gid,
            "revoke internet SSH",
            Outcome.SKIPPED,
            [describe_rule(r) for r in rules],
            None,
            reason,
        )

    @staticmethod
    def _current_rules(ec2: Any, group_ids: list[str]) -> dict[str, list[SecurityGroupRule]]:
        """Ingress rules of the groups as they are now: one paginated call per 200 groups."""
        rules: dict[str, list[SecurityGroupRule]] = {}
        for raw in security_group_rules(ec2, group_ids):
            rule = SecurityGroupRule.from_api(raw)
            if not rule.is_egress:
                rules.setdefault(rule.group_id, []).append(rule)
        return rules

    @staticmethod
    def _unreachable(snapshot: AccountSnapshot, gid: str) -> list[str]:
        """Running instances behind the group that Session Manager may not open a session on
        right now, each with why: not Online in Systems Manager; a kmsKeyId KMS says no session
        can use (none, disabled, pending deletion); or Online (its heartbeat needs only
        ssm:UpdateInstanceInformation, and its status is the last heartbeat's) without a
        role of its own whose session calls the reader judged (no profile: Default Host
        Management's role is not judged; a profile or role removed since that heartbeat), with
        a role refused the agent's session calls or meeting a Deny the simulation could not
        evaluate, or refused what the preferences make the agent check before each session
        (the key, the destinations' encryption), or the key an alias KMS did not resolve. Not
        known counts as unreachable."""
        prefs = snapshot.session_preferences
        found = []
        for instance in sorted(ssh_exposed_running(snapshot, gid), key=lambda i: i.instance_id):
            iid, role = instance.instance_id, snapshot.role_of(instance)
            if not snapshot.is_online(iid):
                found.append(f"{iid} (not Online in Systems Manager)")
                continue
            if prefs and prefs.key_unusable:
                found.append(f"{iid} ({unusable_key(prefs)})")
                continue
            access = snapshot.agent_access.get(role.name) if role else None
            delivery = snapshot.delivery.get(role.name) if role else None
            if role is None or access is None:
                whose = f"role {role.name}" if role else "no instance role"
                found.append(f"{iid} (Online, {whose}: its session calls are not judged)")
            elif not access.allowed:
                refused = ", ".join(action for action, _ in access.denied)
                found.append(f"{iid} (role {role.name} is refused {refused})")
            elif access.unjudged:
                found.append(
                    f"{iid} (role {role.name} meets a Deny the simulation cannot evaluate on "
                    f"{', '.join(access.unjudged)})"
                )
            elif delivery and (stopping := stops_sessions(delivery.denied, prefs)):
                found.append(f"{iid} (role {role.name} is not allowed {', '.join(stopping)})")
            elif prefs and prefs.unresolved_alias:
                found.append(
                    f"{iid} (role {role.name}: its use of the session key is not judged, "
                    f"kmsKeyId {prefs.unresolved_alias} being an alias KMS did not resolve)"
                )
        return found

    def _close(
        self, group: SecurityGroup, rules: list[SecurityGroupRule], ctx: FixContext
    ) -> FixRecord:
        """Re-add what else the rules admitted, then revoke them by content. Never revoke if
        re-adding failed; never keep what was re-added for a rule that is no longer as it was read
        (revoked or changed by someone else meanwhile): that would widen."""
        gid, ec2 = group.group_id, ctx.clients.ec2
        before = [describe_rule(r) for r in rules]

        def record(
            outcome: Outcome, after: Any, reason: str, code: str | None = None, gone: bool = False
        ) -> FixRecord:
            at = ctx.clock() if outcome is Outcome.APPLIED else None
            return FixRecord(
                self.id, gid, "revoke internet SSH", outcome, before, after, reason, code, at=at,
                gone=gone,
            )  # fmt: skip

        if not rules:
            return record(Outcome.ALREADY_COMPLIANT, [], "no rule admits internet SSH any more")
        readd: dict[str, list[dict[str, Any]]] = {}
        notes = []
        for rule in rules:
            kept, note = remaining_access(rule)
            if kept:
                readd[rule.rule_id] = [ip_permission(rule, ports) for ports in kept]
            if note:
                notes.append(f"{rule.rule_id}: {note}")
            if kept and (dropped := readd_tags(rule)[1]):
                notes.append(f"{rule.rule_id}: tags not copied (50 per rule): {', '.join(dropped)}")
        run = uuid.uuid4().hex[:12]  # this run's token: its re-adds' RUN_TAG, its marks' key
        mark = f"{RELIED_ON_TAG}:{run}"
        added: dict[str, Readded] = {}
        created: set[tuple[Any, ...]] = set()
        for rule in rules:
            if rule.rule_id not in readd:
                continue
            # Two rules may keep the same ports (tcp 0-65535 and all traffic): what this run
            # made for the first is the second's too, ours, not "already present".
            ours = [p for p in readd[rule.rule_id] if permission_keys(p) <= created]
            added[rule.rule_id] = Readded(permissions=ours)
            try:
                self._authorize(
                    ec2,
                    gid,
                    rule,
                    [p for p in readd[rule.rule_id] if p not in ours],
                    added[rule.rule_id],
                    run,
                )
                created |= {k for p in added[rule.rule_id].permissions for k in permission_keys(p)}
            except AWS_ERRORS as error:
                code = error_code(error)
                if code in GROUP_GONE:
                    return record(Outcome.ALREADY_COMPLIANT, [], GROUP_DELETED, gone=True)
                # Including what this call added before it failed (one permission at a time).
                untaken = self._take_back(ec2, gid, added.values())
                if code == RULE_QUOTA and not untaken:
                    return self._narrow(
                        ec2, gid, rules, readd, notes, record, run, ctx.clients.region
                    )
                return record(
                    Outcome.FAILED,
                    None,
                    f"could not re-add the other ports; nothing was revoked{untaken}",
                    code,
                )
        marked, mark_code = self._mark_relied_on(ec2, gid, added, mark)
        if mark_code:
            # Another run's re-adds are there and this run could not say it counts on them:
            # revoking now could leave that run to take them back, closing the other ports.
            self._unmark(ec2, marked, [r.rule_id for r in rules], mark)
            untaken = self._take_back(ec2, gid, added.values())
            return record(Outcome.SKIPPED, None, not_marked(mark_code) + untaken)
        try:
            missed, lost = self._revoke(ec2, gid, rules)
        except AWS_ERRORS as error:
            code = error_code(error)
            self._unmark(ec2, marked, [r.rule_id for r in rules], mark)
            if code in GROUP_GONE:
                return record(Outcome.ALREADY_COMPLIANT, [], GROUP_DELETED, gone=True)
            return record(
                Outcome.FAILED,
                readded_record(rules, added),
                "revoke failed; re-added rules are a subset of the old ones",
                code,
            )
        if lost:
            notes.append(lost_answer(lost))
        # Rules no longer as read: what was re-added for them must go again, except what a rule
        # that was revoked still needs (two rules' re-adds can overlap: EC2 holds one copy) and
        # what another run marked as relied on (it revoked the rule counting on those re-adds).
        revoked = [r for r in rules if r not in missed]
        # This run no longer counts on what it marked for a rule it did not revoke.
        missed_ids = [r.rule_id for r in missed]
        still_marked, unmark_code = self._unmark(ec2, marked, missed_ids, mark)
        needed = {k for r in revoked for p in readd.get(r.rule_id, []) for k in permission_keys(p)}
        taken_back = [added[r.rule_id] for r in missed if r.rule_id in added]
        now: list[SecurityGroupRule] = []
        reread_code = None
        try:
            # Only when the revoke missed a rule: was it revoked, or changed, by someone else?
            now = self._current_rules(ec2, [gid]).get(gid, []) if missed else []
        except AWS_ERRORS as error:
            reread_code = error_code(error)
        made = {i for a in taken_back for i in a.rule_ids}
        relied = [c for c in now if c.rule_id in made and relied_on_for(c).intersection(missed_ids)]
        needed |= {k for c in relied for k in rule_keys(c)}
        left, undo_code = self._undo(ec2, gid, taken_back, needed)
        after_record = readded_record(revoked, added, relied)
        by_someone = f"{', '.join(missed_ids)} changed or revoked by someone else"
        if left:
            # The access those rules gave is gone (someone revoked them), but what the fix added
            # for them stays: wider than the owner left the group. A person must know, and a
            # retry would not: it finds no internet SSH and nothing to do.
            left_keys = {k for p in left for k in permission_keys(p)}
            left_ids = [c.rule_id for c in now if c.rule_id in made and rule_keys(c) & left_keys]
            return record(
                Outcome.FAILED,
                {**after_record, "left_open": left, "left_open_rule_ids": left_ids or sorted(made)},
                f"{by_someone} meanwhile, and the {len(left)} rule(s) re-added for them could not "
                f"be taken back ({undo_code}): they admit the internet to other ports; revoke them "
                "by hand" + undo_hint(gid, ctx.clients.region, [], left_ids or sorted(made)),
            )
        if still_marked:
            # A person closed the rule meanwhile; this run's mark may keep the run that made
            # those rules from taking them back: access wider than the owner left.
            return record(
                Outcome.FAILED,
                {**after_record, "left_open_rule_ids": still_marked},
                f"{by_someone} meanwhile, and this run's relied-on mark ({mark}) could not be "
                f"taken off {', '.join(still_marked)} ({unmark_code}): if those rules are still "
                "there, revoke them by hand",
            )
        after = after_record["readded"]
        done = (
            f"revoked {len(revoked)} rule(s); re-added {len(after)} rule(s) for the other ports"
            if after
            else f"revoked {len(revoked)} rule(s)"
        )
        if present := after_record.get("already_present"):
            done += f" ({len(present)} already present: not created, not ours)"
        # Whatever the outcome, what this run revoked and re-added is undone so.
        undo = (
            undo_hint(gid, ctx.clients.region, revoked, after_record["new_rule_ids"])
            if revoked
            else ""
        )
        if reread_code:
            return record(
                Outcome.FAILED,
                after_record,
                f"{done}; {', '.join(missed_ids)} no longer as read and could not be re-read"
                + undo,
                reread_code,
            )
        gone, closed, still_open = self._classify(missed, now)
        by_another_run = (
            f"already revoked by another run of the guardrail, which counts on the {len(relied)} "
            "rule(s) re-added here for the other ports: kept"
        )
        parts = [
            f"{', '.join(ids)} {what}"
            for ids, what in (
                (gone, by_another_run if relied else "already revoked"),
                (closed, "changed meanwhile, no longer admitting internet SSH: left as set"),
                (
                    still_open,
                    "changed meanwhile, still admitting internet SSH: not revoked, as it is not "
                    "the rule judged; the next run judges it as it is now",
                ),
            )
            if ids
        ]
        if still_open:
            # Not done, and not ours to guess at: the change's own event (ModifySecurityGroupRules)
            # or the drift scan judges the rule as it is now.
            reason = "; ".join([done, *notes, *parts] if revoked else parts)
            return record(Outcome.SKIPPED, after_record, reason + undo)
        if not revoked:
            if relied:
                return record(Outcome.ALREADY_COMPLIANT, after_record, "; ".join(parts))
            reason = "rule already revoked" if len(gone) == len(rules) else "; ".join(parts)
            return record(Outcome.ALREADY_COMPLIANT, [], reason)
        return record(Outcome.APPLIED, after_record, "; ".join([done, *notes, *parts]) + undo)

    def _narrow(
        self,
        ec2: Any,
        gid: str,
        rules: list[SecurityGroupRule],
        readd: Mapping[str, list[dict[str, Any]]],
        notes: list[str],
        record: Callable[..., FixRecord],
        run: str,
        region: str,
    ) -> FixRecord:
        """The group is at its rules quota, and re-adding every kept range before revoking needs
        a free rule per range. Instead each rule is narrowed in place to a range it keeps that
        the group lacks (ModifySecurityGroupRules on its id: description and tags stay), its
        other missing ranges added first; a rule whose every kept range the group already holds
        is revoked, first when the group held them before this fix (that frees rules), last when
        this fix adds them. The group never holds more rules than at the end, nor less access
        than before. ModifySecurityGroupRules writes over whatever the rule holds, so only rules
        still exactly as judged are narrowed."""
        quota = f"the group is at its inbound rules quota ({RULE_QUOTA})"
        added = Readded()
        first: list[SecurityGroupRule] = []  # nothing of theirs to keep: revoked before adding
        last: list[SecurityGroupRule] = []  # kept by what this fix adds: revoked at the end
        narrowed: dict[str, dict[str, Any]] = {}
        missed: list[SecurityGroupRule] = []
        revoked: list[SecurityGroupRule] = []  # of `first`
        lost: list[str] = []  # notes on revokes whose answer was lost

        def stop(outcome: Outcome, why: str, code: str | None = None) -> FixRecord:
            """Stopping short: the SSH-only rules revoked first stay revoked, and say so."""
            after = [describe_rule(r) for r in revoked] if revoked else None
            return record(outcome, after, "; ".join([why, *lost]), code)

        mark = f"{RELIED_ON_TAG}:{run}"
        marked: dict[str, list[str]] = {}
        try:
            # What the group holds already is not added again: at the quota EC2 may refuse a
            # duplicate for the quota rather than as a duplicate (nor may a rule become one).
            held = {k for r in self._current_rules(ec2, [gid]).get(gid, []) for k in rule_keys(r)}
            planned: set[tuple[Any, ...]] = set()
            adds: list[tuple[SecurityGroupRule, list[dict[str, Any]]]] = []
            # Rules keeping fewest ranges first, whatever order EC2 lists them in: tcp 0-22
            # narrowed to 0-21 lets tcp 0-65535 become 23-65535 with no rule added.
            for rule in sorted(rules, key=lambda r: len(readd.get(r.rule_id, []))):
                kept = readd.get(rule.rule_id, [])
                added.present += [p for p in kept if permission_keys(p) <= held]
                missing = [p for p in kept if not permission_keys(p) <= held | planned]
                if not missing:
                    theirs = all(permission_keys(p) <= held for p in kept)
                    (first if theirs else last).append(rule)
                    continue
                narrowed[rule.rule_id] = missing[-1]
                adds.append((rule, missing[:-1]))
                planned |= {k for p in missing for k in permission_keys(p)}
            # Another run's re-adds this fix counts on are marked before the rule changes, as
            # _close does: that run, finding its rule narrowed or gone, keeps them. Those the
            # group held before the revokes that free room, those found while adding after.
            present = {
                r.rule_id: Readded(
                    present=[p for p in readd.get(r.rule_id, []) if permission_keys(p) <= held]
                )
                for r in rules
            }
            marked, mark_code = self._mark_relied_on(ec2, gid, present, mark)
            if not mark_code:
                missed, unanswered = self._revoke(ec2, gid, first) if first else ([], [])
                revoked = [r for r in first if r not in missed]
                if unanswered:
                    lost.append(lost_answer(unanswered))
                found: dict[str, Readded] = {}
                for rule, permissions in adds:
                    found[rule.rule_id] = one = Readded()
                    try:
                        self._authorize(ec2, gid, rule, permissions, one, run)
                    finally:  # what went in before a failure is taken back with the rest
                        added.rule_ids += one.rule_ids
                        added.permissions += one.permissions
                        added.present += one.present
                more, mark_code = self._mark_relied_on(ec2, gid, found, mark)
                marked.update(more)
            if mark_code:
                self._unmark(ec2, marked, [r.rule_id for r in rules if r not in revoked], mark)
                done = not_marked(mark_code, revoked_only(revoked))
                return stop(Outcome.SKIPPED, f"{quota}; {done}{self._take_back(ec2, gid, [added])}")
            now = {r.rule_id: r for r in self._current_rules(ec2, [gid]).get(gid, [])}
        except AWS_ERRORS as error:
            code = error_code(error)
            self._unmark(ec2, marked, [r.rule_id for r in rules if r not in revoked], mark)
            if code in GROUP_GONE:
                return record(Outcome.ALREADY_COMPLIANT, [], GROUP_DELETED, gone=True)
            done = revoked_only(revoked) + self._take_back(ec2, gid, [added])
            if code == RULE_QUOTA:
                why = (
                    f"{quota}, even for narrowing the rule in place; {done}: remove rules the "
                    "group no longer needs, or raise the quota"
                )
            else:
                why = f"{quota}; narrowing in place failed, {done}"
            return stop(Outcome.FAILED, why, code)
        if not now:
            # DescribeSecurityGroupRules answers a deleted group with no rules, not an error
            # (and what this fix added is gone with it).
            return record(Outcome.ALREADY_COMPLIANT, [], "the rules, or their group, are gone")
        judged = [r for r in rules if r.rule_id in narrowed]
        moved = [
            r.rule_id
            for r in judged
            if r.rule_id not in now or as_written(now[r.rule_id]) != as_written(r)
        ]
        if moved:
            self._unmark(ec2, marked, [r.rule_id for r in rules if r not in revoked], mark)
            # What another run marked as relied on stays: it narrowed or revoked the rule
            # counting on it.
            mine = set(added.rule_ids)
            keep = {
                k
                for c in now.values()
                if c.rule_id in mine and relied_on_for(c) & set(moved)
                for k in rule_keys(c)
            }
            left = self._take_back(ec2, gid, [added], keep)
            return stop(
                Outcome.SKIPPED,
                f"{quota}; {', '.join(moved)} changed or revoked meanwhile: not narrowed, the "
                f"next run judges the group as it is now; {revoked_only(revoked)}{left}",
            )
        # ModifySecurityGroupRules writes the description too: the owner's as it is now.
        narrowed = {rid: described(p, now[rid].description) for rid, p in narrowed.items()}
        try:
            if narrowed:
                ec2.modify_security_group_rules(
                    GroupId=gid,
                    SecurityGroupRules=[
                        {"SecurityGroupRuleId": rid, "SecurityGroupRule": rule_request(p)}
                        for rid, p in narrowed.items()
                    ],
                )
        except AWS_ERRORS as error:
            self._unmark(ec2, marked, [r.rule_id for r in rules if r not in revoked], mark)
            if error_code(error) in GROUP_GONE:
                return record(Outcome.ALREADY_COMPLIANT, [], GROUP_DELETED, gone=True)
            left = self._take_back(ec2, gid, [added])
            return stop(
                Outcome.FAILED,
                f"{quota}; narrowing failed, {revoked_only(revoked)}{left}",
                error_code(error),
            )
        after = {
            "narrowed_in_place": [{"SecurityGroupRuleId": k, "to": v} for k, v in narrowed.items()],
            "readded": added.permissions,
            "new_rule_ids": added.rule_ids,
            **({"already_present": added.present} if added.present else {}),
        }
        done = (
            f"{quota}: narrowed {len(narrowed)} rule(s) in place to the other ports (ids, "
            f"descriptions and tags kept), re-added {len(added.permissions)} rule(s)"
        )
        try:
            late, lost_late = self._revoke(ec2, gid, last) if last else ([], [])
        except AWS_ERRORS as error:
            return record(
                Outcome.FAILED, after, f"{done}; revoking the others failed", error_code(error)
            )
        missed += late
        revoked += [r for r in last if r not in late]
        if lost_late:
            lost.append(lost_answer(lost_late))
        if revoked:
            after["revoked"] = [describe_rule(r) for r in revoked]
            done += f", revoked {len(revoked)} rule(s) with nothing else to keep"
        if missed:
            self._unmark(ec2, marked, [r.rule_id for r in missed], mark)
            ids = ", ".join(r.rule_id for r in missed)
            return record(
                Outcome.SKIPPED, after, f"{done}; {ids} changed or revoked meanwhile: left as is"
            )
        undo = undo_hint(
            gid,
            region,
            revoked,
            added.rule_ids,
            narrowed=[now[r.rule_id] for r in rules if r.rule_id in narrowed],
        )
        return record(Outcome.APPLIED, after, "; ".join([done, *notes, *lost]) + undo)

    @staticmethod
    def _mark_relied_on(
        ec2: Any, gid: str, added: Mapping[str, Readded], mark: str
    ) -> tuple[dict[str, list[str]], str | None]:
        """Re-adds found already in the group that another run made for the same rule (tagged
        with its id) get this run's `mark` before it revokes that rule: should that run's own
        revoke then find the rule gone, it keeps them instead of taking back what this run's
        fix counts on. Best effort: without the mark, that run takes them back as before.
        Returns the rule ids marked, by the rule they replace, and the error that stopped it."""
        wanted = {rule_id: a.present for rule_id, a in added.items() if a.present}
        marked: dict[str, list[str]] = {}
        if not wanted:
            return marked, None
        try:
            current = SshOpenToInternet._current_rules(ec2, [gid]).get(gid, [])
            for rule_id, permissions in wanted.items():
                keys = {k for p in permissions for k in permission_keys(p)}
                ids = [c.rule_id for c in made_for(current, rule_id) if rule_keys(c) & keys]
                if ids:
                    ec2.create_tags(Resources=ids, Tags=[{"Key": mark, "Value": rule_id}])
                    marked[rule_id] = ids
        except AWS_ERRORS as error:
            logger.warning(
                "could not mark re-added rules as relied on",
                extra={"group": gid, "error_code": error_code(error)},
            )
            return marked, error_code(error)
        return marked, None

    @staticmethod
    def _unmark(
        ec2: Any, marked: Mapping[str, list[str]], rule_ids: Iterable[str], mark: str
    ) -> tuple[list[str], str | None]:
        """Take the relied-on mark off again where this run did not revoke the rule (someone
        else did, or changed it): the run that made the re-adds must then take them back, or a
        person's close would be widened again. Only this run's own key: another run's mark
        stands. Returns the rule ids still marked, and the error."""
        ids = [i for rule_id in rule_ids for i in marked.get(rule_id, [])]
        if not ids:
            return [], None
        try:
            ec2.delete_tags(Resources=ids, Tags=[{"Key": mark}])
        except AWS_ERRORS as error:
            logger.error(
                "could not take the relied-on mark off re-added rules",
                extra={"rules": ids, "error_code": error_code(error)},
            )
            return ids, error_code(error)
        return [], None

    @staticmethod
    def _classify(
        missed: list[SecurityGroupRule], now: list[SecurityGroupRule]
    ) -> tuple[list[str], list[str], list[str]]:
        """Ids of the rules the revoke missed, by what the group holds now: gone; changed and no
        longer admitting internet SSH; changed and still admitting it."""
        current = {r.rule_id: r for r in now}
        gone: list[str] = []
        closed: list[str] = []
        still_open: list[str] = []
        for rule in missed:
            changed = current.get(rule.rule_id)
            # A rule changed to a prefix-list source may admit the internet through the list,
            # whose entries are not read here: still open, for the next run to judge.
            now_open = changed is not None and (
                admits_internet_ssh(changed)
                or (changed.prefix_list_id is not None and reaches_ssh_port(changed))
            )
            bucket = gone if changed is None else still_open if now_open else closed
            bucket.append(rule.rule_id)
        return gone, closed, still_open

    @staticmethod
    def _revoke(
        ec2: Any, gid: str, rules: list[SecurityGroupRule]
    ) -> tuple[list[SecurityGroupRule], list[SecurityGroupRule]]:
        """Revoke the rules by content (exactly as read); returns those it did not match (revoked
        or changed meanwhile), and those counted as revoked by this fix though EC2 answered that
        nothing matched: a try of the call whose answer was lost (answer_may_be_lost) most likely
        revoked them, and calling that someone else's revoke would take back what was re-added
        for them, closing every other port. RevokeSecurityGroupIngress in a non-default VPC
        refuses the whole call when one permission matches nothing (InvalidPermission.NotFound,
        nothing revoked), so then each goes alone; in a default VPC it revokes what matches and
        answers with the rest (UnknownIpPermissions) and what it revoked
        (RevokedSecurityGroupRules)."""

        def revoke(batch: list[SecurityGroupRule]) -> tuple[Any, bool]:
            with answer_may_be_lost(ec2, "RevokeSecurityGroupIngress") as tries:
                try:
                    answer = ec2.revoke_security_group_ingress(
                        GroupId=gid, IpPermissions=[rule_permission(r) for r in batch]
                    )
                except ClientError as error:
                    if error_code(error) not in ALREADY_GONE:
                        raise
                    answer = None
            return answer, any(tries)

        missed: list[SecurityGroupRule] = []
        lost: list[SecurityGroupRule] = []
        response, maybe_done = revoke(rules)
        if response is None and len(rules) > 1:
            for rule in rules:
                alone, alone_maybe_done = revoke([rule])
                if alone is None:
                    (lost if alone_maybe_done else missed).append(rule)
            if maybe_done and len(missed) == len(rules):
                # All or nothing: had the lost try revoked nothing, the rules still there would
                # have gone one by one now.
                missed, lost = [], missed
        elif response is None:
            (lost if maybe_done else missed).extend(rules)
        else:  # a default VPC's answer
            if gone := response.get("RevokedSecurityGroupRules", []):
                # By id, and by content for a rule deleted and re-created as it was since the
                # read (a new id): its access, the one judged, is what went.
                ids = {r.get("SecurityGroupRuleId") for r in gone}
                contents = {
                    as_written(SecurityGroupRule.from_api({"GroupId": gid, **r})) for r in gone
                }
                unmatched = [
                    r for r in rules if r.rule_id not in ids and as_written(r) not in contents
                ]
            else:
                unknown = {
                    k for p in response.get("UnknownIpPermissions", []) for k in permission_keys(p)
                }
                unmatched = [r for r in rules if rule_keys(r) & unknown]
            (lost if maybe_done else missed).extend(unmatched)
        if lost:
            # A rule still in the group under its id was changed meanwhile, not revoked.
            held = {r.rule_id for r in SshOpenToInternet._current_rules(ec2, [gid]).get(gid, [])}
            missed += [r for r in lost if r.rule_id in held]
            lost = [r for r in lost if r.rule_id not in held]
        if lost:
            logger.warning(
                "a revoke whose answer was lost is counted as this run's",
                extra={"group": gid, "rules": [r.rule_id for r in lost]},
            )
        return missed, lost

    def _take_back(
        self,
        ec2: Any,
        gid: str,
        added: Iterable[Readded],
        keep: Collection[tuple[Any, ...]] = (),
    ) -> str:
        """Undo what a fix that stops short added (but `keep`): "" when all of it went, else what
        a person must revoke (it admits nothing the rules left in place do not)."""
        left, code = self._undo(ec2, gid, added, keep)
        if not left:
            return ""
        named = ", ".join(
            f"{protocol} {low}-{high} from {source}"
            for p in left
            for protocol, low, high, source in sorted(permission_keys(p), key=str)
        )
        return f"; {len(left)} rule(s) it added could not be taken back ({code}): revoke {named}"

    @staticmethod
    def _undo(
        ec2: Any, gid: str, added: Iterable[Readded], keep: Collection[tuple[Any, ...]] = ()
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Revoke exactly the permissions this fix added (not pre-existing ones), except those in
        `keep`. Returns what could not be taken back, with the error code (none: all gone)."""
        keep = set(keep)
        permissions = distinct(
            p for readded in added for p in readded.permissions if not permission_keys(p) & keep
        )
        left: list[dict[str, Any]] = []
        code = None

        def revoke(batch: list[dict[str, Any]]) -> Any:
            return ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=batch)

        # One already gone refuses the whole call outside a default VPC: then each goes alone.
        for batch, _, error in each_alone_if_refused(revoke, permissions, ALREADY_GONE):
            if error is not None and error_code(error) not in ALREADY_GONE:
                left, code = left + batch, error_code(error)
        if left:
            logger.error(
                "could not take back re-added rules", extra={"group": gid, "error_code": code}
            )
        return left, code

    @staticmethod
    def _authorize(
        ec2: Any,
        gid: str,
        rule: SecurityGroupRule,
        permissions: list[dict[str, Any]],
        added: Readded,
        run: str,
    ) -> None:
        """Re-add what one revoked rule admitted besides SSH into `added` (so a failure part-way
        can be undone): one call, each new rule tagged like the old one plus the id it replaces.
        EC2 refuses the whole call if any permission already exists (an earlier run, or a person),
        so then each is tried alone and duplicates count as done (and are not ours to undo).
        Unless a try of this `run` whose answer was lost (answer_may_be_lost) made them: then
        the group holds them, tagged with the run, and they are this fix's, ids and all."""
        tags = [{"ResourceType": "security-group-rule", "Tags": readd_tags(rule, run)[0]}]

        def authorize(batch: list[dict[str, Any]]) -> Any:
            with answer_may_be_lost(ec2, "AuthorizeSecurityGroupIngress") as tries:
                try:
                    return ec2.authorize_security_group_ingress(
                        GroupId=gid, IpPermissions=batch, TagSpecifications=tags
                    )
                except AWS_ERRORS as error:
                    # A try whose answer was lost may have made them, whatever the last try
                    # answered ("duplicate", throttled, never sent, lost too): the group says.
                    if not any(tries):
                        raise
                    refused = error
            wanted = {k for p in batch for k in permission_keys(p)}
            made = [
                r
                for r in made_for(
                    SshOpenToInternet._current_rules(ec2, [gid]).get(gid, []), rule.rule_id
                )
                if dict(r.tags).get(RUN_TAG) == run and rule_keys(r) <= wanted
            ]
            if {k for r in made for k in rule_keys(r)} != wanted:
                raise refused  # not all of them: someone else's are among them
            return {"SecurityGroupRules": [{"SecurityGroupRuleId": r.rule_id} for r in made]}

        for batch, response, error in each_alone_if_refused(authorize, permissions, DUPLICATE):
            if error is not None:
                if error_code(error) not in DUPLICATE:
                    raise error
                added.present += batch
                continue
            added.rule_ids += [
                r["SecurityGroupRuleId"] for r in response.get("SecurityGroupRules", [])
            ]
            added.permissions += batch


def each_alone_if_refused(
    send: Callable[[list[dict[str, Any]]], Any],
    permissions: list[dict[str, Any]],
    split_on: Collection[str],
) -> Iterator[tuple[list[dict[str, Any]], Any, Exception | None]]:
    """Sends `permissions` in one call; when EC2 refuses the whole call with an error in
    `split_on` (one permission already there, or already gone), sends each alone. Yields each
    batch sent with its answer, or with the error that refused it."""
    batches = [permissions] if permissions else []
    while batches:
        batch = batches.pop(0)
        try:
            response = send(batch)
        except AWS_ERRORS as error:
            if error_code(error) in split_on and len(batch) > 1:
                batches += [[p] for p in batch]
            else:
                yield batch, None, error
            continue
        yield batch, response, None


SSH_OPEN = SshOpenToInternet()
