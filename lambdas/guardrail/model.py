"""The account snapshot the checks read, and the results and fix records they produce.

Everything here is plain frozen data: checks are pure functions of an `AccountSnapshot`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

SESSION_DOCUMENT = "SSM-SessionManagerRunShell"
# An instance carrying this tag is exempt from fixes (its value says why): still judged and
# reported, never changed, and neither is a security group it uses.
EXEMPT_TAG = "ssm-guardrail:exempt"
NOT_EXEMPT = frozenset({"false", "no", "0", "off"})
# Gone or going: not evaluated, its findings archived. Every other state is evaluated, one a
# DescribeInstances answer leaves out ("unknown") included: nothing says the instance ended.
ENDED_STATES = frozenset({"shutting-down", "terminated"})
STOPPED_STATES = frozenset({"stopped", "stopping"})  # Systems Manager lists neither


GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")  # every routable IPv6 address today


def network(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A CIDR (or a bare address) as written, host bits allowed; None when it is not one."""
    try:
        return ipaddress.ip_network(str(text or ""), strict=False)
    except ValueError:
        return None


def any_global_v6(addresses: Iterable[str]) -> bool:
    """Whether an IPv6 address or delegated prefix among these is global unicast (2000::/3), as
    only those are reachable from the internet: a unique-local one (fc00::/7, VPC IPAM's private
    IPv6) is not. One that cannot be read counts (the finding errs towards CRITICAL)."""
    for address in addresses:
        read = network(address)
        if not isinstance(read, ipaddress.IPv6Network) or read.subnet_of(GLOBAL_UNICAST_V6):
            return True  # unreadable, or not IPv6 at all
    return False


def is_internet(cidr: str | None) -> bool:
    """True for a source spanning a whole address family (prefix length 0), or every global
    IPv6 address (2000::/3, ::/1, ...). EC2 keeps a CIDR as written ("0::/0", "1.2.3.4/0"), so
    comparing strings with 0.0.0.0/0 and ::/0 misses them; anything not a CIDR is not the
    internet."""
    read = network(cidr) if cidr else None
    if read is None:
        return False
    if isinstance(read, ipaddress.IPv6Network) and read.supernet_of(GLOBAL_UNICAST_V6):
        return True
    return read.prefixlen == 0


class Status(StrEnum):
    PASSED = "PASSED"
    FAILED = "FAILED"
    NOT_APPLICABLE = "NOT_APPLICABLE"


class Outcome(StrEnum):
    APPLIED = "applied"
    ALREADY_COMPLIANT = "already_compliant"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        return self in (Outcome.APPLIED, Outcome.ALREADY_COMPLIANT)


class ResourceType(StrEnum):
    INSTANCE = "AwsEc2Instance"
    SECURITY_GROUP = "AwsEc2SecurityGroup"
    ACCOUNT = "AwsAccount"


@dataclass(frozen=True)
class SecurityGroupRule:
    """One ingress or egress rule as DescribeSecurityGroupRules returns it."""

    rule_id: str
    group_id: str
    protocol: str  # "tcp", "udp", "icmp", "icmpv6", "-1" or an IP protocol number as text
    from_port: int | None = None
    to_port: int | None = None
    cidr_ipv4: str | None = None
    cidr_ipv6: str | None = None
    prefix_list_id: str | None = None
    referenced_group_id: str | None = None
    description: str | None = None
    is_egress: bool = False
    # (key, value) pairs as DescribeSecurityGroupRules lists them (a tuple: the rule stays hashable)
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def cidr(self) -> str | None:
        return self.cidr_ipv4 or self.cidr_ipv6

    @property
    def ports(self) -> tuple[int, int]:
        """The port range it admits: no port or -1 (every port) as 0 and 65535."""
        low = 0 if self.from_port is None or self.from_port < 0 else self.from_port
        high = 65535 if self.to_port is None or self.to_port < 0 else self.to_port
        return low, high

    @property
    def ip_version(self) -> int | None:
        """4 or 6 for a CIDR source; None for a prefix list or a group reference."""
        return 4 if self.cidr_ipv4 else 6 if self.cidr_ipv6 else None

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> SecurityGroupRule:
        """From one DescribeSecurityGroupRules item."""
        return cls(
            rule_id=raw["SecurityGroupRuleId"],
            group_id=raw["GroupId"],
            protocol=str(raw.get("IpProtocol", "-1")),
            from_port=raw.get("FromPort"),
            to_port=raw.get("ToPort"),
            cidr_ipv4=raw.get("CidrIpv4"),
            cidr_ipv6=raw.get("CidrIpv6"),
            prefix_list_id=raw.get("PrefixListId"),
            referenced_group_id=(raw.get("ReferencedGroupInfo") or {}).get("GroupId"),
            description=raw.get("Description") or None,
            is_egress=bool(raw.get("IsEgress")),
            tags=tuple((t["Key"], t.get("Value", "")) for t in raw.get("Tags", [])),
        )


