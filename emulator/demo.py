"""`python -m emulator.demo`: the guardrail end to end against an EMULATED account, for a person.

Starts a loopback emulator (moto + the emulation extension), seeds a realistic account, then runs
the real engine three times — a report scan, an enforce scan, a re-scan — publishing to the
emulated Security Hub each time, and prints what was found, what was changed, what is left and
what Security Hub holds. Exits 1 when the run shows something wrong (e.g. a fix the enforce scan
claims that the re-scan does not confirm), 0 otherwise. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from guardrail.cli import print_interrupted
from guardrail.clients import AwsClients
from guardrail.controls.session_logging import PREFERENCE_ACTIONS
from guardrail.engine import Guardrail, Interrupted, ScanReport
from guardrail.findings import product_arn
from guardrail.insights import RESOLVED_INSIGHT, finding_insights, group_key
from guardrail.model import FixRecord, Outcome, ResourceType, Status
from guardrail.publisher import FindingPublisher
from guardrail.settings import Settings

from .calls import CallCounter
from .seed import FAILED, LOGGING, ROLE, SSH, Seeded, minimum_instances, seed_account
from .server import EmulatedAccount, refuse_bad_seed

EMULATED = "[emulated]"


@dataclass
class Scan:
    """One engine run and what it cost."""

    name: str
    mode: str
    report: ScanReport
    seconds: float
    calls: dict[str, int]

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class HubState:
    """What the emulated Security Hub holds (GetFindings, every page)."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    # What each of the stack's insights shows (guardrail.insights): its findings (GetFindings
    # with the insight's filters) counted by its GroupByAttribute.
    insights: dict[str, Counter[str]] = field(default_factory=dict)

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter(
            (
                (f.get("Compliance") or {}).get("Status", "-"),
                (f.get("Workflow") or {}).get("Status", "-"),
            )
            for f in self.findings
        )

    def record_states(self) -> Counter[str]:
        return Counter(f.get("RecordState", "-") for f in self.findings)


INTERNET = ("0.0.0.0/0", "::/0")
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6"}
# An IP protocol other than tcp, udp and icmp (GRE): what an all-traffic rule admits that no
# re-added tcp/udp/icmp rule keeps.
OTHER_PROTOCOL = "47"
PREFERENCES = "SSM-SessionManagerRunShell"


@dataclass(frozen=True)
class Ingress:
    """One ingress rule as the account holds it, read apart from the engine."""

    group_id: str
    source: str  # a CIDR, a prefix list id or a referenced group id
    protocol: str  # tcp, udp, icmp, icmpv6, -1 (all) or a protocol number
    low: int  # -1: every port
    high: int
    rule_id: str = ""

    def admits(self, protocol: str, port: int) -> bool:
        if self.protocol == "-1":
            return True
        if self.protocol != protocol:
            return False
        return self.low == -1 or port == -1 or self.low <= port <= self.high

    def probes(self) -> list[tuple[str, int]]:
        """Protocol and port pairs the rule admits that a fix might take away: its ends, SSH
        and its neighbours, a few common ports; for all traffic udp, the ICMP of the source's
        address family and one other IP protocol too."""
        if self.protocol == "-1":
            icmp = "icmpv6" if ":" in self.source else "icmp"
            return [
                *(("tcp", p) for p in (0, 21, 22, 23, 443, 65535)),
                *(("udp", p) for p in (0, 22, 53, 65535)),
                (icmp, -1),
                (OTHER_PROTOCOL, -1),
            ]
        if self.protocol not in ("tcp", "udp") or self.low == -1:
            return [(self.protocol, -1)]
        ports = {self.low, self.high, 21, 22, 23, 80, 443, 3389}
        return [(self.protocol, p) for p in sorted(ports) if self.low <= p <= self.high]


def read_ingress(ec2: Any) -> list[Ingress]:
    rules = []
    for page in ec2.get_paginator("describe_security_group_rules").paginate():
        for raw in page["SecurityGroupRules"]:
            if raw.get("IsEgress"):
                continue
            source = (
                raw.get("CidrIpv4")
                or raw.get("CidrIpv6")
                or raw.get("PrefixListId")
                or (raw.get("ReferencedGroupInfo") or {}).get("GroupId", "?")
            )
            protocol = str(raw["IpProtocol"]).lower()
            rules.append(
                Ingress(
                    raw["GroupId"],
                    source,
                    PROTOCOL_NAMES.get(protocol, protocol),
                    int(raw.get("FromPort", -1)),
                    int(raw.get("ToPort", -1)),
                    raw["SecurityGroupRuleId"],
                )
            )
    return rules


