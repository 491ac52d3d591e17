"""The SSM role fix on an emulated account: associate, add role, attach; never replace or remove."""

from __future__ import annotations

import json

import pytest
from guardrail.model import Outcome, Status

from tests.aws_errors import answer_lost_once, error_answer

from .conftest import CORE, EC2_TRUST, answer_simulations, trust_also

ROLE = "ssm-instance-role"
READONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
pytestmark = pytest.mark.usefixtures("managed_policies")


def profile_of(account, iid):
    raw = account.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return (raw.get("IamInstanceProfile") or {}).get("Arn", "")


def guardrail_profile(account):
    account.role("guardrail-ec2", CORE, profile="guardrail-ec2")
    return {"instance_profile": "guardrail-ec2", "instance_role": "guardrail-ec2"}


def test_report_mode_changes_nothing(account, clients):
    iid = account.instance()
    account.role("app", READONLY, profile="app")
    other = account.instance(profile="app")
    report = account.run(clients, "report", [ROLE], **guardrail_profile(account))
    assert report.fixes == [] and profile_of(account, iid) == ""
    assert (
        account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"][0]["PolicyArn"]
        == READONLY
    )
    assert {e.result.resource_id for e in report.left_failed} == {iid, other}


def test_each_problem_gets_its_fix_and_a_second_run_changes_nothing(account, clients):
    settings = guardrail_profile(account)
    bare = account.instance()
    account.iam.create_instance_profile(InstanceProfileName="empty")
    empty = account.instance(profile="empty")
    account.role("app", READONLY, profile="app")
    apps = account.instance(profile="app", count=3)
    report = account.run(clients, "enforce", [ROLE], **settings)

    assert profile_of(account, bare).endswith("/guardrail-ec2")
    roles = account.iam.get_instance_profile(InstanceProfileName="empty")["InstanceProfile"][
        "Roles"
    ]
    assert [r["RoleName"] for r in roles] == ["guardrail-ec2"]
    attached = {
        p["PolicyArn"]
        for p in account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"]
    }
    assert attached == {READONLY, CORE}  # the owner's policy stays
    assert profile_of(account, apps[0]).endswith("/app")  # never replaced
    attach = [f for f in report.fixes if f.action.startswith("attach")]
    assert len(attach) == 1 and set(attach[0].covers) == set(
        apps
    )  # one call per role, not per instance
    assert all(e.remediated for e in report.evaluations if e.result.status is Status.FAILED)
    assert {e.result.resource_id for e in report.evaluations if e.remediated} == {
        bare,
        empty,
        *apps,
    }

    second = account.run(clients, "enforce", [ROLE], **settings)
    assert second.fixes == [] and not second.left_failed


def test_an_association_whose_answer_was_lost_is_the_fixs_own_with_its_undo(account, clients):
    """EC2 associated the profile but the answer never came; the retry answers IncorrectState.
    It was recorded as a concurrent run's (ALREADY_COMPLIANT, no undo): the association id,
    which the instance does not show, was lost."""
    settings = guardrail_profile(account)
    iid = account.instance()
    answer_lost_once(account, clients, "AssociateIamInstanceProfile")
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (fix,) = report.fixes
    (association,) = account.ec2.describe_iam_instance_profile_associations()[
        "IamInstanceProfileAssociations"
    ]
    assert fix.outcome is Outcome.APPLIED and fix.at is not None, fix.reason
    assert fix.after == {
        "instance_profile": "guardrail-ec2",
        "association_id": association["AssociationId"],
    }
    assert f"disassociate-iam-instance-profile --association-id {association['AssociationId']}" in (
        fix.reason
    )
    assert association["InstanceId"] == iid


def test_a_role_add_whose_answer_was_lost_is_the_fixs_own_with_its_undo(account, clients):
    settings = guardrail_profile(account)
    account.iam.create_instance_profile(InstanceProfileName="empty")
    account.instance(profile="empty")
    answer_lost_once(account, clients, "AddRoleToInstanceProfile", service="iam")
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.APPLIED and fix.at is not None, fix.reason
    assert "remove-role-from-instance-profile --instance-profile-name empty" in fix.reason


def test_a_concurrent_runs_association_stays_theirs(account, clients):
    """No lost answer: the guardrail's profile associated by another run between the read and
    the call is done, not this fix's to undo."""
    settings = guardrail_profile(account)
    iid = account.instance()
    real = clients.ec2.associate_iam_instance_profile

    def another_run_first(**kwargs):
        account.ec2.associate_iam_instance_profile(**kwargs)
        return real(**kwargs)

    clients.ec2.associate_iam_instance_profile = another_run_first
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.ALREADY_COMPLIANT and "a concurrent run" in fix.reason
    assert profile_of(account, iid).endswith("/guardrail-ec2")


