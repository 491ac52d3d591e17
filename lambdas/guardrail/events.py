"""EventBridge events → the resources they touched, as a `Scope` (or why the event is dropped).

Pure: no clients, no I/O. Every real CloudTrail shape the guardrail meets is handled here (see
AWS-NOTES.md "Events"): `items` wrappers whose empty lists arrive as `{}`, the flat `cidrIp` form,
groups named only by `groupName`, PascalCase request/response wrappers, several instances per
RunInstances, ids with stray whitespace, events without `version`. Parsers are found through a
registry keyed by event name, not an if-chain.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .controls.session_logging import SESSION_LOGGING
from .controls.ssh_open import SSH_OPEN, reaches_ssh_port
from .controls.ssm_role import CORE_POLICY, SSM_ROLE
from .model import SESSION_DOCUMENT, SecurityGroupRule, is_internet, network
from .scope import Scope
from .settings import POLICY_ARN, PROFILE_NAME, ROLE_NAME

CLOUDTRAIL = "AWS API Call via CloudTrail"
STATE_CHANGE = "EC2 Instance State-change Notification"

SSH, ROLE, LOGGING = SSH_OPEN.id, SSM_ROLE.id, SESSION_LOGGING.id
PROFILE_CONTROLS = frozenset({ROLE, LOGGING})
ALL_CONTROLS: frozenset[str] = frozenset()  # a Scope with no controls evaluates every enabled one

# The states in which a new or restarted instance must be looked at; later states are the drift
# scan's business (a stopped instance keeps its findings, a terminated one is archived there).
ACTIVE_STATES = frozenset({"pending", "running"})

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
GROUP_ID = re.compile(r"^sg-[0-9a-f]{8,17}$")
INTERFACE_ID = re.compile(r"^eni-[0-9a-f]{8,17}$")
PREFIX_LIST_ID = re.compile(r"^pl-[0-9a-f]{8,17}$")
# [0-9], not \d: \d also matches other scripts' digits (Arabic-Indic, fullwidth), never in an id.
ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
CORE_POLICY_SUFFIX = f":iam::aws:policy/{CORE_POLICY}"  # any partition
GLOBAL_SOURCES = frozenset({"iam.amazonaws.com"})  # events delivered from us-east-1 to every region


class DropKind(StrEnum):
    MALFORMED = "malformed"  # not an event we can read
    UNKNOWN = "unknown"  # an event type or name the guardrail does not handle
    UNRESOLVED = "unresolved"  # a real shape that does not name the resource (e.g. groupName only)
    FAILED_CALL = "failed_call"  # the API call failed (errorCode): nothing changed
    OWN_CHANGE = "own_change"  # the guardrail's own principal made the change
    IRRELEVANT = "irrelevant"  # a handled event that cannot affect any control
    OTHER_REGION = "other_region"  # a regional event for another region's function
    OTHER_ACCOUNT = "other_account"  # an event from an account the guardrail does not run in
    DEFERRED = "deferred"  # it touched more roles than an event evaluates: the drift scan does

    @property
    def bad_input(self) -> bool:
        """Counted as EventsDropped: someone should look at the event or at the routing."""
        return self in (
            DropKind.MALFORMED,
            DropKind.UNKNOWN,
            DropKind.UNRESOLVED,
            DropKind.OTHER_REGION,
            DropKind.OTHER_ACCOUNT,
        )

    @property
    def metric(self) -> str:
        """The on-change metric counting it: bad input is someone's problem (routing, a new
        event shape); a deferred event waits for the drift scan (worth a look if it recurs);
        the rest is expected."""
        if self.bad_input:
            return "EventsDropped"
        return "EventsDeferred" if self is DropKind.DEFERRED else "EventsIgnored"


@dataclass(frozen=True)
class Dropped:
    """Why an event leads to no evaluation."""

    reason: str
    kind: DropKind = DropKind.MALFORMED
    event_name: str = ""
    event_id: str = ""

    @property
    def bad_input(self) -> bool:
        return self.kind.bad_input

    def as_log(self) -> dict[str, str]:
        return {
            "event_name": self.event_name,
            "event_id": self.event_id,
            "kind": self.kind.value,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Change:
    """A relevant event: what it touched (the scope to evaluate) and where it came from."""

    scope: Scope
    event_name: str
    event_id: str = ""
    account_id: str | None = None  # from the event's `account`: no STS call needed
    region: str | None = None  # the event's region (us-east-1 for IAM)
    actor: str | None = None
    global_service: bool = False  # IAM: evaluate in the receiving function's region
    # The AWS service that made the call for the actor (userIdentity.invokedBy), e.g.
    # cloudformation.amazonaws.com for a stack's own changes.
    invoked_by: str | None = None
    # Invalid values the event named beside valid ids: left out of the scope, and logged (a
    # value no id pattern accepts may be a shape the parser does not know).
    ignored: tuple[str, ...] = ()

    def as_log(self) -> dict[str, Any]:
        s = self.scope
        return {
            "event_name": self.event_name,
            "event_id": self.event_id,
            "actor": self.actor,
            "invoked_by": self.invoked_by,
            "instance_ids": sorted(s.instance_ids),
            "interface_ids": sorted(s.interface_ids),
            "group_ids": sorted(s.group_ids),
            "prefix_list_ids": sorted(s.prefix_list_ids),
            "profile_names": sorted(s.profile_names),
            "role_names": sorted(s.role_names),
            "policy_arns": sorted(s.policy_arns),
            "preferences": s.preferences,
            "controls": sorted(s.controls),
            "ignored": list(self.ignored),
        }


# --- tolerant readers for CloudTrail's XML-derived JSON -------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def items(value: Any) -> list[dict[str, Any]]:
    """The entries of an `items` wrapper. `{}` (CloudTrail's empty list), None and junk give [];
    a single entry serialised as an object (not a one-element list) gives [that entry]."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    if isinstance(value, dict):
        if "items" in value:
            return items(value["items"])
        return [value] if value else []
    return []


MAX_SHOWN = 10  # invalid values quoted in a log line (an event may list hundreds)


def _valid(values: Iterable[Any], pattern: re.Pattern[str]) -> tuple[frozenset[str], list[str]]:
    """Stripped values matching `pattern`, and the first MAX_SHOWN that did not (for the log)."""
    good: set[str] = set()
    bad: list[str] = []
    for value in values:
        text = _str(value)
        if text and pattern.match(text):
            good.add(text)
        elif value not in (None, "") and len(bad) < MAX_SHOWN:
            bad.append(repr(value)[:80])
    return frozenset(good), bad


def _got(bad: list[str]) -> str:
    return f" (got {', '.join(bad)})" if bad else ""


def _pascal(params: dict[str, Any], wrapper: str) -> dict[str, Any]:
    """The PascalCase wrapper CloudTrail puts around some EC2 calls, else the params themselves."""
    inner = params.get(wrapper)
    return inner if isinstance(inner, dict) else params


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) not in (None, "", {}):
            return mapping[key]
    return None


