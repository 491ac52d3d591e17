"""ssm-instance-role check: every way an instance can lack the SSM role, and what passes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from guardrail.controls.ssm_role import SSM_ROLE, core_policy_arn
from guardrail.model import (
    AccountSnapshot,
    Instance,
    InstanceProfile,
    ManagedInstance,
    Role,
    Status,
)
from guardrail.settings import Settings

CORE = core_policy_arn("aws")
CUSTOM = "arn:aws:iam::111122223333:policy/our-ssm-core"
PROFILE = "arn:aws:iam::111122223333:instance-profile/app"


def snap(instance: Instance, role_policies=None, profile_roles=("app-role",), managed=None):
    profiles = (
        {PROFILE: InstanceProfile(PROFILE, "app", tuple(profile_roles))}
        if profile_roles is not None
        else {}
    )
    roles = {
        "app-role": Role(
            "app-role", "arn:aws:iam::111122223333:role/app-role", frozenset(role_policies or ())
        )
    }
    return AccountSnapshot(
        "111122223333",
        "eu-west-1",
        instances={instance.instance_id: instance},
        instance_profiles=profiles,
        roles=roles,
        managed_instances={m.instance_id: m for m in managed or ()},
    )


def associating_clients():
    """Clients whose EC2 records AssociateIamInstanceProfile; any other call fails the test."""
    associated: list[str] = []

    class Ec2:
        def associate_iam_instance_profile(self, IamInstanceProfile, InstanceId):
            associated.append(InstanceId)
            return {"IamInstanceProfileAssociation": {"AssociationId": "iip-assoc-1"}}

    class Clients:
        ec2 = Ec2()
        region = "eu-west-1"  # the snapshot's

    return Clients(), associated


def only(results):
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize(
    ("instance", "kwargs", "status", "problem"),
    [
        (Instance("i-1", "running"), {}, Status.FAILED, "no_profile"),
        (
            Instance("i-1", "running", profile_arn=PROFILE),
            {"profile_roles": ()},
            Status.FAILED,
            "no_role",
        ),
        (
            Instance("i-1", "running", profile_arn=PROFILE),
            {"profile_roles": None},
            Status.FAILED,
            "profile_missing",
        ),
        (
            Instance("i-1", "stopped", profile_arn=PROFILE),
            {"role_policies": ["arn:aws:iam::aws:policy/ReadOnlyAccess"]},
            Status.FAILED,
            "no_policy",
        ),
        (
            Instance("i-1", "running", profile_arn=PROFILE),
            {"role_policies": [CORE]},
            Status.PASSED,
            None,
        ),
        (Instance("i-1", "terminated"), {}, Status.NOT_APPLICABLE, None),
    ],
)
def test_role_states(instance, kwargs, status, problem):
    r = only(SSM_ROLE.check(snap(instance, **kwargs), Settings()))
    assert r.status is status
    assert r.details.get("problem") == problem
    if status is Status.FAILED:
        assert r.severity == "MEDIUM" and r.reason


def test_operator_declared_equivalent_policy_passes():
    instance = Instance("i-1", "running", profile_arn=PROFILE)
    assert (
        only(SSM_ROLE.check(snap(instance, role_policies=[CUSTOM]), Settings())).status
        is Status.FAILED
    )
    settings = Settings(equivalent_policy_arns=(CUSTOM,))
    assert (
        only(SSM_ROLE.check(snap(instance, role_policies=[CUSTOM]), settings)).status
        is Status.PASSED
    )


@pytest.mark.parametrize(
    ("held", "current", "status"),
    [
        ("AIPAOLD", "AIPAOLD", Status.PASSED),
        ("AIPAOLD", "AIPANEW", Status.FAILED),  # deleted, then recreated under its name
        (None, "AIPANEW", Status.PASSED),  # an id not read: the ARN decides
        ("AIPAOLD", "", Status.PASSED),
    ],
)
def test_the_profile_an_instance_holds_is_known_by_its_id(held, current, status):
    from dataclasses import replace

    instance = Instance("i-1", "running", profile_arn=PROFILE, profile_id=held)
    s = snap(instance, role_policies=[CORE])
    s = replace(
        s, instance_profiles={PROFILE: replace(s.instance_profiles[PROFILE], profile_id=current)}
    )
    result = only(SSM_ROLE.check(s, Settings()))
    assert result.status is status
    if status is Status.FAILED:
        assert "no longer exists (one of that name was created since" in result.reason


def test_dhmc_counts_only_when_the_operator_accepts_it_and_ssm_sees_the_instance():
    instance = Instance("i-1", "running", metadata_tokens="required")
    online = [ManagedInstance("i-1", "Online")]
    assert only(SSM_ROLE.check(snap(instance, managed=online), Settings())).status is Status.FAILED
    assert (
        only(SSM_ROLE.check(snap(instance, managed=online), Settings(accept_dhmc=True))).status
        is Status.PASSED
    )
    lost = [ManagedInstance("i-1", "ConnectionLost")]
    assert (
        only(SSM_ROLE.check(snap(instance, managed=lost), Settings(accept_dhmc=True))).status
        is Status.FAILED
    )
    assert only(SSM_ROLE.check(snap(instance), Settings(accept_dhmc=True))).status is Status.FAILED


@pytest.mark.parametrize("state", ["stopped", "stopping"])
def test_a_stopped_instance_without_a_profile_is_judged_by_the_regions_dhmc_setting(state):
    """Systems Manager lists no stopped instance (DescribeInstanceInformation: "does not return
    information for nodes that are either Stopped or Terminated"): where the region has DHMC,
    a stopped IMDSv2 instance passes (no flapping each night it stops); where it has none, the
    instance is FAILED, says so, and enforce gives it the guardrail's profile."""
    from dataclasses import replace

    from guardrail.controls.base import FixContext
    from guardrail.model import Outcome

    clients, associated = associating_clients()
    stopped = Instance("i-1", state, metadata_tokens="required")
    settings = Settings(mode="enforce", instance_profile="guardrail-ec2", accept_dhmc=True)
    with_dhmc = replace(snap(stopped), dhmc_role="DhmcRole")
    result = only(SSM_ROLE.check(with_dhmc, settings))
    assert result.status is Status.PASSED and "(role DhmcRole)" in result.reason
    result = only(SSM_ROLE.check(snap(stopped), settings))
    assert result.status is Status.FAILED
    assert (
        result.reason
        == "no instance profile (Default Host Management is not configured in this region)"
    )
    (fix,) = SSM_ROLE.remediate([result], snap(stopped), FixContext(clients, settings))
    if state == "stopped":
        assert fix.outcome is Outcome.APPLIED and associated == ["i-1"]
        assert fix.undo == (
            "aws ec2 disassociate-iam-instance-profile --association-id iip-assoc-1 "
            "--region eu-west-1"
        )
    else:  # EC2 refuses a stopping instance: its stopped state (drift scan) gets the profile
        assert fix.outcome is Outcome.SKIPPED and associated == []
    # Without DHMC accepted, or IMDSv1 (DHMC cannot manage it), the setting does not count.
    for instance, accept in ((stopped, False), (Instance("i-1", state), True)):
        plain = only(
            SSM_ROLE.check(
                replace(with_dhmc, instances={"i-1": instance}), Settings(accept_dhmc=accept)
            )
        )
        assert plain.status is Status.FAILED and plain.reason == "no instance profile"


def test_partition_is_respected_for_the_core_policy():
    gov = core_policy_arn("aws-us-gov")
    assert gov == "arn:aws-us-gov:iam::aws:policy/AmazonSSMManagedInstanceCore"
    instance = Instance("i-1", "running", profile_arn=PROFILE)
    s = snap(instance, role_policies=[gov])
    s = AccountSnapshot(
        s.account_id, s.region, "aws-us-gov", s.instances, {}, s.instance_profiles, s.roles
    )
    assert only(SSM_ROLE.check(s, Settings())).status is Status.PASSED


@pytest.mark.parametrize("state", ["pending", "stopping"])
def test_no_association_is_attempted_on_an_instance_ec2_would_refuse(state):
    from guardrail.controls.base import FixContext
    from guardrail.model import Outcome

    class NoCalls:  # any AWS call fails the test
        def __getattr__(self, name):
            raise AssertionError(f"unexpected AWS call: {name}")

    instance = Instance("i-1", state)
    snapshot = AccountSnapshot("111122223333", "eu-west-1", instances={"i-1": instance})
    failed = [r for r in SSM_ROLE.check(snapshot, Settings()) if r.status is Status.FAILED]
    settings = Settings(mode="enforce", instance_profile="guardrail-ec2")
    (fix,) = SSM_ROLE.remediate(failed, snapshot, FixContext(NoCalls(), settings))
    assert fix.outcome is Outcome.SKIPPED and f"instance is {state}" in fix.reason


@pytest.mark.parametrize(
    ("denied", "named", "change"),
    [
        (
            (("ssm:UpdateInstanceInformation", "explicitDeny"),),
            "an explicit Deny refuses ssm:UpdateInstanceInformation",
            "remove or narrow the Deny",
        ),
        (
            (
                ("ssmmessages:CreateControlChannel", "boundaryDeny"),
                ("ssmmessages:OpenControlChannel", "boundaryDeny"),
            ),
            "the permissions boundary does not allow ssmmessages:CreateControlChannel, "
            "ssmmessages:OpenControlChannel",
            "allow them in the role's permissions boundary",
        ),
        (
            (("ssmmessages:OpenDataChannel", "organizationsDeny"),),
            "a service control policy refuses ssmmessages:OpenDataChannel",
            "service control policies allow them",
        ),
    ],
)
def test_a_core_role_the_agent_may_not_use_fails_and_its_fix_makes_no_call(denied, named, change):
    """The simulated answer lives in the snapshot: the check names what refuses which action,
    and the fix says what a person must change instead of attaching anything."""
    from dataclasses import replace

    from guardrail.controls.base import FixContext
    from guardrail.model import AgentAccess, Outcome

    class NoCalls:  # any AWS call fails the test
        def __getattr__(self, name):
            raise AssertionError(f"unexpected AWS call: {name}")

    instance = Instance("i-1", "running", profile_arn=PROFILE)
    allowed = replace(
        snap(instance, role_policies=[CORE]), agent_access={"app-role": AgentAccess("app-role")}
    )
    assert only(SSM_ROLE.check(allowed, Settings())).status is Status.PASSED
    refused = replace(allowed, agent_access={"app-role": AgentAccess("app-role", denied)})
    result = only(SSM_ROLE.check(refused, Settings()))
    assert result.status is Status.FAILED and result.details["problem"] == "agent_denied"
    assert named in result.reason and "AmazonSSMManagedInstanceCore" in result.reason
    settings = Settings(mode="enforce", instance_profile="guardrail-ec2")
    (fix,) = SSM_ROLE.remediate([result], refused, FixContext(NoCalls(), settings))
    assert fix.outcome is Outcome.SKIPPED and fix.covers == ("i-1",)
    assert "attaching a policy cannot help" in fix.reason and change in fix.reason


READ_AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "minutes", "imds", "dhmc_role", "online", "passes"),
    [
        ("running", 2, "required", "DhmcRole", False, True),  # its agent is registering
        ("pending", 0, "required", "DhmcRole", False, True),  # RunInstances, StartInstances
        ("running", 2, "required", None, False, False),  # no DHMC here: associate at once
        ("running", 90, "required", "DhmcRole", False, False),  # long enough: not Online fails
        ("running", 2, "optional", "DhmcRole", False, False),  # DHMC cannot manage IMDSv1
        ("running", 90, "required", None, True, True),  # Online: Systems Manager says so
    ],
)
def test_an_instance_systems_manager_has_not_registered_yet(
    state, minutes, imds, dhmc_role, online, passes
):
    """Seconds after a start (the event), or minutes (a scan), the agent may not have registered:
    the region's DHMC setting decides then, so a DHMC fleet neither gets the guardrail's profile
    nor flaps to FAILED each time it starts. Past the window, in events and scans alike, only
    Systems Manager reporting the instance Online passes it."""
    from datetime import timedelta

    from guardrail.controls.base import FixContext
    from guardrail.model import Outcome

    clients, associated = associating_clients()
    launched = (READ_AT - timedelta(minutes=minutes)).isoformat()
    instance = Instance("i-1", state, metadata_tokens=imds, launched_at=launched)
    snapshot = AccountSnapshot(
        "111122223333",
        "eu-west-1",
        instances={"i-1": instance},
        managed_instances={"i-1": ManagedInstance("i-1", "Online")} if online else {},
        dhmc_role=dhmc_role,
        read_at=READ_AT,
        full=True,  # a drift scan minutes after a start waits as an event does
    )
    settings = Settings(mode="enforce", instance_profile="guardrail-ec2", accept_dhmc=True)
    result = only(SSM_ROLE.check(snapshot, settings))
    if passes:
        assert result.status is Status.PASSED
        assert ("managed through" if online else "started too recently") in result.reason
        return
    assert result.status is Status.FAILED
    (fix,) = SSM_ROLE.remediate([result], snapshot, FixContext(clients, settings))
    assert fix.outcome is Outcome.APPLIED and associated == ["i-1"]