# EC2's trust with Lambda in EC2's place: a Lambda's role.
LAMBDA_ONLY = {
    **EC2_TRUST,
    "Statement": [{**EC2_TRUST["Statement"][0], "Principal": {"Service": "lambda.amazonaws.com"}}],
}


@pytest.mark.parametrize("policies", [(CORE,), (READONLY,)])
def test_a_role_ec2_may_not_assume_fails_and_is_left_to_its_owners(account, clients, policies):
    """A Lambda's role put in an instance profile (or EC2 taken out of a role's trust): the
    instance gets no credentials and the SSM Agent cannot register. It read PASSED with the core
    policy attached; without it, the fix attached the policy to a role EC2 still cannot use."""
    settings = guardrail_profile(account)
    account.role("lambda-ish", *policies, profile="app", trust=LAMBDA_ONLY)
    iid = account.instance(profile="app")
    report = account.run(clients, "enforce", [ROLE], **settings)
    (result,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    assert result.status is Status.FAILED and result.details["problem"] == "not_ec2"
    assert "role lambda-ish does not let EC2 assume it" in result.reason
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and fix.covers == (iid,)
    assert "update-assume-role-policy" in fix.reason
    attached = account.iam.list_attached_role_policies(RoleName="lambda-ish")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == list(policies)  # nothing attached
    assert profile_of(account, iid).endswith("/app")  # never replaced


def test_existing_roles_untouched_when_settings_forbid(account, clients):
    settings = guardrail_profile(account)
    account.role("app", READONLY, profile="app")
    iid = account.instance(profile="app")
    bare = account.instance()
    account.iam.create_instance_profile(InstanceProfileName="empty")
    in_empty = account.instance(profile="empty")
    report = account.run(clients, "enforce", [ROLE], modify_existing_roles=False, **settings)
    # A profile without a role gains the guardrail's role: no existing role is modified.
    empty = account.iam.get_instance_profile(InstanceProfileName="empty")["InstanceProfile"]
    assert [r["RoleName"] for r in empty["Roles"]] == [settings["instance_role"]]
    assert in_empty not in {e.result.resource_id for e in report.left_failed}
    attached = account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [READONLY]
    (skipped,) = [f for f in report.fixes if f.resource_id == "app"]
    assert skipped.outcome is Outcome.SKIPPED and "MODIFY_EXISTING_ROLES" in skipped.reason
    assert iid in {e.result.resource_id for e in report.left_failed}
    assert profile_of(account, bare).endswith("/guardrail-ec2")  # a new association is still fine


def test_no_guardrail_profile_configured_means_no_fix(account, clients):
    iid = account.instance()
    report = account.run(clients, "enforce", [ROLE])
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and "GUARDRAIL_INSTANCE_PROFILE" in fix.reason
    assert profile_of(account, iid) == "" and report.left_failed[0].result.resource_id == iid


def test_equivalent_policy_is_not_replaced(account, clients):
    policy = account.iam.create_policy(
        PolicyName="our-core",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":["ssm:*","ssmmessages:*"],"Resource":"*"}]}',
    )
    arn = policy["Policy"]["Arn"]
    account.role("app", arn, profile="app")
    account.instance(profile="app")
    report = account.run(
        clients, "enforce", [ROLE], equivalent_policy_arns=(arn,), **guardrail_profile(account)
    )
    assert report.fixes == [] and not report.left_failed


def after_the_read(monkeypatch, change):
    """Runs `change` between the guardrail's read and its fixes: someone acts meanwhile."""
    from guardrail import engine

    real = engine.SnapshotReader.read

    def read(self, scope, controls, read_at=None):
        snapshot = real(self, scope, controls, read_at)
        change()
        return snapshot

    monkeypatch.setattr(engine.SnapshotReader, "read", read)


@pytest.mark.parametrize(
    ("who", "outcome"),
    [("guardrail-ec2", Outcome.ALREADY_COMPLIANT), ("web", Outcome.SKIPPED)],
)
def test_a_profile_associated_meanwhile_is_done_only_if_it_is_ours(
    account, clients, monkeypatch, who, outcome
):
    """A concurrent run associating the guardrail's profile counts as done; a person's profile,
    whose role may lack the SSM policy, is never replaced and the finding is not resolved."""
    settings = guardrail_profile(account)
    account.role("web", READONLY, profile="web")
    iid = account.instance()
    after_the_read(
        monkeypatch,
        lambda: account.ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Name": who}, InstanceId=iid
        ),
    )
    first_page = []

    def empty_first_page(parsed, **_):
        # EC2 may answer a filtered describe with an empty page and a NextToken.
        if not first_page:
            first_page.append(parsed.pop("IamInstanceProfileAssociations"))
            parsed["NextToken"] = "0"  # moto reads it as an offset: the second page is all

    clients.ec2.meta.events.register(
        "after-call.ec2.DescribeIamInstanceProfileAssociations", empty_first_page
    )
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (evaluation,) = report.evaluations
    (fix,) = evaluation.fixes
    assert fix.outcome is outcome and profile_of(account, iid).endswith(f"/{who}")
    assert evaluation.remediated is (who == "guardrail-ec2")
    if who == "web":
        assert "profile web meanwhile" in fix.reason


