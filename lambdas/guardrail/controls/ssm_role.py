"""ssm-instance-role: the instance's profile carries a role with AmazonSSMManagedInstanceCore.

Fails with no instance profile, a profile with no role, a role without the managed policy (or
one the operator declares equivalent), or a role with it that may still not make the SSM Agent's
Session Manager calls (an explicit Deny, its permissions boundary or a service control policy:
IAM policy simulation). The fix associates the guardrail's profile, adds the guardrail's role to
an empty profile, or attaches the policy; it never replaces or removes a profile, touches an
existing role only when settings allow it, and leaves a refused agent to a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from ..model import (
    STOPPED_STATES,
    AccountSnapshot,
    AgentAccess,
    FixRecord,
    Instance,
    Outcome,
    ResourceType,
    Result,
    Role,
    Status,
    exempt_named,
    parse_time,
    undo_part,
)
from ..paging import pages
from ..settings import Settings
from .base import (
    OUT_OF_TIME,
    FixContext,
    Permission,
    answer_may_be_lost,
    assumed_beyond_ec2,
    attach_failed,
    beyond_the_event,
    detach_hint,
    error_code,
)

CORE_POLICY = "AmazonSSMManagedInstanceCore"
ASSOCIABLE_STATES = frozenset({"running", "stopped"})
# What the SSM Agent calls to register and to carry Session Manager sessions (all granted by
# AmazonSSMManagedInstanceCore). Simulated once per role that carries the core policy, on one of
# its instances: an explicit Deny, the role's permissions boundary or a service control policy
# refusing one keeps Session Manager out whatever policy is attached.
AGENT_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
# By SimulatePrincipalPolicy decision (as the reader names them), in the order reasons name
# them: what refuses an agent action, what no attached policy can lift, what a person changes.
REFUSALS = {
    "explicitDeny": ("an explicit Deny refuses", "an explicit Deny", "remove or narrow the Deny"),
    "boundaryDeny": (
        "the permissions boundary does not allow",
        "a permissions boundary",
        "allow them in the role's permissions boundary",
    ),
    "organizationsDeny": (
        "a service control policy refuses",
        "a service control policy",
        "have the organization's service control policies allow them",
    ),
    "conditionalDeny": (
        "a Deny with conditions the simulation cannot evaluate may refuse",
        "a Deny whose conditions (context keys) the simulation cannot evaluate",
        "check that the Deny's conditions let these calls through",
    ),
    "implicitDeny": ("no policy of the role allows", "", "allow them in the role's policy"),
}


def core_policy_arn(partition: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{CORE_POLICY}"


def accepted_policies(partition: str, settings: Settings) -> frozenset[str]:
    return frozenset({core_policy_arn(partition), *settings.equivalent_policy_arns})


def role_problem(instance: Instance, snapshot: AccountSnapshot, settings: Settings) -> str | None:
    """Why the instance lacks an SSM role ('no_profile', 'profile_missing', 'no_role',
    'not_ec2': its trust policy does not let EC2 assume it, so the instance gets no credentials,
    'no_policy', or 'agent_denied': the role carries the policy, but the simulation of the SSM
    Agent's actions did not allow them all)."""
    if not instance.profile_arn:
        return "no_profile"
    profile = snapshot.profile_of(instance)
    if profile is None:
        return "profile_missing"
    role = snapshot.role_of(instance)
    if role is None:
        return "no_role"
    if not role.ec2_trusted:
        return "not_ec2"
    if not role.attached_policy_arns & accepted_policies(snapshot.partition, settings):
        return "no_policy"
    access = snapshot.agent_access.get(role.name)
    if access is not None and not access.allowed:
        return "agent_denied"
    return None


# Simulated beside the role's own policies for a role the fix would attach the core policy to:
# what still refuses these is what attaching cannot lift (a Deny, the boundary, an SCP).
WITH_CORE = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": list(AGENT_ACTIONS), "Resource": "*"}],
}