def read_destinations(ssm: Any) -> dict[str, Any]:
    """The region's Session Manager preferences' log destinations ({} when there are none)."""
    try:
        content = json.loads(ssm.get_document(Name=PREFERENCES)["Content"])
    except ssm.exceptions.InvalidDocument:
        return {}
    inputs = content.get("inputs") or {}
    return {k: inputs[k] for k in ("s3BucketName", "cloudWatchLogGroupName") if inputs.get(k)}


@dataclass
class IamView:
    """Instance profiles and roles as the account holds them, read apart from the engine (which
    reads DescribeInstances, not the associations)."""

    associated: dict[str, str] = field(default_factory=dict)  # instance id → profile name
    profile_roles: dict[str, list[str]] = field(default_factory=dict)  # profile → role names
    role_policies: dict[str, set[str]] = field(default_factory=dict)  # role → attached ARNs


def read_iam(ec2: Any, iam: Any) -> IamView:
    view = IamView()
    for page in ec2.get_paginator("describe_iam_instance_profile_associations").paginate():
        for association in page["IamInstanceProfileAssociations"]:
            if association.get("State") in ("associating", "associated"):
                arn = association["IamInstanceProfile"]["Arn"]
                view.associated[association["InstanceId"]] = arn.rsplit("/", 1)[-1]
    for page in iam.get_paginator("list_instance_profiles").paginate():
        for profile in page["InstanceProfiles"]:
            roles = [r["RoleName"] for r in profile.get("Roles", [])]
            view.profile_roles[profile["InstanceProfileName"]] = roles
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            name = role["RoleName"]
            view.role_policies[name] = {
                p["PolicyArn"]
                for attached in iam.get_paginator("list_attached_role_policies").paginate(
                    RoleName=name
                )
                for p in attached["AttachedPolicies"]
            }
    return view


@dataclass
class DemoRun:
    seeded: Seeded
    endpoint: str
    seed_seconds: float
    scans: list[Scan]
    hub: HubState
    problems: list[str]
    # The account itself, read apart from the engine: ingress rules before the enforce scan
    # and after the re-scan; the preferences' log destinations, instance profile associations,
    # profiles' roles and roles' policies at the end.
    ingress_before: list[Ingress] = field(default_factory=list)
    ingress_after: list[Ingress] = field(default_factory=list)
    destinations: dict[str, Any] = field(default_factory=dict)
    iam_after: IamView = field(default_factory=IamView)

    def scan(self, name: str) -> Scan:
        return next(s for s in self.scans if s.name == name)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_flow(
    account: EmulatedAccount, *, instances: int = 60, explicit_deny: bool = False
) -> DemoRun:
    """Seed the emulated account, scan (report), scan (enforce), re-scan; judge the outcome."""
    session = account.session()
    counter = CallCounter(session)  # before any client exists: clients copy the handlers
    started = time.perf_counter()
    seeded = seed_account(session, account.region, instances=instances, explicit_deny=explicit_deny)
    seed_seconds = time.perf_counter() - started
    settings = Settings.from_env(seeded.settings_env())
    clients = AwsClients(session=session, region=account.region)
    publisher = FindingPublisher(clients.securityhub)
    scans = []
    ingress_before: list[Ingress] = []
    for name, mode in (
        ("report scan", "report"),
        ("enforce scan", "enforce"),
        ("re-scan", "report"),
    ):
        if mode == "enforce":
            ingress_before = read_ingress(clients.ec2)
        counter.reset()
        started = time.perf_counter()
        guardrail = Guardrail(
            clients, replace(settings, mode=mode), account_id=seeded.account_id, publisher=publisher
        )
        report = guardrail.run()
        scans.append(
            Scan(name, mode, report, time.perf_counter() - started, counter.by_operation())
        )
    hub = read_security_hub(
        clients.securityhub,
        product_arn(clients.partition, account.region, seeded.account_id),
    )
    run = DemoRun(
        seeded,
        account.endpoint_url,
        seed_seconds,
        scans,
        hub,
        [],
        ingress_before,
        read_ingress(clients.ec2),
        read_destinations(clients.ssm),
        read_iam(clients.ec2, clients.iam),
    )
    run.problems = assess(run)
    return run


def read_security_hub(client: Any, product_arn: str) -> HubState:
    def findings(**filters: Any) -> list[dict[str, Any]]:
        pages = client.get_paginator("get_findings").paginate(
            PaginationConfig={"PageSize": 100}, **filters
        )
        return [f for page in pages for f in page.get("Findings", [])]

    shown: dict[str, Counter[str]] = {}
    for insight in finding_insights(product_arn).values():
        matched = findings(Filters=insight.filters)
        shown[insight.name] = Counter(group_key(f, insight.group_by) for f in matched)
    return HubState(findings(), shown)