@pytest.mark.parametrize(
    ("who", "outcome"),
    [("guardrail-ec2", Outcome.ALREADY_COMPLIANT), ("web", Outcome.SKIPPED)],
)
def test_a_role_added_to_the_empty_profile_meanwhile_is_done_only_if_it_is_ours(
    account, clients, monkeypatch, who, outcome
):
    settings = guardrail_profile(account)
    if who == "web":
        account.role("web", READONLY)
    account.iam.create_instance_profile(InstanceProfileName="empty")
    iid = account.instance(profile="empty")
    after_the_read(
        monkeypatch,
        lambda: account.iam.add_role_to_instance_profile(InstanceProfileName="empty", RoleName=who),
    )
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (evaluation,) = [e for e in report.evaluations if e.result.resource_id == iid]
    (fix,) = evaluation.fixes
    assert fix.outcome is outcome and fix.after == [who]
    assert evaluation.remediated is (who == "guardrail-ec2")


def test_an_instance_whose_profile_was_deleted_is_left_to_a_person(account, clients):
    """Associating the guardrail's profile would replace the owner's (EC2 keeps the deleted one
    associated): the guardrail never calls it, and tells the person what to do."""
    from emulator.calls import CallCounter

    account.role("app", CORE, profile="app")
    iid = account.instance(profile="app")
    account.iam.remove_role_from_instance_profile(InstanceProfileName="app", RoleName="app")
    account.iam.delete_instance_profile(InstanceProfileName="app")
    counter = CallCounter(clients.ec2, clients.iam, clients.ssm)
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    (fix,) = report.fixes
    assert (fix.resource_id, fix.action) == (iid, "replace deleted instance profile")
    assert fix.outcome is Outcome.SKIPPED
    assert "associate a new one by hand" in fix.reason
    calls = counter.by_operation()
    assert calls["ec2:DescribeInstances"] >= 1  # the counter sees the scan's calls
    assert not {op for op in calls if "InstanceProfile" in op and op.startswith("ec2:")}


def test_a_profile_recreated_under_the_same_name_is_not_the_instances(account, clients):
    """Deleted and created again as it was (a Terraform re-create does this): same ARN, new id.
    EC2 keeps the instance on the deleted profile, which gives it no credentials."""
    account.role("app", CORE, profile="app")
    iid = account.instance(profile="app")
    account.iam.remove_role_from_instance_profile(InstanceProfileName="app", RoleName="app")
    account.iam.delete_instance_profile(InstanceProfileName="app")
    account.iam.create_instance_profile(InstanceProfileName="app")
    account.iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    assert profile_of(account, iid).endswith(":instance-profile/app")  # the same ARN
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    (evaluation,) = [e for e in report.evaluations if e.result.resource_id == iid]
    assert evaluation.result.status is Status.FAILED
    assert "one of that name was created since" in evaluation.result.reason
    assert "associate a new one by hand" in evaluation.fixes[0].reason
    assert profile_of(account, iid).endswith(":instance-profile/app")  # never replaced


