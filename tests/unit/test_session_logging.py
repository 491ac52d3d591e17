"""ssm-session-logging check and fix plan: preferences states, delivery, and owners' inputs kept."""

from __future__ import annotations

import pytest
from guardrail.controls.session_logging import (
    SESSION_LOGGING,
    delivery_requirements,
    delivery_target,
    desired_inputs,
    stops_sessions,
)
from guardrail.model import (
    AccountSnapshot,
    DeliveryCheck,
    Instance,
    InstanceProfile,
    ResourceType,
    Role,
    SessionPreferences,
    Status,
)
from guardrail.settings import Settings, SettingsError

KEY = "arn:aws:kms:eu-west-1:111122223333:key/abcd"
OURS = Settings(
    session_log_bucket="guardrail-logs",
    session_log_group="/guardrail/sessions",
    session_log_kms_key=KEY,
    log_delivery_policy_arn="arn:aws:iam::111122223333:policy/d",
)


def region_result(prefs: SessionPreferences):
    s = AccountSnapshot("111122223333", "eu-west-1", session_preferences=prefs)
    (r,) = [r for r in SESSION_LOGGING.check(s, OURS) if r.resource_type is ResourceType.ACCOUNT]
    return r


@pytest.mark.parametrize(
    ("inputs", "exists", "status", "severity"),
    [
        ({}, False, Status.FAILED, "MEDIUM"),  # absent: a fresh account
        ({"runAsEnabled": True}, True, Status.FAILED, "MEDIUM"),  # neither destination
        ({"s3BucketName": "", "cloudWatchLogGroupName": ""}, True, Status.FAILED, "MEDIUM"),
        # names of blanks are nowhere to log: not "logged, only unencrypted"
        ({"s3BucketName": "   ", "s3EncryptionEnabled": True}, True, Status.FAILED, "MEDIUM"),
        ({"cloudWatchLogGroupName": " \t"}, True, Status.FAILED, "MEDIUM"),
        ({"s3BucketName": "b", "s3EncryptionEnabled": True}, True, Status.PASSED, "INFORMATIONAL"),
        (
            {"cloudWatchLogGroupName": "g", "cloudWatchEncryptionEnabled": True},
            True,
            Status.PASSED,
            "INFORMATIONAL",
        ),
        ({"s3BucketName": "b", "s3EncryptionEnabled": False}, True, Status.FAILED, "LOW"),
        (
            {"cloudWatchLogGroupName": "g", "cloudWatchEncryptionEnabled": False},
            True,
            Status.FAILED,
            "LOW",
        ),
    ],
)
def test_region_preferences(inputs, exists, status, severity):
    r = region_result(SessionPreferences(exists, inputs))
    assert (r.status, r.severity) == (status, severity)
    assert r.resource_id == "111122223333" and r.region == "eu-west-1"


def test_fix_keeps_every_owner_input_and_adds_encrypted_destinations():
    owners = {
        "runAsEnabled": True,
        "runAsDefaultUser": "ops",
        "idleSessionTimeout": "15",
        "maxSessionDuration": "120",
        "shellProfile": {"linux": "cd ~", "windows": ""},
    }
    inputs, why_not = desired_inputs(SessionPreferences(True, owners), OURS)
    assert not why_not
    assert {k: inputs[k] for k in owners} == owners
    assert inputs["s3BucketName"] == "guardrail-logs" and inputs["s3EncryptionEnabled"] is True
    assert inputs["cloudWatchLogGroupName"] == "/guardrail/sessions"
    assert inputs["cloudWatchEncryptionEnabled"] is True and inputs["kmsKeyId"] == KEY


def test_cloudwatch_logs_stream_during_the_session_unless_the_owner_chose_otherwise():
    """Without streaming, CloudWatch receives a session's log only when it ends."""
    inputs, _ = desired_inputs(SessionPreferences(True, {}), OURS)
    assert inputs["cloudWatchStreamingEnabled"] is True
    theirs = {"cloudWatchStreamingEnabled": False}
    inputs, _ = desired_inputs(SessionPreferences(True, theirs), OURS)
    assert inputs["cloudWatchStreamingEnabled"] is False


def test_fix_never_replaces_an_owner_destination_or_key():
    theirs = {"s3BucketName": "their-bucket", "s3EncryptionEnabled": True, "kmsKeyId": "arn:their"}
    inputs, _ = desired_inputs(SessionPreferences(True, theirs), OURS)
    assert inputs == theirs