def assess(run: DemoRun) -> list[str]:
    """Everything the three scans and Security Hub show that should not be so."""
    problems: list[str] = []
    first, enforce, rescan = (
        run.scan(n).report for n in ("report scan", "enforce scan", "re-scan")
    )
    seeded = run.seeded

    # 1. The first scan sees every seeded condition, and nothing else, on the instances, each
    #    at the severity its case is seeded for.
    for evaluation in first.evaluations:
        result = evaluation.result
        case = seeded_case(run, result.resource_id)
        if result.resource_type is not ResourceType.INSTANCE or case is None:
            continue
        expected = (case.expected(result.control), case.expected_severity(result.control))
        if (result.status.value, result.severity) != expected:
            problems.append(
                f"report scan: {result.control} on {result.resource_id} ({case.name}) is "
                f"{result.status.value} {result.severity}, seeded as {' '.join(expected)}: "
                f"{result.reason}"
            )
    seen = {
        (e.result.control, e.result.resource_id)
        for e in first.evaluations
        if e.result.status is Status.FAILED
    }
    for control in (SSH, ROLE, LOGGING):
        missed = sorted(i for i in seeded.expected(control, FAILED) if (control, i) not in seen)
        if missed:
            problems.append(f"report scan: {control} missed seeded failures on {', '.join(missed)}")
    region = [
        e.result
        for e in first.evaluations
        if e.result.control == "ssm-session-logging"
        and e.result.resource_type is ResourceType.ACCOUNT
    ]
    if [(r.status, r.severity) for r in region] != [(Status.FAILED, "MEDIUM")]:
        judged = [f"{r.status.value} {r.severity}" for r in region]
        problems.append(
            "report scan: the region's Session Manager preferences (seeded absent) are judged "
            f"{judged or 'not at all'}, not FAILED MEDIUM once"
        )
    if first.fixes:
        problems.append(f"report scan changed {len(first.fixes)} thing(s); report mode must not")

    # 2. The enforce scan's fixes went through (or were skipped with a reason), and each one
    #    applied records what undoing it takes.
    for fix in enforce.fixes:
        if fix.outcome is Outcome.APPLIED and (gap := undo_steps(fix)[1]):
            problems.append(
                f"enforce scan: {fix.control} '{fix.action}' on {fix.resource_id} was applied, "
                f"but its record does not say how to undo it: {gap}"
            )
        if fix.outcome is Outcome.FAILED:
            problems.append(
                f"enforce scan: {fix.control} '{fix.action}' on {fix.resource_id} failed "
                f"({fix.error_code}): {fix.reason}"
            )
        if fix.outcome is Outcome.SKIPPED and not fix.reason:
            problems.append(
                f"enforce scan: {fix.control} skipped {fix.resource_id} without a reason"
            )
    if not enforce.fixes:
        problems.append("enforce scan made no fix although the account is seeded with failures")

    # 3. The re-scan confirms every claimed fix; anything still failing was skipped, with a reason.
    claimed = {
        (e.result.control, e.result.resource_id): e for e in enforce.evaluations if e.remediated
    }
    before = {(e.result.control, e.result.resource_id): e for e in enforce.evaluations}
    for evaluation in rescan.evaluations:
        if evaluation.result.status is not Status.FAILED:
            continue
        key = evaluation.result.key
        if key in claimed:
            fixes = "; ".join(f"{f.action}: {f.outcome.value}" for f in claimed[key].fixes)
            problems.append(
                f"re-scan: {key[0]} still FAILED on {key[1]} although the enforce scan "
                f"fixed it ({fixes}): {evaluation.result.reason}"
            )
        elif not explained(before.get(key)):
            problems.append(
                f"re-scan: {key[0]} FAILED on {key[1]} with no skipped fix to explain it: "
                f"{evaluation.result.reason}"
            )
        elif (case := seeded_case(run, key[1])) is not None and case.fixable:
            # A reason is not enough where the seed says an enforce run fixes everything.
            problems.append(
                f"re-scan: {key[0]} still FAILED on {key[1]} ({case.name}), seeded as fixable: "
                f"{evaluation.result.reason}"
            )

    # 4. The account itself, read apart from the engine.
    problems += account_problems(run)

    # 5. Security Hub took every finding, resolved the fixed ones, and agrees with the re-scan.
    for scan in run.scans:
        summary = scan.report.published
        if summary is None:
            problems.append(f"{scan.name}: nothing was published to Security Hub")
        elif not summary.ok:
            problems.append(
                f"{scan.name}: Security Hub publish not clean: {len(summary.failed)} failed, "
                f"{len(summary.unresolved)} unresolved, errors {summary.errors}"
            )
    counts = run.hub.counts()
    if counts[("FAILED", "RESOLVED")]:
        problems.append(
            f"Security Hub: {counts[('FAILED', 'RESOLVED')]} finding(s) FAILED yet RESOLVED"
        )
    resolved = sum(n for (_, workflow), n in counts.items() if workflow == "RESOLVED")
    if resolved != len(claimed):
        problems.append(
            f"Security Hub: {resolved} RESOLVED finding(s), not one per the {len(claimed)} "
            "fixed results"
        )
    still = {e.result.key for e in rescan.evaluations if e.result.status is Status.FAILED}
    hub_failed = sum(n for (compliance, _), n in counts.items() if compliance == "FAILED")
    if hub_failed != len(still):
        problems.append(
            f"Security Hub holds {hub_failed} FAILED finding(s); the re-scan has {len(still)}"
        )
    # 6. The insights (the dashboards) show the same: what is left failing, and what was fixed.
    for key, insight in finding_insights(None).items():
        shown = sum(run.hub.insights.get(insight.name, Counter()).values())
        wanted = len(claimed) if key == RESOLVED_INSIGHT else len(still)
        if shown != wanted:
            problems.append(f"Security Hub insight '{insight.name}' shows {shown}, not {wanted}")
    return problems