@dataclass(frozen=True)
class SecurityGroup:
    group_id: str
    group_name: str = ""
    vpc_id: str | None = None
    owner_id: str | None = None
    rules: tuple[SecurityGroupRule, ...] = ()

    @property
    def ingress(self) -> tuple[SecurityGroupRule, ...]:
        return tuple(r for r in self.rules if not r.is_egress)


@dataclass(frozen=True)
class NetworkInterface:
    """One attached interface: its groups and the addresses the internet can reach it on."""

    interface_id: str
    security_group_ids: tuple[str, ...] = ()
    public_ips: tuple[str, ...] = ()  # IPv4: the interface's and its secondary private IPs'
    ipv6_addresses: tuple[str, ...] = ()
    ipv6_prefixes: tuple[str, ...] = ()  # delegated (a /80 each): every address in them is its

    @property
    def has_ipv6(self) -> bool:
        """A global IPv6 address or delegated prefix: one the internet can reach."""
        return any_global_v6((*self.ipv6_addresses, *self.ipv6_prefixes))


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    security_group_ids: tuple[str, ...] = ()  # union over every network interface
    network_interface_ids: tuple[str, ...] = ()
    public_ip: str | None = None  # a public IPv4 of any interface or secondary private IP
    private_ip: str | None = None
    ipv6_addresses: tuple[str, ...] = ()  # global ones are routable where the subnet has an IGW
    ipv6_prefixes: tuple[str, ...] = ()  # delegated to its interfaces (prefix delegation)
    vpc_id: str | None = None
    subnet_id: str | None = None
    image_id: str | None = None
    instance_type: str | None = None
    launched_at: str | None = None
    profile_arn: str | None = None
    profile_id: str | None = None  # the instance profile's id (AIPA...), as EC2 holds it
    metadata_tokens: str | None = None  # "required" means IMDSv2 only (DHMC needs it)
    tags: Mapping[str, str] = field(default_factory=dict)
    interfaces: tuple[NetworkInterface, ...] = ()  # empty: only the instance-wide view is known

    @property
    def evaluated(self) -> bool:
        return self.state not in ENDED_STATES

    @property
    def exemption(self) -> str | None:
        """Why its owners exempt it from fixes (EXEMPT_TAG's value); None when it is not: no
        tag, or one saying no (`false`, `no`, `0`, `off`: whoever wrote it meant "not exempt")."""
        why = self.tags.get(EXEMPT_TAG)
        if why is None or why.strip().lower() in NOT_EXEMPT:
            return None
        return f"{EXEMPT_TAG}={why.strip() or '(no reason given)'}"

    @property
    def may_be_running(self) -> bool:
        """Running or starting, or in a state the answer left out: someone may be on it now."""
        return self.evaluated and self.state not in STOPPED_STATES

    @property
    def exposed(self) -> bool:
        """Running with a public IPv4 or a global IPv6 address: an open port 22 may be reachable now."""
        return bool(self.exposed_over((4, 6)))

    def exposed_over(
        self, versions: Collection[int | None], group_id: str | None = None
    ) -> tuple[int, ...]:
        """The IP versions among `versions` (4, 6) the instance is reachable over from the
        internet right now: running with a public IPv4, respectively a global IPv6 address or
        delegated prefix; with `group_id`, on an interface that carries that group (a
        group applies per interface)."""
        if self.state != "running":
            return ()
        on = [i for i in self.interfaces if group_id in i.security_group_ids]
        if group_id is None or not on:  # not known per interface: the instance's addresses
            v6 = any_global_v6((*self.ipv6_addresses, *self.ipv6_prefixes))
            has = {4: bool(self.public_ip), 6: v6}
        else:
            has = {4: any(i.public_ips for i in on), 6: any(i.has_ipv6 for i in on)}
        return tuple(v for v in (4, 6) if v in versions and has[v])

    @property
    def profile_name(self) -> str | None:
        return self.profile_arn.rsplit("/", 1)[-1] if self.profile_arn else None


