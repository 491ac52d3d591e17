"""The session-logging fix on an emulated account: preferences created or updated, owners' inputs
kept, the new version made the default, and roles given delivery rights only where they lack them."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from guardrail.model import SESSION_DOCUMENT, Outcome, ResourceType, Status

from tests.aws_errors import error_answer
from tests.kms_keys import key_at

from .conftest import answer_simulations, trust_also

LOGGING = "ssm-session-logging"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OURS = {
    "session_log_bucket": "guardrail-logs",
    "session_log_group": "/guardrail/sessions",
    "session_log_kms_key": KEY,
}


@pytest.fixture(autouse=True)
def keys(request):
    """The guardrail's key and the owners' exist, Enabled: the guardrail asks KMS about the key
    the preferences name (a missing one starts no session)."""
    if "managed_policies" in request.fixturenames:  # loaded as the emulator starts: first
        request.getfixturevalue("managed_policies")
    account = request.getfixturevalue("account")
    for arn in (KEY, THEIR_KEY, "arn:aws:kms:us-east-1:123456789012:key/k"):
        key_at(account.session, arn)


def preferences(account):
    """The *default* version's inputs: what Session Manager actually uses."""
    return json.loads(account.ssm.get_document(Name=SESSION_DOCUMENT)["Content"])["inputs"]


def create_preferences(account, inputs):
    content = {
        "schemaVersion": "1.0",
        "description": "owners'",
        "sessionType": "Standard_Stream",
        "inputs": inputs,
    }
    account.ssm.create_document(
        Name=SESSION_DOCUMENT,
        Content=json.dumps(content),
        DocumentType="Session",
        DocumentFormat="JSON",
    )


def region_fix(report):
    return [f for f in report.fixes if f.resource_id == "123456789012"]


HELD = (
    "name the guardrail's KMS key",
    "turn on s3EncryptionEnabled",
    "turn on cloudWatchEncryptionEnabled",
)


def held(report):
    """The preferences fix and, by input, what it held back (SKIPPED records)."""
    prefs_fix, *rest = region_fix(report)
    assert all(f.outcome is Outcome.SKIPPED for f in rest), rest
    return prefs_fix, {f.action: f.reason for f in rest}


def test_report_mode_creates_nothing(account, clients):
    report = account.run(clients, "report", [LOGGING], **OURS)
    (r,) = [e.result for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT]
    assert r.status is Status.FAILED and "absent" in r.reason
    assert (
        account.ssm.list_documents(Filters=[{"Key": "Name", "Values": [SESSION_DOCUMENT]}])[
            "DocumentIdentifiers"
        ]
        == []
    )


def test_absent_preferences_are_created_with_encrypted_destinations(account, clients):
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    inputs = preferences(account)
    assert inputs["s3BucketName"] == "guardrail-logs" and inputs["s3EncryptionEnabled"] is True
    assert inputs["cloudWatchLogGroupName"] == "/guardrail/sessions"
    assert inputs["cloudWatchEncryptionEnabled"] is True and inputs["kmsKeyId"] == KEY
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["DocumentType"] == "Session"
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED and fix.before is None


def test_a_re_check_that_stops_keeps_the_fix_and_is_counted(account, clients, monkeypatch):
    """Judging what the fix left (settle, then the check again) stops on a defect: the run no
    longer dies with the preferences already written and nothing published. The fix's record
    stands, the stop is named, and it is counted (StepsStopped, in the Lambdas' summary)."""
    from guardrail.controls.session_logging import SessionLogging
    from guardrail.runtime import report_counts, summary

    def stops(*_: object) -> None:
        raise TypeError("settle")

    monkeypatch.setattr(SessionLogging, "settle", stops)
    report = account.run(clients, "enforce", [LOGGING], **OURS)

    assert preferences(account)["s3BucketName"] == "guardrail-logs"
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED
    stop = f"{LOGGING} re-check stopped: TypeError: settle"
    assert [str(s) for s in report.crashed] == [stop]
    assert report_counts(report)[LOGGING]["StepsStopped"] == 1
    assert summary(report)["stopped"] == [stop]


def test_a_fix_that_stops_after_writing_the_preferences_keeps_their_record(
    account, clients, monkeypatch
):
    """The fix stops on a defect after the preferences are written (while naming what it held
    back): the write's record stands (what was there before, what is there now), rather than a
    bare "remediate FAILED" for a change that was made."""
    from guardrail.controls import session_logging

    real = session_logging.foreign_left

    def stops(*args: Any) -> dict[str, str]:
        if account.ssm.list_documents(Filters=[{"Key": "Name", "Values": [SESSION_DOCUMENT]}])[
            "DocumentIdentifiers"
        ]:
            raise TypeError("after the write")
        return real(*args)

    monkeypatch.setattr(session_logging, "foreign_left", stops)
    report = account.run(clients, "enforce", [LOGGING], **OURS)

    assert preferences(account)["s3BucketName"] == "guardrail-logs"
    (fix,) = region_fix(report)
    assert (fix.action, fix.outcome, fix.before) == (
        "create Session Manager preferences",
        Outcome.APPLIED,
        None,
    )
    assert fix.after["s3BucketName"] == "guardrail-logs"
    assert report.stopped == [f"{LOGGING} fix stopped: TypeError: after the write"]


def test_update_keeps_owner_inputs_and_becomes_the_default_version(account, clients):
    owners = {
        "runAsEnabled": True,
        "runAsDefaultUser": "ops",
        "idleSessionTimeout": "15",
        "maxSessionDuration": "120",
        "shellProfile": {"linux": "exec bash", "windows": ""},
    }
    create_preferences(account, owners)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    inputs = preferences(account)  # default version, not only $LATEST
    assert {k: inputs[k] for k in owners} == owners
    assert inputs["s3BucketName"] == "guardrail-logs"
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["DefaultVersion"] == doc["LatestVersion"] == "2"
    (fix,) = region_fix(report)
    assert fix.before == owners and fix.after["runAsDefaultUser"] == "ops"
    second = account.run(clients, "enforce", [LOGGING], **OURS)
    assert region_fix(second) == []
    assert account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]["LatestVersion"] == "2"


@pytest.mark.parametrize(
    "inputs",
    [
        {"s3BucketName": "their-bucket", "s3EncryptionEnabled": True},
        {"cloudWatchLogGroupName": "their-group", "cloudWatchEncryptionEnabled": True},
    ],
)
def test_compliant_preferences_are_left_alone(account, clients, inputs):
    create_preferences(account, inputs)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    assert region_fix(report) == [] and preferences(account) == inputs
    assert account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]["LatestVersion"] == "1"


def test_the_guardrails_unencrypted_bucket_gets_its_flag_turned_on(account, clients):
    create_preferences(account, {"s3BucketName": "guardrail-logs", "s3EncryptionEnabled": False})
    account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account) == {
        "s3BucketName": "guardrail-logs",
        "s3EncryptionEnabled": True,
        "kmsKeyId": KEY,  # its destinations are all the guardrail's: so is the key
    }


def test_foreign_unencrypted_destinations_are_left_to_their_owners_named(account, clients):
    """The team logs to its own bucket and log group, neither flag on. Their log group's flag
    could stop sessions until they encrypt it; so could the bucket's, which had been turned on:
    with it the agent reads the bucket's encryption first, which a bucket of another account (a
    central log archive) must allow in its policy, out of any simulation's sight. Both are left
    off and named; the region stays FAILED for both; nothing is written, now or again."""
    theirs = {
        "s3BucketName": "their-bucket",
        "s3EncryptionEnabled": False,
        "cloudWatchLogGroupName": "/team/sessions",
        "cloudWatchEncryptionEnabled": False,
    }
    create_preferences(account, theirs)
    for _ in range(2):
        report = account.run(clients, "enforce", [LOGGING], **OURS)
        (skipped,) = region_fix(report)
        assert skipped.outcome is Outcome.SKIPPED
        assert "bucket their-bucket is not the guardrail's" in skipped.reason
        assert "s3:GetEncryptionConfiguration" in skipped.reason
        assert "log group /team/sessions is not the guardrail's" in skipped.reason
        assert preferences(account) == theirs
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["LatestVersion"] == "1"
    (r,) = [e.result for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT]
    assert r.status is Status.FAILED and r.details == {
        "unencrypted": ["s3EncryptionEnabled", "cloudWatchEncryptionEnabled"]
    }