def seeded_case(run: DemoRun, instance_id: str) -> Any:
    """The seeded case of an instance; None for any other resource or instance."""
    try:
        return run.seeded.case_of(instance_id)
    except KeyError:
        return None


def fixable_users(run: DemoRun, group_id: str) -> list[str]:
    """The seeded instances of fixable cases with the group on one of their interfaces."""
    seeded = run.seeded
    return [
        instance
        for name, instances in seeded.instances.items()
        if (case := seeded.cases[name]).fixable
        and group_id in {seeded.groups.get(g) for g in (*case.groups, *case.secondary_groups)}
        for instance in instances
    ]


def account_problems(run: DemoRun) -> list[str]:
    """What the account shows after the re-scan, whatever the engine reports: no rule lost
    access other than internet TCP 22 and, for an all-traffic rule, exactly the IP protocols
    its fix record says were dropped; no group a fixable seeded instance uses, nor one the
    enforce scan says it closed, admits internet SSH; every applied fix shows as its record
    says (FIX_KINDS); the region's sessions have a log destination."""
    problems = []
    fixes = run.scan("enforce scan").report.fixes
    for rule in run.ingress_before:
        dropped = dropped_with(rule, fixes)
        lost, kept = [], []
        for protocol, port in rule.probes():
            if rule.source in INTERNET and protocol == "tcp" and port == 22:
                continue
            admitted = any(
                after.group_id == rule.group_id
                and after.source == rule.source
                and after.admits(protocol, port)
                for after in run.ingress_after
            )
            if not admitted and protocol not in dropped:
                lost.append(probe_label(protocol, port))
            elif admitted and protocol in dropped:
                kept.append(probe_label(protocol, port))
        group = label(run, ResourceType.SECURITY_GROUP, rule.group_id)
        if lost:
            problems.append(
                f"account: {group} no longer admits {', '.join(lost)} from {rule.source}: a fix "
                "took more than SSH"
                + (
                    " and the protocols its record says were dropped "
                    f"({', '.join(probe_label(p, -1) for p in sorted(dropped))})"
                    if dropped
                    else ""
                )
            )
        if kept:
            problems.append(
                f"account: {group} still admits {', '.join(kept)} from {rule.source}, which the "
                f"fix record says {rule.rule_id} dropped"
            )
    closed = {f.resource_id for f in fixes if f.control == SSH and f.outcome is Outcome.APPLIED}
    for rule in run.ingress_after:
        if not (rule.source in INTERNET and rule.admits("tcp", 22)):
            continue
        if rule.group_id in closed or fixable_users(run, rule.group_id):
            why = "the enforce scan closed it" if rule.group_id in closed else "it was fixable"
            problems.append(
                f"account: {label(run, ResourceType.SECURITY_GROUP, rule.group_id)} still admits "
                f"SSH from {rule.source} although {why}"
            )
    for fix in fixes:
        kind = FIX_KINDS.get(fix.action)
        if fix.outcome is Outcome.APPLIED and kind and (shown := kind.confirm(run, fix)):
            problems.append(f"account: {fix.control} '{fix.action}' on {fix.resource_id}: {shown}")
    if not run.destinations:
        problems.append("account: the region's Session Manager preferences log nowhere")
    return problems


def probe_label(protocol: str, port: int) -> str:
    name = f"protocol {protocol}" if protocol.isdigit() else protocol
    return name if port == -1 else f"{name}/{port}"


# The note an all-traffic rule's fix leaves: "<rule id>: other IP protocols (not tcp, udp or
# icmp) were dropped with the all-traffic rule".
DROPPED_NOTE = re.compile(
    r"(?P<rule>sgr-\w+): other IP protocols \(not (?P<kept>[^)]*)\) were dropped"
)