EC2_PRINCIPALS = frozenset({"ec2.amazonaws.com", "ec2.amazonaws.com.cn"})


def policy_statements(document: Any) -> list[dict[str, Any]] | None:
    """The statements of a policy document (IAM answers one URL-encoded, botocore decodes it),
    or None when it cannot be read."""
    if isinstance(document, str):
        try:
            document = json.loads(urllib.parse.unquote(document))
        except ValueError:
            document = None
    statements = document.get("Statement") if isinstance(document, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return None
    return [s for s in statements if isinstance(s, dict)]


def _principals(statement: Mapping[str, Any], key: str = "Principal") -> list[str]:
    """A statement's principals, "*" for anyone (a NotPrincipal too, unless `key` asks for
    the NotPrincipal's own)."""
    principal = "*" if key == "Principal" and "NotPrincipal" in statement else statement.get(key)
    if not isinstance(principal, dict):
        return ["*"] if principal is not None else []
    return [
        str(v)
        for values in principal.values()
        for v in (values if isinstance(values, list) else [values])
    ]


def _names(statement: Mapping[str, Any], key: str, value: str, *, ignore_case: bool) -> bool:
    """Whether the statement's `key` (Action, Resource) covers `value`; its Not`key` covers
    all it does not name. Wildcards * and ? as IAM has them; every other character, [ and ]
    too, stands for itself."""

    def covers(pattern: str) -> bool:
        regex = "".join({"*": ".*", "?": "."}.get(c) or re.escape(c) for c in pattern)
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        return re.fullmatch(regex, value, flags) is not None

    if f"Not{key}" in statement:
        return not any(covers(p) for p in _strings(statement[f"Not{key}"]))
    return any(covers(p) for p in _strings(statement.get(key)))


def _assumes(statement: Mapping[str, Any]) -> bool:
    """Whether the statement's actions cover sts:AssumeRole (NotAction: unless it names it)."""
    return _names(statement, "Action", "sts:AssumeRole", ignore_case=True)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value]) if v is not None]


def deny_is_certain(
    documents: Sequence[Any], action: str, resource: str, unknown_keys: Collection[str]
) -> bool:
    """Whether an explicit Deny the policy simulation matched for (action, resource) refuses the
    real call whatever it carries of `unknown_keys`: context keys (lower case) the simulation
    lacked and the real call may carry. `documents` are the policies of the answer's
    MatchedStatements, None (or not JSON) for one that could not be read.

    IAM lists as missing every key any policy it evaluated names, an unrelated statement's
    too, so its answer alone cannot tell a plain Deny from a perimeter. Certain: a Deny
    statement of those policies covering the pair without a Condition; or, every matched
    policy read, no covering Deny statement naming an unknown key (the simulation judged
    whichever matched on what it was given). A statement with a policy variable reads the
    context too, and may cover the pair whatever its Action and Resource say."""
    read = [policy_statements(document) for document in documents]
    denies = [
        _context_keys(s)
        for statements in read
        for s in statements or ()
        if s.get("Effect") == "Deny"
        and (
            _has_variable(s)
            or (
                _names(s, "Action", action, ignore_case=True)
                and _names(s, "Resource", resource, ignore_case=False)
            )
        )
    ]
    if not denies:
        return False
    if frozenset() in denies:
        return True
    unknown = {k.lower() for k in unknown_keys}
    every_source_read = None not in read
    return every_source_read and all(keys is not None and not keys & unknown for keys in denies)


def _context_keys(statement: Mapping[str, Any]) -> frozenset[str] | None:
    """The context keys (lower case) a statement's Condition names; None when it reads the
    request context in a way not listed here (a policy variable, a malformed Condition)."""
    condition = statement.get("Condition", {})
    if _has_variable(statement) or not isinstance(condition, dict):
        return None
    if not all(isinstance(tests, dict) for tests in condition.values()):
        return None
    return frozenset(str(key).lower() for tests in condition.values() for key in tests)


