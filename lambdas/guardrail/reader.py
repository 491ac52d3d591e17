"""Builds an `AccountSnapshot` with paginated, batched reads: the only place the checks' data is read.

API calls grow with pages and with distinct instance profiles, roles and referenced prefix lists,
never per instance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from .controls.base import THROTTLED, error_code
from .controls.session_logging import SESSION_LOGGING, delivery_requirements, delivery_target
from .controls.ssh_open import SSH_OPEN, internet_ssh_rules, reaches_ssh_port, ssh_exposed_running
from .controls.ssm_role import (
    AGENT_ACTIONS,
    DHMC_SETTING,
    REFUSALS,
    SSM_ROLE,
    WITH_CORE,
    agent_roles,
    core_policy_arn,
    dhmc_unconfirmed,
    role_problem,
)
from .model import (
    SESSION_DOCUMENT,
    AccountSnapshot,
    AgentAccess,
    DeliveryCheck,
    Instance,
    InstanceProfile,
    ManagedInstance,
    NetworkInterface,
    Role,
    SecurityGroup,
    SecurityGroupRule,
    SessionPreferences,
    deny_is_certain,
    ec2_may_assume,
    is_internet,
    trusted_besides_ec2,
)
from .paging import EC2_PAGE, FILTER_VALUES, chunks, pages, security_group_rules
from .scope import Scope
from .settings import Settings

logger = logging.getLogger(__name__)

SSH, ROLE, LOGGING = SSH_OPEN.id, SSM_ROLE.id, SESSION_LOGGING.id
SSM_IDS = 50  # DescribeInstanceInformation returns at most 50 per page
PREFIX_LIST_PAGE = 100  # GetManagedPrefixListEntries returns at most 100 per page
PREFIX_LIST_ASSOCIATIONS_PAGE = 255  # GetManagedPrefixListAssociations: at most 255
PREFIX_LIST_GONE = ("InvalidPrefixListID.NotFound", "InvalidPrefixListId.NotFound")
IAM_PAGE = 1000  # IAM's list calls return at most 1,000 per page (100 unless asked)
ROLES_ONE_BY_ONE = 10  # more roles than this: the account's profiles are listed instead
# An event whose instances carry more roles than this is left to the drift scan: each role costs
# its ListAttachedRolePolicies and SimulatePrincipalPolicy (and maybe fixes), and the on-change
# Lambda has 5 minutes. A managed policy (a shared permissions boundary, say) can reach thousands.
EVENT_ROLE_LIMIT = 100
# Simulated decisions no policy the guardrail attaches can turn into "allowed".
CANNOT_BE_GRANTED = frozenset(
    {"explicitDeny", "boundaryDeny", "organizationsDeny", "conditionalDeny"}
)
# IAM lists as missing every context key any policy it evaluated names, an unrelated statement's
# too (boto/boto3#3111). Only a key the real call may carry can make a Deny's answer differ:
# a global key (but aws:username, an IAM user's only, and aws:SourceAccount/Arn/OrgID/OrgPaths,
# a service principal's), the keys of instance role credentials, or one of the action's service.
NOT_IN_ROLE_CALLS = frozenset(
    {"aws:username", "aws:sourceaccount", "aws:sourcearn", "aws:sourceorgid", "aws:sourceorgpaths"}
)
INSTANCE_CREDENTIAL_KEYS = frozenset({"ec2:sourceinstancearn", "ec2:roledelivery"})


class Unknown(NamedTuple):
    """What a Deny the simulation could not evaluate needs looked at: the context keys it lacked
    that the real call may carry (lower case), and the answer's MatchedStatements."""

    keys: frozenset[str]
    matched: tuple[dict[str, Any], ...]


class PrefixListChanging(Exception):
    """An event's prefix list is still being changed: its entries are read once the change has
    completed, so raising lets the Lambda run the event again (1 and 2 minutes later)."""

    def __init__(self, prefix_list_id: str, state: str) -> None:
        super().__init__(
            f"prefix list {prefix_list_id} is still being changed ({state}): its new entries "
            "cannot be read yet; run the event again once the change has completed"
        )


class ScopeTooBroad(Exception):
    """A targeted read would judge more than EVENT_ROLE_LIMIT roles: the event is deferred to the
    drift scan (15 minutes, a fix deadline) rather than time out, be retried twice and repeat the
    same IAM calls each time."""

    def __init__(self, roles: int) -> None:
        super().__init__(
            f"its instances carry {roles} roles (an instance profile not read yet counts as "
            f"one), more than an event evaluates ({EVENT_ROLE_LIMIT}); the next drift scan "
            "judges them"
        )
        self.roles = roles


def public_ip_of(raw: Mapping[str, Any]) -> str | None:
    """The instance's PublicIpAddress, unless it is a carrier IP: EC2 gives a Wavelength
    instance's carrier IP there too, which only the carrier's network reaches (the interface's
    association names it CarrierIp, with no PublicIp)."""
    carrier = {
        (association or {}).get("CarrierIp")
        for eni in raw.get("NetworkInterfaces", [])
        for association in (
            eni.get("Association"),
            *(p.get("Association") for p in eni.get("PrivateIpAddresses", [])),
        )
    }
    public = raw.get("PublicIpAddress")
    return None if public in carrier else public