def dropped_with(rule: Ingress, fixes: Iterable[FixRecord]) -> set[str]:
    """The protocols among the rule's probes its applied SSH fix says were dropped with it: all
    but those the note names as kept (its "icmp" stands for either family's ICMP); none for a
    rule without such a note."""
    for fix in fixes:
        if fix.control != SSH or fix.outcome is not Outcome.APPLIED:
            continue
        for note in DROPPED_NOTE.finditer(fix.reason):
            if note["rule"] == rule.rule_id:
                kept = set(re.split(r",\s*|\s+or\s+", note["kept"].strip()))
                if "icmp" in kept:
                    kept.add("icmpv6")
                return {protocol for protocol, _ in rule.probes()} - kept
    return set()


# --------------------------------------------------------------------------------------------
# Applied fixes: how to undo each (from its record alone) and what the account must show
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixKind:
    """One kind of applied fix: the steps its record gives a person to undo it, or what the
    record lacks for that (before and after as the control writes them); and how the account,
    read apart from the engine, disagrees with the record ("" when it agrees)."""

    undo: Callable[[FixRecord], tuple[list[str], str]]
    confirm: Callable[[DemoRun, FixRecord], str]


def undo_steps(fix: FixRecord) -> tuple[list[str], str]:
    kind = FIX_KINDS.get(fix.action)
    if kind is None:
        return (
            [],
            f"the demo does not know how to undo '{fix.action}' (FIX_KINDS in emulator/demo.py)",
        )
    return kind.undo(fix)


def rule_text(rule: dict[str, Any]) -> str:
    protocol, low, high = rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")
    ports = "all traffic" if protocol in ("-1", "all") else f"{protocol} {low}-{high}"
    text = f"{ports} from {rule.get('Source')}"
    if rule.get("Description"):
        text += f' "{rule["Description"]}"'
    if rule.get("Tags"):
        text += f" tags {json.dumps(rule['Tags'], separators=(',', ':'))}"
    return text


def undo_revoke(fix: FixRecord) -> tuple[list[str], str]:
    before = fix.before if isinstance(fix.before, list) else []
    after = fix.after if isinstance(fix.after, dict) else {}
    if not before or not all(
        isinstance(r, dict)
        and r.get("SecurityGroupRuleId")
        and r.get("IpProtocol")
        and r.get("Source")
        for r in before
    ):
        return [], "before does not hold every revoked rule (id, protocol, ports, source)"
    readded, new_ids = after.get("readded", []), after.get("new_rule_ids", [])
    if len(new_ids) != len(readded):
        return [], f"after names {len(new_ids)} new rule id(s) for {len(readded)} re-added rule(s)"
    narrowed = {n["SecurityGroupRuleId"] for n in after.get("narrowed_in_place", [])}
    steps = [
        f"modify {r['SecurityGroupRuleId']} back to {rule_text(r)}"
        if r["SecurityGroupRuleId"] in narrowed
        else f"authorize again (was {r['SecurityGroupRuleId']}) {rule_text(r)}"
        for r in before
    ]
    if new_ids:
        steps.append(f"revoke the rules re-added in its place: {', '.join(new_ids)}")
    return steps, ""


def confirm_revoke(run: DemoRun, fix: FixRecord) -> str:
    after = fix.after if isinstance(fix.after, dict) else {}
    held = {r.rule_id for r in run.ingress_after if r.group_id == fix.resource_id}
    narrowed = {n["SecurityGroupRuleId"] for n in after.get("narrowed_in_place", [])}
    missing = [i for i in after.get("new_rule_ids", []) if i not in held]
    revoked = {r.get("SecurityGroupRuleId") for r in fix.before or []} - narrowed
    shown = []
    if missing:
        shown.append(f"re-added rules {', '.join(missing)} are not in the group")
    if left := sorted(revoked & held):
        shown.append(f"revoked rules {', '.join(left)} are still in the group")
    return "; ".join(shown)


def association(fix: FixRecord) -> dict[str, Any]:
    """What an associate fix's after names: the profile and the association's id (which
    DisassociateIamInstanceProfile takes)."""
    return fix.after if isinstance(fix.after, dict) else {}


def undo_associate(fix: FixRecord) -> tuple[list[str], str]:
    after = association(fix)
    if not after.get("instance_profile") or not after.get("association_id"):
        return [], "after names no association (id and profile) to disassociate"
    return [
        f"disassociate {after['association_id']} ({after['instance_profile']}; the instance "
        "had none)"
    ], ""


def confirm_associate(run: DemoRun, fix: FixRecord) -> str:
    now, wanted = run.iam_after.associated.get(fix.resource_id), association(fix)
    if now == wanted.get("instance_profile"):
        return ""
    return f"the instance's profile is {now or 'none'}, not {wanted.get('instance_profile')}"


def undo_add_role(fix: FixRecord) -> tuple[list[str], str]:
    if not fix.after:
        return [], "after names no role to remove"
    return [
        f"remove role {r} from instance profile {fix.resource_id} (it had none)" for r in fix.after
    ], ""