@pytest.mark.parametrize(
    ("policies", "carried"),
    [
        ([CORE], "AmazonSSMManagedInstanceCore"),
        ([CUSTOM], "a policy declared equivalent to AmazonSSMManagedInstanceCore"),
    ],
    ids=["core", "equivalent"],
)
def test_a_refused_role_is_said_to_carry_the_policy_it_actually_has(policies, carried):
    """A person reading "carries AmazonSSMManagedInstanceCore" looks for the AWS policy on the
    role: a role passing on a declared equivalent must be named as such, in the finding and in
    the fix's reason."""
    from dataclasses import replace

    from guardrail.controls.base import FixContext
    from guardrail.model import AgentAccess

    class NoCalls:  # any AWS call fails the test
        def __getattr__(self, name):
            raise AssertionError(f"unexpected AWS call: {name}")

    instance = Instance("i-1", "running", profile_arn=PROFILE)
    denied = (("ssm:UpdateInstanceInformation", "implicitDeny"),)
    refused = replace(
        snap(instance, role_policies=policies),
        agent_access={"app-role": AgentAccess("app-role", denied)},
    )
    settings = Settings(
        mode="enforce", instance_profile="guardrail-ec2", equivalent_policy_arns=(CUSTOM,)
    )
    result = only(SSM_ROLE.check(refused, settings))
    assert result.status is Status.FAILED
    assert result.reason.startswith(f"role app-role carries {carried}, but no policy of the role")
    (fix,) = SSM_ROLE.remediate([result], refused, FixContext(NoCalls(), settings))
    assert f"the role carries {carried} already" in fix.reason