def parse_interface(eni: dict[str, Any], top: dict[str, Any]) -> NetworkInterface:
    """One DescribeInstances NetworkInterfaces item (`top`: the instance): its groups and the
    addresses the internet can reach it on."""
    # The instance's PublicIpAddress and SecurityGroups are its primary interface's (device
    # index 0 on network card 0: with several network cards, each card has a device index 0).
    # A public IPv4 (or Elastic IP) can also sit on any other private IP of an interface: each
    # is listed under PrivateIpAddresses[].Association.
    attachment = eni.get("Attachment") or {}
    primary = attachment.get("DeviceIndex") == 0 and attachment.get("NetworkCardIndex", 0) == 0
    groups = [
        g["GroupId"]
        for g in [*eni.get("Groups", []), *(top.get("SecurityGroups", []) if primary else [])]
    ]
    public = [public_ip_of(top) if primary else None]
    public += [(eni.get("Association") or {}).get("PublicIp")]
    public += [
        (p.get("Association") or {}).get("PublicIp") for p in eni.get("PrivateIpAddresses", [])
    ]
    ipv6 = [a.get("Ipv6Address") for a in eni.get("Ipv6Addresses", [])]
    # Prefix delegation (EKS and ECS IPv6 nodes): the interface's groups filter every address
    # of a delegated prefix, as they do its own addresses.
    prefixes = [p.get("Ipv6Prefix") for p in eni.get("Ipv6Prefixes", [])]
    return NetworkInterface(
        eni["NetworkInterfaceId"],
        tuple(dict.fromkeys(groups)),
        tuple(dict.fromkeys(ip for ip in public if ip)),
        tuple(dict.fromkeys(ip for ip in ipv6 if ip)),
        tuple(dict.fromkeys(p for p in prefixes if p)),
    )


def parse_instance(raw: dict[str, Any]) -> Instance:
    interfaces = tuple(parse_interface(eni, raw) for eni in raw.get("NetworkInterfaces", []))
    groups = [g["GroupId"] for g in raw.get("SecurityGroups", [])]
    groups += [g for eni in interfaces for g in eni.security_group_ids]
    top_public = public_ip_of(raw)
    public_ips = [top_public, *(ip for eni in interfaces for ip in eni.public_ips)]
    ipv6 = [ip for eni in interfaces for ip in eni.ipv6_addresses]
    # Judge exposure per interface only when the interfaces account for every group and address
    # the instance shows; otherwise (no attachment index, say) the instance-wide view stands.
    on_interfaces = {g for eni in interfaces for g in eni.security_group_ids}
    complete = set(groups) <= on_interfaces and (
        not top_public or any(top_public in eni.public_ips for eni in interfaces)
    )
    profile = raw.get("IamInstanceProfile") or {}
    launched = raw.get("LaunchTime")
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw.get("State", {}).get("Name", "unknown"),
        security_group_ids=tuple(dict.fromkeys(groups)),
        network_interface_ids=tuple(eni.interface_id for eni in interfaces),
        public_ip=next((ip for ip in public_ips if ip), None),
        ipv6_addresses=tuple(dict.fromkeys(ipv6)),
        ipv6_prefixes=tuple(dict.fromkeys(p for eni in interfaces for p in eni.ipv6_prefixes)),
        private_ip=raw.get("PrivateIpAddress"),
        vpc_id=raw.get("VpcId"),
        subnet_id=raw.get("SubnetId"),
        image_id=raw.get("ImageId"),
        instance_type=raw.get("InstanceType"),
        launched_at=launched.isoformat() if isinstance(launched, datetime) else launched,
        profile_arn=profile.get("Arn"),
        profile_id=profile.get("Id"),
        metadata_tokens=raw.get("MetadataOptions", {}).get("HttpTokens"),
        tags={t["Key"]: t.get("Value", "") for t in raw.get("Tags", [])},
        interfaces=interfaces if complete else (),
    )


# KMS key states in which a key encrypts and decrypts ("Updating": a multi-Region key's primary
# changing Region, usable throughout).
USABLE_KEY_STATES = frozenset({"Enabled", "Updating"})