def test_unencrypted_foreign_destinations_are_not_touched():
    """Either flag on could stop sessions at a destination that is not the guardrail's."""
    theirs = {"cloudWatchLogGroupName": "their-group", "cloudWatchEncryptionEnabled": False}
    inputs, why_not = desired_inputs(SessionPreferences(True, theirs), OURS)
    assert inputs == theirs and "their-group" in why_not
    theirs = {**theirs, "s3BucketName": "their-bucket", "s3EncryptionEnabled": False}
    inputs, why_not = desired_inputs(SessionPreferences(True, theirs), OURS)
    assert inputs == theirs and "their-group" in why_not and "bucket their-bucket" in why_not
    # The guardrail's own bucket gets its flag: its encryption is the guardrail's to vouch for.
    ours = {**theirs, "s3BucketName": OURS.session_log_bucket}
    inputs, why_not = desired_inputs(SessionPreferences(True, ours), OURS)
    assert inputs == {**ours, "s3EncryptionEnabled": True} and not why_not


def test_a_flag_the_owners_wrote_as_the_string_true_is_kept_as_written():
    """A foreign log group left off, the guardrail's bucket flag on as the string "true" (as the
    agent reads it): nothing to write. Turning "true" into true made a needless new version."""
    theirs = {
        "s3BucketName": OURS.session_log_bucket,
        "s3EncryptionEnabled": "true",
        "kmsKeyId": OURS.session_log_kms_key,
        "cloudWatchLogGroupName": "their-group",
        "cloudWatchEncryptionEnabled": False,
    }
    inputs, why_not = desired_inputs(SessionPreferences(True, theirs), OURS)
    assert inputs == theirs and "their-group" in why_not


def test_no_destination_configured_means_no_fix():
    _, why_not = desired_inputs(SessionPreferences(False), Settings())
    assert "nowhere to log" in why_not


def test_delivery_target_prefers_the_region_configuration():
    configured = SessionPreferences(True, {"s3BucketName": "theirs", "s3KeyPrefix": "p"})
    assert delivery_target(configured, OURS)["bucket"] == "theirs"
    assert delivery_target(SessionPreferences(False), OURS)["bucket"] == "guardrail-logs"
    assert delivery_target(SessionPreferences(False), Settings()) == {}
    assert delivery_target(None, OURS) == {}


def test_delivery_requirements_cover_s3_logs_and_kms():
    """Every permission AWS-NOTES.md lists for an instance to deliver session logs: a role
    missing any one of them cannot log, so each must be simulated."""
    required = delivery_requirements(
        delivery_target(SessionPreferences(False), OURS), "aws", "eu-west-1", "111122223333"
    )
    assert sorted(action for action, _ in required) == [
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "logs:CreateLogStream",
        "logs:DescribeLogGroups",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
        "s3:GetEncryptionConfiguration",
        "s3:PutObject",
    ]
    pairs = dict(required)
    assert pairs["s3:PutObject"] == "arn:aws:s3:::guardrail-logs/session-logs/session.log"
    assert pairs["s3:GetEncryptionConfiguration"] == "arn:aws:s3:::guardrail-logs"
    group = "arn:aws:logs:eu-west-1:111122223333:log-group:/guardrail/sessions:"
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert pairs[action] == group + "log-stream:session", action
    # Authorized on the group, named with an empty stream (as its AccessDenied names it).
    assert pairs["logs:DescribeLogStreams"] == group + "log-stream:"
    # DescribeLogGroups is a list call: simulated on every log group of the region.
    assert pairs["logs:DescribeLogGroups"] == "arn:aws:logs:eu-west-1:111122223333:log-group:*"
    assert pairs["kms:GenerateDataKey"] == KEY and pairs["kms:Decrypt"] == KEY


@pytest.mark.parametrize(("flag", "read"), [(False, False), (True, True), ("true", True)])
def test_an_owners_bucket_needs_its_encryption_read_only_with_the_flag_on(flag, read):
    """The agent reads a bucket's encryption only with s3EncryptionEnabled on, and the fix turns
    it on for the guardrail's bucket alone: a role that may upload to the owners' bucket, flag
    off, was "cannot deliver" (MEDIUM) for good, no fix ever lifting it."""
    theirs = {"s3BucketName": "their-bucket", "s3EncryptionEnabled": flag}
    target = delivery_target(SessionPreferences(True, theirs), OURS)
    actions = {a for a, _ in delivery_requirements(target, "aws", "eu-west-1", "111122223333")}
    assert "s3:PutObject" in actions
    assert ("s3:GetEncryptionConfiguration" in actions) is read