def confirm_add_role(run: DemoRun, fix: FixRecord) -> str:
    now = run.iam_after.profile_roles.get(fix.resource_id)
    return "" if now == list(fix.after) else f"the profile holds {now}, not {fix.after}"


def undo_attach(fix: FixRecord) -> tuple[list[str], str]:
    if not isinstance(fix.before, list):
        return [], "before does not list the role's policies"
    added = sorted(set(fix.after or ()) - set(fix.before))
    if not added:
        return [], "after attaches no policy beyond before"
    return [f"detach {arn} from role {fix.resource_id}" for arn in added], ""


def confirm_attach(run: DemoRun, fix: FixRecord) -> str:
    now = run.iam_after.role_policies.get(fix.resource_id, set())
    shown = []
    if missing := sorted(set(fix.after or ()) - now):
        shown.append(f"the role lacks {', '.join(missing)}")
    if lost := sorted(set(fix.before or ()) - now):
        shown.append(f"the role lost {', '.join(lost)}")
    return "; ".join(shown)


def undo_preferences(fix: FixRecord) -> tuple[list[str], str]:
    after = fix.after if isinstance(fix.after, dict) else {}
    if not (after.get("s3BucketName") or after.get("cloudWatchLogGroupName")):
        return [], "after names no log destination"
    if fix.action == PREFERENCE_ACTIONS[0]:  # created: there were none
        return [f"delete document {PREFERENCES} (there were no preferences)"], ""
    if not isinstance(fix.before, dict):
        return [], "before does not hold the inputs the update replaced"
    return [
        f"make the previous version of {PREFERENCES} the default again (its inputs: "
        f"{json.dumps(fix.before, separators=(',', ':'))})"
    ], ""


def confirm_preferences(run: DemoRun, fix: FixRecord) -> str:
    after = fix.after if isinstance(fix.after, dict) else {}
    wanted = {k: after[k] for k in ("s3BucketName", "cloudWatchLogGroupName") if after.get(k)}
    if run.destinations == wanted:
        return ""
    return f"the preferences log to {run.destinations or 'nowhere'}, not {wanted}"


ATTACH = FixKind(undo_attach, confirm_attach)
PREFERENCES_FIX = FixKind(undo_preferences, confirm_preferences)
FIX_KINDS: dict[str, FixKind] = {
    "revoke internet SSH": FixKind(undo_revoke, confirm_revoke),
    "associate instance profile": FixKind(undo_associate, confirm_associate),
    "add role to instance profile": FixKind(undo_add_role, confirm_add_role),
    "attach AmazonSSMManagedInstanceCore": ATTACH,
    "attach log-delivery policy": ATTACH,
    **dict.fromkeys(PREFERENCE_ACTIONS, PREFERENCES_FIX),
}


def explained(evaluation: Any) -> bool:
    """A FAILED result the guardrail left (partly) alone on purpose: no fix failed, and at least
    one was skipped with a reason (e.g. logging turned on, but the KMS key held back)."""
    fixes = evaluation.fixes if evaluation else ()
    return bool(
        fixes
        and not any(f.outcome is Outcome.FAILED for f in fixes)
        and any(f.outcome is Outcome.SKIPPED and f.reason for f in fixes)
    )


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------


def label(run: DemoRun, resource_type: ResourceType, resource_id: str) -> str:
    """What the seed made the resource to be (instance case, group name, region preferences)."""
    seeded = run.seeded
    if resource_type is ResourceType.INSTANCE:
        try:
            return seeded.case_of(resource_id).name
        except KeyError:
            return ""
    if resource_type is ResourceType.SECURITY_GROUP:
        names = {gid: name for name, gid in seeded.groups.items()}
        return f"group {names.get(resource_id, '?')}"
    return "region's Session Manager preferences"