def _has_variable(statement: Mapping[str, Any]) -> bool:
    """Whether the statement holds a policy variable (${aws:username}, say)."""
    return "${" in json.dumps(statement)


def trusted_besides_ec2(trust_policy: Any, role_arn: str = "") -> tuple[str, ...]:
    """Who besides EC2 (and the role itself) a role's trust policy lets assume the role: the
    principals of its Allow statements, "*" for anyone (a NotPrincipal too). One that cannot be
    read is named as such: whom it trusts is not known."""
    statements = policy_statements(trust_policy)
    if statements is None:
        return ("an unreadable trust policy",)
    found: list[str] = []
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        names = _principals(statement)
        found += [n for n in names if n not in {*EC2_PRINCIPALS, role_arn} and n not in found]
    return tuple(found)


def ec2_may_assume(trust_policy: Any) -> bool:
    """Whether the trust policy lets EC2 assume the role, so an instance gets its credentials:
    an Allow of sts:AssumeRole to ec2.amazonaws.com (or to anyone), and no unconditional Deny of
    it to them. Unreadable: True (not judged without reading it)."""
    statements = policy_statements(trust_policy)
    if statements is None:
        return True

    def ec2(names: list[str]) -> bool:
        return any(n == "*" or n in EC2_PRINCIPALS for n in names)

    def names_ec2(statement: Mapping[str, Any]) -> bool:
        if "NotPrincipal" in statement:  # everyone but those it names
            return _assumes(statement) and not ec2(_principals(statement, "NotPrincipal"))
        return _assumes(statement) and ec2(_principals(statement))

    allowed = any(s.get("Effect") == "Allow" and names_ec2(s) for s in statements)
    denied = any(
        s.get("Effect") == "Deny" and not s.get("Condition") and names_ec2(s) for s in statements
    )
    return allowed and not denied


@dataclass(frozen=True)
class Role:
    name: str
    arn: str
    attached_policy_arns: frozenset[str] = frozenset()
    # Whom else its trust policy lets assume it: a policy attached for the instances reaches them.
    trusted_besides_ec2: tuple[str, ...] = ()
    # Whether its trust policy lets EC2 assume it: if not, its instances get no credentials.
    ec2_trusted: bool = True


def exempt_named(instances: Iterable[Instance]) -> list[str]:
    """The instances among these (not ended) that their owners exempt from fixes, each named
    with its tag, in order: what a fix reaching them too is skipped for."""
    return sorted(
        f"{i.instance_id} ({i.exemption})"
        for i in instances
        if i.evaluated and i.exemption is not None
    )


@dataclass(frozen=True)
class InstanceProfile:
    arn: str
    name: str
    role_names: tuple[str, ...] = ()
    profile_id: str = ""


@dataclass(frozen=True)
class SessionPreferences:
    """The region's Session Manager preferences (document SSM-SessionManagerRunShell)."""

    exists: bool
    inputs: Mapping[str, Any] = field(default_factory=dict)
    content: Mapping[str, Any] = field(default_factory=dict)  # the whole document, kept intact
    document_version: str | None = None
    # Why the document's content could not be read (no Content, not a JSON object): nothing
    # about it is known, and writing a new version would replace the owners' preferences.
    unreadable: str = ""
    # The ARN of the key a kmsKeyId alias names, as KMS resolved it; "" when not an alias or
    # not resolved (then key access is not evaluated: IAM authorizes on the key, not the alias)
    alias_target: str = ""
    # Why no session can start with the key kmsKeyId names, as KMS answered (no such key or
    # alias; a key disabled, pending deletion, not symmetric); "" when usable or not known.
    key_unusable: str = ""

    @property
    def session_key(self) -> str:
        """The key sessions are encrypted with: kmsKeyId, or the key its alias names."""
        return self.alias_target or str(self.inputs.get("kmsKeyId") or "").strip()

    @property
    def unresolved_alias(self) -> str:
        """kmsKeyId where it is an alias KMS did not resolve, else "": no role's use of the key
        the sessions need is known."""
        return self.session_key if "alias/" in self.session_key else ""

    # A name of blanks is no destination: the agent has nowhere to send the logs.
    @property
    def s3_bucket(self) -> str:
        return str(self.inputs.get("s3BucketName") or "").strip()

    @property
    def log_group(self) -> str:
        return str(self.inputs.get("cloudWatchLogGroupName") or "").strip()

    @property
    def logging_on(self) -> bool:
        return bool(self.s3_bucket or self.log_group)