# --- who made the change ---------------------------------------------------------------------


def principal_key(arn: str) -> str:
    """An ARN normalised for comparison: assumed-role sessions and role paths reduce to
    `arn:<partition>:iam::<account>:role/<name>` (an assumed-role ARN carries no path)."""
    parts = arn.strip().split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return arn.strip()
    _, partition, service, _, account, resource = parts
    if service == "sts" and resource.startswith("assumed-role/"):
        name = resource.split("/")[1] if resource.count("/") >= 1 else ""
        return f"arn:{partition}:iam::{account}:role/{name}"
    if service == "iam" and resource.startswith("role/"):
        return f"arn:{partition}:iam::{account}:role/{resource.rsplit('/', 1)[-1]}"
    return f"arn:{partition}:{service}::{account}:{resource}"


def actor_arns_of(detail: Mapping[str, Any]) -> list[str]:
    """The principal ARNs a CloudTrail record names: the session issuer, then the caller."""
    identity = _dict(detail.get("userIdentity"))
    issuer = _dict(_dict(identity.get("sessionContext")).get("sessionIssuer"))
    return [a for a in (_str(issuer.get("arn")), _str(identity.get("arn"))) if a]


def wildcard_beside_a_path(pattern: str) -> bool:
    """A role ARN pattern with a path and a wildcard (`role/ssm-guardrail/*`): reduced to the
    role's name, as principal_key does, it would match every role of the account."""
    parts = pattern.strip().split(":", 5)
    resource = parts[5] if len(parts) == 6 else ""
    return (
        resource.startswith("role/")
        and "/" in resource[len("role/") :]
        and any(c in resource for c in "*?[")
    )