def test_a_profile_recreated_under_another_path_is_not_the_instances(account, clients):
    """The instance still names /old/app; the only profile called app is now /new/app, whose role
    has the core policy. The instance's own profile is gone: FAILED, not PASSED."""
    account.role("app", CORE)
    old = account.iam.create_instance_profile(InstanceProfileName="app", Path="/old/")
    account.iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    iid = account.instance(profile="app")
    assert profile_of(account, iid) == old["InstanceProfile"]["Arn"]
    account.iam.remove_role_from_instance_profile(InstanceProfileName="app", RoleName="app")
    account.iam.delete_instance_profile(InstanceProfileName="app")
    account.iam.create_instance_profile(InstanceProfileName="app", Path="/new/")
    account.iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    report = account.run(clients, "report", [ROLE], **guardrail_profile(account))
    (result,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    assert result.status is Status.FAILED and "no longer exists" in result.reason


def configure_dhmc(account):
    account.ssm.update_service_setting(
        SettingId="/ssm/managed-instance/default-ec2-instance-management-role",
        SettingValue="service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole",
    )


@pytest.mark.parametrize("dhmc_configured", [True, False])
def test_a_start_event_before_systems_manager_registers_the_instance(
    account, clients, dhmc_configured
):
    """The event about a start comes before the agent registers: the region's DHMC setting
    decides, so a DHMC instance is not FAILED (and reopened) each time it starts, and one in a
    region without DHMC gets the guardrail's profile at once."""
    from guardrail.scope import Scope

    from emulator.calls import CallCounter

    iid = account.instance(imds_tokens="required")  # one DHMC could manage
    if dhmc_configured:
        configure_dhmc(account)
    counter = CallCounter(clients.ec2, clients.iam, clients.ssm)
    report = account.run(
        clients,
        "enforce",
        [ROLE],
        scope=Scope(instance_ids=frozenset({iid})),
        accept_dhmc=True,
        **guardrail_profile(account),
    )
    # Systems Manager was asked first (it does not know the instance yet), then the setting.
    calls = counter.by_operation()
    assert calls["ssm:DescribeInstanceInformation"] == 1 == calls["ssm:GetServiceSetting"]
    (result,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    if dhmc_configured:
        assert result.status is Status.PASSED and "AWSSystemsManagerDefault" in result.reason
        assert report.fixes == [] and profile_of(account, iid) == ""
    else:
        assert result.status is Status.FAILED and "not configured" in result.reason
        assert profile_of(account, iid).endswith(":instance-profile/guardrail-ec2")


@pytest.mark.parametrize("dhmc_configured", [True, False])
def test_a_stopped_instance_without_a_profile_follows_the_regions_dhmc_setting(
    account, clients, dhmc_configured
):
    """With DHMC accepted, Systems Manager cannot vouch for a stopped instance (it lists none),
    so the region's DHMC setting decides, read once per scan."""
    from emulator.calls import CallCounter

    iid = account.instance(imds_tokens="required")  # one DHMC could manage
    account.ec2.stop_instances(InstanceIds=[iid])
    if dhmc_configured:
        configure_dhmc(account)
    counter = CallCounter(clients.ec2, clients.iam, clients.ssm)
    report = account.run(clients, "enforce", [ROLE], accept_dhmc=True, **guardrail_profile(account))
    assert counter.by_operation()["ssm:GetServiceSetting"] == 1
    (result,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    if dhmc_configured:
        assert result.status is Status.PASSED and report.fixes == []
        assert profile_of(account, iid) == ""  # a DHMC instance keeps running without one
    else:
        assert result.status is Status.FAILED and "not configured" in result.reason
        assert profile_of(account, iid).endswith(":instance-profile/guardrail-ec2")


# --- a role with the core policy that the SSM Agent still cannot use ---------------------------

AGENT = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)


def simulated_roles(clients) -> list[str]:
    """The role of every SimulatePrincipalPolicy request the IAM client sends, in order."""
    roles: list[str] = []

    def record(params, **_):
        roles.append(params["PolicySourceArn"].rsplit("/", 1)[-1])

    clients.iam.meta.events.register("before-parameter-build.iam.SimulatePrincipalPolicy", record)
    return roles


def policy(account, name, *statements):
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return account.iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))[
        "Policy"
    ]["Arn"]


def inline(account, role, name, *statements):
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    account.iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))


def attached(account, role):
    return {
        p["PolicyArn"]
        for p in account.iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    }


def judged(report, iid):
    (evaluation,) = [e for e in report.evaluations if e.result.resource_id == iid]
    return evaluation


