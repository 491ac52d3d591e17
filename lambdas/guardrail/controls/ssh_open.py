"""ssh-open-to-internet: TCP 22 admitted from 0.0.0.0/0 or ::/0 by a security group of an instance.

Counts only tcp (or all-traffic, protocol -1) rules whose range includes 22 and whose source is the
whole internet; UDP 22, private CIDRs, prefix lists and group references are not internet SSH.
The fix revokes exactly the offending rule (by SecurityGroupRuleId) after re-adding whatever else
that rule admitted, so no other port or protocol loses access.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from ..model import (
    INTERNET_CIDRS,
    AccountSnapshot,
    FixRecord,
    Instance,
    Outcome,
    ResourceType,
    Result,
    SecurityGroup,
    SecurityGroupRule,
    Status,
)
from ..paging import FILTER_VALUES, chunks, pages
from ..settings import Settings
from .base import FixContext, Permission, error_code

logger = logging.getLogger(__name__)

SSH_PORT = 22
ALL_TRAFFIC = ("-1", "all")
TCP = ("tcp", "6")
ALREADY_GONE = ("InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound")
GROUP_GONE = ("InvalidGroup.NotFound", "InvalidGroupId.NotFound")
GUARDRAIL_TAG = "ssm-guardrail:replaces"


def admits_internet_ssh(rule: SecurityGroupRule) -> bool:
    """True when an ingress rule lets the whole internet reach TCP 22."""
    if rule.is_egress or rule.cidr not in INTERNET_CIDRS:
        return False
    protocol = rule.protocol.lower()
    if protocol in ALL_TRAFFIC:
        return True
    if protocol not in TCP:
        return False
    low = 0 if rule.from_port is None or rule.from_port < 0 else rule.from_port
    high = 65535 if rule.to_port is None or rule.to_port < 0 else rule.to_port
    return low <= SSH_PORT <= high


def ssh_exposed_running(snapshot: AccountSnapshot, group_id: str | None = None) -> list[Instance]:
    """Running (or starting) instances behind a group (`group_id`, or any) that admits
    internet SSH."""
    groups = [group_id] if group_id else list(snapshot.security_groups)
    open_groups = {
        gid
        for gid in groups
        if (g := snapshot.security_groups.get(gid))
        and any(admits_internet_ssh(r) for r in g.ingress)
    }
    everyone = {**snapshot.bystanders, **snapshot.instances}
    return [
        i
        for i in everyone.values()
        if i.state in ("pending", "running") and open_groups.intersection(i.security_group_ids)
    ]


@dataclass
class Readded:
    """What the fix added for one revoked rule: new rule ids (when EC2 says) and permissions."""

    rule_ids: list[str] = field(default_factory=list)
    permissions: list[dict[str, Any]] = field(default_factory=list)


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
    low = 0 if rule.from_port is None or rule.from_port < 0 else rule.from_port
    high = 65535 if rule.to_port is None or rule.to_port < 0 else rule.to_port
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


def describe_rule(rule: SecurityGroupRule) -> dict[str, Any]:
    """A rule as a person (and an undo) needs it: id, protocol, ports, source, description."""
    return {
        "SecurityGroupRuleId": rule.rule_id,
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port,
        "ToPort": rule.to_port,
        "Source": rule.cidr,
        "Description": rule.description,
    }


class SshOpenToInternet:
    id = "ssh-open-to-internet"
    title = "EC2 instance admits SSH (TCP 22) from the internet"
    description = (
        "A security group attached to a network interface of the instance admits TCP port 22 "
        "from 0.0.0.0/0 or ::/0. Use Session Manager instead of internet-facing SSH."
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
        "Remove the ingress rules that admit TCP 22 from 0.0.0.0/0 or ::/0 and connect with "
        "Session Manager (aws ssm start-session)."
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
            ("ec2:CreateTags",),
            resources=("arn:{partition}:ec2:{region}:{account}:security-group-rule/*",),
            conditions={"StringEquals": {"ec2:CreateAction": "AuthorizeSecurityGroupIngress"}},
            why="tag re-added rules with the rule they replace (so a person can undo)",
        ),
    )
    no_fix_reason = ""

    def check(self, snapshot: AccountSnapshot, settings: Settings) -> list[Result]:
        offending: dict[str, list[SecurityGroupRule]] = {
            gid: [r for r in group.ingress if admits_internet_ssh(r)]
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
        exposed = {i.instance_id for i in everyone if i.evaluated and i.exposed}
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
                    "CRITICAL" if exposed.intersection(users) else "HIGH",
                    f"rules {', '.join(r.rule_id for r in rules)} admit TCP 22 from "
                    f"{', '.join(sorted({r.cidr or '' for r in rules}))}; used by {len(users)} instance(s)",
                    details={"rule_ids": [r.rule_id for r in rules], "instance_ids": users},
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
            rule_ids = [r.rule_id for g in bad_groups for r in offending[g]]
            exposure = (
                "not reachable right now"
                if not instance.exposed
                else "running with a public IP"
                if instance.public_ip
                else "running with an IPv6 address"
            )
            result = snapshot.result(
                self.id,
                ResourceType.INSTANCE,
                instance.instance_id,
                Status.FAILED,
                "CRITICAL" if instance.exposed else "HIGH",
                f"TCP 22 open to the internet through {', '.join(bad_groups)} "
                f"(rules {', '.join(rule_ids)}); instance is {exposure}",
                details={"security_group_ids": bad_groups, "rule_ids": rule_ids},
            )
        return replace(result, follows_fix=bystander)

    def settle(self, snapshot: AccountSnapshot, records: Sequence[FixRecord]) -> AccountSnapshot:
        return snapshot  # each fix settles its results whole: nothing is left half done

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
        # A drift scan read the rules minutes ago (and the other fixes ran since): act on what
        # the groups hold now, so a rule an owner changed meanwhile is never revoked or widened.
        current = self._current_rules(ctx.clients.ec2, groups) if snapshot.full else {}
        records = []
        for gid in groups:
            group = snapshot.security_groups[gid]
            ingress = current.get(gid, []) if snapshot.full else group.ingress
            rules = [r for r in ingress if admits_internet_ssh(r)]
            unreachable = (
                self._unreachable(snapshot, gid) if ctx.settings.ssh_require_ssm_online else []
            )
            if unreachable:
                record = FixRecord(
                    self.id,
                    gid,
                    "revoke internet SSH",
                    Outcome.SKIPPED,
                    [describe_rule(r) for r in rules],
                    None,
                    f"would lock out {', '.join(unreachable)}: running and not Online in Systems "
                    "Manager (GUARDRAIL_SSH_REQUIRE_SSM_ONLINE); give them a working SSM role first",
                )
            else:
                record = self._close(group, rules, ctx)
            records.append(replace(record, covers=(gid, *users.get(gid, ()))))
        return records

    @staticmethod
    def _current_rules(ec2: Any, group_ids: list[str]) -> dict[str, list[SecurityGroupRule]]:
        """Ingress rules of the groups as they are now: one paginated call per 200 groups."""
        rules: dict[str, list[SecurityGroupRule]] = {}
        for batch in chunks(group_ids, FILTER_VALUES):
            for raw in pages(
                ec2,
                "describe_security_group_rules",
                "SecurityGroupRules",
                Filters=[{"Name": "group-id", "Values": batch}],
                MaxResults=1000,
            ):
                rule = SecurityGroupRule.from_api(raw)
                if not rule.is_egress:
                    rules.setdefault(rule.group_id, []).append(rule)
        return rules

    @staticmethod
    def _unreachable(snapshot: AccountSnapshot, gid: str) -> list[str]:
        """Running instances behind the group that Session Manager cannot reach right now."""
        return sorted(
            i.instance_id
            for i in ssh_exposed_running(snapshot, gid)
            if (m := snapshot.managed_instances.get(i.instance_id)) is None
            or m.ping_status != "Online"
        )

    def _close(
        self, group: SecurityGroup, rules: list[SecurityGroupRule], ctx: FixContext
    ) -> FixRecord:
        """Re-add what else the rules admitted, then revoke them. Never revoke if re-adding failed;
        never keep what was re-added for a rule someone else revoked meanwhile (that would widen)."""
        gid, ec2 = group.group_id, ctx.clients.ec2
        before = [describe_rule(r) for r in rules]

        def record(outcome: Outcome, after: Any, reason: str, code: str | None = None) -> FixRecord:
            at = ctx.clock() if outcome is Outcome.APPLIED else None
            return FixRecord(
                self.id, gid, "revoke internet SSH", outcome, before, after, reason, code, at=at
            )

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
        added: dict[str, Readded] = {}
        for rule_id, rule_permissions in readd.items():
            try:
                added[rule_id] = self._authorize(ec2, gid, rule_id, rule_permissions)
            except ClientError as error:
                code = error_code(error)
                if code in GROUP_GONE:
                    return record(Outcome.ALREADY_COMPLIANT, [], "security group no longer exists")
                self._undo(ec2, gid, added.values())
                return record(
                    Outcome.FAILED,
                    None,
                    "could not re-add the other ports; nothing was revoked",
                    code,
                )
        try:
            gone = self._revoke(ec2, gid, [r.rule_id for r in rules])
        except ClientError as error:
            code = error_code(error)
            if code in GROUP_GONE:
                return record(Outcome.ALREADY_COMPLIANT, [], "security group no longer exists")
            return record(
                Outcome.FAILED,
                [p for ps in readd.values() for p in ps],
                "revoke failed; re-added rules are a subset of the old ones",
                code,
            )
        # Rules revoked by someone else meanwhile: what was re-added for them must go again.
        self._undo(ec2, gid, [added[rule_id] for rule_id in gone if rule_id in added])
        after = [p for rule_id, ps in readd.items() if rule_id not in gone for p in ps]
        if len(gone) == len(rules):
            return record(Outcome.ALREADY_COMPLIANT, [], "rule already revoked")
        revoked = len(rules) - len(gone)
        reason = "; ".join(notes) or (
            f"revoked {revoked} rule(s); re-added {len(after)} rule(s) for the other ports"
            if after
            else f"revoked {revoked} rule(s)"
        )
        new_ids = [i for rule_id, r in added.items() if rule_id not in gone for i in r.rule_ids]
        return record(Outcome.APPLIED, {"readded": after, "new_rule_ids": new_ids}, reason)

    @staticmethod
    def _revoke(ec2: Any, gid: str, rule_ids: list[str]) -> set[str]:
        """Revoke the rules; returns those already gone. EC2 refuses the whole call when one id
        is unknown, so then each is revoked alone."""
        try:
            ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=rule_ids)
            return set()
        except ClientError as error:
            if error_code(error) not in ALREADY_GONE:
                raise
            if len(rule_ids) == 1:
                return set(rule_ids)
        gone = set()
        for rule_id in rule_ids:
            try:
                ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[rule_id])
            except ClientError as error:
                if error_code(error) not in ALREADY_GONE:
                    raise
                gone.add(rule_id)
        return gone

    @staticmethod
    def _undo(ec2: Any, gid: str, added: Iterable[Readded]) -> None:
        """Best effort: revoke exactly the permissions this fix added (not pre-existing ones)."""
        permissions = [p for readded in added for p in readded.permissions]
        if permissions:
            try:
                ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=permissions)
            except ClientError:
                logger.warning("could not undo re-added rules", extra={"group": gid})

    @staticmethod
    def _authorize(ec2: Any, gid: str, rule_id: str, permissions: list[dict[str, Any]]) -> Readded:
        """Re-add what one revoked rule admitted besides SSH: one call, each new rule tagged with
        the id it replaces. EC2 refuses the whole call if any permission already exists
        (an earlier run, or a person), so then each is tried alone and duplicates count as done
        (and are not ours to undo)."""
        tags = [
            {
                "ResourceType": "security-group-rule",
                "Tags": [{"Key": GUARDRAIL_TAG, "Value": rule_id}],
            }
        ]
        batches = [permissions]
        added = Readded()
        while batches:
            batch = batches.pop(0)
            try:
                response = ec2.authorize_security_group_ingress(
                    GroupId=gid, IpPermissions=batch, TagSpecifications=tags
                )
            except ClientError as error:
                if error_code(error) != "InvalidPermission.Duplicate":
                    raise
                if len(batch) > 1:
                    batches += [[p] for p in batch]
                continue
            added.rule_ids += [
                r["SecurityGroupRuleId"] for r in response.get("SecurityGroupRules", [])
            ]
            added.permissions += batch
        return added


SSH_OPEN = SshOpenToInternet()