def short(value: Any, limit: int = 110) -> str:
    if value is None:
        return "-"
    text = (
        value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def heading(text: str, out: TextIO) -> None:
    print(f"\n{text}\n{'-' * len(text)}", file=out)


def print_results(run: DemoRun, scan: Scan, out: TextIO, *, only_failed: bool = True) -> None:
    by_control: dict[str, list[Any]] = {}
    for evaluation in scan.report.evaluations:
        by_control.setdefault(evaluation.result.control, []).append(evaluation)
    for control, evaluations in by_control.items():
        counts = Counter(e.result.status.value for e in evaluations)
        print(
            f"  {control:<22} FAILED {counts.get('FAILED', 0):>3}   PASSED {counts.get('PASSED', 0):>3}"
            f"   NOT_APPLICABLE {counts.get('NOT_APPLICABLE', 0):>3}",
            file=out,
        )
        failing = [e for e in evaluations if e.result.status is Status.FAILED]
        for e in sorted(
            failing,
            key=lambda e: (
                e.result.resource_type.value,
                label(run, e.result.resource_type, e.result.resource_id),
            ),
        ):
            r = e.result
            print(
                f"      {r.severity:<8} {r.resource_id:<22} [{label(run, r.resource_type, r.resource_id)}]",
                file=out,
            )
            print(f"               {short(r.reason, 150)}", file=out)


def print_fixes(run: DemoRun, scan: Scan, out: TextIO) -> None:
    outcomes = Counter(f.outcome.value for f in scan.report.fixes)
    print(
        "  " + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + " fix record(s)",
        file=out,
    )
    for fix in scan.report.fixes:
        print(
            f"  * {fix.control}: {fix.action} on {fix.resource_id}  -> {fix.outcome.value.upper()}",
            file=out,
        )
        print(f"      before: {short(fix.before)}", file=out)
        print(f"      after:  {short(fix.after)}", file=out)
        if fix.reason:
            print(f"      why:    {short(fix.reason, 150)}", file=out)
        if fix.outcome is Outcome.APPLIED:
            steps, gap = undo_steps(fix)
            for step in steps or [f"? {gap}"]:  # in full: the ids a person needs
                print(f"      undo:   {step}", file=out)
        covers = [c for c in fix.covers if c != fix.resource_id]
        if covers:
            print(f"      settles results of: {short(', '.join(covers), 120)}", file=out)


def print_rescan(run: DemoRun, scan: Scan, enforce: Scan, out: TextIO) -> None:
    remaining = [e for e in scan.report.evaluations if e.result.status is Status.FAILED]
    counts = Counter(e.result.status.value for e in scan.report.evaluations)
    print(
        f"  {counts.get('PASSED', 0)} PASSED, {counts.get('NOT_APPLICABLE', 0)} NOT_APPLICABLE, "
        f"{len(remaining)} FAILED",
        file=out,
    )
    before = {e.result.key: e for e in enforce.report.evaluations}
    fixable_left = [e for e in remaining if not explained(before.get(e.result.key))]
    if not fixable_left:
        print("  Nothing the guardrail can fix is left failing.", file=out)
    for e in remaining:
        r = e.result
        why = (
            "; ".join(f"{f.outcome.value}: {f.reason}" for f in before.get(r.key, e).fixes)
            or "no fix recorded"
        )
        print(
            f"  - {r.control} on {r.resource_id} [{label(run, r.resource_type, r.resource_id)}]: "
            f"{r.reason}",
            file=out,
        )
        print(f"      left as is because: {short(why, 160)}", file=out)


def print_hub(run: DemoRun, out: TextIO) -> None:
    counts = run.hub.counts()
    print(
        f"  {len(run.hub.findings)} findings from ssm-guardrail "
        f"(record state: {dict(run.hub.record_states())})",
        file=out,
    )
    workflows = sorted({w for _, w in counts})
    print(
        "  Compliance.Status  " + "".join(f"{w:>12}" for w in workflows) + "   (Workflow.Status)",
        file=out,
    )
    for compliance in sorted({c for c, _ in counts}):
        print(
            f"  {compliance:<18} "
            + "".join(f"{counts.get((compliance, w), 0):>12}" for w in workflows),
            file=out,
        )
    examples = pick_examples(run.hub.findings)
    for finding in examples:
        resource = (finding.get("Resources") or [{}])[0].get("Id", "?")
        print(f"\n  e.g. {finding.get('Title')}", file=out)
        print(f"       resource   {resource}", file=out)
        print(
            f"       compliance {(finding.get('Compliance') or {}).get('Status')}  "
            f"workflow {(finding.get('Workflow') or {}).get('Status')}  "
            f"severity {(finding.get('Severity') or {}).get('Label')}  "
            f"record {finding.get('RecordState')}",
            file=out,
        )
        if finding.get("Note"):
            print(f"       note       {short(finding['Note'].get('Text'), 150)}", file=out)
        print(f"       {short(finding.get('Description'), 160)}", file=out)


def print_insights(run: DemoRun, out: TextIO) -> None:
    """Each insight the stack deploys, as Security Hub would show it: its groups and counts."""
    for name, groups in run.hub.insights.items():
        print(f"  {name}: {sum(groups.values())}", file=out)
        for key, n in groups.most_common(5):
            print(f"    {n:>4}  {key}", file=out)
        if len(groups) > 5:
            print(f"          ... {len(groups) - 5} more", file=out)


def pick_examples(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One resolved fix, one finding still open, one compliant resource; different controls."""
    active = [f for f in findings if f.get("RecordState") == "ACTIVE"]
    wanted = [("PASSED", "RESOLVED"), ("FAILED", "NEW"), ("PASSED", "NEW")]
    examples: list[dict[str, Any]] = []
    for compliance, workflow in wanted:
        matches = [
            f
            for f in active
            if (f.get("Compliance") or {}).get("Status") == compliance
            and (f.get("Workflow") or {}).get("Status") == workflow
        ]
        used = {e.get("GeneratorId") for e in examples}
        fresh = [f for f in matches if f.get("GeneratorId") not in used]
        # A security group fix makes the richest example: its note names the revoked rules.
        fresh.sort(key=lambda f: (f["Resources"][0]["Type"] != "AwsEc2SecurityGroup", f["Id"]))
        if fresh or matches:
            examples.append((fresh or matches)[0])
    return examples


def print_run(run: DemoRun, out: TextIO) -> None:
    seeded = run.seeded
    print("ssm-guardrail demo — against an EMULATED AWS account", file=out)
    print(
        f"{EMULATED} moto on {run.endpoint} (loopback only, fake credentials, account "
        f"{seeded.account_id}, {seeded.region}). emulator/extension.py adds what moto lacks or "
        "answers otherwise than AWS: DescribeInstanceInformation, Get/UpdateServiceSetting, "
        "SimulatePrincipalPolicy, Security Hub's BatchImportFindings (ASFF checks, update rules), "
        "BatchUpdateFindings and GetFindings filters, and parts of RunInstances, "
        "AuthorizeSecurityGroupIngress, ReplaceIamInstanceProfileAssociation and "
        "DescribeInstances.",
        file=out,
    )
    print(
        f"{EMULATED} seeded in {run.seed_seconds:.1f}s: {len(seeded.instance_ids)} instances in "
        f"{len(seeded.vpcs)} VPCs, {len(seeded.groups)} security groups, {len(seeded.profiles)} "
        "instance profiles; Session Manager preferences absent; Security Hub enabled.",
        file=out,
    )
    for name, case in seeded.cases.items():
        print(f"    {len(seeded.instances[name]):>2} x {name:<24} {case.description}", file=out)

    first, enforce, rescan = (run.scan(n) for n in ("report scan", "enforce scan", "re-scan"))
    heading(
        f"1. Report scan: what is wrong ({first.seconds:.1f}s, {first.total_calls} API calls, "
        "nothing changed)",
        out,
    )
    print_results(run, first, out)
    heading(
        f"2. Enforce scan: what the guardrail changed ({enforce.seconds:.1f}s, "
        f"{enforce.total_calls} API calls)",
        out,
    )
    print_fixes(run, enforce, out)
    heading(
        f"3. Re-scan: what is left ({rescan.seconds:.1f}s, {rescan.total_calls} API calls)", out
    )
    print_rescan(run, rescan, enforce, out)
    heading(f"4. What Security Hub now holds {EMULATED}", out)
    print_hub(run, out)
    heading(f"5. Security Hub insights, the guardrail's dashboards {EMULATED}", out)
    print_insights(run, out)
    print("", file=out)
    if run.ok:
        print(
            "RESULT: OK — every fix the enforce scan claimed is confirmed by the re-scan and by "
            "the account, read apart from the engine: no security group rule lost more than "
            "internet SSH (all-traffic rules: exactly the IP protocols their record says were "
            "dropped) and the re-added rules are there; instance profile associations, profiles' "
            "roles, roles' attached policies and the preferences' log destinations are as the "
            "records say. Every applied fix records how to undo it; Security Hub agrees.",
            file=out,
        )
    else:
        print(f"RESULT: {len(run.problems)} PROBLEM(S)", file=out)
        for problem in run.problems:
            print(f"  ! {problem}", file=out)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m emulator.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=60,
        help=f"instances to seed (at least {minimum_instances()})",
    )
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--explicit-deny",
        action="store_true",
        help="also seed a role whose explicit Deny blocks log delivery (attaching cannot fix it)",
    )
    args = parser.parse_args(argv)
    refuse_bad_seed(parser, args.region, args.instances, args.explicit_deny)
    print(
        f"starting the emulator on 127.0.0.1 and seeding {args.instances} instances...",
        file=sys.stderr,
    )
    try:
        with EmulatedAccount(args.region) as account:
            run = run_flow(account, instances=args.instances, explicit_deny=args.explicit_deny)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: the emulator is stopped by now
        if isinstance(interrupt, Interrupted):  # during a scan: what it had changed
            print_interrupted(interrupt, sys.stderr)
        print("demo interrupted: the emulated account is stopped, nothing else was touched",
              file=sys.stderr)  # fmt: skip
        return 130
    print_run(run, out)  # the emulator is stopped by now
    return 0 if run.ok else 1


if __name__ == "__main__":
    code = main()
    if code == 130:
        # An interrupted call may still hold a connection pool's lock that its finalizer at
        # exit waits on (seen once): end without finalizers, all output flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
