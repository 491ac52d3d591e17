"""An instance its owners exempt from fixes (tag ssm-guardrail:exempt, its value why): a vendor
appliance that cannot run the SSM Agent, a sanctioned bastion. It is judged and reported as it
is, never changed, and neither is a security group it uses: closing the group would close SSH
on it too."""

from __future__ import annotations

import pytest
from guardrail.model import EXEMPT_TAG, Outcome, ResourceType, Status

from .conftest import CORE, OPEN_SSH

SSH, ROLE = "ssh-open-to-internet", "ssm-instance-role"
pytestmark = pytest.mark.usefixtures("managed_policies")


def exempt(account, iid, why="vendor appliance, no SSM Agent (SEC-42)"):
    account.ec2.create_tags(Resources=[iid], Tags=[{"Key": EXEMPT_TAG, "Value": why}])


def evaluation(report, resource_id):
    (found,) = [e for e in report.evaluations if e.result.resource_id == resource_id]
    return found


def guardrail_profile(account):
    account.role("guardrail-ec2", CORE, profile="guardrail-ec2")
    return {"instance_profile": "guardrail-ec2", "instance_role": "guardrail-ec2"}


def test_an_exempt_instance_keeps_its_ssh_and_is_still_reported(account, clients):
    gid = account.group(OPEN_SSH)
    iid = account.instance([gid])
    exempt(account, iid)
    report = account.run(clients, "enforce", [SSH])
    assert account.ingress(gid) == [("tcp", 22, 22, "0.0.0.0/0", None)]  # nothing revoked
    instance = evaluation(report, iid)
    assert instance.result.status is Status.FAILED and instance.left_failed  # still visible
    (skipped,) = instance.fixes
    assert skipped.outcome is Outcome.SKIPPED
    assert skipped.reason == (
        f"exempt from fixes by its tag {EXEMPT_TAG}=vendor appliance, no SSM Agent (SEC-42): "
        "reported, not changed (a role it shares with instances that are not exempt is still "
        "fixed for them)"
    )
    group = evaluation(report, gid)
    assert group.result.status is Status.FAILED and group.left_failed
    (kept,) = group.fixes
    assert kept.outcome is Outcome.SKIPPED and kept.reason.startswith(
        f"used by {iid} ({EXEMPT_TAG}=vendor appliance, no SSM Agent (SEC-42)), exempt from "
        "fixes: revoking would close SSH on them too"
    )


def test_a_group_an_exempt_instance_shares_stays_open_for_the_others_too(account, clients):
    """Closing the group is the only fix there is, and it would close the exempt instance: the
    group's other instances stay FAILED, their finding naming why."""
    gid = account.group(OPEN_SSH)
    bastion, app = account.instance([gid]), account.instance([gid])
    exempt(account, bastion, "")
    report = account.run(clients, "enforce", [SSH])
    assert account.ingress(gid) == [("tcp", 22, 22, "0.0.0.0/0", None)]
    (kept,) = evaluation(report, app).fixes
    assert kept.resource_id == gid and kept.outcome is Outcome.SKIPPED
    assert f"used by {bastion} ({EXEMPT_TAG}=(no reason given)), exempt" in kept.reason
    # Take the tag off: the next run closes it.
    account.ec2.delete_tags(Resources=[bastion], Tags=[{"Key": EXEMPT_TAG}])
    account.run(clients, "enforce", [SSH])
    assert account.ingress(gid) == []


def test_an_exempt_instance_gets_no_profile_while_its_neighbour_does(account, clients):
    settings = guardrail_profile(account)
    appliance, app = account.instance(), account.instance()
    exempt(account, appliance)
    report = account.run(clients, "enforce", [ROLE], **settings)
    profiles = {
        i["InstanceId"]: (i.get("IamInstanceProfile") or {}).get("Arn", "")
        for r in account.ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert profiles[appliance] == "" and profiles[app].endswith("/guardrail-ec2")
    assert evaluation(report, appliance).left_failed
    assert not evaluation(report, app).left_failed


def test_report_mode_reports_an_exempt_instance_as_any_other(account, clients):
    gid = account.group(OPEN_SSH)
    iid = account.instance([gid])
    exempt(account, iid)
    report = account.run(clients, "report", [SSH])
    assert report.fixes == []
    failed = {e.result.resource_id for e in report.left_failed}
    assert failed == {gid, iid}
    assert all(
        e.result.resource_type in (ResourceType.INSTANCE, ResourceType.SECURITY_GROUP)
        for e in report.left_failed
    )


def test_preferences_wait_for_an_exempt_instances_role_as_for_any_other(account, clients):
    """The exempt instance's role is not given log delivery, so the guardrail's KMS key and the
    encryption flags, which would stop its sessions (the agent checks them first), wait for it
    as they wait for any role that lacks them: logging is turned on without them."""
    from tests.adapters.test_session_logging_fix import HELD, OURS, held, preferences

    account.role("app", profile="app")
    iid = account.instance(profile="app")
    exempt(account, iid)
    report = account.run(clients, "enforce", ["ssm-session-logging"], **OURS)
    prefs_fix, reasons = held(report)
    assert prefs_fix.outcome is Outcome.APPLIED
    assert set(reasons) == set(HELD)
    assert "role(s) app cannot use the key" in reasons["name the guardrail's KMS key"]
    assert not {"kmsKeyId", "s3EncryptionEnabled", "cloudWatchEncryptionEnabled"} & set(
        preferences(account)
    )
    assert [f.reason for f in report.fixes if f.resource_id == iid] == [
        f"exempt from fixes by its tag {EXEMPT_TAG}=vendor appliance, no SSM Agent (SEC-42): "
        "reported, not changed (a role it shares with instances that are not exempt is still "
        "fixed for them)"
    ]


def test_an_empty_profile_an_exempt_instance_shares_is_given_no_role(account, clients):
    """The guardrail's role added to a profile reaches every instance using it: with an exempt
    one among them, the profile is left as it is, naming it (it was given the role, while the
    exempt instance's record said "not changed")."""
    settings = guardrail_profile(account)
    account.iam.create_instance_profile(InstanceProfileName="shared-empty")
    appliance, app = (account.instance(profile="shared-empty") for _ in range(2))
    exempt(account, appliance)
    report = account.run(clients, "enforce", [ROLE], **settings)
    roles = account.iam.get_instance_profile(InstanceProfileName="shared-empty")
    assert roles["InstanceProfile"]["Roles"] == []
    (kept,) = evaluation(report, app).fixes
    assert (kept.resource_id, kept.outcome) == ("shared-empty", Outcome.SKIPPED)
    assert kept.reason.startswith(f"used by {appliance} ({EXEMPT_TAG}=vendor appliance")


@pytest.mark.parametrize("value", ["false", "No", " 0 ", "off"])
def test_a_tag_saying_no_exempts_nothing(account, clients, value):
    """`ssm-guardrail:exempt=false` reads as "not exempt" to whoever wrote it: it kept SSH open."""
    gid = account.group(OPEN_SSH)
    iid = account.instance([gid])
    exempt(account, iid, value)
    account.run(clients, "enforce", [SSH])
    assert account.ingress(gid) == []