def test_a_permissions_boundary_without_systems_manager_fails_and_its_fix_claims_nothing(
    account, clients
):
    """AmazonSSMManagedInstanceCore under a boundary allowing s3:* only: the agent can never
    reach Session Manager. FAILED naming the boundary; attaching cannot help, so SKIPPED."""
    s3_only = policy(account, "s3-only", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    account.role("bounded", CORE, profile="bounded", boundary=s3_only)
    iid = account.instance(profile="bounded")
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    evaluation = judged(report, iid)
    assert evaluation.result.status is Status.FAILED
    assert "permissions boundary does not allow" in evaluation.result.reason
    assert all(action in evaluation.result.reason for action in AGENT)
    (fix,) = evaluation.fixes
    assert fix.outcome is Outcome.SKIPPED and not evaluation.remediated
    assert "cannot help" in fix.reason and "permissions boundary" in fix.reason
    assert attached(account, "bounded") == {CORE}  # nothing attached
    assert profile_of(account, iid).endswith("/bounded")  # nor the profile replaced


def test_an_explicit_deny_on_systems_manager_fails_naming_the_deny(account, clients):
    account.role("denied", CORE, profile="denied")
    inline(account, "denied", "no-ssm", {"Effect": "Deny", "Action": "ssm:*", "Resource": "*"})
    iid = account.instance(profile="denied")
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    evaluation = judged(report, iid)
    assert evaluation.result.status is Status.FAILED
    assert "explicit Deny refuses ssm:UpdateInstanceInformation" in evaluation.result.reason
    assert "ssmmessages" not in evaluation.result.reason  # the core policy allows those
    (fix,) = evaluation.fixes
    assert fix.outcome is Outcome.SKIPPED and "remove or narrow the Deny" in fix.reason
    assert attached(account, "denied") == {CORE}


def test_a_service_control_policy_that_refuses_the_agent_fails_naming_it(
    account, clients, monkeypatch
):
    """Under an SCP without ssmmessages:*, IAM's simulation answers implicitDeny with
    OrganizationsDecisionDetail.AllowedByOrganizations false (moto has no SCPs: the emulated
    answer is given that detail, as AWS does)."""
    answer_simulations(
        monkeypatch,
        "ssmmessages:",
        "implicitDeny",
        OrganizationsDecisionDetail={"AllowedByOrganizations": False},
    )
    account.role("app", CORE, profile="app")
    iid = account.instance(profile="app")
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    evaluation = judged(report, iid)
    assert evaluation.result.status is Status.FAILED
    assert "service control policy refuses ssmmessages:" in evaluation.result.reason
    assert "ssm:UpdateInstanceInformation" not in evaluation.result.reason
    (fix,) = evaluation.fixes
    assert fix.outcome is Outcome.SKIPPED and "service control polic" in fix.reason
    assert attached(account, "app") == {CORE}


def test_a_declared_equivalent_without_the_agents_channels_fails_and_is_left_to_its_owner(
    account, clients
):
    """An operator's "equivalent" policy that grants ssm:* but not ssmmessages:* lets the agent
    register but never open a session: FAILED naming the channels, nothing attached over it."""
    ours = policy(account, "our-core", {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"})
    account.role("app", ours, profile="app")
    iid = account.instance(profile="app")
    report = account.run(
        clients, "enforce", [ROLE], equivalent_policy_arns=(ours,), **guardrail_profile(account)
    )
    evaluation = judged(report, iid)
    assert evaluation.result.status is Status.FAILED
    assert "no policy of the role allows ssmmessages:CreateControlChannel" in (
        evaluation.result.reason
    )
    (fix,) = evaluation.fixes
    assert fix.outcome is Outcome.SKIPPED and not evaluation.remediated
    assert attached(account, "app") == {ours}


def test_the_agent_is_simulated_once_per_role_with_the_core_policy_and_never_without_it(
    account, clients
):
    """Five instances on two roles with the core policy: two simulations, both PASSED. A role
    without it fails on that alone and costs no simulation."""
    from emulator.calls import CallCounter

    account.role("web", CORE, profile="web")
    account.role("batch", CORE, READONLY, profile="batch")
    account.role("legacy", READONLY, profile="legacy")
    passing = [
        *account.instance(profile="web", count=3),
        *account.instance(profile="batch", count=2),
    ]
    legacy = account.instance(profile="legacy", count=2)
    counter = CallCounter(clients.iam)
    roles = simulated_roles(clients)
    report = account.run(clients, "report", [ROLE])
    assert counter.by_operation()["iam:SimulatePrincipalPolicy"] == 2
    assert sorted(roles) == ["batch", "web"]
    status = {e.result.resource_id: e.result.status for e in report.evaluations}
    assert status == {
        **dict.fromkeys(passing, Status.PASSED),
        **dict.fromkeys(legacy, Status.FAILED),
    }


def test_the_agent_is_judged_on_an_instance_of_the_role_not_on_star(account, clients):
    """ssm:UpdateInstanceInformation can be scoped to instances. Simulated on "*", an equivalent
    policy scoped so read as refusing (a false alarm telling the owner to allow what they do)
    and a Deny scoped so read as nothing (a miss). Simulated on one of the role's instances,
    both are judged as AWS judges the agent's call."""
    instances = "arn:aws:ec2:*:123456789012:instance/*"
    scoped = policy(
        account,
        "scoped-core",
        {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": instances},
        {"Effect": "Allow", "Action": "ssmmessages:*", "Resource": "*"},
    )
    account.role("scoped", scoped, profile="scoped")
    working = account.instance(profile="scoped")
    account.role("fenced", CORE, profile="fenced")
    inline(
        account,
        "fenced",
        "no-registration",
        {"Effect": "Deny", "Action": "ssm:UpdateInstanceInformation", "Resource": instances},
    )
    refused = account.instance(profile="fenced")
    report = account.run(clients, "report", [ROLE], equivalent_policy_arns=(scoped,))
    assert judged(report, working).result.status is Status.PASSED
    result = judged(report, refused).result
    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssm:UpdateInstanceInformation" in result.reason


@pytest.mark.parametrize("in_an_scp", [False, True], ids=["role-policy", "scp"])
def test_a_deny_the_simulation_cannot_evaluate_is_not_called_a_refusal(
    account, clients, monkeypatch, in_an_scp
):
    """A data-perimeter Deny (say, unless aws:SourceVpce is ours), in the role's policies or in
    an SCP, needs context the simulation is not given: IAM answers explicitDeny listing
    MissingContextValues. Over AmazonSSMManagedInstanceCore, which allows every agent action,
    whether it stops the real calls is unknown: the role is not failed and no one is told to
    remove a working perimeter."""
    scp = {"OrganizationsDecisionDetail": {"AllowedByOrganizations": False}} if in_an_scp else {}
    answer_simulations(
        monkeypatch, "", "explicitDeny", MissingContextValues=["aws:SourceVpce"], **scp
    )
    account.role("app", CORE, profile="app")
    iid = account.instance(profile="app")
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    evaluation = judged(report, iid)
    assert evaluation.result.status is Status.PASSED and not evaluation.fixes


@pytest.mark.parametrize(
    "key", ["s3:prefix", "iam:PassedToService", "aws:username", "aws:SourceAccount"]
)
def test_a_plain_deny_refuses_though_iam_lists_an_unrelated_statements_keys(
    account, clients, monkeypatch, key
):
    """IAM lists as missing every context key any of the role's policies names, an unrelated
    statement's too (boto/boto3#3111). One the agent's real calls cannot carry either (another
    service's, aws:username, an IAM user's only, or aws:SourceAccount, a service principal's
    only) leaves the Deny's answer as it is. Before,
    any missing key excused the Deny: the role with the core policy read PASSED while the
    agent was refused, and the core policy was attached to the other behind the same Deny."""
    answer_simulations(monkeypatch, "", "explicitDeny", MissingContextValues=[key])
    account.role("app", CORE, profile="app")
    carrying = account.instance(profile="app")
    account.role("legacy", READONLY, profile="legacy")
    lacking = account.instance(profile="legacy")

    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))

    result = judged(report, carrying).result
    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssm:UpdateInstanceInformation" in result.reason
    (fix,) = judged(report, lacking).fixes
    assert fix.outcome is Outcome.SKIPPED and "explicit Deny" in fix.reason
    assert attached(account, "legacy") == {READONLY}


@pytest.mark.parametrize("key", ["aws:SourceVpce", "ec2:SourceInstanceARN", "ssm:resourceTag/team"])
def test_a_deny_on_a_key_the_agents_calls_may_carry_is_not_judged(
    account, clients, monkeypatch, key
):
    """A global key, an instance credential's key, or a key of the action's own service may be
    in the real call and lift the Deny: over the core policy it is not called a refusal. (Only
    the ssm: actions get the ssm: key here; the agent's others are allowed.)"""
    answer_simulations(monkeypatch, "ssm:", "explicitDeny", MissingContextValues=[key])
    account.role("app", CORE, profile="app")
    iid = account.instance(profile="app")
    report = account.run(clients, "report", [ROLE], **guardrail_profile(account))
    assert judged(report, iid).result.status is Status.PASSED


def test_a_deny_the_simulation_cannot_evaluate_does_not_hide_what_an_equivalent_lacks(
    account, clients, monkeypatch
):
    """Behind the same perimeter, a declared-equivalent policy that allows ssm:* only: the
    Deny's answer would hide that nothing allows the ssmmessages channels. Without the core
    policy to vouch for the Allow, the conditional Deny counts: FAILED."""
    answer_simulations(monkeypatch, "", "explicitDeny", MissingContextValues=["aws:SourceVpce"])
    ours = policy(account, "our-core", {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"})
    account.role("app", ours, profile="app")
    iid = account.instance(profile="app")
    report = account.run(
        clients, "report", [ROLE], equivalent_policy_arns=(ours,), **guardrail_profile(account)
    )
    result = judged(report, iid).result
    assert result.status is Status.FAILED
    assert "a Deny with conditions the simulation cannot evaluate may refuse" in result.reason


@pytest.mark.parametrize(
    ("blocker", "named"),
    [
        ("boundary", "permissions boundary does not allow"),
        ("deny", "explicit Deny refuses"),
    ],
)
def test_the_core_policy_is_not_attached_where_it_would_let_no_session_through(
    account, clients, blocker, named
):
    """A role without the core policy under a boundary allowing s3:* only, or with a Deny on
    ssmmessages:*: attaching AmazonSSMManagedInstanceCore would hand the role ssm:GetParameters
    and the rest for no session at all. The role is simulated as if it carried the policy; the
    fix is SKIPPED naming what refuses, nothing is attached, and the finding is not called fixed."""
    if blocker == "boundary":
        s3_only = policy(account, "s3-only", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
        account.role("app", READONLY, profile="app", boundary=s3_only)
    else:
        account.role("app", READONLY, profile="app")
        deny = {"Effect": "Deny", "Action": "ssmmessages:*", "Resource": "*"}
        inline(account, "app", "no-sessions", deny)
    iid = account.instance(profile="app")
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    evaluation = judged(report, iid)
    assert evaluation.result.status is Status.FAILED and not evaluation.remediated
    (fix,) = evaluation.fixes
    assert fix.outcome is Outcome.SKIPPED, fix.reason
    assert named in fix.reason and "even with AmazonSSMManagedInstanceCore" in fix.reason
    assert attached(account, "app") == {READONLY}


def test_a_role_the_fix_may_attach_to_is_simulated_in_the_same_single_call(account, clients):
    """Enforce with existing roles modifiable: the role without the core policy is simulated
    once, as if it carried it, and the policy is attached (nothing refuses the agent). Report
    mode, or existing roles not to be modified, asks nothing of it."""
    from emulator.calls import CallCounter

    account.role("legacy", READONLY, profile="legacy")
    iid = account.instance(profile="legacy")
    ours = guardrail_profile(account)
    for mode, settings, simulations in (
        ("report", {}, 0),
        ("enforce", {"modify_existing_roles": False}, 0),
        ("enforce", {}, 1),
    ):
        counter = CallCounter(clients.iam)
        report = account.run(clients, mode, [ROLE], **settings, **ours)
        calls = counter.by_operation()
        assert calls.get("iam:SimulatePrincipalPolicy", 0) == simulations, (mode, settings)
    assert judged(report, iid).remediated
    assert attached(account, "legacy") == {READONLY, CORE}


@pytest.mark.parametrize(
    ("code", "message", "said"),
    [
        ("LimitExceeded", "Cannot exceed quota for PoliciesPerRole: 10", "quota of managed"),
        ("UnmodifiableEntity", "Cannot perform the operation on the protected role", "no one"),
    ],
)
def test_an_attach_iam_refuses_says_why_in_awss_words(
    account, clients, monkeypatch, code, message, said
):
    """moto enforces neither the managed-policy quota nor protected roles: the emulated
    AttachRolePolicy answers AWS's error. The record keeps AWS's message and says what to do."""
    account.role("full", READONLY, profile="full")
    iid = account.instance(profile="full")
    answer = error_answer(code, 409, message)
    clients.iam.meta.events.register("before-call.iam.AttachRolePolicy", answer)
    report = account.run(clients, "enforce", [ROLE], **guardrail_profile(account))
    (fix,) = judged(report, iid).fixes
    assert fix.outcome is Outcome.FAILED and fix.error_code == code
    assert said in fix.reason and message in fix.reason


def test_the_guardrails_own_role_is_repaired_when_existing_roles_are_not_to_be(account, clients):
    """GUARDRAIL_MODIFY_EXISTING_ROLES=false keeps the guardrail off the owners' roles, not off
    its own: someone detached the core policy from the guardrail's role, which every instance
    it associated uses; left alone, each association would be reported fixed and then FAILED."""
    ours = guardrail_profile(account)
    account.iam.detach_role_policy(RoleName=ours["instance_role"], PolicyArn=CORE)
    account.role("app", READONLY, profile="app")
    theirs = account.instance(profile="app")
    mine = account.instance(profile=ours["instance_profile"])
    report = account.run(clients, "enforce", [ROLE], modify_existing_roles=False, **ours)
    assert judged(report, mine).remediated
    assert attached(account, ours["instance_role"]) == {CORE}
    assert not judged(report, theirs).remediated and attached(account, "app") == {READONLY}


def test_an_attach_within_an_event_says_the_roles_other_instances_change_too(account, clients):
    """Three instances share a role; an event about one attaches the core policy. The record
    tells the person that the role's other instances changed too and when their findings
    follow; a drift scan, which judges them all, has nothing to add."""
    from guardrail.scope import Scope

    ours = guardrail_profile(account)
    account.role("app", READONLY, profile="app")
    first, *others = account.instance(profile="app", count=3)
    event = Scope(instance_ids=frozenset({first}))
    report = account.run(clients, "enforce", [ROLE], scope=event, **ours)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.APPLIED and fix.covers == (first,)
    assert "other instance using the role gains it too" in fix.reason
    assert "next drift scan" in fix.reason
    account.iam.detach_role_policy(RoleName="app", PolicyArn=CORE)
    (scan_fix,) = account.run(clients, "enforce", [ROLE], **ours).fixes
    assert set(scan_fix.covers) == {first, *others}
    assert scan_fix.reason == (
        "attached AmazonSSMManagedInstanceCore to app "
        f"(undo: aws iam detach-role-policy --role-name app --policy-arn {CORE})"
    )


def test_each_role_fix_says_how_to_undo_it_and_that_undo_restores_the_account(account, clients):
    """A person reads the undo from the record: the association's id (which
    DisassociateIamInstanceProfile needs, and the instance does not show), the profile the role
    was added to, the policy attached. Following it puts the account back as it was."""
    ours = guardrail_profile(account)
    bare = account.instance()
    account.iam.create_instance_profile(InstanceProfileName="empty")
    account.instance(profile="empty")
    account.role("app", READONLY, profile="app")
    account.instance(profile="app")
    fixes = {f.action: f for f in account.run(clients, "enforce", [ROLE], **ours).fixes}

    associate = fixes["associate instance profile"]
    association = associate.after["association_id"]
    assert associate.after["instance_profile"] == "guardrail-ec2" and association
    assert f"disassociate-iam-instance-profile --association-id {association}" in associate.reason
    account.ec2.disassociate_iam_instance_profile(AssociationId=association)
    assert profile_of(account, bare) == ""

    added = fixes["add role to instance profile"]
    assert (
        "remove-role-from-instance-profile --instance-profile-name empty "
        "--role-name guardrail-ec2" in added.reason
    )
    account.iam.remove_role_from_instance_profile(
        InstanceProfileName="empty", RoleName="guardrail-ec2"
    )
    assert (
        account.iam.get_instance_profile(InstanceProfileName="empty")["InstanceProfile"]["Roles"]
        == []
    )

    attached = fixes["attach AmazonSSMManagedInstanceCore"]
    assert f"detach-role-policy --role-name app --policy-arn {CORE}" in attached.reason
    account.iam.detach_role_policy(RoleName="app", PolicyArn=CORE)
    assert (
        [
            p["PolicyArn"]
            for p in account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"]
        ]
        == attached.before
        == [READONLY]
    )


@pytest.mark.parametrize(
    ("principal", "named"),
    [
        ({"Service": "lambda.amazonaws.com"}, "lambda.amazonaws.com"),
        ({"AWS": "arn:aws:iam::999988887777:root"}, "arn:aws:iam::999988887777:root"),
    ],
)
def test_a_role_others_may_assume_too_is_not_given_the_core_policy(
    account, clients, principal, named
):
    """The instances' role is also a Lambda function's, or another account's: attaching the core
    policy would hand them Systems Manager's permissions too (ssm:GetParameters on *, the
    message channels). The fix leaves it to a person, naming who else assumes the role."""
    ours = guardrail_profile(account)
    account.role("shared", READONLY, profile="shared", trust=trust_also(principal))
    iid = account.instance(profile="shared")
    report = account.run(clients, "enforce", [ROLE], **ours)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and f"may also be assumed by {named}" in fix.reason
    attached = account.iam.list_attached_role_policies(RoleName="shared")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [READONLY]
    assert {e.result.resource_id for e in report.left_failed} == {iid}


def test_a_profile_deleted_before_the_role_is_added_is_skipped_as_gone(
    account, clients, monkeypatch
):
    """Deleted between the read and the fix (AddRoleToInstanceProfile: NoSuchEntity): the
    instance keeps a deleted profile, as if the read had seen it so. It was FAILED "add role
    failed" (NoSuchEntity), an error of the guardrail's."""
    settings = guardrail_profile(account)
    account.iam.create_instance_profile(InstanceProfileName="empty")
    iid = account.instance(profile="empty")
    after_the_read(
        monkeypatch, lambda: account.iam.delete_instance_profile(InstanceProfileName="empty")
    )
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (fix,) = judged(report, iid).fixes
    assert fix.outcome is Outcome.SKIPPED and fix.error_code is None
    assert fix.reason.startswith("the instance profile is gone; associate a new one by hand")
    assert judged(report, iid).left_failed


def test_a_lost_association_whose_lookup_is_throttled_is_not_called_someone_elses(account, clients):
    """The associate's answer was lost (EC2 did it), its retry refused (an association exists),
    and reading which one is throttled: whose it is, is not known. FAILED with the throttling
    code (an event is retried), not SKIPPED "the instance got profile ? meanwhile"."""
    settings = guardrail_profile(account)
    iid = account.instance()
    answer_lost_once(account, clients, "AssociateIamInstanceProfile")
    clients.ec2.meta.events.register(
        "before-call.ec2.DescribeIamInstanceProfileAssociations",
        error_answer("RequestLimitExceeded", 503),
    )
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (fix,) = judged(report, iid).fixes
    assert profile_of(account, iid).endswith("/guardrail-ec2")  # it is the guardrail's own
    assert fix.outcome is Outcome.FAILED and fix.error_code == "RequestLimitExceeded"
    assert "meanwhile" not in fix.reason and "not known" in fix.reason


def test_a_lost_role_add_whose_lookup_is_throttled_is_not_called_someone_elses(
    account, clients, monkeypatch
):
    settings = guardrail_profile(account)
    account.iam.create_instance_profile(InstanceProfileName="empty")
    iid = account.instance(profile="empty")
    answer_lost_once(account, clients, "AddRoleToInstanceProfile", service="iam")
    after_the_read(
        monkeypatch,
        lambda: clients.iam.meta.events.register(
            "before-call.iam.GetInstanceProfile", error_answer("Throttling", 400)
        ),
    )
    report = account.run(clients, "enforce", [ROLE], publish=False, **settings)
    (fix,) = judged(report, iid).fixes
    roles = account.iam.get_instance_profile(InstanceProfileName="empty")["InstanceProfile"]
    assert [r["RoleName"] for r in roles["Roles"]] == ["guardrail-ec2"]
    assert fix.outcome is Outcome.FAILED and fix.error_code == "Throttling"
    assert "meanwhile" not in fix.reason and "not known" in fix.reason