def test_a_foreign_bucket_s_flag_is_left_beside_the_guardrails_group_s_turned_on(account, clients):
    theirs = {
        "s3BucketName": "their-bucket",
        "s3EncryptionEnabled": False,
        "cloudWatchLogGroupName": "/guardrail/sessions",
        "cloudWatchEncryptionEnabled": False,
    }
    create_preferences(account, theirs)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    fix, left = held(report)
    assert fix.outcome is Outcome.APPLIED
    assert preferences(account) == {**theirs, "cloudWatchEncryptionEnabled": True}
    assert list(left) == ["turn on s3EncryptionEnabled"]
    # Its own record says so (it said "with encryption").
    assert fix.reason.startswith(
        "sessions now logged, s3EncryptionEnabled left off for now (a skipped record says why)"
    )


def test_without_guardrail_destinations_the_fix_is_skipped_with_a_reason(account, clients):
    report = account.run(clients, "enforce", [LOGGING])
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and "nowhere to log" in fix.reason
    assert report.left_failed


def delivery_policy(account, prefix=""):
    """The guardrail's log-delivery policy (with `prefix`: s3:PutObject under it only, as the
    stack's own policy grants)."""
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": f"arn:aws:s3:::guardrail-logs/{prefix}*",
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetEncryptionConfiguration"],
                "Resource": "arn:aws:s3:::guardrail-logs",
            },
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:/guardrail/sessions:*",
            },
            {"Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
            {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": KEY},
        ],
    }
    return account.iam.create_policy(
        PolicyName=f"guardrail-delivery{len(prefix)}", PolicyDocument=json.dumps(doc)
    )["Policy"]["Arn"]


def test_roles_without_delivery_rights_get_the_delivery_policy_once(account, clients):
    policy = delivery_policy(account)
    account.role("can", policy, profile="can")
    account.role("cannot", profile="cannot")
    ok = account.instance(profile="can")
    bad = account.instance(profile="cannot", count=2)
    settings = {**OURS, "log_delivery_policy_arn": policy}
    report = account.run(clients, "report", [LOGGING], **settings)
    status = {e.result.resource_id: e.result for e in report.evaluations}
    assert status[ok].status is Status.PASSED
    assert status[bad[0]].status is Status.FAILED and "s3:PutObject" in status[bad[0]].reason

    report = account.run(clients, "enforce", [LOGGING], **settings)
    (grant,) = [f for f in report.fixes if f.resource_id == "cannot"]
    assert grant.outcome is Outcome.APPLIED and set(grant.covers) == set(bad)
    attached = account.iam.list_attached_role_policies(RoleName="cannot")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [policy]
    assert (
        account.iam.list_attached_role_policies(RoleName="can")["AttachedPolicies"][0]["PolicyArn"]
        == policy
    )
    assert not account.run(clients, "enforce", [LOGGING], **settings).left_failed


def test_a_role_others_may_assume_too_is_not_given_the_delivery_policy(account, clients):
    """A role a Lambda function assumes too would hand it the right to write into the session
    log bucket: left to a person, who is told who else assumes the role."""
    policy = delivery_policy(account)
    lambda_too = trust_also({"Service": ["lambda.amazonaws.com"]})
    account.role("shared", profile="shared", trust=lambda_too)
    iid = account.instance(profile="shared")
    settings = {**OURS, "log_delivery_policy_arn": policy}
    report = account.run(clients, "enforce", [LOGGING], **settings)
    (grant,) = [f for f in report.fixes if f.resource_id == "shared"]
    assert grant.outcome is Outcome.SKIPPED
    assert "may also be assumed by lambda.amazonaws.com" in grant.reason
    assert account.iam.list_attached_role_policies(RoleName="shared")["AttachedPolicies"] == []
    assert iid in {e.result.resource_id for e in report.left_failed}


THEIR_KEY = "arn:aws:kms:us-east-1:123456789012:key/their-0000-key"


def instance_result(report, iid):
    (result,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    return result


def test_with_logging_off_delivery_is_judged_on_the_key_the_fix_keeps(account, clients):
    """The owners already name their own kmsKeyId; the fix turns logging on and keeps it. A
    role that may use only the guardrail's key is refused before the fix and after it alike,
    and attaching the guardrail's policy (which grants its key, not theirs) is not claimed as
    the cure."""
    create_preferences(account, {"kmsKeyId": THEIR_KEY, "idleSessionTimeout": "20"})
    policy = delivery_policy(account)
    account.role("app", policy, profile="app")
    iid = account.instance(profile="app")
    settings = {**OURS, "log_delivery_policy_arn": policy}
    before = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert before.status is Status.FAILED and f"kms:Decrypt on {THEIR_KEY}" in before.reason
    assert KEY not in before.reason

    report = account.run(clients, "enforce", [LOGGING], **settings)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.SKIPPED and f"KMS key {THEIR_KEY}" in grant.reason
    assert "grant delivery there yourself" in grant.reason
    assert preferences(account)["kmsKeyId"] == THEIR_KEY  # kept
    after = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert after.status is Status.FAILED and after.reason == before.reason


def test_logs_to_the_guardrails_bucket_need_its_key_whatever_key_sessions_use(account, clients):
    """The guardrail's bucket encrypts with its KMS key: a role allowed to put objects there and
    to use the owners' session key, but not the bucket's key, cannot deliver."""
    create_preferences(
        account,
        {
            "s3BucketName": "guardrail-logs",
            "s3KeyPrefix": "session-logs",
            "s3EncryptionEnabled": True,
            "kmsKeyId": THEIR_KEY,
        },
    )
    own = account.iam.create_policy(
        PolicyName="own-delivery",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:PutObject", "s3:GetEncryptionConfiguration"],
                        "Resource": [
                            "arn:aws:s3:::guardrail-logs",
                            "arn:aws:s3:::guardrail-logs/*",
                        ],
                    },
                    {
                        "Effect": "Allow",
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                        "Resource": THEIR_KEY,
                    },
                ],
            }
        ),
    )["Policy"]["Arn"]
    policy = delivery_policy(account)
    account.role("app", own, profile="app")
    iid = account.instance(profile="app")
    settings = {**OURS, "log_delivery_policy_arn": policy}
    result = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert result.status is Status.FAILED
    # A data key for each object, and Decrypt for the multipart upload of a log over 5 MB.
    assert result.details["denied"] == [f"kms:Decrypt on {KEY}", f"kms:GenerateDataKey on {KEY}"]
    account.run(clients, "enforce", [LOGGING], **settings)  # grants the guardrail's policy
    after = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert after.status is Status.PASSED, after.reason


def deny_generate_data_key(account, role):
    account.iam.put_role_policy(
        RoleName=role,
        PolicyName="no-kms",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Deny", "Action": "kms:GenerateDataKey", "Resource": "*"}],
            }
        ),
    )