def attaches(role_name: str, settings: Settings) -> bool:
    """Whether the role fix may attach the core policy to the role, which lacks it."""
    return settings.mode_for(SSM_ROLE_ID) == "enforce" and settings.may_modify(role_name)


def agent_roles(
    instances: Iterable[Instance], snapshot: AccountSnapshot, settings: Settings
) -> dict[str, tuple[Role, str, bool]]:
    """The distinct roles of `instances` whose SSM Agent actions the reader simulates, by name,
    each with one of its instances (simulated on it) and whether to simulate it as if it carried
    the core policy: roles that carry it (or an equivalent), and roles the fix would attach it
    to, so that it is never attached where a Deny, the boundary or an SCP would still refuse the
    agent (any other role fails on its policies, unasked)."""
    found: dict[str, tuple[Role, str, bool]] = {}
    for instance in instances:
        role = snapshot.role_of(instance)
        problem = role_problem(instance, snapshot, settings)
        if role is None or role.name in found:
            continue
        if problem in (None, "agent_denied"):
            found[role.name] = (role, instance.instance_id, False)
        elif problem == "no_policy" and attaches(role.name, settings):
            found[role.name] = (role, instance.instance_id, True)
    return found


def refused_by(access: AgentAccess) -> dict[str, list[str]]:
    """The refused agent actions by decision, in REFUSALS' order (any other decision last)."""
    by_decision: dict[str, list[str]] = {}
    for action, decision in access.denied:
        by_decision.setdefault(decision, []).append(action)
    order = [d for d in REFUSALS if d in by_decision] + sorted(set(by_decision) - set(REFUSALS))
    return {d: by_decision[d] for d in order}


def refusal(access: AgentAccess) -> str:
    """What refuses which agent actions, e.g. 'the permissions boundary does not allow
    ssm:UpdateInstanceInformation, ssmmessages:OpenDataChannel'."""
    return "; ".join(
        f"{REFUSALS[d][0] if d in REFUSALS else f'the simulation answers {d} for'} "
        f"{', '.join(actions)}"
        for d, actions in refused_by(access).items()
    )


def carried_policy(role: Role, partition: str) -> str:
    """How a reason names the policy a role passes on: the core policy, or an equivalent."""
    if core_policy_arn(partition) in role.attached_policy_arns:
        return CORE_POLICY
    return f"a policy declared equivalent to {CORE_POLICY}"


DHMC_SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"
# How long after a start the SSM Agent may still be registering (minutes, usually): until then
# Systems Manager not knowing the instance says nothing. A choice, with room for a slow boot.
REGISTRATION_WINDOW = timedelta(minutes=30)


def just_started(instance: Instance, snapshot: AccountSnapshot) -> bool:
    """Started within REGISTRATION_WINDOW of the read (EC2 resets LaunchTime at every start)."""
    if instance.state not in ("pending", "running") or not snapshot.read_at:
        return False
    launched = parse_time(instance.launched_at)
    if launched is None or launched.tzinfo is None:
        return False
    return snapshot.read_at - launched < REGISTRATION_WINDOW


def dhmc_unconfirmed(instance: Instance, snapshot: AccountSnapshot, settings: Settings) -> bool:
    """DHMC is accepted and could manage the instance (IMDSv2, no profile), but Systems Manager
    cannot confirm it now: it lists no stopped instance, nor one whose agent is still registering
    after a start. The region's DHMC setting decides; otherwise Systems Manager does."""
    return (
        settings.accept_dhmc
        and not instance.profile_arn
        and instance.metadata_tokens == "required"
        and not snapshot.is_online(instance.instance_id)
        and (instance.state in STOPPED_STATES or just_started(instance, snapshot))
    )


SSM_ROLE_ID = "ssm-instance-role"