ROLE_ARN = "arn:aws:iam::123456789012:role/app"
EC2_ONLY = {
    "Effect": "Allow",
    "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole",
}


@pytest.mark.parametrize(
    ("document", "others"),
    [
        ({"Statement": [EC2_ONLY]}, ()),
        ({"Statement": EC2_ONLY}, ()),  # one statement, not in a list
        ({"Statement": [{**EC2_ONLY, "Principal": {"Service": ["ec2.amazonaws.com.cn"]}}]}, ()),
        (
            {
                "Statement": [
                    {
                        **EC2_ONLY,
                        "Principal": {"Service": ["ec2.amazonaws.com", "lambda.amazonaws.com"]},
                    }
                ]
            },
            ("lambda.amazonaws.com",),
        ),
        (
            {
                "Statement": [
                    EC2_ONLY,
                    {**EC2_ONLY, "Principal": {"AWS": "arn:aws:iam::999988887777:root"}},
                ]
            },
            ("arn:aws:iam::999988887777:root",),
        ),
        ({"Statement": [{**EC2_ONLY, "Principal": "*"}]}, ("*",)),
        (
            {"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "x"}, "Action": "sts:*"}]},
            ("*",),
        ),
        # A Deny only narrows who may assume the role.
        ({"Statement": [EC2_ONLY, {**EC2_ONLY, "Effect": "Deny", "Principal": "*"}]}, ()),
        (
            {
                "Statement": [
                    {**EC2_ONLY, "Principal": {"Federated": "cognito-identity.amazonaws.com"}}
                ]
            },
            ("cognito-identity.amazonaws.com",),
        ),
        # IAM's own answer is URL-encoded JSON (botocore decodes it; a raw one is read too).
        (
            "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service"
            "%22%3A%22ssm.amazonaws.com%22%7D%7D%5D%7D",
            ("ssm.amazonaws.com",),
        ),
        # A role that may assume itself gives no one else the policy.
        ({"Statement": [EC2_ONLY, {**EC2_ONLY, "Principal": {"AWS": ROLE_ARN}}]}, ()),
        (None, ("an unreadable trust policy",)),
        ("not json", ("an unreadable trust policy",)),
        ({"Statement": "x"}, ("an unreadable trust policy",)),
    ],
)
def test_who_else_a_role_lets_assume_it(document, others):
    from guardrail.model import trusted_besides_ec2

    assert trusted_besides_ec2(document, ROLE_ARN) == others


@pytest.mark.parametrize(
    ("document", "trusted"),
    [
        ({"Statement": [EC2_ONLY]}, True),
        ({"Statement": [{**EC2_ONLY, "Principal": {"Service": "ec2.amazonaws.com.cn"}}]}, True),
        ({"Statement": [{**EC2_ONLY, "Action": ["sts:TagSession", "sts:AssumeRole"]}]}, True),
        ({"Statement": [{**EC2_ONLY, "Action": "sts:*"}]}, True),
        ({"Statement": [{**EC2_ONLY, "Principal": "*"}]}, True),  # anyone: EC2 too
        # A Lambda role put in a profile, or EC2 taken out of the trust: no credentials.
        ({"Statement": [{**EC2_ONLY, "Principal": {"Service": "lambda.amazonaws.com"}}]}, False),
        ({"Statement": [{**EC2_ONLY, "Action": "sts:TagSession"}]}, False),
        ({"Statement": [{**EC2_ONLY, "NotAction": "sts:AssumeRole"}]}, False),
        ({"Statement": [{**EC2_ONLY, "Effect": "Deny"}]}, False),
        ({"Statement": []}, False),
        # An unconditional Deny to EC2 wins; one with conditions is not judged here.
        ({"Statement": [EC2_ONLY, {**EC2_ONLY, "Effect": "Deny", "Principal": "*"}]}, False),
        (
            {
                "Statement": [
                    EC2_ONLY,
                    {**EC2_ONLY, "Effect": "Deny", "Condition": {"Bool": {"aws:x": "true"}}},
                ]
            },
            True,
        ),
        # Hardening: deny assuming it to everyone but EC2.
        (
            {
                "Statement": [
                    EC2_ONLY,
                    {
                        "Effect": "Deny",
                        "NotPrincipal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    },
                ]
            },
            True,
        ),
        (
            {
                "Statement": [
                    EC2_ONLY,
                    {"Effect": "Deny", "NotPrincipal": {"AWS": "x"}, "Action": "sts:AssumeRole"},
                ]
            },
            False,
        ),
        (None, True),  # unreadable: not judged
        ("not json", True),
    ],
)
def test_whether_a_roles_trust_lets_ec2_assume_it(document, trusted):
    from guardrail.model import ec2_may_assume

    assert ec2_may_assume(document) is trusted


# --- A Deny the policy simulation could not evaluate: is it a perimeter or a plain refusal? -----
# IAM lists as missing every context key any policy names, so its answer alone cannot tell them
# apart; the reader reads the policies of the Deny's matched statements. VPCE is the key missing
# here (lower case, as the reader passes it).
INSTANCE = "arn:aws:ec2:us-east-1:111122223333:instance/i-0abc"
VPCE = frozenset({"aws:sourcevpce"})
PLAIN = {"Effect": "Deny", "Action": "ssmmessages:*", "Resource": "*"}
PERIMETER = {
    "Effect": "Deny",
    "Action": "*",
    "Resource": "*",
    "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}},
}


def doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


@pytest.mark.parametrize(
    ("documents", "certain"),
    [
        ([doc(PLAIN)], True),
        ([doc(PLAIN), None], True),  # a plain Deny refuses whatever else matched
        ([doc(PERIMETER)], False),
        ([doc(PERIMETER, PLAIN)], True),
        ([doc(PERIMETER), doc(PLAIN), None], True),
        ([json.dumps(doc(PLAIN))], True),  # as IAM answers it, undecoded
        ([doc(PLAIN | {"Action": "SSMMessages:Open*"})], True),  # actions: any case
        ([doc(PLAIN | {"Action": ["ssm:*", "ec2:*"]})], False),  # not the action
        ([doc({"Effect": "Deny", "NotAction": "ssmmessages:*", "Resource": "*"})], False),
        ([doc({"Effect": "Deny", "NotAction": "iam:*", "Resource": "*"})], True),
        ([doc(PLAIN | {"Resource": "arn:aws:ec2:*:*:instance/i-0other"})], False),
        ([doc(PLAIN | {"Resource": "arn:aws:ec2:*:*:instance/*"})], True),
        ([doc(PLAIN | {"Resource": "arn:aws:ec2:*:*:INSTANCE/*"})], False),  # ARNs: case
        ([doc({"Effect": "Deny", "Action": "*", "NotResource": INSTANCE})], False),
        ([doc(PLAIN | {"Effect": "Allow"})], False),
        # Conditions on keys the simulation was given: judged by it, when every source was read
        # (None: a matched policy not read, an SCP say).
        (
            [doc(PLAIN | {"Condition": {"ArnNotLike": {"aws:PrincipalArn": "arn:*:admin"}}})],
            True,
        ),
        ([doc(PLAIN | {"Condition": {"ArnNotLike": {"aws:PrincipalArn": "x"}}}), None], False),
        (
            [doc(PLAIN | {"Condition": {"StringNotEqualsIfExists": {"AWS:SOURCEVPCE": "v"}}})],
            False,
        ),
        # A policy variable reads the context too; a Condition not an object cannot be read.
        ([doc(PLAIN | {"Resource": "arn:aws:ec2:*:*:instance/${aws:SourceVpce}"})], False),
        ([doc(PLAIN | {"Resource": "*${aws:username}*"})], False),
        ([doc(PLAIN | {"Condition": ["StringEquals"]})], False),
        ([doc(PLAIN | {"Condition": {"StringEquals": "aws:SourceVpce"}})], False),
        # Only * and ? are wildcards: "[c]" is those three characters, so this Deny is not
        # the instance's and only the perimeter covers it.
        ([doc(PERIMETER, PLAIN | {"Resource": "arn:aws:ec2:*:*:instance/i-0ab[c]"})], False),
        ([doc(PLAIN | {"Resource": "arn:aws:ec2:*:*:instance/i-0ab?"})], True),
        # A perimeter scoped with a policy variable may be the statement that matched, beside a
        # Deny on a key the simulation was given.
        (
            [
                doc(
                    PERIMETER | {"Resource": "arn:aws:ec2:*:${aws:PrincipalAccount}:instance/*"},
                    PLAIN | {"Condition": {"ArnLike": {"aws:PrincipalArn": "arn:*:role/admin-*"}}},
                )
            ],
            False,
        ),
        ([doc(PLAIN | {"Condition": {}})], True),  # an empty Condition: none
        ([doc(PLAIN | {"Condition": None})], False),
        # Nothing read, nothing readable, no Deny found: not certain.
        ([], False),
        ([None], False),
        (["not json"], False),
        # A policy that is not JSON is not read: its statements may hold the perimeter.
        (
            ["not json", doc(PLAIN | {"Condition": {"ArnNotLike": {"aws:PrincipalArn": "x"}}})],
            False,
        ),
        ([{"Statement": "Deny"}], False),
        ([doc()], False),
    ],
)
def test_whether_a_deny_the_simulation_could_not_evaluate_refuses_for_certain(documents, certain):
    from guardrail.model import deny_is_certain

    action = "ssmmessages:opendatachannel"  # lower case, as the reader keys its decisions
    assert deny_is_certain(documents, action, INSTANCE, VPCE) is certain