def test_the_guardrails_bucket_key_is_needed_for_multipart_uploads_too():
    """The owners' own key for sessions, the guardrail's SSE-KMS bucket for logs: the role needs
    the bucket's key as well, for the data key of each object and, for the multipart upload of
    a log over 5 MB, to decrypt it (S3 asks KMS as the role). The session key it only decrypts
    with: the person's Session Manager plugin generates the session's data key, and the agent's
    KMS client has Decrypt alone (amazon-ssm-agent, agent/session/crypto)."""
    owners = "arn:aws:kms:eu-west-1:111122223333:key/owners"
    prefs = SessionPreferences(True, {"kmsKeyId": owners})
    required = delivery_requirements(
        delivery_target(prefs, OURS), "aws", "eu-west-1", "111122223333"
    )
    kms = sorted((a, k) for a, k in required if a.startswith("kms:"))
    assert kms == [("kms:Decrypt", KEY), ("kms:Decrypt", owners), ("kms:GenerateDataKey", KEY)]


@pytest.mark.parametrize(
    ("key_id", "expected"),
    [
        (KEY, KEY),
        ("abcd-1234", "arn:aws:kms:eu-west-1:111122223333:key/abcd-1234"),  # a bare key id
        ("mrk-0123", "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123"),
        ("alias/sessions", None),  # only KMS can resolve an alias: not evaluated
        ("arn:aws:kms:eu-west-1:111122223333:alias/sessions", None),
    ],
)
def test_the_session_key_is_checked_by_its_arn_however_it_is_named(key_id, expected):
    prefs = SessionPreferences(True, {"s3BucketName": "b", "kmsKeyId": key_id})
    pairs = dict(
        delivery_requirements(delivery_target(prefs, OURS), "aws", "eu-west-1", "111122223333")
    )
    assert pairs.get("kms:Decrypt") == expected
    assert "kms:GenerateDataKey" not in pairs  # the owners' bucket: only the session key is used
    assert pairs["s3:PutObject"] == "arn:aws:s3:::b/session.log"


@pytest.mark.parametrize(
    "key",
    [
        "arn:aws:kms:eu-west-1:111122223333:alias/guardrail",  # only KMS resolves an alias
        "alias/guardrail",
        "1234abcd-12ab-34cd-56ef-1234567890ab",  # a bare id: in which account and region?
        "arn:aws:kms:eu-west-1:111122223333:key/",
    ],
)
def test_the_guardrails_key_must_be_a_key_arn(key):
    """With an alias no kms: action could be simulated for the roles, so the key would be named
    in the preferences while roles that cannot use it are refused every session."""
    with pytest.raises(SettingsError, match="GUARDRAIL_SESSION_LOG_KMS_KEY must be a key ARN"):
        Settings(session_log_kms_key=key)


@pytest.mark.parametrize(
    "key",
    [KEY, "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"],
)
def test_a_key_arn_is_accepted(key):
    assert Settings(session_log_kms_key=key).session_log_kms_key == key


@pytest.mark.parametrize("flag", [None, "false", False, 0])
def test_an_encryption_flag_that_is_not_true_is_off(flag):
    inputs = {"s3BucketName": "b"} | ({} if flag is None else {"s3EncryptionEnabled": flag})
    r = region_result(SessionPreferences(True, inputs))
    assert r.status is Status.FAILED and "s3EncryptionEnabled" in r.reason
    assert (
        region_result(
            SessionPreferences(True, {"s3BucketName": "b", "s3EncryptionEnabled": "true"})
        ).status
        is Status.PASSED
    )


def test_instance_delivery_results():
    profile = "arn:aws:iam::111122223333:instance-profile/p"
    s = AccountSnapshot(
        "111122223333",
        "eu-west-1",
        instances={
            "i-ok": Instance("i-ok", "running", profile_arn=profile),
            "i-no-role": Instance("i-no-role", "running"),
            "i-gone": Instance("i-gone", "terminated", profile_arn=profile),
        },
        instance_profiles={profile: InstanceProfile(profile, "p", ("r",))},
        roles={"r": Role("r", "arn:aws:iam::111122223333:role/r")},
        session_preferences=SessionPreferences(
            True, {"s3BucketName": "b", "s3EncryptionEnabled": True}
        ),
        delivery_target={"bucket": "b"},
        delivery={"r": DeliveryCheck("r", ("s3:PutObject on arn:aws:s3:::b/session.log",))},
    )
    results = {r.resource_id: r for r in SESSION_LOGGING.check(s, OURS)}
    assert results["i-ok"].status is Status.FAILED and "s3:PutObject" in results["i-ok"].reason
    assert results["i-no-role"].status is Status.NOT_APPLICABLE
    # terminated: NOT_APPLICABLE, so its finding is archived like the other controls'
    assert (
        results["i-gone"].status is Status.NOT_APPLICABLE
        and "terminated" in results["i-gone"].reason
    )
    allowed = AccountSnapshot(**{**s.__dict__, "delivery": {"r": DeliveryCheck("r")}})
    assert {r.resource_id: r for r in SESSION_LOGGING.check(allowed, OURS)}[
        "i-ok"
    ].status is Status.PASSED