def is_own_change(detail: Mapping[str, Any], actor_arns: Iterable[str]) -> bool:
    """True when the guardrail's own principal (GUARDRAIL_ACTOR_ARNS) made the call.
    Configured ARNs may use `*` wildcards (e.g. a CDK-generated role name suffix). A role's name
    is unique in its account whatever its path, so ARNs compare by name; a pattern with a
    wildcard beside a path compares with the session issuer's ARN, which carries the path."""
    patterns = [a.strip() for a in actor_arns if a and a.strip()]
    arns = actor_arns_of(detail)
    actors = [principal_key(a) for a in arns]
    for pattern in patterns:
        if wildcard_beside_a_path(pattern):
            if any(fnmatch.fnmatchcase(a.strip(), pattern) for a in arns):
                return True
        elif any(fnmatch.fnmatchcase(actor, principal_key(pattern)) for actor in actors):
            return True
    return False


# --- one parser per event name -----------------------------------------------------------------


@dataclass(frozen=True)
class Touched:
    """What a parser read: the scope to evaluate, and the invalid values beside its ids."""

    scope: Scope
    ignored: tuple[str, ...] = ()


Parsed = Touched | Dropped
Parser = Callable[[dict[str, Any], dict[str, Any]], Parsed]  # (requestParameters, responseElements)


def _narrowed(parsed: Parsed, **changes: Any) -> Parsed:
    """The parsed scope with `changes` made (a drop passes through)."""
    if isinstance(parsed, Dropped):
        return parsed
    return replace(parsed, scope=replace(parsed.scope, **changes))


@dataclass(frozen=True)
class EventType:
    source: str  # detail.eventSource
    parse: Parser


def _group_scope(group_ids: Iterable[Any], what: str) -> Parsed:
    groups, bad = _valid(group_ids, GROUP_ID)
    if not groups:
        return Dropped(
            f"{what}: no valid security group id" + _got(bad),
            DropKind.MALFORMED if bad else DropKind.UNRESOLVED,
        )
    return Touched(Scope(group_ids=groups, controls=frozenset({SSH})), tuple(bad))


def _port(value: Any) -> int | None:
    """A rule's port as CloudTrail writes it (a number, or its text); None when absent."""
    if value is None or isinstance(value, bool):
        return None
    return int(str(value).strip())  # junk raises ValueError: the rule cannot be read


def _sources(permission: dict[str, Any]) -> list[dict[str, Any]]:
    """One source per entry of a request's ipPermissions item (or of the flat form), or a
    response rule-set item as it is, in the rule set's own keys."""
    sources: list[dict[str, Any]] = [
        *({"cidrIpv4": r.get("cidrIp")} for r in items(permission.get("ipRanges"))),
        *({"cidrIpv6": r.get("cidrIpv6")} for r in items(permission.get("ipv6Ranges"))),
        *({"prefixListId": r.get("prefixListId")} for r in items(permission.get("prefixListIds"))),
        *({"referencedGroupInfo": r} for r in items(permission.get("groups"))),
    ]
    if permission.get("cidrIp") is not None:  # the flat form
        sources.append({"cidrIpv4": permission["cidrIp"]})
    keys = ("cidrIpv4", "cidrIpv6", "prefixListId", "referencedGroupInfo")
    if any(permission.get(k) for k in keys):  # a rule-set item
        sources.append({k: permission.get(k) for k in keys})
    return sources