@dataclass(frozen=True)
class ManagedInstance:
    """What Systems Manager knows of an instance (DescribeInstanceInformation)."""

    instance_id: str
    ping_status: str


@dataclass(frozen=True)
class DeliveryCheck:
    """Whether a role may deliver session logs to the target destinations (policy simulation)."""

    role_name: str
    denied: tuple[str, ...] = ()  # "action on resource" pairs the simulation did not allow
    # the subset an explicit Deny, the permissions boundary or an SCP blocks, each naming which:
    # attaching cannot help
    explicitly_denied: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.denied


@dataclass(frozen=True)
class AgentAccess:
    """Whether the SSM Agent may make Session Manager's calls with a role (policy simulation)."""

    role_name: str
    # (action, decision) for each agent action the simulation did not allow; the decision is
    # "explicitDeny", "boundaryDeny" (permissions boundary), "organizationsDeny" (a service
    # control policy), "conditionalDeny" (a Deny whose conditions need context the simulation
    # lacks) or "implicitDeny" (no policy of the role allows it)
    denied: tuple[tuple[str, str], ...] = ()
    # Agent actions a Deny with conditions the simulation cannot evaluate meets, over the core
    # policy (not counted as denied: the real calls may carry what the Deny exempts). A plain
    # Deny whose policy cannot be read (an SCP) beside another statement's condition reads so
    # too: the lockout guard counts them as refusing.
    unjudged: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.denied