class SsmInstanceRole:
    id = SSM_ROLE_ID
    title = "EC2 instances should have the Systems Manager instance role"
    description = (
        "The instance has no instance profile, a profile without a role, a role without "
        "AmazonSSMManagedInstanceCore, or a role whose explicit Deny, permissions boundary or "
        "service control policies refuse the SSM Agent's calls, so Session Manager cannot "
        "reach it."
    )
    related_requirements = ("AWS Foundational Security Best Practices v1.0.0/SSM.1",)
    finding_types = ("Software and Configuration Checks/AWS Security Best Practices",)
    recommendation = (
        "Attach an instance profile whose role has the AmazonSSMManagedInstanceCore managed "
        "policy, or enable Default Host Management Configuration for IMDSv2 instances."
    )
    recommendation_url = "https://docs.aws.amazon.com/systems-manager/latest/userguide/setup-instance-permissions.html"
    read_permissions = (
        Permission(
            ("iam:GetInstanceProfile",),
            resources=("arn:{partition}:iam::{account}:instance-profile/*",),
            why="each distinct instance profile, once; one an IAM event names; the role a "
            "profile got meanwhile when adding one is refused (a fix)",
        ),
        Permission(
            ("iam:ListInstanceProfiles",),
            # IAM authorizes this list on no resource type (the Service Authorization
            # Reference, as cfn-lint's policy data has it): only "*" matches.
            why="the account's profiles when an IAM event names a policy many roles use",
            events_only=True,
        ),
        Permission(
            ("iam:ListAttachedRolePolicies",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            why="each distinct role's policies",
        ),
        Permission(
            ("iam:ListInstanceProfilesForRole",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            why="the profiles of a role an IAM event names, or of one using a policy it names",
            events_only=True,
        ),
        Permission(
            ("iam:ListEntitiesForPolicy",),
            resources=("arn:{partition}:iam::{account}:policy/*",),
            why="the roles using a customer-managed policy an IAM event names (a new default "
            "version), attached or as their permissions boundary",
            events_only=True,
        ),
        Permission(
            ("ec2:DescribeIamInstanceProfileAssociations",),
            why="instances of a profile an IAM event names (it may be deleted already); the "
            "profile an instance got meanwhile when associating one is refused (a fix)",
        ),
        Permission(
            ("iam:SimulatePrincipalPolicy",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            why="whether the SSM Agent may make its calls with each distinct role that carries "
            "the core policy",
        ),
        Permission(
            ("iam:GetRolePolicy", "iam:GetRole"),
            resources=("arn:{partition}:iam::{account}:role/*",),
            why="a role's inline policy (or, from the role, its permissions boundary) holding a "
            "Deny the simulation matched but could not evaluate (IAM lists every policy's "
            "missing context keys): whether it has conditions",
        ),
        Permission(
            ("iam:GetPolicy", "iam:GetPolicyVersion"),
            resources=(
                "arn:{partition}:iam::{account}:policy/*",
                "arn:{partition}:iam::aws:policy/*",
            ),
            why="the same for a managed policy (its default version)",
        ),
        Permission(("ssm:DescribeInstanceInformation",), why="managed-instance status (DHMC)"),
        Permission(
            ("ssm:GetServiceSetting",),
            resources=(
                f"arn:{{partition}}:ssm:{{region}}:{{account}}:servicesetting{DHMC_SETTING}",
            ),
            why="whether the region has DHMC, for an instance Systems Manager cannot confirm",
        ),
    )
    fix_permissions = (
        Permission(
            ("ec2:AssociateIamInstanceProfile",),
            resources=("arn:{partition}:ec2:{region}:{account}:instance/*",),
            why="associate the guardrail's profile with an instance that has none",
        ),
        Permission(
            ("iam:PassRole",),
            resources=("{guardrail_role_arn}",),
            conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            why="associating the guardrail's profile passes its role to EC2",
        ),
        Permission(
            ("iam:PassRole",),
            resources=("{guardrail_role_arn}",),
            # AddRoleToInstanceProfile checks iam:PassRole with the instances as its context
            # (iam:AssociatedResourceArn, which AWS documents as arn:...:ec2:*:<account>:
            # instance/* for that call); it is not documented to name a service.
            conditions={
                "ArnLike": {
                    "iam:AssociatedResourceArn": "arn:{partition}:ec2:*:{account}:instance/*"
                }
            },
            why="adding the guardrail's role to an empty profile passes it for this account's "
            "instances",
        ),
        Permission(
            ("iam:AddRoleToInstanceProfile",),
            resources=("arn:{partition}:iam::{account}:instance-profile/*",),
            why="put the guardrail's role into a profile that has no role",
        ),
        Permission(
            ("iam:AttachRolePolicy",),
            resources=("arn:{partition}:iam::{account}:role/*",),
            conditions={
                "ArnEquals": {"iam:PolicyARN": ["{core_policy_arn}", "{log_delivery_policy_arn}"]}
            },
            why="attach AmazonSSMManagedInstanceCore (or the log-delivery policy) to a role",
        ),
    )
    no_fix_reason = ""
    # A profile is associated only where none was read; attaching or adding a role leaves the
    # profile as read: the finding's instance details stay true after every fix.
    fix_changes: tuple[str, ...] = ()

    def check(self, snapshot: AccountSnapshot, settings: Settings) -> list[Result]:
        results = []
        for instance in snapshot.instances.values():
            iid = instance.instance_id
            if not instance.evaluated:
                results.append(snapshot.not_evaluated(self.id, instance))
                continue
            managed = snapshot.managed_instances.get(iid)
            details: dict[str, Any] = {"instance_profile_arn": instance.profile_arn}
            if managed:  # read only when settings accept DHMC
                details["ssm_ping_status"] = managed.ping_status
            problem = role_problem(instance, snapshot, settings)
            role = snapshot.role_of(instance)
            if role:
                details["role_name"] = role.name
            if problem is None:
                results.append(
                    snapshot.result(
                        self.id,
                        ResourceType.INSTANCE,
                        iid,
                        Status.PASSED,
                        "INFORMATIONAL",
                        f"role {role.name if role else '?'} carries the SSM core policy",
                        details=details,
                    )
                )
                continue
            dhmc = ""  # why Default Host Management (accepted by settings) stands in for a profile
            unconfirmed = problem == "no_profile" and dhmc_unconfirmed(instance, snapshot, settings)
            if problem == "no_profile" and settings.accept_dhmc:
                if snapshot.is_online(iid):
                    dhmc = "managed through Default Host Management Configuration"
                elif unconfirmed and snapshot.dhmc_role:
                    when = (
                        "stopped"
                        if instance.state in STOPPED_STATES
                        else "started too recently for Systems Manager to know it"
                    )
                    dhmc = (
                        f"{when}, and Default Host Management is configured in this region (role "
                        f"{snapshot.dhmc_role}); after {REGISTRATION_WINDOW.seconds // 60} minutes "
                        "of running, Systems Manager must report it Online"
                    )
            if dhmc:
                results.append(
                    snapshot.result(
                        self.id,
                        ResourceType.INSTANCE,
                        iid,
                        Status.PASSED,
                        "INFORMATIONAL",
                        f"no instance profile, but {dhmc} (accepted by settings)",
                        details=details,
                    )
                )
                continue
            if problem == "agent_denied":
                reason = self._agent_denied(role, snapshot, details)
            else:
                reason = {
                    "no_profile": "no instance profile"
                    + (
                        " (Default Host Management is not configured in this region)"
                        if unconfirmed
                        else ""
                    ),
                    "profile_missing": f"instance profile {instance.profile_name} no longer exists"
                    + (
                        " (one of that name was created since: EC2 keeps the instance on the "
                        "deleted one)"
                        if instance.profile_arn in snapshot.instance_profiles
                        else ""
                    ),
                    "no_role": f"instance profile {instance.profile_name} has no role",
                    "not_ec2": f"role {role.name if role else '?'} does not let EC2 assume it "
                    "(its trust policy): the instance gets no credentials, and the SSM Agent none "
                    "to register with",
                    "no_policy": f"role {role.name if role else '?'} lacks {CORE_POLICY}",
                }[problem]
            details["problem"] = problem
            results.append(
                snapshot.result(
                    self.id,
                    ResourceType.INSTANCE,
                    iid,
                    Status.FAILED,
                    "MEDIUM",
                    reason,
                    details=details,
                )
            )
        return results

    @staticmethod
    def _agent_denied(role: Role | None, snapshot: AccountSnapshot, details: dict[str, Any]) -> str:
        """The reason for a role that carries the policy but may not make the agent's calls."""
        access = snapshot.agent_access.get(role.name) if role else None
        if role is None or access is None:
            return "the SSM Agent's calls are refused"
        details["agent_denied"] = dict(access.denied)
        return (
            f"role {role.name} carries {carried_policy(role, snapshot.partition)}, but "
            f"{refusal(access)}: the SSM Agent cannot serve Session Manager with it"
        )

    def settle(self, snapshot: AccountSnapshot, records: Sequence[FixRecord]) -> AccountSnapshot:
        return snapshot  # each fix settles its results whole: nothing is left half done

    def remediate(
        self, failed: Sequence[Result], snapshot: AccountSnapshot, ctx: FixContext
    ) -> list[FixRecord]:
        settings, records = ctx.settings, ctx.made
        by_role: dict[str, list[str]] = {}
        by_profile: dict[str, list[str]] = {}
        refused: dict[str, list[str]] = {}
        untrusted: dict[str, list[str]] = {}
        for result in failed:
            instance = snapshot.instances[result.resource_id]
            problem = result.details.get("problem")
            if problem == "no_profile":
                records.append(self._associate(instance, snapshot, ctx))
            elif problem == "no_role":
                by_profile.setdefault(instance.profile_name or "", []).append(instance.instance_id)
            elif problem == "no_policy":
                role = snapshot.role_of(instance)
                by_role.setdefault(role.name if role else "", []).append(instance.instance_id)
            elif problem == "agent_denied":
                role = snapshot.role_of(instance)
                refused.setdefault(role.name if role else "", []).append(instance.instance_id)
            elif problem == "not_ec2":
                role = snapshot.role_of(instance)
                untrusted.setdefault(role.name if role else "", []).append(instance.instance_id)
            else:
                records.append(
                    FixRecord(
                        self.id,
                        instance.instance_id,
                        "replace deleted instance profile",
                        Outcome.SKIPPED,
                        reason="the instance profile is gone; associate a new one "
                        "by hand (the guardrail never replaces a profile)",
                        covers=(instance.instance_id,),
                    )
                )
        for profile, instance_ids in by_profile.items():
            if exempt := self._exempt_users(profile, instance_ids, snapshot, ctx):
                # A role in the profile reaches every instance using it: the exempt ones too.
                records.append(
                    FixRecord(
                        self.id,
                        profile,
                        "add role to instance profile",
                        Outcome.SKIPPED,
                        reason=f"used by {', '.join(exempt)}, exempt from fixes: a role added "
                        "to the profile would reach them too; give them a profile of their own, "
                        "or take the tag off",
                        covers=tuple(instance_ids),
                    )
                )
                continue
            records.append(self._add_role(profile, instance_ids, settings, ctx))
        for role_name, instance_ids in by_role.items():
            records.append(self._attach(role_name, instance_ids, snapshot, ctx))
        for role_name, instance_ids in refused.items():
            records.append(self._agent_refused(role_name, instance_ids, snapshot))
        for role_name, instance_ids in untrusted.items():
            # Widening a role's trust is its owners' call, and a profile is never replaced.
            records.append(
                FixRecord(
                    self.id,
                    role_name,
                    "let EC2 assume the role",
                    Outcome.SKIPPED,
                    reason=f"the guardrail never edits a trust policy: let ec2.amazonaws.com "
                    f"assume {role_name} (iam update-assume-role-policy), or give the instances "
                    "another instance profile",
                    covers=tuple(instance_ids),
                )
            )
        return records

    def _agent_refused(
        self, role_name: str, instance_ids: list[str], snapshot: AccountSnapshot
    ) -> FixRecord:
        """A role with the core policy whose agent actions are refused: nothing the guardrail
        may do lets them through (it never edits a Deny, a boundary or an SCP), so it says who
        must change what, once per role."""
        role = snapshot.roles.get(role_name)
        access = snapshot.agent_access.get(role_name) or AgentAccess(role_name)
        before = sorted(role.attached_policy_arns) if role else []
        decisions = [d for d in refused_by(access) if d in REFUSALS]
        blockers = [REFUSALS[d][1] for d in decisions if REFUSALS[d][1]]
        policy = carried_policy(role, snapshot.partition) if role else CORE_POLICY
        changes = "; ".join([REFUSALS[d][2] for d in decisions] or ["see the role in IAM"])
        if blockers:
            why = f"attaching a policy cannot help: no Allow lifts {' or '.join(blockers)}"
        else:  # its own policy falls short: the guardrail does not second-guess it
            why = f"the role carries {policy} already, which the guardrail leaves to its owner"
        reason = f"{refusal(access) or 'the SSM Agent is refused'}: {why}; {changes}"
        return FixRecord(
            self.id,
            role_name,
            "let the SSM Agent through",
            Outcome.SKIPPED,
            before,
            None,
            reason,
            covers=tuple(instance_ids),
        )

    def _associate(
        self, instance: Instance, snapshot: AccountSnapshot, ctx: FixContext
    ) -> FixRecord:
        iid, profile = instance.instance_id, ctx.settings.instance_profile
        action = "associate instance profile"

        def skipped(reason: str) -> FixRecord:
            return FixRecord(self.id, iid, action, Outcome.SKIPPED, covers=(iid,), reason=reason)

        def done(reason: str, after: str | None = None, gone: bool = False) -> FixRecord:
            return FixRecord(
                self.id, iid, action, Outcome.ALREADY_COMPLIANT, None, after, reason,
                covers=(iid,), gone=gone,
            )  # fmt: skip

        def failed(reason: str, code: str | None) -> FixRecord:
            return FixRecord(
                self.id, iid, action, Outcome.FAILED, None, profile, reason, code, covers=(iid,)
            )

        def associated(association: str, note: str = "") -> FixRecord:
            # DisassociateIamInstanceProfile takes the association's id, not the instance's.
            undo = (
                undo_part(
                    "aws ec2 disassociate-iam-instance-profile --association-id "
                    f"{association} --region {ctx.clients.region}"
                )
                if association
                else ""
            )
            return FixRecord(
                self.id,
                iid,
                action,
                Outcome.APPLIED,
                None,
                {"instance_profile": profile, "association_id": association},
                f"associated {profile}{note}{undo}",
                covers=(iid,),
                at=ctx.clock(),
            )

        if not profile:
            return skipped("GUARDRAIL_INSTANCE_PROFILE is not set: no profile to associate")
        if ctx.out_of_time():
            return skipped(OUT_OF_TIME)
        if instance.state not in ASSOCIABLE_STATES:
            # AssociateIamInstanceProfile takes running or stopped instances only (IncorrectState
            # otherwise); the instance's next state-change event or the drift scan fixes it.
            return skipped(
                f"instance is {instance.state}: a profile can be associated once it is running or "
                "stopped"
            )
        ec2 = ctx.clients.ec2
        try:
            with answer_may_be_lost(ec2, "AssociateIamInstanceProfile") as tries:
                answer = ec2.associate_iam_instance_profile(
                    IamInstanceProfile={"Name": profile}, InstanceId=iid
                )
            association = answer.get("IamInstanceProfileAssociation", {}).get("AssociationId", "")
        except ClientError as error:
            code = error_code(error)
            if code == "IncorrectState" and "association" in str(error).lower():
                # A profile was associated meanwhile. Done if it is ours: this run's own try
                # whose answer was lost (its record and undo are this fix's), or a concurrent
                # run's; a person's is never replaced, and their event judges its role.
                try:
                    current, association = self._associated_profile(ctx, iid)
                except ClientError as lookup:  # whose association it is, is not known
                    return failed(
                        "an association exists and reading it failed: whose it is is not known",
                        error_code(lookup),
                    )
                if current == profile and any(tries):
                    return associated(association, " (a retry found it done)")
                if current == profile:
                    return done("a concurrent run associated the guardrail's profile", profile)
                return skipped(
                    f"the instance got profile {current or '?'} meanwhile; left as it is "
                    "(never replaced) for its own event or the next scan to judge"
                )
            if code == "InvalidInstanceID.NotFound":
                return done("instance no longer exists", gone=True)
            return failed("associate failed", code)
        return associated(association)

    @staticmethod
    def _associated_profile(ctx: FixContext, instance_id: str) -> tuple[str | None, str]:
        """The name of the profile associated (or associating) with the instance now, and the
        association's id. A refused read raises (throttling, say): "none" would call the
        guardrail's own association someone else's."""
        # Paged: a filtered EC2 describe may answer an empty page with a NextToken.
        associations = pages(
            ctx.clients.ec2,
            "describe_iam_instance_profile_associations",
            "IamInstanceProfileAssociations",
            Filters=[
                {"Name": "instance-id", "Values": [instance_id]},
                {"Name": "state", "Values": ["associating", "associated"]},
            ],
        )
        for association in associations:
            if arn := association.get("IamInstanceProfile", {}).get("Arn", ""):
                return arn.rsplit("/", 1)[-1], association.get("AssociationId", "")
        return None, ""

    @staticmethod
    def _roles_in(ctx: FixContext, profile: str) -> list[str] | None:
        """The roles the instance profile carries now; None when it no longer exists. Any other
        refusal raises (throttling, say): "no role" would call the guardrail's own add someone
        else's."""
        try:
            raw = ctx.clients.iam.get_instance_profile(InstanceProfileName=profile)
        except ClientError as error:
            if error_code(error) == "NoSuchEntity":
                return None
            raise
        return [r["RoleName"] for r in raw["InstanceProfile"].get("Roles", [])]

    @staticmethod
    def _exempt_users(
        profile: str, instance_ids: list[str], snapshot: AccountSnapshot, ctx: FixContext
    ) -> list[str]:
        """The exempt instances using the profile, each with its tag. A full read holds every
        instance; an event's holds those it named, so the profile's users are read (one
        DescribeInstances by the profile's ARN, only on the way to adding a role to it)."""
        arn = next(
            (i.profile_arn for iid in instance_ids if (i := snapshot.instances[iid]).profile_arn),
            None,
        )
        users = [i for i in snapshot.instances.values() if arn and i.profile_arn == arn]
        if arn and not snapshot.full:
            from ..reader import parse_instance  # the reader imports the controls

            raws = pages(
                ctx.clients.ec2,
                "describe_instances",
                "Reservations",
                Filters=[{"Name": "iam-instance-profile.arn", "Values": [arn]}],
            )
            users = [parse_instance(raw) for r in raws for raw in r.get("Instances", [])]
        return exempt_named(users)

    def _add_role(
        self, profile: str, instance_ids: list[str], settings: Settings, ctx: FixContext
    ) -> FixRecord:
        action, covers = "add role to instance profile", tuple(instance_ids)

        def record(outcome: Outcome, after: Any, reason: str, code: str | None = None) -> FixRecord:
            at = ctx.clock() if outcome is Outcome.APPLIED else None
            return FixRecord(
                self.id, profile, action, outcome, [], after, reason, code, covers=covers, at=at
            )

        if not settings.instance_role:
            return FixRecord(
                self.id,
                profile,
                action,
                Outcome.SKIPPED,
                covers=covers,
                reason="GUARDRAIL_INSTANCE_ROLE is not set: no role to add",
            )
        if ctx.out_of_time():
            return record(Outcome.SKIPPED, None, OUT_OF_TIME)
        # Not gated by modify_existing_roles: no existing role changes, the profile gains one.
        iam, role = ctx.clients.iam, settings.instance_role
        added = f"added {role} to {profile}" + undo_part(
            "aws iam remove-role-from-instance-profile "
            f"--instance-profile-name {profile} --role-name {role}"
        )
        try:
            with answer_may_be_lost(iam, "AddRoleToInstanceProfile") as tries:
                iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
        except ClientError as error:
            code = error_code(error)
            if code not in ("LimitExceeded", "NoSuchEntity"):
                return record(Outcome.FAILED, None, "add role failed", code)
            try:
                held = self._roles_in(ctx, profile)
            except ClientError as lookup:
                return record(
                    Outcome.FAILED,
                    None,
                    f"add role refused ({code}) and reading the profile failed: its state is "
                    "not known",
                    error_code(lookup),
                )
            if held is None:  # deleted since the read: the instance keeps a deleted profile
                return record(
                    Outcome.SKIPPED,
                    None,
                    "the instance profile is gone; associate a new one by hand (the guardrail "
                    "never replaces a profile)",
                )
            if code == "NoSuchEntity":  # the profile is there: the guardrail's role is not
                return record(Outcome.FAILED, None, "add role failed", code)
            # LimitExceeded: a profile holds one role, someone added one meanwhile.
            if role in held and any(tries):  # this run's own try, its answer lost
                return record(Outcome.APPLIED, [role], added)
            if role in held:  # a concurrent run: done
                return record(
                    Outcome.ALREADY_COMPLIANT, held, "a concurrent run added the guardrail's role"
                )
            return record(
                Outcome.SKIPPED,
                held,
                f"the profile got role {', '.join(held) or '?'} meanwhile; left as it is for the "
                "next scan to judge",
            )
        return record(Outcome.APPLIED, [role], added)

    def _attach(
        self, role_name: str, instance_ids: list[str], snapshot: AccountSnapshot, ctx: FixContext
    ) -> FixRecord:
        action, covers = "attach AmazonSSMManagedInstanceCore", tuple(instance_ids)
        before = ctx.attached_to(snapshot.roles.get(role_name))
        # The reader simulated the role as if it carried the policy (when this fix may attach).
        access = snapshot.agent_access.get(role_name)
        if not ctx.settings.may_modify(role_name):
            why_not = "GUARDRAIL_MODIFY_EXISTING_ROLES=false: report only"
        elif shared := assumed_beyond_ec2(snapshot.roles.get(role_name), CORE_POLICY):
            why_not = shared
        elif access is not None and not access.allowed:
            changes = "; ".join(REFUSALS[d][2] for d in refused_by(access) if d in REFUSALS)
            why_not = (
                f"{refusal(access)} even with {CORE_POLICY}: attaching it would widen the role "
                f"and let no session through; {changes or 'see the role in IAM'}"
            )
        elif ctx.out_of_time():
            why_not = OUT_OF_TIME
        else:
            why_not = ""
        if why_not:
            return FixRecord(
                self.id, role_name, action, Outcome.SKIPPED, before, None, why_not, covers=covers
            )
        policy = core_policy_arn(snapshot.partition)
        try:
            ctx.clients.iam.attach_role_policy(RoleName=role_name, PolicyArn=policy)
        except ClientError as error:
            return FixRecord(
                self.id,
                role_name,
                action,
                Outcome.FAILED,
                before,
                None,
                attach_failed(error),
                error_code(error),
                covers=covers,
            )
        ctx.record_attached(role_name, policy)
        return FixRecord(
            self.id,
            role_name,
            action,
            Outcome.APPLIED,
            before,
            sorted({*before, policy}),
            f"attached {CORE_POLICY} to {role_name}{beyond_the_event(snapshot.full)}"
            f"{detach_hint(role_name, policy)}",
            covers=covers,
            at=ctx.clock(),
        )


SSM_ROLE = SsmInstanceRole()
