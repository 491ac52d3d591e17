"""One SimulatePrincipalPolicy per role judges both the SSM Agent's calls and log delivery, each
on its own resources, read per resource as IAM's API reference documents the answer."""

from __future__ import annotations

import pytest
from guardrail.model import Status

from .conftest import CORE
from .test_role_fix import inline, policy, simulated_roles
from .test_session_logging_fix import KEY, OURS, create_preferences, delivery_policy

ROLE, LOGGING = "ssm-instance-role", "ssm-session-logging"
INSTANCES = "arn:aws:ec2:*:123456789012:instance/*"
pytestmark = pytest.mark.usefixtures("managed_policies")


def logging_to_ours(account):
    create_preferences(
        account,
        {
            "s3BucketName": OURS["session_log_bucket"],
            "s3EncryptionEnabled": True,
            "cloudWatchLogGroupName": OURS["session_log_group"],
            "cloudWatchEncryptionEnabled": True,
            "kmsKeyId": KEY,
        },
    )


def verdicts(report, iid):
    return {e.result.control: e.result for e in report.evaluations if e.result.resource_id == iid}


def test_agent_and_delivery_are_one_simulation_per_role_each_judged_on_its_own_resources(
    account, clients
):
    """The call simulates every action on every resource: ssm:UpdateInstanceInformation on the
    log bucket, s3:PutObject on the instance. Those pairs are not asked about. A policy scoped
    to instances (allowed on the instance only) passes, and a Deny on the bucket fails delivery
    but not the agent."""
    logging_to_ours(account)
    delivery = delivery_policy(account)
    scoped = policy(
        account,
        "scoped-core",
        {"Effect": "Allow", "Action": "ssm:UpdateInstanceInformation", "Resource": INSTANCES},
        {"Effect": "Allow", "Action": "ssmmessages:*", "Resource": "*"},
    )
    account.role("scoped", scoped, delivery, profile="scoped")
    working = account.instance(profile="scoped", count=2)
    account.role("fenced", CORE, delivery, profile="fenced")
    inline(account, "fenced", "no-s3", {"Effect": "Deny", "Action": "s3:*", "Resource": "*"})
    fenced = account.instance(profile="fenced")
    roles = simulated_roles(clients)

    report = account.run(
        clients,
        "report",
        [ROLE, LOGGING],
        equivalent_policy_arns=(scoped,),
        log_delivery_policy_arn=delivery,
        **OURS,
    )

    assert sorted(roles) == ["fenced", "scoped"]  # one call each (two each before)
    for iid in working:
        assert {c: r.status for c, r in verdicts(report, iid).items()} == {
            ROLE: Status.PASSED,
            LOGGING: Status.PASSED,
        }
    judged = verdicts(report, fenced)
    assert judged[ROLE].status is Status.PASSED  # the agent's calls are not the bucket's
    assert judged[LOGGING].status is Status.FAILED
    assert "s3:PutObject" in judged[LOGGING].reason
    assert "ssm:" not in judged[LOGGING].reason and "ec2:" not in judged[LOGGING].reason


def test_a_plain_deny_on_the_instance_is_not_excused_by_a_conditioned_deny_elsewhere(
    account, clients, monkeypatch
):
    """IAM answers one result per action: its top-level MissingContextValues gathers every
    resource's. A perimeter Deny needing aws:SourceVpce on the log destinations, beside a plain
    Deny of ssm:UpdateInstanceInformation on the instance, must not make the plain one look
    conditional (and so be set aside over the core policy): each resource is read alone."""
    import emulator.extension as extension

    simulate = extension.simulate

    def perimeter(identity, actions, resources, boundary=None):
        results = simulate(identity, actions, resources, boundary)
        for result in results:
            if result["EvalActionName"] != "ssm:UpdateInstanceInformation":
                continue
            result.update(EvalDecision="explicitDeny", MissingContextValues=["aws:SourceVpce"])
            for entry in result["ResourceSpecificResults"]:
                entry["EvalResourceDecision"] = "explicitDeny"
                if ":instance/" not in entry["EvalResourceName"]:
                    entry["MissingContextValues"] = ["aws:SourceVpce"]
        return results

    monkeypatch.setattr(extension, "simulate", perimeter)
    logging_to_ours(account)
    account.role("app", CORE, delivery_policy(account), profile="app")
    iid = account.instance(profile="app")

    report = account.run(clients, "report", [ROLE, LOGGING], **OURS)

    result = verdicts(report, iid)[ROLE]
    assert result.status is Status.FAILED
    assert "explicit Deny refuses ssm:UpdateInstanceInformation" in result.reason