class SnapshotReader:
    """Reads what the checks of `controls` need for the resources of a `Scope`."""

    def __init__(self, clients: Any, settings: Settings, account_id: str, partition: str) -> None:
        self.clients, self.settings = clients, settings
        self.account_id, self.partition = account_id, partition
        # Profiles ListInstanceProfilesForRole already returned (with their roles), by ARN.
        self._listed_profiles: dict[str, dict[str, Any]] = {}
        # Group names and VPCs as DescribeInstances shows them: no DescribeSecurityGroups needed.
        self._group_meta: dict[str, tuple[str, str | None]] = {}
        # Policies read to judge a Deny the simulation could not evaluate (None: not readable).
        self._policies: dict[tuple[str, str, str], Any] = {}
        self._boundaries: dict[str, str] = {}  # role name → its permissions boundary's ARN

    def read(
        self, scope: Scope, controls: Collection[str], read_at: datetime | None = None
    ) -> AccountSnapshot:
        if scope.prefix_list_ids:
            scope = replace(
                scope, group_ids=scope.group_ids | self._groups_using(scope.prefix_list_ids)
            )
        instances = self._instances(scope)
        evaluated = [i for i in instances.values() if i.evaluated]
        if not scope.full and (ROLE in controls or LOGGING in controls):
            judged = self._roles_to_judge(evaluated)
            if judged > EVENT_ROLE_LIMIT:
                raise ScopeTooBroad(judged)
        snapshot = AccountSnapshot(
            self.account_id,
            self.clients.region,
            self.partition,
            instances=instances,
            full=scope.full,
            read_at=read_at,
        )
        if SSH in controls:
            used = {g for i in evaluated for g in i.security_group_ids}
            groups = self._groups(scope, used)
            snapshot = replace(
                snapshot, security_groups=groups, prefix_lists=self._prefix_lists(groups)
            )
        # Systems Manager's view of instances, only where a setting makes it matter: DHMC for
        # profile-less instances, and the SSH lockout guard for running instances behind a group
        # whose internet SSH the fix would revoke.
        asked: set[str] = set()
        if ROLE in controls and self.settings.accept_dhmc:
            asked |= {
                i.instance_id
                for i in evaluated
                # Systems Manager lists no stopped instance: only running ones can be Online.
                if i.state == "running" and role_problem(i, snapshot, self.settings) == "no_profile"
            }
        exposed: list[Instance] = []
        if SSH in controls:
            snapshot = replace(snapshot, bystanders=self._bystanders(scope, snapshot))
            if self.settings.ssh_require_ssm_online:
                exposed = ssh_exposed_running(snapshot)
                asked |= {i.instance_id for i in exposed}
        if asked:
            snapshot = replace(snapshot, managed_instances=self._managed(sorted(asked)))
        # The lockout guard asks more of an Online instance behind a group it would close,
        # bystanders and an SSH-only event's instances included: whether its role can open a
        # session (the agent's session calls, what the preferences check before each one).
        guarded = [i for i in exposed if snapshot.is_online(i.instance_id)]
        with_roles = evaluated if ROLE in controls or LOGGING in controls else []
        if with_roles or guarded:
            arns = {i.profile_arn for i in [*with_roles, *guarded] if i.profile_arn}
            profiles, roles = self._iam(arns)
            snapshot = replace(snapshot, instance_profiles=profiles, roles=roles)
        if ROLE in controls and any(
            dhmc_unconfirmed(i, snapshot, self.settings) for i in evaluated
        ):
            snapshot = replace(snapshot, dhmc_role=self._dhmc_role())
        target: dict[str, str] = {}
        delivering: dict[str, Role] = {}
        delivered = [*(evaluated if LOGGING in controls else []), *guarded]
        if (LOGGING in controls and (scope.full or scope.preferences)) or any(
            snapshot.role_of(i) is not None for i in delivered
        ):
            # A targeted event about instances without any role needs no preferences: their
            # logging result is NOT_APPLICABLE whatever the region's destinations are.
            prefs = self._preferences()
            target = delivery_target(prefs, self.settings)
            if target:
                delivering = {
                    r.name: r for i in delivered if (r := snapshot.role_of(i)) is not None
                }
            snapshot = replace(snapshot, session_preferences=prefs, delivery_target=target)
        # A role carrying the core policy can still be refused the agent's calls (explicit
        # Deny, permissions boundary, SCP); one without it fails on that alone, and is asked
        # only when the fix would attach the policy (would it help?).
        agents = agent_roles(evaluated, snapshot, self.settings) if ROLE in controls else {}
        for name, found in agent_roles(guarded, snapshot, self.settings).items():
            if not found[2]:  # as it is, not as the role fix would leave it
                agents.setdefault(name, found)
        if agents or delivering:
            access, delivery, gone = self._simulations(agents, delivering, target)
            roles = {name: r for name, r in snapshot.roles.items() if name not in gone}
            snapshot = replace(snapshot, agent_access=access, delivery=delivery, roles=roles)
        return snapshot

    # --- EC2 -------------------------------------------------------------------------------

    def _bystanders(self, scope: Scope, snapshot: AccountSnapshot) -> dict[str, Instance]:
        """In a targeted read, the other instances behind groups that admit internet SSH: the
        group's finding counts them and closing it changes theirs. (A full read, or one by group,
        already has them all.)"""
        if scope.full:
            return {}
        missing = {
            gid
            for gid, group in snapshot.security_groups.items()
            if gid not in scope.group_ids and internet_ssh_rules(group, snapshot.prefix_lists)
        }
        if not missing:
            return {}
        found = self._instances(Scope(group_ids=frozenset(missing)))
        return {iid: i for iid, i in found.items() if iid not in snapshot.instances}

    def _instances(self, scope: Scope) -> dict[str, Instance]:
        ec2 = self.clients.ec2
        if scope.full:
            raws = pages(ec2, "describe_instances", "Reservations", MaxResults=EC2_PAGE)
            return self._collect(raws)
        ids = set(scope.instance_ids)
        # Instances whose profile carries a role (named, or using a named managed policy), or
        # whose profile is named and still exists: by profile ARN, exactly, in DescribeInstances
        # (whatever the region's size).
        roles = set(scope.role_names) | self._roles_of_policies(scope.policy_arns)
        profile_arns = self._profiles_of_roles(roles)
        named = set(scope.profile_names) - {arn.rsplit("/", 1)[-1] for arn in profile_arns}
        if named and not scope.profiles_deleted:
            existing = self._profiles_by_name(named)
            profile_arns |= existing
            named -= {arn.rsplit("/", 1)[-1] for arn in existing}
        if named:
            ids |= self._instances_with_profile_names(named)
        found: dict[str, Instance] = {}
        batches = [("instance-id", batch) for batch in chunks(ids, FILTER_VALUES)]
        batches += [
            ("network-interface.network-interface-id", b)
            for b in chunks(scope.interface_ids, FILTER_VALUES)
        ]
        # Instances with a group on *any* interface (the top-level SecurityGroups is the primary's).
        batches += [
            ("network-interface.group-id", b) for b in chunks(scope.group_ids, FILTER_VALUES)
        ]
        batches += [("iam-instance-profile.arn", b) for b in chunks(profile_arns, FILTER_VALUES)]
        for name, batch in batches:
            # Filters, not InstanceIds=: one deleted instance must not fail the whole call.
            # Paged: a default group's users can be thousands, one response each otherwise.
            raws = pages(
                ec2,
                "describe_instances",
                "Reservations",
                Filters=[{"Name": name, "Values": batch}],
                MaxResults=EC2_PAGE,
            )
            found.update(self._collect(raws))
        return found

    def _collect(self, reservations: Iterable[dict[str, Any]]) -> dict[str, Instance]:
        found = {}
        for reservation in reservations:
            for raw in reservation.get("Instances", []):
                found[raw["InstanceId"]] = parse_instance(raw)
                groups = [*raw.get("SecurityGroups", [])]
                groups += [
                    g for eni in raw.get("NetworkInterfaces", []) for g in eni.get("Groups", [])
                ]
                for g in groups:
                    self._group_meta[g["GroupId"]] = (g.get("GroupName", ""), raw.get("VpcId"))
        return found

    def _roles_to_judge(self, instances: Iterable[Instance]) -> int:
        """How many roles the IAM read would judge: those of profiles already listed (an IAM
        event's), and one for each profile not read yet (an instance event's)."""
        judged: set[str] = set()
        for instance in instances:
            arn = instance.profile_arn
            if not arn:
                continue
            roles = self._listed_profiles.get(arn, {}).get("Roles") or []
            judged |= {f"role/{r['RoleName']}" for r in roles} or {arn}
        return len(judged)

    def _roles_of_policies(self, policy_arns: Iterable[str]) -> set[str]:
        """Names of the roles that use these managed policies, attached or as their permissions
        boundary: ListEntitiesForPolicy without a PolicyUsageFilter answers both usages in one
        (paged) call. A policy deleted since its event leads to no role."""
        names: set[str] = set()
        for arn in sorted(policy_arns):
            try:
                for role in pages(
                    self.clients.iam,
                    "list_entities_for_policy",
                    "PolicyRoles",
                    PolicyArn=arn,
                    EntityFilter="Role",
                    MaxItems=IAM_PAGE,
                ):
                    names.add(role["RoleName"])
            except ClientError as error:
                if error_code(error) != "NoSuchEntity":
                    raise
        return names

    def _profiles_of_roles(self, role_names: Iterable[str]) -> set[str]:
        """ARNs of the instance profiles that carry these roles (kept, with their roles, so the
        IAM read does not ask for them again). One call per role, or for more roles than
        ROLES_ONE_BY_ONE (a policy's, say: a boundary many Lambda roles share) the account's
        profiles, 1,000 a page, each listing its role."""
        asked = set(role_names)
        names = sorted(asked)
        found: list[dict[str, Any]] = []
        if len(names) > ROLES_ONE_BY_ONE:
            listed = pages(
                self.clients.iam, "list_instance_profiles", "InstanceProfiles", MaxItems=IAM_PAGE
            )
            found = [p for p in listed if any(r.get("RoleName") in asked for r in p["Roles"])]
        else:
            for role in names:
                try:
                    found += pages(
                        self.clients.iam,
                        "list_instance_profiles_for_role",
                        "InstanceProfiles",
                        RoleName=role,
                    )
                except ClientError as error:
                    if error_code(error) != "NoSuchEntity":
                        raise
        for profile in found:
            self._listed_profiles[profile["Arn"]] = profile
        return {profile["Arn"] for profile in found}

    def _profiles_by_name(self, names: Iterable[str]) -> set[str]:
        """ARNs of the named instance profiles that exist (kept, with their roles, so the IAM
        read does not ask for them again); one deleted since its event is left out."""
        arns: set[str] = set()
        for name in sorted(names):
            try:
                raw = self.clients.iam.get_instance_profile(InstanceProfileName=name)
            except ClientError as error:
                if error_code(error) != "NoSuchEntity":
                    raise
                continue
            profile = raw["InstanceProfile"]
            self._listed_profiles[profile["Arn"]] = profile
            arns.add(profile["Arn"])
        return arns

    def _instances_with_profile_names(self, names: set[str]) -> set[str]:
        """Instances associated with profiles known only by name (one may be deleted already, so
        its ARN and path are unknown): the associations carry the ARN."""
        associations = pages(
            self.clients.ec2,
            "describe_iam_instance_profile_associations",
            "IamInstanceProfileAssociations",
            Filters=[{"Name": "state", "Values": ["associated", "associating"]}],
        )
        return {
            a["InstanceId"]
            for a in associations
            if a.get("IamInstanceProfile", {}).get("Arn", "").rsplit("/", 1)[-1] in names
        }

    def _groups(self, scope: Scope, group_ids: set[str]) -> dict[str, SecurityGroup]:
        """The rules of the groups the instances use (names and VPCs came with the instances)."""
        if not group_ids:
            return {}
        rules: dict[str, list[SecurityGroupRule]] = {}
        owners: dict[str, str] = {}
        for raw in security_group_rules(self.clients.ec2, None if scope.full else group_ids):
            rules.setdefault(raw["GroupId"], []).append(SecurityGroupRule.from_api(raw))
            owners[raw["GroupId"]] = raw.get("GroupOwnerId") or self.account_id
        return {
            gid: SecurityGroup(
                gid,
                self._group_meta.get(gid, ("", None))[0],
                self._group_meta.get(gid, ("", None))[1],
                owners.get(gid, self.account_id),
                tuple(rules.get(gid, ())),
            )
            for gid in sorted(group_ids)
        }

    def _groups_using(self, prefix_list_ids: Iterable[str]) -> frozenset[str]:
        """This account's security groups with a rule referencing one of these prefix lists (an
        event's: its entries just changed). Per list, DescribeManagedPrefixLists first: EC2
        changes entries asynchronously, and until the change completes the list's current
        version is the old one, so an entry just added would read as absent; then one paged
        GetManagedPrefixListAssociations. A list deleted since its event leads to no group;
        another account's groups a shared list reaches are that account's to judge."""
        found: set[str] = set()
        for pl in sorted(prefix_list_ids):
            try:
                described = self.clients.ec2.describe_managed_prefix_lists(PrefixListIds=[pl])
                states = [d.get("State") or "" for d in described.get("PrefixLists", [])]
                if not states or any(s.startswith("delete-") for s in states):
                    continue
                if any(s.endswith("-in-progress") for s in states):
                    raise PrefixListChanging(pl, states[0])
                for association in pages(
                    self.clients.ec2,
                    "get_managed_prefix_list_associations",
                    "PrefixListAssociations",
                    PrefixListId=pl,
                    MaxResults=PREFIX_LIST_ASSOCIATIONS_PAGE,
                ):
                    resource = association.get("ResourceId") or ""
                    owner = association.get("ResourceOwner") or self.account_id
                    if resource.startswith("sg-") and owner == self.account_id:
                        found.add(resource)
            except ClientError as error:
                if error_code(error) not in PREFIX_LIST_GONE:
                    raise
        return frozenset(found)

    def _prefix_lists(self, groups: Mapping[str, SecurityGroup]) -> dict[str, tuple[str, ...]]:
        """The internet CIDRs held by each prefix list a rule admitting TCP 22 references: one
        paged GetManagedPrefixListEntries per distinct list (its current version), none when no
        such rule names a list. A list deleted or no longer shared with the account holds
        nothing the group can admit."""
        ids = {
            r.prefix_list_id
            for group in groups.values()
            for r in group.ingress
            if r.prefix_list_id and reaches_ssh_port(r)
        }
        held: dict[str, tuple[str, ...]] = {}
        for pl in sorted(ids):
            try:
                entries = list(
                    pages(
                        self.clients.ec2,
                        "get_managed_prefix_list_entries",
                        "Entries",
                        PrefixListId=pl,
                        MaxResults=PREFIX_LIST_PAGE,
                    )
                )
            except ClientError as error:
                if error_code(error) not in PREFIX_LIST_GONE:
                    raise
                entries = []
            held[pl] = tuple(e["Cidr"] for e in entries if is_internet(e.get("Cidr")))
        return held

    # --- IAM -------------------------------------------------------------------------------

    def _iam(self, profile_arns: set[str]) -> tuple[dict[str, InstanceProfile], dict[str, Role]]:
        """Each distinct instance profile once (its roles come with it), each distinct role once."""
        iam = self.clients.iam
        profiles: dict[str, InstanceProfile] = {}
        raw_roles: dict[str, dict[str, Any]] = {}
        for arn in sorted(profile_arns):
            name = arn.rsplit("/", 1)[-1]
            raw = self._listed_profiles.get(arn)
            if raw is None:
                try:
                    raw = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
                except ClientError as error:
                    if error_code(error) == "NoSuchEntity":
                        continue  # deleted: the instance still names it; the check reports that
                    raise
                if raw.get("Arn", arn) != arn:
                    # Deleted and recreated under another path: the name now finds a profile
                    # the instance does not hold; its own is gone (the check reports that).
                    continue
            roles = raw.get("Roles", [])
            profiles[arn] = InstanceProfile(
                arn, name, tuple(r["RoleName"] for r in roles), raw.get("InstanceProfileId", "")
            )
            raw_roles.update({r["RoleName"]: r for r in roles})
        found: dict[str, Role] = {}
        for name, raw_role in sorted(raw_roles.items()):
            try:
                attached = frozenset(
                    p["PolicyArn"]
                    for p in pages(
                        iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name
                    )
                )
            except ClientError as error:
                if error_code(error) == "NoSuchEntity":
                    continue
                raise
            trust = raw_role.get("AssumeRolePolicyDocument")
            found[name] = Role(
                name,
                raw_role["Arn"],
                attached,
                trusted_besides_ec2(trust, raw_role["Arn"]),
                ec2_may_assume(trust),
            )
        return profiles, found

    def _simulate(
        self,
        role: Role,
        actions: list[str],
        resources: list[str],
        with_core: bool,
        region: str | None,
    ) -> tuple[dict[tuple[str, str], str], set[tuple[str, str]]]:
        """One SimulatePrincipalPolicy of the role (paged): (action in lower case, resource) →
        decision, and the pairs whose refusal the answer cannot pin on that resource alone.
        `with_core`: as if the role carried the core policy too (for the agent's actions only,
        so the other pairs' decisions are the role's own). `region`: where every call goes, if
        known (role_call_context)."""
        decisions: dict[tuple[str, str], str] = {}
        unsure: set[tuple[str, str]] = set()
        extra = {"PolicyInputList": [json.dumps(WITH_CORE)]} if with_core else {}
        for result in pages(
            self.clients.iam,
            "simulate_principal_policy",
            "EvaluationResults",
            PolicySourceArn=role.arn,
            ActionNames=actions,
            ResourceArns=resources,
            ContextEntries=role_call_context(role, self.account_id, region),
            **extra,
        ):
            for pair, decision, exact, unknown in _decisions(result, resources):
                if unknown is not None and self._deny_is_certain(role, pair, unknown):
                    decision = "explicitDeny"
                decisions[pair] = decision
                if not exact:
                    unsure.add(pair)
        return decisions, unsure

    def _deny_is_certain(self, role: Role, pair: tuple[str, str], unknown: Unknown) -> bool:
        """Whether a Deny the simulation could not evaluate refuses the real call whatever it
        carries, judged on the policies of the statements it matched (deny_is_certain). Read
        only for such an answer, each policy once a scan."""
        documents = [self._matched_policy(role, matched) for matched in unknown.matched]
        return deny_is_certain(documents, *pair, unknown.keys)

    def _matched_policy(self, role: Role, matched: Mapping[str, Any]) -> Any:
        """The document of a MatchedStatements entry's policy; None for one not read here (a
        service control policy, a policy given with the call, one deleted since or refused)."""
        target = self._policy_named(
            role,
            str(matched.get("SourcePolicyType") or "").lower(),
            str(matched.get("SourcePolicyId") or ""),
        )
        if target is None:
            return None
        key = (*target, role.name if target[0] == "inline" else "")  # inline: the role's own
        if key not in self._policies:
            self._policies[key] = self._read_policy(role, *target)
        return self._policies[key]

    def _policy_named(self, role: Role, kind: str, name: str) -> tuple[str, str] | None:
        """("managed", ARN) or ("inline", policy name) for a MatchedStatements entry. IAM names
        a managed policy (attached, or the permissions boundary) by its name, an inline one
        role_<role>_<policy>, typed "IAM Policy" (a boundary's type is not documented: published
        answers also show "Permissions Boundary Policy"; any type not below is read by name);
        an ARN, the inline policy's bare name with type "role", and types
        aws-managed/user-managed are taken too."""
        if not name or name.startswith(("PolicyInputList.", "PermissionsBoundaryPolicyInputList.")):
            return None  # given with the call: the guardrail's own, Allow only
        prefix = f"role_{role.name}_"
        if kind == "role":
            return "inline", name.removeprefix(prefix)

        def of_kind(arn: str) -> bool:
            aws_owned = ":iam::aws:policy/" in arn
            return (
                kind not in ("aws-managed", "user-managed") or (kind == "aws-managed") == aws_owned
            )

        def named(arns: Iterable[str]) -> str:
            return next((a for a in arns if name in (a, a.split("/")[-1]) and of_kind(a)), "")

        if arn := named(sorted(role.attached_policy_arns)):
            return "managed", arn
        if name.startswith(prefix):
            return "inline", name.removeprefix(prefix)
        if arn := named([self._boundary_of(role)]):
            return "managed", arn
        return ("inline", name) if not kind else None

    def _boundary_of(self, role: Role) -> str:
        """The ARN of the role's permissions boundary, "" for none (GetRole, once a role: the
        role as GetInstanceProfile lists it does not say)."""
        if role.name not in self._boundaries:
            answer = self._refusable(
                f"role {role.name}", lambda: self.clients.iam.get_role(RoleName=role.name)
            )
            boundary = (answer or {}).get("Role", {}).get("PermissionsBoundary") or {}
            self._boundaries[role.name] = str(boundary.get("PermissionsBoundaryArn") or "")
        return self._boundaries[role.name]

    def _read_policy(self, role: Role, how: str, which: str) -> Any:
        iam = self.clients.iam
        what = f"policy {which} of role {role.name}"
        if how == "managed":
            version = self._refusable(what, lambda: iam.get_policy(PolicyArn=which))
            answer = version and self._refusable(
                what,
                lambda: iam.get_policy_version(
                    PolicyArn=which, VersionId=version["Policy"]["DefaultVersionId"]
                ),
            )
            return answer and answer["PolicyVersion"]["Document"]
        answer = self._refusable(
            what, lambda: iam.get_role_policy(RoleName=role.name, PolicyName=which)
        )
        return answer and answer["PolicyDocument"]

    @staticmethod
    def _refusable(what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """An IAM read for judging a Deny; None when what it reads is gone, or the read is
        refused (an SCP, a narrowed role: logged). Then the Deny stays one the simulation
        cannot evaluate, as before the guardrail read policies."""
        try:
            return call()
        except ClientError as error:
            code = error_code(error)
            if code in ("AccessDenied", "AccessDeniedException"):
                logger.warning("%s not read: %s", what, code)
            elif code != "NoSuchEntity":
                raise
        return None

    def _simulations(
        self,
        agents: dict[str, tuple[Role, str, bool]],
        delivering: dict[str, Role],
        target: dict[str, str],
    ) -> tuple[dict[str, AgentAccess], dict[str, DeliveryCheck], set[str]]:
        """One SimulatePrincipalPolicy per distinct role over all it needs judged: the SSM
        Agent's actions on one of its instances (`agents`: roles carrying the core policy, or to
        be given it; "*" would miss an Allow scoped to instances) and the log-delivery pairs
        (`delivering`). The API simulates every action on every resource; the pairs no check
        asks about are ignored. A role deleted since its policies were read is returned among
        the gone: IAM deletes only a role that no profile carries, so its instances' profiles
        are judged without a role, as when the role is gone before its policies are read."""
        region = self.clients.region
        pairs = delivery_requirements(target, self.partition, region, self.account_id)
        # The agent's calls go to this region; log delivery's too, unless to a bucket or key
        # that may be elsewhere: then the simulation is not told the region.
        stays = delivery_stays_in(region, target, pairs, self.settings.session_log_bucket)
        access: dict[str, AgentAccess] = {}
        checks: dict[str, DeliveryCheck] = {}
        gone: set[str] = set()
        for name in sorted(agents.keys() | delivering.keys()):
            role = agents[name][0] if name in agents else delivering[name]
            actions: list[str] = []
            resources: list[str] = []
            if name in agents:
                instance_arn = (
                    f"arn:{self.partition}:ec2:{self.clients.region}:{self.account_id}:"
                    f"instance/{agents[name][1]}"
                )
                actions += AGENT_ACTIONS
                resources.append(instance_arn)
            if name in delivering:
                actions += sorted({a for a, _ in pairs})
                resources += sorted({r for _, r in pairs})
            agent = [(a.lower(), instance_arn) for a in AGENT_ACTIONS] if name in agents else []
            wanted = agent + ([(a.lower(), r) for a, r in pairs] if name in delivering else [])
            with_core = name in agents and agents[name][2]
            called = region if stays or name not in delivering else None
            try:
                decisions = self._decide(role, actions, resources, wanted, with_core, called)
                if called is None and any(decisions.get(p) != "allowed" for p in agent):
                    # The agent's calls stay here, delivery's may not: refused without the
                    # region, they are asked again with it (one call, only then).
                    decisions.update(
                        self._simulate(
                            role, list(AGENT_ACTIONS), [instance_arn], with_core, region
                        )[0]
                    )
            except ClientError as error:
                if error_code(error) == "NoSuchEntity":
                    gone.add(name)
                    continue
                raise
            if name in agents:
                access[name] = self._agent_access(role, decisions, instance_arn, with_core)
            if name in delivering:
                checks[name] = _delivery_check(name, pairs, decisions)
        return access, checks, gone

    def _decide(
        self,
        role: Role,
        actions: list[str],
        resources: list[str],
        wanted: list[tuple[str, str]],
        with_core: bool,
        region: str | None,
    ) -> dict[tuple[str, str], str]:
        """The decisions of one simulation of every action on every resource, for the `wanted`
        pairs. A refusal the answer gives for the action only (a service control policy, an
        answer without per-resource results) may come from a resource no check asked about: the
        s3:PutObject simulated on the instance, say. Those pairs are simulated again, one call
        per resource, where the answer can only be that resource's (rare: only a refusal)."""
        decisions, unsure = self._simulate(role, actions, resources, with_core, region)
        spelled = {a.lower(): a for a in actions}  # asked again as first asked
        again: dict[str, set[str]] = {}
        for action, resource in wanted:
            if (action, resource) in unsure:
                again.setdefault(resource, set()).add(spelled.get(action, action))
        for resource, names in sorted(again.items()):
            decisions.update(self._simulate(role, sorted(names), [resource], with_core, region)[0])
        return decisions

    def _agent_access(
        self, role: Role, decisions: dict[tuple[str, str], str], instance_arn: str, with_core: bool
    ) -> AgentAccess:
        """The agent's actions on its instance. A Deny whose conditions need context the
        simulation lacks (aws:SourceVpce, say) cannot be judged here: over the AWS-managed core
        policy (carried, or to be attached), which allows every agent action, it is not counted
        as refusing; over a declared equivalent it is, as it may hide an Allow that is missing."""
        core = with_core or core_policy_arn(self.partition) in role.attached_policy_arns
        unjudged = ("conditionalDeny",) if core else ()
        denied, unsure = [], []
        for action in AGENT_ACTIONS:
            # Not answered is not allowed.
            decision = decisions.get((action.lower(), instance_arn), "implicitDeny")
            if decision in unjudged:
                unsure.append(action)
            elif decision != "allowed":
                denied.append((action, decision))
        return AgentAccess(role.name, tuple(denied), tuple(unsure))

    # --- SSM -------------------------------------------------------------------------------

    def _preferences(self) -> SessionPreferences:
        try:
            raw = self.clients.ssm.get_document(Name=SESSION_DOCUMENT, DocumentFormat="JSON")
        except ClientError as error:
            if error_code(error) == "InvalidDocument":
                return SessionPreferences(exists=False)  # a fresh account: nothing is logged
            raise
        version = raw.get("DocumentVersion")
        try:
            content = json.loads(raw.get("Content") or "")
        except (ValueError, RecursionError):  # JSONDecodeError, or nesting past the stack
            content = None
        inputs = content.get("inputs") if isinstance(content, dict) else None
        # No inputs, or "inputs": null, is no inputs; an inputs that is not an object is unknown.
        if not isinstance(content, dict) or not isinstance(inputs, dict | None):
            why = "no JSON object with an inputs object in GetDocument's Content"
            return SessionPreferences(True, document_version=version, unreadable=why)
        return self._with_key(SessionPreferences(True, inputs or {}, content, version))

    def _with_key(self, prefs: SessionPreferences) -> SessionPreferences:
        """The preferences with what KMS says of their kmsKeyId (DescribeKey, once per read): the
        key an alias (alias/name, or an alias ARN) names, as IAM authorizes the agent's
        kms:Decrypt on the key; and whether sessions can use it (no such key or alias, a key
        disabled, pending deletion or not a symmetric encryption key starts no session). Where
        KMS does not say (a key policy refusing DescribeKey, another account's key, an owner's
        malformed value): logged, not judged. Throttling or a KMS fault past botocore's retries
        raises."""
        key_id = prefs.session_key
        if not key_id:
            return prefs
        aliased = "alias/" in key_id
        try:
            key = self.clients.kms.describe_key(KeyId=key_id)["KeyMetadata"]
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if error_code(error) in THROTTLED or status >= 500:
                raise
            logger.warning("kmsKeyId %s not resolved: %s", key_id, error_code(error))
            if error_code(error) == "NotFoundException":
                return replace(prefs, key_unusable="names no KMS key in this region")
            return prefs
        # Only KeyId is sure to be in the answer: without its ARN an alias stays unresolved.
        arn, state = str(key.get("Arn") or ""), str(key.get("KeyState") or "Enabled")
        which = f"names key {arn or key.get('KeyId')}, which " if aliased else ""
        usage = key.get("KeyUsage") or "ENCRYPT_DECRYPT"  # an answer without it: not judged
        spec = key.get("KeySpec") or key.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        if state not in USABLE_KEY_STATES:
            unusable = f"{which}is {state}"
        elif (usage, spec) != ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"):
            unusable = f"{which}is not a symmetric encryption key ({spec}, {usage})"
        else:
            unusable = ""
        return replace(prefs, alias_target=arn if aliased else "", key_unusable=unusable)

    def _managed(self, instance_ids: list[str]) -> dict[str, ManagedInstance]:
        """Systems Manager's view of running instances: whether DHMC manages one without a
        profile, whether one behind an open group is Online."""
        found: list[dict[str, Any]] = []
        for batch in chunks(instance_ids, SSM_IDS):
            try:
                found += self._instance_information([{"Key": "InstanceIds", "Values": batch}])
            except ClientError as error:
                if error_code(error) != "InvalidInstanceId":
                    raise
                # One instance terminated since DescribeInstances fails its whole batch: read
                # the region's managed instances unfiltered instead, once, and pick ours.
                asked = set(instance_ids)
                found = [i for i in self._instance_information([]) if i["InstanceId"] in asked]
                break
        return {
            raw["InstanceId"]: ManagedInstance(raw["InstanceId"], raw.get("PingStatus", "Unknown"))
            for raw in found
        }

    def _dhmc_role(self) -> str | None:
        """The role Default Host Management uses in this region; None where it is off."""
        try:
            setting = self.clients.ssm.get_service_setting(SettingId=DHMC_SETTING)
        except ClientError as error:
            if error_code(error) == "ServiceSettingNotFound":
                return None
            raise
        value = str(setting.get("ServiceSetting", {}).get("SettingValue") or "")
        return None if value in ("", "$None") else value

    def _instance_information(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(
            pages(
                self.clients.ssm,
                "describe_instance_information",
                "InstanceInformationList",
                MaxResults=SSM_IDS,
                **({"Filters": filters} if filters else {}),
            )
        )


def _delivery_check(
    role_name: str, pairs: list[tuple[str, str]], decisions: dict[tuple[str, str], str]
) -> DeliveryCheck:
    denied = [(a, r) for a, r in pairs if decisions.get((a.lower(), r)) != "allowed"]
    return DeliveryCheck(
        role_name,
        tuple(f"{a} on {r}" for a, r in denied),
        tuple(
            f"{a} on {r} (refused by {REFUSALS[decision][1]})"
            for a, r in denied
            if (decision := decisions.get((a.lower(), r), "")) in CANNOT_BE_GRANTED
        ),
    )


def _decisions(
    result: dict[str, Any], resources: list[str]
) -> Iterator[tuple[tuple[str, str], str, bool, Unknown | None]]:
    """((action in lower case, resource), decision, exact, unknown) from a SimulatePrincipalPolicy
    result. A pair the role's permissions boundary does not allow is "boundaryDeny", one a
    service control policy does not allow (OrganizationsDecisionDetail) "organizationsDeny": no
    identity policy lifts them. An explicit Deny that needed context keys the simulation was not
    given (MissingContextValues), keys the real call may carry, is "conditionalDeny": whether it
    applies to the real calls is not known from the answer alone; `unknown` holds those keys
    and the statements the Deny matched, for the reader to look at (deny_is_certain).

    IAM answers one result per action: its top level aggregates every resource of the call
    (the most restrictive decision, every resource's missing context keys), each resource's own
    answer is in ResourceSpecificResults. A resource is read from its own entry; what only the
    action's level says (an SCP, a boundary detail the entry lacks, a refusal without
    per-resource results) is not `exact` when the call named several resources."""
    action = str(result.get("EvalActionName", "")).lower()
    several = len(resources) > 1
    specific = result.get("ResourceSpecificResults") or []
    entries = [
        (item.get("EvalResourceName", ""), item.get("EvalResourceDecision", ""), item, True)
        for item in specific
    ]
    if not entries:
        # One decision for the action: the aggregate over every resource of the call.
        decision = result.get("EvalDecision", "")
        named = result.get("EvalResourceName")
        targets = [named] if named in resources else resources or [named or "*"]
        entries = [(r, decision, result, decision == "allowed" or not several) for r in targets]
    organizations = result.get("OrganizationsDecisionDetail") or {}
    for resource, decision, entry, exact in entries:
        own = entry.get("PermissionsBoundaryDecisionDetail")
        detail = own or result.get("PermissionsBoundaryDecisionDetail") or {}
        keys = frozenset(
            str(k).lower() for k in entry.get("MissingContextValues") or () if may_carry(action, k)
        )
        unknown = None
        if decision == "explicitDeny" and keys:
            decision = "conditionalDeny"  # wherever the Deny is: a perimeter is often an SCP
            # An entry's own list, even empty (a Deny no policy read here holds): the action's
            # may be another resource's.
            matched = entry.get("MatchedStatements", result.get("MatchedStatements")) or []
            unknown = Unknown(keys, tuple(m for m in matched if isinstance(m, dict)))
        elif decision != "allowed" and detail.get("AllowedByPermissionsBoundary") is False:
            decision = "boundaryDeny"
            exact = exact and (own is not None or not several)
        elif decision != "allowed" and organizations.get("AllowedByOrganizations") is False:
            decision = "organizationsDeny"
            exact = exact and not several
        yield (action, resource), decision, exact, unknown


def delivery_stays_in(
    region: str, target: Mapping[str, str], pairs: list[tuple[str, str]], own_bucket: str
) -> bool:
    """Whether every log-delivery call goes to `region`: no bucket but the guardrail's own
    (each regional stack has its own, in the region it guards), no key of another region."""
    bucket = target.get("bucket", "")
    regions = {(arn.split(":") + ["?"] * 4)[3] for _, arn in pairs}  # "?": not an ARN
    return (not bucket or bucket == own_bucket) and regions <= {"", region}


def role_call_context(role: Role, account: str, region: str | None) -> list[dict[str, Any]]:
    """The context keys IAM sets on every call the SSM Agent makes with the role's instance
    credentials, given to the simulation so that a condition on them is judged as on the real
    calls instead of read as "missing": a region perimeter (aws:RequestedRegion, when every
    call goes to one known region), a Deny of principals outside a path (aws:PrincipalArn: the
    role's ARN with its path, not the session's), a Deny of plain HTTP."""
    known = (
        *((("aws:RequestedRegion", "string", region),) if region else ()),
        ("aws:PrincipalArn", "string", role.arn),
        ("aws:PrincipalAccount", "string", account),
        ("aws:PrincipalType", "string", "AssumedRole"),
        ("aws:SecureTransport", "boolean", "true"),
    )
    return [
        {"ContextKeyName": name, "ContextKeyType": kind, "ContextKeyValues": [value]}
        for name, kind, value in known
    ]


def may_carry(action: str, key: str) -> bool:
    """Whether the real call of `action` by an instance role may carry context `key`. One it
    cannot (s3:prefix or iam:PassedToService beside an ssmmessages call) is missing from the
    real call too: a Deny that matched without it matches that call, so the answer stands."""
    key = str(key).lower()
    service = key.partition(":")[0]
    if service == "aws":
        return key not in NOT_IN_ROLE_CALLS
    return key in INSTANCE_CREDENTIAL_KEYS or service == action.lower().partition(":")[0]