@dataclass(frozen=True)
class AccountSnapshot:
    """Everything the checks need about one account-region, read once with batched calls."""

    account_id: str
    region: str
    partition: str = "aws"
    instances: Mapping[str, Instance] = field(default_factory=dict)
    security_groups: Mapping[str, SecurityGroup] = field(default_factory=dict)
    instance_profiles: Mapping[str, InstanceProfile] = field(default_factory=dict)  # by ARN
    roles: Mapping[str, Role] = field(default_factory=dict)  # by name
    session_preferences: SessionPreferences | None = None  # None: not read (targeted snapshot)
    managed_instances: Mapping[str, ManagedInstance] = field(default_factory=dict)
    # The region's Default Host Management role; read only for an instance it may manage that
    # Systems Manager cannot confirm (stopped, or started too recently to have registered).
    dhmc_role: str | None = None
    delivery: Mapping[str, DeliveryCheck] = field(default_factory=dict)  # by role name
    # The SSM Agent's Session Manager actions, simulated for each role that carries the core
    # policy (or an equivalent), by role name; a role missing here was not simulated.
    agent_access: Mapping[str, AgentAccess] = field(default_factory=dict)
    delivery_target: Mapping[str, str] = field(
        default_factory=dict
    )  # bucket/prefix/log_group/kms_key
    full: bool = False  # read for the whole account-region (a drift scan), not for one event
    read_at: datetime | None = None  # when the read began (an instance's age is judged by it)
    # In a targeted read, the other instances behind a group that admits internet SSH: they
    # count among the group's users, the lockout guard asks after them, and the SSH check judges
    # those whose groups were all read (closing the group changes their finding too).
    bystanders: Mapping[str, Instance] = field(default_factory=dict)
    # The internet CIDRs (0.0.0.0/0, ::/0 ...) each prefix list an SSH rule references holds,
    # by list id; () when it holds none. Lists no rule admitting TCP 22 references are not read.
    prefix_lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def result(
        self,
        control: str,
        resource_type: ResourceType,
        resource_id: str,
        status: Status,
        severity: str,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> Result:
        """A result about a resource of this account-region."""
        return Result(
            control,
            resource_type,
            resource_id,
            status,
            severity,
            reason,
            self.account_id,
            self.region,
            self.partition,
            details or {},
        )

    def not_applicable(
        self,
        control: str,
        resource_type: ResourceType,
        resource_id: str,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> Result:
        """A resource the control does not apply to (its finding is archived)."""
        return self.result(
            control, resource_type, resource_id, Status.NOT_APPLICABLE, "INFORMATIONAL", reason,
            details,
        )  # fmt: skip

    def not_evaluated(self, control: str, instance: Instance) -> Result:
        """A terminated or shutting-down instance: no control applies (its finding is archived)."""
        return self.not_applicable(
            control, ResourceType.INSTANCE, instance.instance_id, f"instance is {instance.state}"
        )

    def is_online(self, instance_id: str) -> bool:
        """Systems Manager reports the instance Online (read only where a setting needs it)."""
        managed = self.managed_instances.get(instance_id)
        return managed is not None and managed.ping_status == "Online"

    def profile_of(self, instance: Instance) -> InstanceProfile | None:
        """The instance's profile, unless the one of that ARN is a later one: a profile deleted
        and recreated under the same name and path is another profile, and EC2 keeps the
        instance on the deleted one (its id tells them apart)."""
        profile = self.instance_profiles.get(instance.profile_arn or "")
        if profile and instance.profile_id and profile.profile_id:
            return profile if profile.profile_id == instance.profile_id else None
        return profile

    def role_of(self, instance: Instance) -> Role | None:
        profile = self.profile_of(instance)
        if not profile or not profile.role_names:
            return None
        return self.roles.get(profile.role_names[0])


@dataclass(frozen=True)
class Result:
    """One control's verdict on one resource."""

    control: str
    resource_type: ResourceType
    resource_id: str
    status: Status
    severity: str  # ASFF Severity.Label: CRITICAL, HIGH, MEDIUM, LOW, INFORMATIONAL
    reason: str
    account_id: str = ""
    region: str = ""
    partition: str = "aws"
    details: Mapping[str, Any] = field(default_factory=dict)
    # Judged only because a fix of something it shares (its security group) changes it: reported
    # when such a fix covers it, otherwise left to the resource's own events and the drift scan.
    follows_fix: bool = False
    # Says its control could not judge its other resources (the preferences unreadable, so
    # nowhere known to deliver to): a full scan leaves their stored findings as they are, not
    # archived as gone.
    others_unjudged: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.control, self.resource_id)


UNDO = " (undo: "  # opens the last part of an applied fix's reason: how to undo it


def undo_part(*commands: str) -> str:
    """The last part of an applied fix's reason: the commands that undo it, in order."""
    return f"{UNDO}{' && '.join(commands)})"


@dataclass(frozen=True)
class FixRecord:
    """What a remediation did to one resource, and which results it settles. An applied fix's
    reason ends with the commands that undo it, as " (undo: <commands>)" (UNDO)."""

    control: str
    resource_id: str
    action: str
    outcome: Outcome
    before: Any = None
    after: Any = None
    reason: str = ""
    error_code: str | None = None
    covers: tuple[str, ...] = ()  # resource ids of the results this fix settles (itself included)
    # The fix found its resource deleted since the read (an instance, a group): nothing to fix,
    # and its result is archived as a deleted resource's, not PASSED as if fixed.
    gone: bool = False
    # When the change was made (APPLIED): the fixed finding's UpdatedAt, so a reading taken
    # after it (an event during a long scan) is never overwritten by it.
    at: datetime | None = None

    @property
    def undo(self) -> str:
        """The commands that undo an applied fix: its reason's last part, " (undo: ...)"."""
        start = self.reason.find(UNDO)
        if start < 0 or not self.reason.endswith(")"):
            return ""
        return self.reason[start + len(UNDO) : -1]

    @property
    def told(self) -> str:
        """The reason without its undo."""
        start = self.reason.find(UNDO) if self.undo else -1
        return self.reason[:start] if start >= 0 else self.reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "resource_id": self.resource_id,
            "action": self.action,
            "outcome": self.outcome.value,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
            "error_code": self.error_code,
            "at": self.at.isoformat() if self.at else None,
        }


def flat(text: str) -> str:
    """Text on one line (a proxy's page quoted in an error message has its own lines)."""
    return " ".join(text.split())


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as AWS writes it ("...Z" included); None when it is not one."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def last_fix_time(fixes: Iterable[FixRecord]) -> datetime | None:
    """When the last change of `fixes` was made; None when none changed anything (all found
    already done, by a person or a concurrent run whose own reading is the newer one)."""
    return max((f.at for f in fixes if f.at and f.outcome is Outcome.APPLIED), default=None)