def test_explicit_deny_is_caught_by_simulation(account, clients):
    policy = delivery_policy(account)
    account.role("denied", policy, profile="denied")
    deny_generate_data_key(account, "denied")
    iid = account.instance(profile="denied")
    report = account.run(clients, "report", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (r,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    assert r.status is Status.FAILED and r.details["denied"] == [f"kms:GenerateDataKey on {KEY}"]


def test_explicit_deny_is_skipped_not_claimed_as_fixed(account, clients):
    policy = delivery_policy(account)
    account.role("denied", profile="denied")  # no delivery rights, and a Deny on top
    deny_generate_data_key(account, "denied")
    iid = account.instance(profile="denied")
    report = account.run(clients, "enforce", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (fix,) = [f for f in report.fixes if f.resource_id == "denied"]
    assert fix.outcome is Outcome.SKIPPED
    assert f"kms:GenerateDataKey on {KEY} (refused by an explicit Deny)" in fix.reason
    (evaluation,) = [e for e in report.evaluations if e.result.resource_id == iid]
    assert evaluation.left_failed and not evaluation.remediated
    # Nothing was attached: the role is exactly as its owners left it.
    assert account.iam.list_attached_role_policies(RoleName="denied")["AttachedPolicies"] == []


def test_policy_already_attached_but_still_denied_is_not_attached_again(account, clients):
    policy = delivery_policy(account)
    account.role("partial", policy, profile="partial")
    iid = account.instance(profile="partial")
    # The guardrail's policy is attached, yet the role still cannot use the key: the target's key
    # differs from the one the policy names, as when a permissions boundary or another key blocks.
    other_key = KEY.replace("key/", "key/other-")
    settings = {**OURS, "session_log_kms_key": other_key, "log_delivery_policy_arn": policy}
    report = account.run(clients, "enforce", [LOGGING], **settings)
    (fix,) = [f for f in report.fixes if f.resource_id == "partial"]
    assert fix.outcome is Outcome.SKIPPED and "already attached" in fix.reason
    assert not any(e.remediated for e in report.evaluations if e.result.resource_id == iid)


def test_delivery_to_foreign_destination_is_not_granted_by_the_guardrail(account, clients):
    create_preferences(account, {"s3BucketName": "their-bucket", "s3EncryptionEnabled": True})
    policy = delivery_policy(account)
    account.role("app", profile="app")
    account.instance(profile="app")
    report = account.run(clients, "enforce", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (fix,) = report.fixes
    assert fix.outcome is Outcome.SKIPPED and "their-bucket" in fix.reason
    assert account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"] == []


@pytest.mark.parametrize("flag", [None, "false", "no"])
def test_a_missing_or_non_boolean_encryption_flag_is_off(account, clients, flag):
    inputs = {"s3BucketName": "guardrail-logs", "kmsKeyId": KEY}
    if flag is not None:
        inputs["s3EncryptionEnabled"] = flag
    create_preferences(account, inputs)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (r,) = [e.result for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT]
    assert r.status is Status.FAILED and "s3EncryptionEnabled" in r.reason
    assert preferences(account) == {**inputs, "s3EncryptionEnabled": True}


def test_kms_key_is_not_named_while_a_role_cannot_use_it(account, clients):
    # modify_existing_roles=false: the app role keeps lacking delivery and the key, so naming the
    # key in the preferences would stop every session on its instances.
    policy = delivery_policy(account)
    account.role("app", profile="app")
    iid = account.instance(profile="app")
    report = account.run(
        clients,
        "enforce",
        [LOGGING],
        log_delivery_policy_arn=policy,
        modify_existing_roles=False,
        **OURS,
    )
    prefs_fix, reasons = held(report)
    assert prefs_fix.outcome is Outcome.APPLIED  # logging is on...
    # ...without the key or the encryption flags (the agent would refuse the role's sessions:
    # it cannot use the key, read the bucket's encryption or see the log group), and the
    # region's result stays FAILED until a role is fixed
    assert set(reasons) == set(HELD)
    assert "role(s) app cannot use the key" in reasons["name the guardrail's KMS key"]
    assert "cannot read the bucket's encryption" in reasons["turn on s3EncryptionEnabled"]
    inputs = preferences(account)
    assert inputs["s3BucketName"] == "guardrail-logs"
    assert not {"kmsKeyId", "s3EncryptionEnabled", "cloudWatchEncryptionEnabled"} & set(inputs)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.SKIPPED
    assert any(e.left_failed for e in report.evaluations if e.result.resource_id == iid)


def test_kms_key_is_named_once_every_role_can_use_it(account, clients):
    policy = delivery_policy(account)
    account.role("app", profile="app")
    account.instance(profile="app")
    report = account.run(clients, "enforce", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (prefs_fix,) = region_fix(report)
    assert prefs_fix.outcome is Outcome.APPLIED and "kmsKeyId" not in prefs_fix.reason
    assert preferences(account)["kmsKeyId"] == KEY  # the grant came first


def test_a_permissions_boundary_that_blocks_delivery_is_skipped_and_the_key_left_out(
    account, clients
):
    policy = delivery_policy(account)
    boundary = account.iam.create_policy(
        PolicyName="ssm-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}],
            }
        ),
    )["Policy"]["Arn"]
    account.role("bounded", profile="bounded", boundary=boundary)
    iid = account.instance(profile="bounded")
    report = account.run(clients, "enforce", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (grant,) = [f for f in report.fixes if f.resource_id == "bounded"]
    # Attaching would change nothing the boundary does not allow: skipped, never "fixed".
    assert grant.outcome is Outcome.SKIPPED
    assert "(refused by a permissions boundary)" in grant.reason and "explicit" not in grant.reason
    assert account.iam.list_attached_role_policies(RoleName="bounded")["AttachedPolicies"] == []
    assert not any(e.remediated for e in report.evaluations if e.result.resource_id == iid)
    assert "kmsKeyId" not in preferences(account)  # the role could never use the key


@pytest.mark.parametrize(
    ("decision", "answer", "named"),
    [
        # An allow-list SCP without kms:*: implicitDeny, not allowed by the organization.
        (
            "implicitDeny",
            {"OrganizationsDecisionDetail": {"AllowedByOrganizations": False}},
            "(refused by a service control policy)",
        ),
        # A Deny on kms:* unless through the owners' endpoint: it needs context keys the
        # simulation is not given; the record says to check its conditions, not to remove it.
        (
            "explicitDeny",
            {"MissingContextValues": ["aws:SourceVpce"]},
            "(refused by a Deny whose conditions (context keys) the simulation cannot evaluate)",
        ),
    ],
    ids=["scp", "conditional-deny"],
)
def test_what_no_attached_policy_can_lift_is_skipped_naming_it_and_the_key_left_out(
    account, clients, monkeypatch, decision, answer, named
):
    """IAM's simulation says so in fields moto cannot give (the emulated answer is given them,
    as AWS does). Attaching the delivery policy cannot help; naming the key in the preferences
    would stop every session on that role's instances."""
    answer_simulations(monkeypatch, "kms:", decision, **answer)
    policy = delivery_policy(account)
    account.role("app", profile="app")
    account.instance(profile="app")
    report = account.run(clients, "enforce", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.SKIPPED
    for action in ("kms:Decrypt", "kms:GenerateDataKey"):  # each pair, named for what it is
        assert f"{action} on {KEY} {named}" in grant.reason
    assert "boundary" not in grant.reason and "explicit" not in grant.reason
    assert account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"] == []
    assert "kmsKeyId" not in preferences(account)  # the role could never use the key


def test_an_event_never_turns_on_what_a_full_scan_has_not_checked(account, clients):
    from guardrail.scope import Scope

    policy = delivery_policy(account)
    account.role("ok", policy, profile="ok")
    account.role("app", profile="app")  # lacks delivery and the key; no event names it
    account.instance(profile="app")
    ok = account.instance(profile="ok")
    scope = Scope(instance_ids=frozenset({ok}))
    settings = {**OURS, "log_delivery_policy_arn": policy, "modify_existing_roles": False}
    report = account.run(clients, "enforce", [LOGGING], scope=scope, **settings)
    prefs_fix, reasons = held(report)
    assert prefs_fix.outcome is Outcome.APPLIED and set(reasons) == set(HELD)
    assert all("until a drift scan" in reason for reason in reasons.values())
    assert "kmsKeyId" not in preferences(account)
    # Its own record says what it left off; it said "with encryption".
    assert prefs_fix.reason.startswith(
        "sessions now logged, kmsKeyId, s3EncryptionEnabled, cloudWatchEncryptionEnabled left "
        "off for now (a skipped record says why); other preferences kept; there were none"
    )
    # The drift scan sees every role: "app" cannot use the key or check the destinations'
    # encryption, so those stay out, and it says why.
    report = account.run(clients, "enforce", [LOGGING], **settings)
    prefs_fix, reasons = held(report)
    assert prefs_fix.outcome is Outcome.ALREADY_COMPLIANT  # logging itself is on
    assert set(reasons) == set(HELD) and all("role(s) app" in r for r in reasons.values())
    (region,) = [e for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT]
    assert region.left_failed and "EncryptionEnabled is false" in region.result.reason
    assert "kmsKeyId" not in preferences(account)
    # Once "app" may use it (its owners attach the policy), the next scan names the key.
    account.iam.attach_role_policy(RoleName="app", PolicyArn=policy)
    report = account.run(clients, "enforce", [LOGGING], **settings)
    assert preferences(account)["kmsKeyId"] == KEY and not report.left_failed


# The standard document as the console (and AWS's own template) writes it: every input present,
# most of them "".
CONSOLE = {
    "s3BucketName": "",
    "s3KeyPrefix": "",
    "s3EncryptionEnabled": True,
    "cloudWatchLogGroupName": "",
    "cloudWatchEncryptionEnabled": True,
    "cloudWatchStreamingEnabled": True,
    "idleSessionTimeout": "20",
    "maxSessionDuration": "",
    "kmsKeyId": "",
    "runAsEnabled": False,
    "runAsDefaultUser": "",
    "shellProfile": {"windows": "", "linux": ""},
}


def test_console_preferences_log_under_the_prefix_the_delivery_policy_grants(account, clients):
    """An empty s3KeyPrefix would send every log to the bucket's root, which the guardrail's
    policy (s3:PutObject under session-logs/ only) does not allow: uploads would fail."""
    create_preferences(account, CONSOLE)
    policy = delivery_policy(account, prefix="session-logs/")
    account.role("app", policy, profile="app")
    iid = account.instance(profile="app")
    settings = {**OURS, "log_delivery_policy_arn": policy}
    first = account.run(clients, "enforce", [LOGGING], **settings)
    inputs = preferences(account)
    assert inputs["s3BucketName"] == "guardrail-logs" and inputs["s3KeyPrefix"] == "session-logs"
    assert (
        inputs["idleSessionTimeout"] == "20" and inputs["shellProfile"] == CONSOLE["shellProfile"]
    )
    assert not first.left_failed
    again = account.run(clients, "enforce", [LOGGING], **settings)
    statuses = {e.result.resource_id: e.result.status for e in again.evaluations}
    assert statuses[iid] is Status.PASSED and again.fixes == [] and not again.left_failed


def test_logs_outside_the_guardrails_prefix_are_not_blamed_on_a_boundary(account, clients):
    create_preferences(
        account,
        {"s3BucketName": "guardrail-logs", "s3KeyPrefix": "elsewhere", "s3EncryptionEnabled": True},
    )
    policy = delivery_policy(account, prefix="session-logs/")
    account.role("app", policy, profile="app")
    account.instance(profile="app")
    report = account.run(clients, "enforce", [LOGGING], log_delivery_policy_arn=policy, **OURS)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.SKIPPED
    assert "outside the prefix session-logs/" in grant.reason and "boundary" not in grant.reason


def put_only_policy(account, bucket):
    """May upload session logs to `bucket`, nothing else: not the agent's encryption checks."""
    statement = {
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    return account.iam.create_policy(
        PolicyName="put-only",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )["Policy"]["Arn"]


def test_a_role_that_may_upload_to_the_owners_bucket_delivers_with_the_flag_off(account, clients):
    """Their bucket, s3EncryptionEnabled off (and left off: it is not the guardrail's), a role
    allowed only to upload there: its instance delivers. It was FAILED for lack of
    s3:GetEncryptionConfiguration, which the agent needs only with the flag on."""
    create_preferences(account, {"s3BucketName": "their-bucket", "s3EncryptionEnabled": False})
    account.role("app", put_only_policy(account, "their-bucket"), profile="app")
    iid = account.instance(profile="app")
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (instance,) = [e.result for e in report.evaluations if e.result.resource_id == iid]
    assert instance.status is Status.PASSED, instance.reason
    assert not [f for f in report.fixes if f.resource_id == "app"]  # nothing to grant


def allow(account, name, *statements):
    return account.iam.create_policy(
        PolicyName=name,
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": list(statements)}),
    )["Policy"]["Arn"]


PUT_UNDER_PREFIX = {
    "Effect": "Allow",
    "Action": "s3:PutObject",
    "Resource": "arn:aws:s3:::guardrail-logs/session-logs/*",
}
USE_KEY = {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": KEY}
STREAM = {
    "Effect": "Allow",
    "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
    "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:/guardrail/sessions:*",
}
SEE_GROUPS = {"Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"}


@pytest.mark.parametrize(
    ("inputs", "statements", "settings", "awaited"),
    [
        # The guardrail's bucket, its key named, s3EncryptionEnabled off: the agent does not
        # read the bucket's encryption until the flag is on.
        (
            {"s3BucketName": "guardrail-logs", "s3KeyPrefix": "session-logs", "kmsKeyId": KEY},
            [PUT_UNDER_PREFIX, USE_KEY],
            {"session_log_bucket": "guardrail-logs", "session_log_kms_key": KEY},
            "s3EncryptionEnabled is set (not allowed s3:GetEncryptionConfiguration on "
            "arn:aws:s3:::guardrail-logs)",
        ),
        # The guardrail's log group, no kmsKeyId yet: the agent does not use the key until then.
        (
            {"cloudWatchLogGroupName": "/guardrail/sessions", "cloudWatchEncryptionEnabled": True},
            [STREAM, SEE_GROUPS],
            {"session_log_group": "/guardrail/sessions", "session_log_kms_key": KEY},
            f"kmsKeyId is set (not allowed kms:Decrypt on {KEY})",
        ),
    ],
)
def test_a_role_that_delivers_today_is_not_called_unable_to(
    account, clients, inputs, statements, settings, awaited
):
    """Its sessions are logged with the preferences as they are: its finding says so, LOW like
    the region's, and names what it lacks for the key or flag the guardrail still has to turn
    on (the fix grants that first). It was "cannot deliver session logs" at MEDIUM, for good in
    report mode."""
    create_preferences(account, inputs)
    account.role("app", allow(account, "app-delivery", *statements), profile="app")
    iid = account.instance(profile="app")
    found = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert found.status is Status.FAILED and found.severity == "LOW"
    assert (
        found.reason
        == f"role app delivers session logs now, but its sessions would stop once {awaited}"
    )
    assert "cannot deliver" not in found.reason


def test_a_role_refused_today_is_medium_and_told_what_the_key_will_need_too(account, clients):
    """No s3:PutObject: it cannot deliver now (MEDIUM); the key it will also need is named apart."""
    create_preferences(account, {"cloudWatchLogGroupName": "/guardrail/sessions"})
    account.role("app", allow(account, "app-delivery", SEE_GROUPS), profile="app")
    iid = account.instance(profile="app")
    settings = {"session_log_group": "/guardrail/sessions", "session_log_kms_key": KEY}
    found = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert found.status is Status.FAILED and found.severity == "MEDIUM"
    now, later = found.reason.split("; once kmsKeyId is set, also ")
    assert now.startswith("role app cannot deliver session logs: not allowed logs:CreateLogStream")
    assert "kms:" not in now and later == f"kms:Decrypt on {KEY}"


def test_a_role_as_aws_documents_it_delivers_to_a_log_group_with_the_owners_session_key(
    account, clients
):
    """Session encryption with the owners' key: AWS's documented instance policy grants
    kms:Decrypt on it and no kms:GenerateDataKey (the person's plugin generates the session's
    data key; the agent only decrypts it). Such a role delivers: PASSED. It was "cannot deliver
    session logs" (MEDIUM), its fix SKIPPED as the key is the owners'."""
    prefs = {"cloudWatchLogGroupName": "/guardrail/sessions", "kmsKeyId": THEIR_KEY}
    create_preferences(account, {**prefs, "cloudWatchEncryptionEnabled": True})
    decrypt = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": THEIR_KEY}
    account.role("app", allow(account, "app-delivery", STREAM, SEE_GROUPS, decrypt), profile="app")
    iid = account.instance(profile="app")
    found = instance_result(
        account.run(clients, "report", [LOGGING], session_log_group="/guardrail/sessions"), iid
    )
    assert found.status is Status.PASSED, found.reason


def aliased_key(account, alias="alias/sessions"):
    """A KMS key of the account and an alias naming it; the key's ARN."""
    kms = account.session.client("kms")
    arn = kms.create_key(Description="owners' session key")["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    return arn


@pytest.mark.parametrize(
    "named", ["alias/sessions", "arn:aws:kms:us-east-1:123456789012:alias/sessions"]
)
@pytest.mark.parametrize("may_decrypt", [True, False], ids=["role-may-decrypt", "another-key"])
def test_a_session_key_named_by_its_alias_is_judged_on_the_key_it_names(
    account, clients, named, may_decrypt
):
    """kmsKeyId an alias (or alias ARN), as Terraform and the CLI often write it: IAM authorizes
    kms:Decrypt on the key, so KMS is asked which key the alias names (DescribeKey). A role
    that may decrypt only with another key cannot open a session: FAILED, naming the key. It
    was PASSED ("key access not evaluated")."""
    key = aliased_key(account)
    create_preferences(
        account, {"cloudWatchLogGroupName": "/guardrail/sessions", "kmsKeyId": named}
    )
    resource = key if may_decrypt else key.rsplit("/", 1)[0] + "/another-key"
    decrypt = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": resource}
    account.role("app", allow(account, "app-delivery", STREAM, SEE_GROUPS, decrypt), profile="app")
    iid = account.instance(profile="app")
    found = instance_result(
        account.run(clients, "report", [LOGGING], session_log_group="/guardrail/sessions"), iid
    )
    if may_decrypt:
        assert (found.status, found.reason) == (Status.PASSED, "role app may deliver session logs")
    else:
        assert found.status is Status.FAILED and found.severity == "MEDIUM"
        assert found.reason == (
            f"role app cannot deliver session logs: not allowed kms:Decrypt on {key}"
        )


@pytest.mark.parametrize(
    "answer",
    ["NotFoundException", "AccessDeniedException", "InvalidArnException", "ValidationException"],
)
def test_an_alias_kms_does_not_resolve_stays_not_evaluated_and_is_logged(
    account, clients, monkeypatch, caplog, answer
):
    """An alias naming no key, or a key whose policy refuses the guardrail DescribeKey: which key
    sessions use is not known. The PASS says key access was not evaluated (as before) and the
    log says why; the scan goes on."""
    import logging

    clients.kms.meta.events.register("before-call.kms.DescribeKey", error_answer(answer))
    monkeypatch.setattr(logging.getLogger("guardrail"), "propagate", True)
    prefs = {"cloudWatchLogGroupName": "/guardrail/sessions", "kmsKeyId": "alias/sessions"}
    create_preferences(account, prefs)
    account.role("app", allow(account, "app-delivery", STREAM, SEE_GROUPS), profile="app")
    iid = account.instance(profile="app")
    with caplog.at_level("WARNING", logger="guardrail"):
        found = instance_result(
            account.run(clients, "report", [LOGGING], session_log_group="/guardrail/sessions"),
            iid,
        )
    assert found.status is Status.PASSED
    assert found.reason.endswith("(kmsKeyId is an alias: key access not evaluated)")
    assert f"kmsKeyId alias/sessions not resolved: {answer}" in caplog.text


@pytest.mark.parametrize(
    ("answer", "status"), [("ThrottlingException", 400), ("KMSInternalException", 500)]
)
def test_kms_throttled_or_down_past_the_retries_raises(
    account, clients, monkeypatch, answer, status
):
    """Throttling or a KMS fault that outlasts botocore's retries is no answer about the key: it
    raises (an event is retried, then dead-lettered), never judged as an unresolved alias."""
    from botocore.exceptions import ClientError

    def down(**kwargs):
        error = {"Error": {"Code": answer}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(error, "DescribeKey")

    monkeypatch.setattr(clients.kms, "describe_key", down)
    create_preferences(account, {"cloudWatchLogGroupName": "/g", "kmsKeyId": "alias/sessions"})
    with pytest.raises(ClientError):
        account.run(clients, "report", [LOGGING], session_log_group="/g")


def unusable_alias(account, state):
    """alias/sessions naming no key ("gone"), or a key of the account in `state`; how the
    region's finding says so."""
    if state == "gone":
        return "kmsKeyId alias/sessions names no KMS key in this region: no session can start"
    kms = account.session.client("kms")
    arn = aliased_key(account)
    key_id = arn.rsplit("/", 1)[-1]
    if state == "Disabled":
        kms.disable_key(KeyId=key_id)
    else:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    return f"kmsKeyId alias/sessions names key {arn}, which is {state}: no session can start"


def region_result(report):
    (found,) = [
        e.result for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT
    ]
    return found


@pytest.mark.parametrize("state", ["gone", "Disabled", "PendingDeletion"])
def test_an_alias_naming_no_usable_key_fails_the_region_and_is_left_to_its_owners(
    account, clients, state
):
    """kmsKeyId an alias KMS says names no key, or a key that is disabled or pending deletion:
    no session can start in the region (the plugin and the agent cannot use the key). The
    region's finding is FAILED (MEDIUM) and says so; it was PASSED ("logged, encrypted"). The
    fix never replaces the owners' key: SKIPPED, saying what to do, the preferences untouched."""
    why = unusable_alias(account, state)
    owners = {
        "cloudWatchLogGroupName": "/guardrail/sessions",
        "cloudWatchEncryptionEnabled": True,
        "kmsKeyId": "alias/sessions",
    }
    create_preferences(account, owners)
    found = region_result(account.run(clients, "report", [LOGGING], **OURS))
    assert (found.status, found.severity) == (Status.FAILED, "MEDIUM")
    assert found.reason == f"sessions are logged to log group /guardrail/sessions but {why}"

    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED
    assert fix.reason == f"{why}; name a usable key in the preferences by hand"
    assert preferences(account) == owners
    assert region_result(report).status is Status.FAILED


@pytest.mark.parametrize("state", ["gone", "Disabled", "PendingDeletion", "asymmetric"])
def test_a_key_named_by_its_arn_is_asked_about_too(account, clients, state):
    """The same key named by its ARN, not an alias: it was PASSED ("logged, encrypted") however
    KMS held it, while no session could start."""
    kms = account.session.client("kms")
    if state == "asymmetric":
        made = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        arn, why = made["Arn"], "is not a symmetric encryption key (RSA_2048, SIGN_VERIFY)"
    elif state == "gone":
        arn, why = KEY.replace("1234abcd", "0000dead"), "names no KMS key in this region"
    else:
        made = kms.create_key()["KeyMetadata"]
        arn, why = made["Arn"], f"is {state}"
        if state == "Disabled":
            kms.disable_key(KeyId=made["KeyId"])
        else:
            kms.schedule_key_deletion(KeyId=made["KeyId"], PendingWindowInDays=7)
    create_preferences(
        account,
        {"cloudWatchLogGroupName": "/g", "cloudWatchEncryptionEnabled": True, "kmsKeyId": arn},
    )
    found = region_result(account.run(clients, "report", [LOGGING], session_log_group="/g"))
    assert (found.status, found.severity) == (Status.FAILED, "MEDIUM")
    assert found.reason.endswith(f"kmsKeyId {arn} {why}: no session can start")


@pytest.mark.parametrize(
    ("named", "answer"),
    [
        ("alias/sessions", lambda key: key.pop("Arn")),
        (KEY, lambda key: key.pop("Arn")),
        (KEY, lambda key: key.update(KeyState="Updating")),
    ],
    ids=["alias-answered-without-arn", "key-answered-without-arn", "key-updating"],
)
def test_describe_key_answers_that_leave_sessions_usable_pass(account, clients, named, answer):
    """Only KeyId is sure to be in DescribeKey's answer: one without the ARN stopped the whole
    read (a KeyError: no control judged, SSH included); an alias is then left unresolved. And
    KMS: "While the key state is Updating, you can use the keys in cryptographic operations"
    (a multi-Region key's primary Region changing)."""
    aliased_key(account)
    clients.kms.meta.events.register(
        "after-call.kms.DescribeKey", lambda parsed, **_: answer(parsed["KeyMetadata"])
    )
    create_preferences(
        account,
        {"cloudWatchLogGroupName": "/g", "cloudWatchEncryptionEnabled": True, "kmsKeyId": named},
    )
    found = region_result(account.run(clients, "report", [LOGGING], session_log_group="/g"))
    assert found.status is Status.PASSED, found.reason


def test_logging_turned_on_keeps_the_owners_unusable_key_and_the_region_failed(account, clients):
    """Preferences without a destination but with a kmsKeyId alias naming no key: logging is
    turned on (the guardrail's log group), their key kept, and a SKIPPED record says it is
    theirs to replace. The region is re-judged on what was written: still FAILED (MEDIUM) for
    the key, not PASSED as if the write had made sessions work."""
    why = unusable_alias(account, "gone")
    create_preferences(account, {"kmsKeyId": "alias/sessions"})
    found = region_result(account.run(clients, "report", [LOGGING], **OURS))
    assert found.reason.endswith(f"sessions are not logged; {why}")

    report = account.run(clients, "enforce", [LOGGING], session_log_group="/guardrail/sessions")
    written, *left = region_fix(report)
    assert written.outcome is Outcome.APPLIED
    assert [(f.action, f.outcome) for f in left] == [("replace kmsKeyId", Outcome.SKIPPED)]
    inputs = preferences(account)
    assert (inputs["cloudWatchLogGroupName"], inputs["kmsKeyId"]) == (
        "/guardrail/sessions",
        "alias/sessions",
    )
    after = region_result(report)
    assert (after.status, after.severity) == (Status.FAILED, "MEDIUM")
    assert after.reason.endswith(why)


@pytest.mark.parametrize("key", ["alias/sessions", "arn:aws:kms:us-east-1:123456789012:key/k"])
def test_a_pass_says_when_the_key_was_not_evaluated(account, clients, key):
    """With kmsKeyId an alias no kms: action can be simulated (only KMS resolves it): the PASS
    says so, so nobody reads "may deliver" as a full check; with a key ARN it does not."""
    prefs = {"cloudWatchLogGroupName": "/guardrail/sessions", "kmsKeyId": key}
    create_preferences(account, prefs)
    use_key = {**USE_KEY, "Resource": key} if key.startswith("arn:") else None
    statements = [STREAM, SEE_GROUPS, *([use_key] if use_key else [])]
    account.role("app", allow(account, "app-delivery", *statements), profile="app")
    iid = account.instance(profile="app")
    found = instance_result(
        account.run(clients, "report", [LOGGING], session_log_group="/guardrail/sessions"), iid
    )
    assert found.status is Status.PASSED
    aliased = " (kmsKeyId is an alias: key access not evaluated)"
    assert found.reason == "role app may deliver session logs" + (
        aliased if use_key is None else ""
    )


@pytest.mark.parametrize(
    ("describe_on", "status"),
    [(":log-stream:", Status.PASSED), (":log-stream:session", Status.FAILED)],
    ids=["as-cloudwatch-logs-authorizes-it", "a-stream-only"],
)
def test_describe_log_streams_is_judged_on_the_resource_cloudwatch_logs_authorizes(
    account, clients, describe_on, status
):
    """CloudWatch Logs authorizes DescribeLogStreams on the group with an empty stream name
    (log-group:NAME:log-stream:, as its AccessDenied names it), the stream calls on the stream.
    A least-privilege role written from those messages delivers: PASSED (it was simulated on a
    stream and called unable to deliver); one allowed DescribeLogStreams on a stream alone is
    refused the call the agent makes."""
    create_preferences(account, {"cloudWatchLogGroupName": "/guardrail/sessions"})
    group = STREAM["Resource"].removesuffix(":*")
    streams = {**STREAM, "Action": STREAM["Action"][:2], "Resource": f"{group}:log-stream:*"}
    describe = {
        "Effect": "Allow",
        "Action": "logs:DescribeLogStreams",
        "Resource": group + describe_on,
    }
    account.role(
        "app", allow(account, "app-delivery", streams, describe, SEE_GROUPS), profile="app"
    )
    iid = account.instance(profile="app")
    found = instance_result(
        account.run(clients, "report", [LOGGING], session_log_group="/guardrail/sessions"), iid
    )
    assert found.status is status, found.reason
    if status is Status.FAILED:
        assert found.reason == (
            "role app cannot deliver session logs: not allowed logs:DescribeLogStreams on "
            f"{group}:log-stream:"
        )


def test_a_role_that_cannot_see_the_log_group_is_refused_now_whatever_the_flag(account, clients):
    """cloudWatchEncryptionEnabled off, the role may stream but not DescribeLogGroups: the agent
    may look for the log group whatever the flag says, so this is no "later" (LOW) but MEDIUM
    now, unlike the s3EncryptionEnabled and kmsKeyId holds."""
    create_preferences(account, {"cloudWatchLogGroupName": "/guardrail/sessions"})
    account.role("app", allow(account, "app-delivery", STREAM), profile="app")
    iid = account.instance(profile="app")
    found = instance_result(
        account.run(clients, "report", [LOGGING], session_log_group="/guardrail/sessions"), iid
    )
    assert found.status is Status.FAILED and found.severity == "MEDIUM"
    assert found.reason.startswith(
        "role app cannot deliver session logs: not allowed logs:DescribeLogGroups"
    )


def test_an_encryption_flag_waits_for_roles_that_cannot_check_the_destination(account, clients):
    """With s3EncryptionEnabled on, the SSM Agent refuses a session unless the instance's role
    may read the bucket's encryption; turning the flag on for such a role locks people out."""
    theirs = {"s3BucketName": "guardrail-logs", "s3KeyPrefix": "session-logs", "kmsKeyId": KEY}
    create_preferences(account, theirs)
    put_only = put_only_policy(account, "guardrail-logs")
    account.role("app", put_only, profile="app")
    account.instance(profile="app")
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    prefs_fix, reasons = held(report)
    assert prefs_fix.outcome is Outcome.ALREADY_COMPLIANT  # nothing else to change
    assert set(reasons) == {"turn on s3EncryptionEnabled"}
    assert (
        "role(s) app cannot read the bucket's encryption" in reasons["turn on s3EncryptionEnabled"]
    )
    assert preferences(account) == theirs  # flag left as it was
    (region,) = [e for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT]
    assert region.left_failed and region.result.severity == "LOW"
    # Once the role may read it (its owners grant it), the next scan turns the flag on.
    account.iam.put_role_policy(
        RoleName="app",
        PolicyName="read-encryption",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:GetEncryptionConfiguration",
                        "Resource": "arn:aws:s3:::guardrail-logs",
                    }
                ],
            }
        ),
    )
    account.run(clients, "enforce", [LOGGING], **OURS)
    assert preferences(account) == {**theirs, "s3EncryptionEnabled": True}


def after_the_preferences_are_read(monkeypatch, change):
    """`change` runs between the guardrail's read of the preferences and its write."""
    from guardrail.reader import SnapshotReader

    read = SnapshotReader._preferences

    def read_then_change(reader):
        held = read(reader)
        change()
        return held

    monkeypatch.setattr(SnapshotReader, "_preferences", read_then_change)


def test_preferences_created_meanwhile_are_left_to_their_owners(account, clients, monkeypatch):
    """Read absent, created by a person before the fix: writing ours would drop their inputs."""
    owners = {"runAsEnabled": True, "runAsDefaultUser": "ops", "idleSessionTimeout": "15"}
    after_the_preferences_are_read(monkeypatch, lambda: create_preferences(account, owners))
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and "created meanwhile" in fix.reason
    assert preferences(account) == owners
    assert report.left_failed and fix.before is None  # judged on no document; the next run
    # judges theirs


def test_content_an_earlier_version_holds_promotes_that_version_not_latest(account, clients):
    """An owner rolled back to version 1 (as the README suggests) and left an untested draft at
    $LATEST: the fix's content matches version 2, so version 2 becomes the default again."""
    create_preferences(account, {"idleSessionTimeout": "20"})  # v1
    account.run(clients, "enforce", [LOGGING], **OURS)  # v2: the guardrail's
    ours = preferences(account)
    draft = {
        "schemaVersion": "1.0",
        "description": "owners'",
        "sessionType": "Standard_Stream",
        "inputs": {"runAsEnabled": True, "runAsDefaultUser": "root-draft"},
    }
    account.ssm.update_document(
        Name=SESSION_DOCUMENT,
        Content=json.dumps(draft),
        DocumentVersion="$LATEST",
        DocumentFormat="JSON",
    )  # v3, not the default
    account.ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion="1")
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["DefaultVersion"] == "2" and preferences(account) == ours
    assert "runAsDefaultUser" not in preferences(account)


def owners_version(account, inputs):
    content = {"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": inputs}
    version = account.ssm.update_document(
        Name=SESSION_DOCUMENT,
        Content=json.dumps(content),
        DocumentVersion="$LATEST",
        DocumentFormat="JSON",
    )["DocumentDescription"]["DocumentVersion"]
    account.ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion=version)
    return version


def test_preferences_an_owner_changes_meanwhile_are_left_to_them(account, clients, monkeypatch):
    """Read at version 1; the owner saves a version 2 (run-as) and makes it the default before
    the fix writes. Writing ours, built on version 1, would drop their change: the fix stands
    back. (A version 2 left as a draft is not live: the fix goes on top, as after a rollback.)"""
    create_preferences(account, {"idleSessionTimeout": "20"})
    theirs = {"idleSessionTimeout": "20", "runAsEnabled": True, "runAsDefaultUser": "ops"}
    after_the_preferences_are_read(monkeypatch, lambda: owners_version(account, theirs))
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and "changed meanwhile" in fix.reason
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["LatestVersion"] == "2" and doc["DefaultVersion"] == "2"  # nothing written
    assert preferences(account) == theirs
    assert report.left_failed  # the next run judges what is there now


def test_a_rollback_meanwhile_is_left_to_its_owner(account, clients, monkeypatch):
    """Read at version 2 (default and latest); the owner sets version 1 back as the default
    before the fix writes. The fix wrote version 3 on top of 2 and made it the default: the
    owner's live run-as settings were dropped, and the undo named 2, not what was live."""
    create_preferences(account, {"idleSessionTimeout": "20", "runAsDefaultUser": "ops"})
    owners_version(account, {"idleSessionTimeout": "60"})
    rollback = partial(
        account.ssm.update_document_default_version, Name=SESSION_DOCUMENT, DocumentVersion="1"
    )
    after_the_preferences_are_read(monkeypatch, rollback)
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and "changed meanwhile" in fix.reason
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert (doc["DefaultVersion"], doc["LatestVersion"]) == ("1", "2")  # nothing written
    assert preferences(account) == {"idleSessionTimeout": "20", "runAsDefaultUser": "ops"}


def test_a_rolled_back_default_gets_the_fix_on_top_of_the_latest_version(account, clients):
    """The owner rolled back to version 1 and left a draft at version 2: the fix's new content
    goes on top (version 3), built on version 1, the live one, and becomes the default."""
    create_preferences(account, {"idleSessionTimeout": "20"})
    owners_version(account, {"runAsEnabled": True, "runAsDefaultUser": "root-draft"})
    account.ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion="1")
    report = account.run(clients, "enforce", [LOGGING], **OURS)
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["DefaultVersion"] == "3" and doc["LatestVersion"] == "3"
    live = preferences(account)
    assert live["idleSessionTimeout"] == "20" and live["s3BucketName"]
    assert "runAsDefaultUser" not in live  # the draft never went live


@pytest.mark.parametrize("event", [False, True])
def test_console_flags_come_into_force_only_once_no_role_would_be_refused(account, clients, event):
    """The console writes both encryption flags true with no destination: inert. Adding the
    guardrail's destinations would bring them into force for a role that cannot pass the
    agent's check (modify_existing_roles=false: no grant), so they are written off."""
    from guardrail.scope import Scope

    create_preferences(account, CONSOLE)
    put_only = put_only_policy(account, "guardrail-logs")
    account.role("app", put_only, profile="app")
    iid = account.instance(profile="app")
    scope = Scope(instance_ids=frozenset({iid})) if event else None
    report = account.run(
        clients, "enforce", [LOGGING], scope=scope, modify_existing_roles=False, **OURS
    )
    prefs_fix, reasons = held(report)
    assert prefs_fix.outcome is Outcome.APPLIED and set(reasons) == set(HELD)
    inputs = preferences(account)
    assert inputs["s3BucketName"] == "guardrail-logs"
    assert inputs["cloudWatchLogGroupName"] == "/guardrail/sessions"
    assert inputs["s3EncryptionEnabled"] is False and inputs["cloudWatchEncryptionEnabled"] is False
    assert inputs["kmsKeyId"] == ""  # the owners' value, as it was
    assert "with encryption" not in prefs_fix.reason
    assert "s3EncryptionEnabled, cloudWatchEncryptionEnabled left off" in prefs_fix.reason


def test_logs_under_a_sub_prefix_of_the_guardrails_are_granted(account, clients):
    create_preferences(
        account,
        {
            "s3BucketName": "guardrail-logs",
            "s3KeyPrefix": "session-logs/team-a",
            "s3EncryptionEnabled": True,
        },
    )
    policy = delivery_policy(account, prefix="session-logs/")
    account.role("app", profile="app")
    iid = account.instance(profile="app")
    settings = {"session_log_bucket": "guardrail-logs", "log_delivery_policy_arn": policy}
    report = account.run(clients, "enforce", [LOGGING], **settings)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.APPLIED
    again = account.run(clients, "report", [LOGGING], **settings)
    assert {e.result.resource_id: e.result.status for e in again.evaluations}[iid] is Status.PASSED


def test_the_record_names_the_version_to_roll_back_to_and_rolling_back_restores(account, clients):
    """The finding says which version was the default before the fix; making it the default
    again gives the owners exactly their preferences back."""
    owners = {"idleSessionTimeout": "20", "runAsEnabled": True, "runAsDefaultUser": "ops"}
    create_preferences(account, owners)
    (fix,) = region_fix(account.run(clients, "enforce", [LOGGING], **OURS))
    assert fix.outcome is Outcome.APPLIED
    assert "version 2 is now the default, was 1" in fix.reason
    account.ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion="1")
    assert preferences(account) == owners


def test_each_preferences_fix_says_how_to_undo_it_and_the_undo_restores_them(account, clients):
    """Created: deleting the document; updated: the earlier version made the default again.
    Each as the exact command, run here through the client."""
    (fix,) = region_fix(account.run(clients, "enforce", [LOGGING], **OURS))
    assert fix.outcome is Outcome.APPLIED and fix.reason.endswith(
        f"(undo: aws ssm delete-document --name {SESSION_DOCUMENT} --region us-east-1)"
    )
    # Nothing held or left off: the key and both flags are in force.
    assert fix.reason.startswith("sessions now logged, with encryption; other preferences kept")
    account.ssm.delete_document(Name=SESSION_DOCUMENT)
    theirs = {"idleSessionTimeout": "20", "runAsEnabled": False}
    create_preferences(account, theirs)
    (fix,) = region_fix(account.run(clients, "enforce", [LOGGING], **OURS))
    assert fix.outcome is Outcome.APPLIED and fix.reason.endswith(
        "version 2 is now the default, was 1 (undo: aws ssm update-document-default-version "
        f"--name {SESSION_DOCUMENT} --region us-east-1 --document-version 1)"
    )
    account.ssm.update_document_default_version(Name=SESSION_DOCUMENT, DocumentVersion="1")
    assert preferences(account) == theirs


@pytest.mark.parametrize(
    "blank", [{"s3BucketName": "   "}, {"cloudWatchLogGroupName": " ", "s3BucketName": ""}]
)
def test_a_destination_named_with_blanks_is_no_logging_and_gets_the_guardrails(
    account, clients, blank
):
    """Blanks are nowhere to send logs: reported as logging off (not "logged, unencrypted",
    nor a request to encrypt a log group that does not exist), and the fix logs to the
    guardrail's destinations, keeping the owners' other inputs."""
    create_preferences(account, {**blank, "s3EncryptionEnabled": True, "idleSessionTimeout": "20"})
    report = account.run(clients, "report", [LOGGING], **OURS)
    (region,) = [
        e.result for e in report.evaluations if e.result.resource_type is ResourceType.ACCOUNT
    ]
    assert region.status is Status.FAILED and region.severity == "MEDIUM", region.reason
    account.run(clients, "enforce", [LOGGING], **OURS)
    inputs = preferences(account)
    assert inputs["s3BucketName"] == "guardrail-logs" and inputs["idleSessionTimeout"] == "20"
    assert inputs["cloudWatchLogGroupName"] == "/guardrail/sessions"


def test_the_owners_naming_the_guardrails_key_by_its_id_is_the_guardrails_key(account, clients):
    """Terraform's key_id is the bare id of the key the guardrail uses: the role is granted the
    guardrail's delivery policy (which grants that key), not told the key is foreign."""
    create_preferences(account, {"idleSessionTimeout": "20", "kmsKeyId": KEY.split("/")[-1]})
    policy = delivery_policy(account)
    account.role("app", profile="app")
    iid = account.instance(profile="app")
    settings = {**OURS, "log_delivery_policy_arn": policy}
    report = account.run(clients, "enforce", [LOGGING], **settings)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.APPLIED, grant.reason
    after = instance_result(account.run(clients, "report", [LOGGING], **settings), iid)
    assert after.status is Status.PASSED, after.reason


def test_the_guardrails_own_role_gets_delivery_when_existing_roles_are_not_to_be(account, clients):
    """GUARDRAIL_MODIFY_EXISTING_ROLES=false keeps the log-delivery policy off the owners' roles,
    not off the guardrail's own instance role."""
    policy = delivery_policy(account)
    account.role("guardrail-ec2", profile="guardrail-ec2")
    account.role("app", profile="app")
    mine = account.instance(profile="guardrail-ec2")
    account.instance(profile="app")
    settings = {
        **OURS,
        "log_delivery_policy_arn": policy,
        "instance_role": "guardrail-ec2",
        "modify_existing_roles": False,
    }
    report = account.run(clients, "enforce", [LOGGING], **settings)
    grants = {f.resource_id: f for f in report.fixes if f.action == "attach log-delivery policy"}
    assert (
        grants["guardrail-ec2"].outcome is Outcome.APPLIED
        and mine in grants["guardrail-ec2"].covers
    )
    assert (
        grants["app"].outcome is Outcome.SKIPPED and "MODIFY_EXISTING_ROLES" in grants["app"].reason
    )
    assert account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"] == []


@pytest.mark.usefixtures("managed_policies")
def test_a_grant_after_the_role_fix_records_the_role_as_iam_then_held_it(account, clients):
    """One run attaches the core policy (role control), then the log-delivery policy (logging
    control) to the same role. The grant's before said [], read before the first attach: put
    back as "before", it would strip the core policy too."""
    from .conftest import CORE

    policy = delivery_policy(account)
    account.role("app", profile="app")  # neither the core policy nor delivery
    account.instance(profile="app")
    settings = {**OURS, "log_delivery_policy_arn": policy}
    report = account.run(clients, "enforce", ["ssm-instance-role", LOGGING], **settings)
    attach, grant = [f for f in report.fixes if f.resource_id == "app"]
    assert (attach.outcome, grant.outcome) == (Outcome.APPLIED, Outcome.APPLIED)
    assert (attach.before, attach.after) == ([], [CORE])
    held = account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"]
    assert (grant.before, grant.after) == ([CORE], sorted(p["PolicyArn"] for p in held))


def test_a_delivery_grant_within_an_event_says_the_roles_other_instances_change_too(
    account, clients
):
    from guardrail.scope import Scope

    policy = delivery_policy(account)
    account.role("app", profile="app")
    first, _ = account.instance(profile="app", count=2)
    settings = {**OURS, "log_delivery_policy_arn": policy}
    event = Scope(instance_ids=frozenset({first}))
    report = account.run(clients, "enforce", [LOGGING], scope=event, **settings)
    (grant,) = [f for f in report.fixes if f.resource_id == "app"]
    assert grant.outcome is Outcome.APPLIED and grant.covers == (first,)
    assert "other instance using the role gains it too" in grant.reason


@pytest.mark.parametrize(
    "content",
    [None, "schemaVersion: '1.0'", "[]", '{"inputs": ["s3BucketName"]}'],
    ids=["no-content", "not-json", "not-an-object", "inputs-not-an-object"],
)
def test_preferences_whose_content_cannot_be_read_are_reported_and_left_alone(
    account, clients, content
):
    """GetDocument's Content is optional in its model. Absent, or not a JSON object with an
    inputs object, it was read as preferences with no inputs: "logging off", and the fix wrote
    a new default version of the guardrail's inputs over the owners' (bucket, run-as, shell
    profile), recording "other preferences kept". Now the region is FAILED as not known, the fix
    is SKIPPED, and no role is granted delivery to destinations no one named."""
    owners = {"s3BucketName": "their-bucket", "runAsEnabled": True, "runAsDefaultUser": "ops"}
    create_preferences(account, owners)
    account.role("app", profile="app")
    account.instance(profile="app")

    def garbled(parsed, **_):
        parsed.pop("Content", None)
        if content is not None:
            parsed["Content"] = content

    clients.ssm.meta.events.register("after-call.ssm.GetDocument", garbled)
    settings = {**OURS, "log_delivery_policy_arn": delivery_policy(account)}
    report = account.run(clients, "enforce", [LOGGING], **settings)

    (region,) = [e.result for e in report.evaluations if e.result.resource_id == "123456789012"]
    assert region.status is Status.FAILED and "could not be read" in region.reason
    assert "whether sessions are logged is not known" in region.reason
    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.SKIPPED and "fix it by hand" in fix.reason
    assert fix.before is None  # not known: {} would read as "no inputs"
    assert [f for f in report.fixes if f.resource_id == "app"] == []
    assert account.iam.list_attached_role_policies(RoleName="app")["AttachedPolicies"] == []
    assert account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]["LatestVersion"] == "1"
    assert preferences(account) == owners


def test_an_update_answer_naming_no_version_promotes_the_version_holding_the_content(
    account, clients
):
    """UpdateDocument's answer without DocumentDescription.DocumentVersion (optional in its
    model) raised KeyError: the new version was left at $LATEST, never the default, and the run
    stopped. The version now holding the written content is made the default instead."""
    create_preferences(account, {"runAsEnabled": True})

    def no_version(parsed, **_):
        parsed.get("DocumentDescription", {}).pop("DocumentVersion", None)

    clients.ssm.meta.events.register("after-call.ssm.UpdateDocument", no_version)
    report = account.run(clients, "enforce", [LOGGING], **OURS)

    (fix,) = region_fix(report)
    assert fix.outcome is Outcome.APPLIED and "version 2 is now the default" in fix.reason
    doc = account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]
    assert doc["DefaultVersion"] == doc["LatestVersion"] == "2"
    assert preferences(account)["s3BucketName"] == "guardrail-logs"