def may_touch_internet_ssh(request: dict[str, Any], response: dict[str, Any]) -> bool:
    """Whether an Authorize/RevokeSecurityGroupIngress may open or close internet SSH: False
    only when the event shows every rule it added or removed, and none admits TCP 22 from a
    CIDR holding the internet or from a prefix list (tcp 443, udp 22, tcp 22 from 10.0.0.0/8
    or from a group). A rule named only by its id (a revoke by securityGroupRuleIds), or one
    the event shows without its protocol, ports or source, may."""
    if items(request.get("securityGroupRuleIds")):
        return True
    flat = [request] if request.get("ipProtocol") is not None else []
    permissions = [*items(request.get("ipPermissions")), *flat]
    for rule_set in ("securityGroupRuleSet", "revokedSecurityGroupRuleSet"):
        permissions += items(response.get(rule_set))
    if not permissions:
        return True
    for permission in permissions:
        sources = _sources(permission)
        if permission.get("ipProtocol") is None or not sources:
            return True
        try:
            low, high = _port(permission.get("fromPort")), _port(permission.get("toPort"))
        except ValueError:
            return True
        for source in sources:
            rule = SecurityGroupRule(
                "",
                "",
                str(permission["ipProtocol"]),
                low,
                high,
                cidr_ipv4=_str(source.get("cidrIpv4")) or None,
                cidr_ipv6=_str(source.get("cidrIpv6")) or None,
                prefix_list_id=_str(source.get("prefixListId")) or None,
            )
            private = network(rule.cidr) is not None and not is_internet(rule.cidr)
            from_group = isinstance(source.get("referencedGroupInfo"), dict)
            if reaches_ssh_port(rule) and not (private or from_group):
                return True
    return False