@pytest.mark.parametrize(
    ("prefix", "granted"),
    [
        ("session-logs", True),
        ("session-logs/eu-west-1", True),
        ("session-logs-old", False),  # shares the name's start, not the folder
        ("session-logsarchive", False),
    ],
)
def test_the_delivery_policy_is_attached_only_where_its_prefix_covers_the_logs(prefix, granted):
    """The guardrail's log-delivery policy allows s3:PutObject under session-logs/ only: a role
    whose sessions log to the sibling prefix session-logs-old/ would still be refused, so it
    gets no policy, and the reason says where the logs go instead."""
    from guardrail.controls.base import FixContext
    from guardrail.model import Outcome

    attached: list[str] = []

    class Iam:
        def attach_role_policy(self, RoleName, PolicyArn):
            attached.append(RoleName)

    class Clients:
        iam = Iam()

    settings = Settings(
        mode="enforce",
        session_log_bucket="guardrail-logs",
        session_log_prefix="session-logs/",
        log_delivery_policy_arn="arn:aws:iam::111122223333:policy/d",
    )
    prefs = SessionPreferences(
        True,
        {"s3BucketName": "guardrail-logs", "s3KeyPrefix": prefix, "s3EncryptionEnabled": True},
    )
    profile = "arn:aws:iam::111122223333:instance-profile/p"
    refused = f"s3:PutObject on arn:aws:s3:::guardrail-logs/{prefix}/session.log"
    s = AccountSnapshot(
        "111122223333",
        "eu-west-1",
        instances={"i-1": Instance("i-1", "running", profile_arn=profile)},
        instance_profiles={profile: InstanceProfile(profile, "p", ("r",))},
        roles={"r": Role("r", "arn:aws:iam::111122223333:role/r")},
        session_preferences=prefs,
        delivery_target=delivery_target(prefs, settings),
        delivery={"r": DeliveryCheck("r", (refused,))},
    )
    failed = [r for r in SESSION_LOGGING.check(s, settings) if r.status is Status.FAILED]
    (grant,) = SESSION_LOGGING.remediate(failed, s, FixContext(Clients(), settings))
    if granted:
        assert grant.outcome is Outcome.APPLIED and attached == ["r"]
    else:
        assert grant.outcome is Outcome.SKIPPED and attached == []
        assert f"sessions log under s3://guardrail-logs/{prefix}, outside the prefix " in (
            grant.reason
        )
        assert "session-logs/ the log-delivery policy grants" in grant.reason


@pytest.mark.parametrize(
    ("target", "stays"),
    [
        ({"log_group": "/guardrail/sessions", "kms_key": KEY}, True),
        ({"bucket": "guardrail-logs", "kms_key": KEY, "bucket_key": KEY}, True),
        ({"bucket": "owners-logs"}, False),  # its region is not read
        ({"log_group": "/g", "kms_key": KEY.replace("eu-west-1", "us-east-1")}, False),
        ({"log_group": "/g", "kms_key": "arn:not-a-key"}, False),  # never an IndexError
    ],
    ids=["log-group", "guardrail-bucket", "owners-bucket", "key-elsewhere", "malformed-key"],
)
def test_the_simulation_is_told_the_region_only_when_delivery_stays_in_it(target, stays):
    """aws:RequestedRegion goes to the simulation only when every log-delivery call goes to the
    scanned region: otherwise a region perimeter would read "allowed" for an upload elsewhere."""
    from guardrail.reader import delivery_stays_in

    pairs = delivery_requirements(target, "aws", "eu-west-1", "111122223333")
    assert delivery_stays_in("eu-west-1", target, pairs, "guardrail-logs") is stays


BUCKET_KEY = "arn:aws:kms:eu-west-1:111122223333:key/bucket"
S3_CHECK = "s3:GetEncryptionConfiguration on arn:aws:s3:::theirs"
LOGS_CHECK = "logs:DescribeLogGroups on arn:aws:logs:eu-west-1:111122223333:log-group:*"