def _ingress_change(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """Authorize/RevokeSecurityGroupIngress: the group from the request or, when the request
    names it only by groupName (default VPC), from the response's securityGroupRuleSet. A
    change that cannot open or close internet SSH is dropped: judged, the group's instances'
    findings would all be imported again, unchanged."""
    if not may_touch_internet_ssh(request, response):
        return Dropped(
            "the rules it changes cannot admit TCP 22 from the internet", DropKind.IRRELEVANT
        )
    ids = [request.get("groupId")]
    ids += [rule.get("groupId") for rule in items(response.get("securityGroupRuleSet"))]
    ids += [rule.get("groupId") for rule in items(response.get("revokedSecurityGroupRuleSet"))]
    if not any(_str(i) for i in ids) and _str(request.get("groupName")):
        return Dropped(
            f"group named only as {_str(request['groupName'])!r} and the response "
            "carries no rule set with its id",
            DropKind.UNRESOLVED,
        )
    return _group_scope(ids, "security group rule change")


def _modify_rules(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """ModifySecurityGroupRules: {"ModifySecurityGroupRulesRequest": {"GroupId": ...}}."""
    inner = _pascal(request, "ModifySecurityGroupRulesRequest")
    return _group_scope([_first(inner, "GroupId", "groupId")], "ModifySecurityGroupRules")


def _prefix_list_change(call: str) -> Parser:
    """ModifyManagedPrefixList, RestoreManagedPrefixListVersion: the list's entries changed, so
    every group whose rule references it (an entry 0.0.0.0/0 opens their SSH rules to the
    internet): ssh only. The list id is read camelCase or in a PascalCase wrapper, from the
    request or the response's prefixList (no real event of these calls is checked in
    AWS-NOTES.md)."""

    def parse(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
        inner = _pascal(request, f"{call}Request")
        answer = _dict(_first(_pascal(response, f"{call}Response"), "prefixList", "PrefixList"))
        ids = [_first(params, "prefixListId", "PrefixListId") for params in (inner, answer)]
        lists, bad = _valid(ids, PREFIX_LIST_ID)
        if not lists:
            return Dropped(f"{call}: no valid prefix list id" + _got(bad), DropKind.MALFORMED)
        return Touched(Scope(prefix_list_ids=lists, controls=frozenset({SSH})), tuple(bad))

    return parse


def _instances(ids: Iterable[Any], what: str, controls: frozenset[str] = ALL_CONTROLS) -> Parsed:
    instances, bad = _valid(ids, INSTANCE_ID)
    if not instances:
        return Dropped(f"{what}: no valid instance id" + _got(bad), DropKind.MALFORMED)
    return Touched(Scope(instance_ids=instances, controls=controls), tuple(bad))


def _run_instances(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """RunInstances: every instance of `responseElements.instancesSet.items[]` (launch template
    or not: the response always lists what was launched)."""
    ids = [i.get("instanceId") for i in items(response.get("instancesSet"))]
    return _instances(ids, "RunInstances")


def _start_instances(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    ids = [i.get("instanceId") for i in items(request.get("instancesSet"))]
    ids += [i.get("instanceId") for i in items(response.get("instancesSet"))]
    return _instances(ids, "StartInstances")


def _instance_groups(call: str) -> Parser:
    """A call that names one instance in `requestParameters.instanceId` and can change only the
    security groups guarding it: that instance, ssh only."""

    def parse(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
        return _instances([request.get("instanceId")], call, frozenset({SSH}))

    return parse


def _unchanged_groups(request: dict[str, Any], what: str) -> Dropped | None:
    """Why a Modify*Attribute call is dropped (None: its groups changed). It changes one
    attribute a call: without a groupSet, another one (an instance type, user data or
    termination protection cannot change a verdict); a groupSet that names no valid group is a
    groups change we cannot read, not a harmless one."""
    group_set = request.get("groupSet")
    if group_set in (None, {}, []):  # CloudTrail writes an empty list as {}
        return Dropped(f"{what} without a groupSet cannot affect any control", DropKind.IRRELEVANT)
    groups, bad = _valid([g.get("groupId") for g in items(group_set)], GROUP_ID)
    if not groups:
        return Dropped(
            f"{what}: groupSet names no valid security group id"
            + _got(bad or [repr(group_set)[:80]]),
            DropKind.MALFORMED,
        )
    return None


def _modify_instance_attribute(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """ModifyInstanceAttribute: a new groupSet is evaluated on the instance."""
    unchanged = _unchanged_groups(request, "instance attribute change")
    return unchanged or _instance_groups("ModifyInstanceAttribute")(request, response)


def _modify_interface_attribute(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """ModifyNetworkInterfaceAttribute names the interface, not the instance: a groupSet change
    is evaluated on the instance the interface is attached to."""
    unchanged = _unchanged_groups(request, "network interface change")
    if unchanged:
        return unchanged
    interfaces, bad = _valid([request.get("networkInterfaceId")], INTERFACE_ID)
    if not interfaces:
        return Dropped(
            "ModifyNetworkInterfaceAttribute: no valid network interface id" + _got(bad),
            DropKind.MALFORMED,
        )
    return Touched(Scope(interface_ids=interfaces, controls=frozenset({SSH})))


def _associate_address(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """AssociateAddress: an Elastic IP given to an instance (`instanceId`) or to one of its
    interfaces (`networkInterfaceId`). Reachable over IPv4 now, internet SSH through its groups
    becomes CRITICAL: ssh only."""
    instances, bad = _valid([request.get("instanceId")], INSTANCE_ID)
    interfaces, bad_interfaces = _valid([request.get("networkInterfaceId")], INTERFACE_ID)
    if not instances and not interfaces:
        return Dropped(
            "AssociateAddress: no valid instance or network interface id"
            + _got(bad + bad_interfaces),
            DropKind.MALFORMED,
        )
    return Touched(
        Scope(instance_ids=instances, interface_ids=interfaces, controls=frozenset({SSH}))
    )


def _ipv6_change(call: str) -> Parser:
    """AssignIpv6Addresses / UnassignIpv6Addresses: IPv6 addresses (or delegated prefixes)
    given to or taken from an interface. Reachable over IPv6 or not any more, internet SSH
    (::/0) through its groups is CRITICAL or HIGH: ssh only. The interface id is read from the
    request or the response, camelCase or in a PascalCase wrapper (no real event of these calls
    is checked in AWS-NOTES.md)."""

    def parse(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
        inner = _pascal(request, f"{call}Request")
        answer = _pascal(response, f"{call}Response")
        ids = [_first(p, "networkInterfaceId", "NetworkInterfaceId") for p in (inner, answer)]
        interfaces, bad = _valid(ids, INTERFACE_ID)
        if not interfaces:
            return Dropped(f"{call}: no valid network interface id" + _got(bad), DropKind.MALFORMED)
        return Touched(Scope(interface_ids=interfaces, controls=frozenset({SSH})))

    return parse


def _profile_call(wrapper: str) -> Parser:
    """The instance-profile calls: PascalCase request wrapper; instance id in the request
    (associate only) and in `<Call>Response.iamInstanceProfileAssociation.instanceId`."""
    call = wrapper.removesuffix("Request")

    def parse(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
        inner = _pascal(request, wrapper)
        association = _dict(
            _pascal(response, f"{call}Response").get("iamInstanceProfileAssociation")
        )
        ids = [_first(inner, "InstanceId", "instanceId"), association.get("instanceId")]
        return _instances(ids, call, PROFILE_CONTROLS)

    return parse


def _iam(*, role: bool, profile: bool, controls: frozenset[str]) -> Parser:
    def parse(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
        roles, bad_roles = _valid([request.get("roleName")] if role else [], ROLE_NAME)
        profiles, bad_profiles = _valid(
            [request.get("instanceProfileName")] if profile else [], PROFILE_NAME
        )
        if not roles and not profiles:
            return Dropped(
                "IAM event without a valid role or instance profile name"
                + _got(bad_roles + bad_profiles),
                DropKind.MALFORMED,
            )
        return Touched(Scope(role_names=roles, profile_names=profiles, controls=controls))

    return parse


# A change to a role leads to the instances whose profile carries it; a change to a profile (a
# role added or removed, the profile deleted) to the instances using that profile, whatever role
# it holds now (a role that has left it no longer leads there).
_role_change = _iam(role=True, profile=False, controls=PROFILE_CONTROLS)
_profile_change = _iam(role=False, profile=True, controls=PROFILE_CONTROLS)


def _profile_deleted(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """DeleteInstanceProfile: its instances still name the deleted profile (EC2 keeps them on it)."""
    return _narrowed(_profile_change(request, response), profiles_deleted=True)


def _role_policy(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """Attach/DetachRolePolicy. AmazonSSMManagedInstanceCore grants no s3/logs/kms action, so
    attaching or detaching it can only affect the SSM role check; any other policy (an equivalent
    one, the log-delivery one, one with a Deny for the agent or for delivery) may affect both."""
    parsed = _role_change(request, response)
    if _str(request.get("policyArn")).endswith(CORE_POLICY_SUFFIX):
        return _narrowed(parsed, controls=frozenset({ROLE}))
    return parsed


def _policy_arn(request: dict[str, Any], call: str) -> Parsed:
    """The customer-managed policy a policy-version call names. AWS's own policies
    (arn:<partition>:iam::aws:policy/...) are changed by AWS, never by this account's calls."""
    policies, bad = _valid([request.get("policyArn")], POLICY_ARN)
    if not policies:
        return Dropped(f"{call}: no valid managed policy ARN" + _got(bad), DropKind.MALFORMED)
    (arn,) = policies
    if arn.split(":", 5)[4] == "aws":
        return Dropped(f"{arn[:160]} is an AWS managed policy", DropKind.IRRELEVANT)
    return Touched(Scope(policy_arns=policies, controls=PROFILE_CONTROLS))


def _true(value: Any) -> bool:
    """CloudTrail records a boolean request parameter as a JSON boolean or as a string."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _policy_version_created(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """CreatePolicyVersion: only a version made the default (setAsDefault) changes what the
    policy grants or denies; any other is a draft until SetDefaultPolicyVersion."""
    version = _dict(response.get("policyVersion"))
    if not (_true(request.get("setAsDefault")) or _true(version.get("isDefaultVersion"))):
        return Dropped(
            "a policy version not set as the default changes no permission", DropKind.IRRELEVANT
        )
    return _policy_arn(request, "CreatePolicyVersion")


def _default_policy_version(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """SetDefaultPolicyVersion: another of its versions is what the policy grants now."""
    return _policy_arn(request, "SetDefaultPolicyVersion")


def _session_document(request: dict[str, Any], response: dict[str, Any]) -> Parsed:
    """Only the Session Manager preferences document matters (named by name or by ARN)."""
    name = _str(request.get("name")) or _str(request.get("Name"))
    if not name:
        return Dropped("SSM document event without a document name", DropKind.MALFORMED)
    if name.rsplit("/", 1)[-1] != SESSION_DOCUMENT:
        return Dropped(f"document {name[:128]} is not {SESSION_DOCUMENT}", DropKind.IRRELEVANT)
    return Touched(Scope(preferences=True, controls=frozenset({LOGGING})))


EC2, IAM, SSM = "ec2.amazonaws.com", "iam.amazonaws.com", "ssm.amazonaws.com"

EVENT_TYPES: dict[str, EventType] = {
    "AuthorizeSecurityGroupIngress": EventType(EC2, _ingress_change),
    "RevokeSecurityGroupIngress": EventType(EC2, _ingress_change),
    "ModifySecurityGroupRules": EventType(EC2, _modify_rules),
    "RunInstances": EventType(EC2, _run_instances),
    "StartInstances": EventType(EC2, _start_instances),
    # Of ModifyInstanceAttribute's attributes only the security groups (groupSet) matter.
    "ModifyInstanceAttribute": EventType(EC2, _modify_instance_attribute),
    "ModifyNetworkInterfaceAttribute": EventType(EC2, _modify_interface_attribute),
    # An attached interface brings its own groups to the instance (its deviceIndex and
    # networkCardIndex change nothing a control reads); the request names the instance.
    "AttachNetworkInterface": EventType(EC2, _instance_groups("AttachNetworkInterface")),
    # A public address where there was none turns internet SSH from HIGH to CRITICAL.
    "AssociateAddress": EventType(EC2, _associate_address),
    # So does an IPv6 address (or prefix) where there was none, for a ::/0 rule; taken away,
    # it is HIGH again.
    "AssignIpv6Addresses": EventType(EC2, _ipv6_change("AssignIpv6Addresses")),
    "UnassignIpv6Addresses": EventType(EC2, _ipv6_change("UnassignIpv6Addresses")),
    # A prefix list's entries are the source of every rule that references it.
    "ModifyManagedPrefixList": EventType(EC2, _prefix_list_change("ModifyManagedPrefixList")),
    "RestoreManagedPrefixListVersion": EventType(
        EC2, _prefix_list_change("RestoreManagedPrefixListVersion")
    ),
    "AssociateIamInstanceProfile": EventType(
        EC2, _profile_call("AssociateIamInstanceProfileRequest")
    ),
    "DisassociateIamInstanceProfile": EventType(
        EC2, _profile_call("DisassociateIamInstanceProfileRequest")
    ),
    "ReplaceIamInstanceProfileAssociation": EventType(
        EC2, _profile_call("ReplaceIamInstanceProfileAssociationRequest")
    ),
    # A managed policy attached or detached may be AmazonSSMManagedInstanceCore, the log-delivery
    # policy, or one whose Deny refuses the SSM Agent's calls or log delivery.
    "AttachRolePolicy": EventType(IAM, _role_policy),
    "DetachRolePolicy": EventType(IAM, _role_policy),
    # Both checks simulate the role's inline policies and its permissions boundary: an inline
    # Deny or a boundary can refuse the agent (SimulatePrincipalPolicy) or log delivery, and an
    # inline Allow can grant delivery.
    "PutRolePolicy": EventType(IAM, _role_change),
    "DeleteRolePolicy": EventType(IAM, _role_change),
    "PutRolePermissionsBoundary": EventType(IAM, _role_change),
    "DeleteRolePermissionsBoundary": EventType(IAM, _role_change),
    # Its trust decides whether EC2 may assume the role at all (its instances' credentials), and
    # whom else a policy attached for the instances would reach (the fixes' gate).
    "UpdateAssumeRolePolicy": EventType(IAM, _role_change),
    # A customer-managed policy edited in place (a new default version) changes every role it is
    # attached to, or bounds as their permissions boundary: an equivalent of the core policy, a
    # Deny, a boundary or a delivery grant; its roles lead to their instances.
    "CreatePolicyVersion": EventType(IAM, _policy_version_created),
    "SetDefaultPolicyVersion": EventType(IAM, _default_policy_version),
    "AddRoleToInstanceProfile": EventType(IAM, _profile_change),
    "RemoveRoleFromInstanceProfile": EventType(IAM, _profile_change),
    "DeleteInstanceProfile": EventType(IAM, _profile_deleted),
    "CreateDocument": EventType(SSM, _session_document),
    "UpdateDocument": EventType(SSM, _session_document),
    "UpdateDocumentDefaultVersion": EventType(SSM, _session_document),
    "DeleteDocument": EventType(SSM, _session_document),
}


# --- the entry point ---------------------------------------------------------------------------


def _detail(event: Mapping[str, Any]) -> dict[str, Any] | None:
    detail = event.get("detail")
    if isinstance(detail, str):  # EventBridge Scheduler style: detail as a JSON string
        try:
            detail = json.loads(detail)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json can go
            return None
    return detail if isinstance(detail, dict) else None


def parse_event(
    event: Any, *, actor_arns: Iterable[str] = (), region: str | None = None
) -> Change | Dropped:
    """Map one EventBridge event to what it touched, or say why it is dropped.

    `actor_arns` are the guardrail's own principals (their changes are not re-fixed); `region` is
    the receiving function's region (a regional event for another region is dropped; IAM events,
    forwarded from us-east-1, are evaluated wherever they arrive).
    """
    if not isinstance(event, Mapping):
        return Dropped(f"event is a {type(event).__name__}, not an object")
    event_id = _str(event.get("id"))
    detail_type = _str(event.get("detail-type"))
    detail = _detail(event)
    if not detail_type:
        return Dropped("event has no detail-type", event_id=event_id)
    if detail is None:
        return Dropped(f"{detail_type}: detail is not an object", event_id=event_id)
    account = _str(event.get("account"))
    account_id = account if ACCOUNT_ID.match(account) else None
    # EventBridge's `region`, else CloudTrail's own awsRegion. With neither (no envelope
    # EventBridge delivers lacks `region`: a hand-made event) it is taken as this region's: the
    # guardrail reads and fixes only here, and looks its ids up only here.
    event_region = _str(event.get("region")) or _str(detail.get("awsRegion")) or None

    if detail_type == STATE_CHANGE:
        state = _str(detail.get("state"))
        name = f"{STATE_CHANGE}:{state or '?'}"
        if state not in ACTIVE_STATES:
            kind = DropKind.IRRELEVANT if state else DropKind.MALFORMED
            return Dropped(
                f"instance state {state or 'missing'!r} is not pending or running",
                kind,
                name,
                event_id,
            )
        parsed = _instances([detail.get("instance-id")], STATE_CHANGE)
        if isinstance(parsed, Dropped):
            return Dropped(parsed.reason, parsed.kind, name, event_id)
        if region and event_region and event_region != region:
            return Dropped(
                f"event from {event_region} reached the function in {region}",
                DropKind.OTHER_REGION,
                name,
                event_id,
            )
        return Change(parsed.scope, name, event_id, account_id, event_region)

    if detail_type != CLOUDTRAIL:
        return Dropped(
            f"detail-type {detail_type[:100]!r} is not handled", DropKind.UNKNOWN, event_id=event_id
        )
    name = _str(detail.get("eventName"))
    source = _str(detail.get("eventSource"))
    event_type = EVENT_TYPES.get(name)
    if event_type is None:
        return Dropped(
            f"CloudTrail event {name[:100] or '(no eventName)'!r} is not handled",
            DropKind.UNKNOWN,
            name,
            event_id,
        )
    if source != event_type.source:
        return Dropped(
            f"{name} from event source {source[:100] or '(none)'!r}, expected {event_type.source}",
            DropKind.UNKNOWN,
            name,
            event_id,
        )
    # Judge failure by errorCode only: successful IAM calls also have responseElements null.
    # Any value but null means failed, however odd ("", 0, {}): the stack's rule lets through
    # only events without one (`exists: false`), and a failed call read as a success is fixed.
    error_code = detail.get("errorCode")
    if error_code is not None:
        return Dropped(
            f"the call failed ({(_str(error_code) or repr(error_code))[:100]}): nothing changed",
            DropKind.FAILED_CALL,
            name,
            event_id,
        )
    global_service = source in GLOBAL_SOURCES
    if region and event_region and event_region != region and not global_service:
        return Dropped(
            f"event from {event_region} reached the function in {region}",
            DropKind.OTHER_REGION,
            name,
            event_id,
        )
    actors = actor_arns_of(detail)
    if is_own_change(detail, actor_arns):
        return Dropped(
            f"made by the guardrail itself ({actors[0]})", DropKind.OWN_CHANGE, name, event_id
        )
    parsed = event_type.parse(
        _dict(detail.get("requestParameters")), _dict(detail.get("responseElements"))
    )
    if isinstance(parsed, Dropped):
        return Dropped(parsed.reason, parsed.kind, name, event_id)
    return Change(
        parsed.scope,
        name,
        event_id,
        account_id,
        event_region,
        actors[-1] if actors else None,  # the caller's own ARN (e.g. the person's session)
        global_service,
        _str(_dict(detail.get("userIdentity")).get("invokedBy")) or None,
        parsed.ignored,
    )