@pytest.mark.parametrize(
    ("inputs", "denied", "stopping"),
    [
        # The session key in force: the agent cannot encrypt the session.
        ({"kmsKeyId": KEY}, [f"kms:Decrypt on {KEY}"], [f"kms:Decrypt on {KEY}"]),
        ({"kmsKeyId": "abcd"}, [f"kms:Decrypt on {KEY}"], [f"kms:Decrypt on {KEY}"]),  # bare id
        # No key in force (the guardrail's, not yet named): sessions still open.
        ({"s3BucketName": "theirs"}, [f"kms:Decrypt on {KEY}"], []),
        # The bucket's own key only fails the upload: that session's log is lost, not it.
        ({"s3BucketName": "theirs", "kmsKeyId": KEY}, [f"kms:Decrypt on {BUCKET_KEY}"], []),
        # The guardrail's setup: one key for the bucket and the sessions. Decrypt refused, it
        # stops them; GenerateDataKey is the person's plugin's call (and the upload's) only.
        (
            {"s3BucketName": "guardrail-logs", "kmsKeyId": BUCKET_KEY},
            [f"kms:Decrypt on {BUCKET_KEY}", f"kms:GenerateDataKey on {BUCKET_KEY}"],
            [f"kms:Decrypt on {BUCKET_KEY}"],
        ),
        ({"kmsKeyId": KEY}, [f"kms:GenerateDataKey on {KEY}"], []),
        # The encryption check in force (flag and bucket), then not (flag without bucket).
        ({"s3BucketName": "theirs", "s3EncryptionEnabled": True}, [S3_CHECK], [S3_CHECK]),
        ({"s3EncryptionEnabled": True}, [S3_CHECK], []),
        # A log group the agent cannot find only turns streaming off (a warning, the log lost);
        # with cloudWatchEncryptionEnabled on it fails the session (ShellPlugin.validate).
        ({"cloudWatchLogGroupName": "/theirs"}, [LOGS_CHECK], []),
        (
            {"cloudWatchLogGroupName": "/theirs", "cloudWatchEncryptionEnabled": True},
            [LOGS_CHECK],
            [LOGS_CHECK],
        ),
        ({}, [LOGS_CHECK], []),
        ({"cloudWatchLogGroupName": " "}, [LOGS_CHECK], []),
        # An upload refused: the log is lost, the session opens.
        ({"s3BucketName": "theirs"}, ["s3:PutObject on arn:aws:s3:::theirs/*"], []),
    ],
)
def test_what_stops_a_roles_sessions_with_the_preferences_as_they_are(inputs, denied, stopping):
    prefs = SessionPreferences(True, inputs)
    assert stops_sessions(denied, prefs) == stopping
    assert stops_sessions(denied, None) == []  # preferences not read: nothing known


def test_a_session_key_named_by_an_alias_stops_sessions_by_the_key_kms_resolved():
    """kmsKeyId an alias: the denied pair names the key KMS resolved it to (DescribeKey)."""
    denied = [f"kms:Decrypt on {KEY}"]
    resolved = SessionPreferences(True, {"kmsKeyId": "alias/sessions"}, alias_target=KEY)
    assert stops_sessions(denied, resolved) == denied
    pairs = dict(
        delivery_requirements(delivery_target(resolved, OURS), "aws", "eu-west-1", "111122223333")
    )
    assert pairs["kms:Decrypt"] == KEY


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_kms_key_id_is_no_key_and_gets_the_guardrails(blank):
    """kmsKeyId of blanks names no key, as a blank destination names none: the region is not
    called encrypted with a key, and the fix writes the guardrail's (it was left as it was)."""
    prefs = SessionPreferences(
        True, {"s3BucketName": "guardrail-logs", "s3EncryptionEnabled": True, "kmsKeyId": blank}
    )
    assert region_result(prefs).status is Status.FAILED
    inputs, why = desired_inputs(prefs, OURS)
    assert inputs["kmsKeyId"] == KEY and why == ""


def test_the_recommendation_names_what_delivery_needs_of_each_key():
    """Every finding's Remediation text: kms:Decrypt on the session key, GenerateDataKey too on
    an SSE-KMS bucket's key, the log-stream calls (a role granted GenerateDataKey alone on the
    session key stays FAILED)."""
    text = SESSION_LOGGING.recommendation
    assert "kms:Decrypt on the session key" in text
    assert "kms:GenerateDataKey" in text and "logs:CreateLogStream" in text
    assert len(text) <= 512
