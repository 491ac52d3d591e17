"""GUARDRAIL_SSH_REQUIRE_SSM_ONLINE in the event path: an event never closes what a drift scan of
the same account keeps open. An Online instance behind the group, named by the event or not, can
still be unable to open a session: its role refused the session channels, or the key the
preferences name. A drift scan judges every role; an event judged only "Online" for the roles it
did not read (a security-group event reads none), and closed the only way in.

Online here is as AWS (and the emulator) has it: the agent's heartbeat
(ssm:UpdateInstanceInformation) alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.aws_errors import error_answer
from tests.handlers import test_on_change
from tests.handlers.test_on_change import CORE, I1, PREFS, SG, TRUST, World, prefs_content
from tests.kms_keys import key_at

world = test_on_change.world  # the emulated account fixture

KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NO_SESSIONS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "ssmmessages:*", "Resource": "*"}],
    }
)
DELIVERS_ANYWHERE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*", "kms:*", "logs:*"], "Resource": "*"}],
    }
)


def channels_refused(w: World) -> str:
    w.app_role()
    w.iam.put_role_policy(RoleName="app-role", PolicyName="deny", PolicyDocument=NO_SESSIONS)
    return "role app-role is refused ssmmessages:"


def owners_preferences(w: World, key: str) -> None:
    """The preferences log to the owners' bucket, sessions encrypted with `key`."""
    w.ssm.update_document(
        Name=PREFS,
        Content=prefs_content(s3BucketName="owners-logs", kmsKeyId=key),
        DocumentVersion="$LATEST",
        DocumentFormat="JSON",
    )
    w.ssm.update_document_default_version(Name=PREFS, DocumentVersion="2")


def owners_key_refused(w: World) -> str:
    """The preferences name the owners' KMS key, which app-role may not use: every session fails
    at its encryption handshake, the instance Online all the same."""
    w.app_role()
    key_at(w.session, KEY)
    owners_preferences(w, KEY)
    return f"role app-role is not allowed kms:Decrypt on {KEY}"


def owners_key_alias_names_no_key(w: World) -> str:
    """The preferences name the session key by an alias KMS says names no key: no session can
    start, whatever the role."""
    w.app_role()
    owners_preferences(w, "alias/owners")
    return "kmsKeyId alias/owners names no KMS key in this region: no session can start"


def owners_key_disabled(w: World) -> str:
    """The alias names a key of the account that is disabled: no session can start, though
    app-role may use the key."""
    w.app_role()
    kms = w.client("kms")
    key = kms.create_key()["KeyMetadata"]
    decrypt = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key["Arn"]}
    w.iam.put_role_policy(
        RoleName="app-role",
        PolicyName="key",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [decrypt]}),
    )
    kms.create_alias(AliasName="alias/owners", TargetKeyId=key["KeyId"])
    kms.disable_key(KeyId=key["KeyId"])
    owners_preferences(w, "alias/owners")
    return f"kmsKeyId alias/owners names key {key['Arn']}, which is Disabled"


def owners_key_alias_refused(w: World) -> str:
    """The key's policy refuses the guardrail DescribeKey: whether the role may use the key is
    not known, and not known counts as unable."""
    w.app_role()
    kms = w.client("kms")
    kms.create_alias(AliasName="alias/owners", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    owners_preferences(w, "alias/owners")
    plain = w.new_session

    def refusing() -> Any:
        session = plain()
        session.events.register(
            "before-call.kms.DescribeKey", error_answer("AccessDeniedException")
        )
        return session

    w.new_session = refusing  # type: ignore[method-assign]
    return "role app-role: its use of the session key is not judged, kmsKeyId alias/owners"


def stranded_behind_open_group(w: World) -> tuple[str, str]:
    bad = w.group("ops")
    stranded = w.launch(groups=[bad], profile="app-profile")[0]
    w.open_ssh(bad)
    return bad, stranded


def reachable_in(w: World, group: str) -> str:
    w.iam.create_role(RoleName="ok-role", AssumeRolePolicyDocument=TRUST)
    w.iam.attach_role_policy(RoleName="ok-role", PolicyArn=CORE)
    w.iam.put_role_policy(RoleName="ok-role", PolicyName="d", PolicyDocument=DELIVERS_ANYWHERE)
    w.iam.create_instance_profile(InstanceProfileName="ok-profile")
    w.iam.add_role_to_instance_profile(InstanceProfileName="ok-profile", RoleName="ok-role")
    return w.launch(groups=[group], profile="ok-profile")[0]


CAUSES = [
    channels_refused,
    owners_key_refused,
    owners_key_alias_names_no_key,
    owners_key_disabled,
    owners_key_alias_refused,
]


@pytest.mark.parametrize("cause", CAUSES)
def test_a_drift_scan_keeps_the_group_open(world: World, cause):
    why = cause(world)
    bad, stranded = stranded_behind_open_group(world)
    report = world.guardrail("enforce", ssh_require_ssm_online=True).run()
    assert report.snapshot is not None and report.snapshot.is_online(stranded)
    (fix,) = [f for f in report.fixes if f.resource_id == bad]
    assert fix.outcome.value == "skipped" and f"would lock out {stranded} ({why}" in fix.reason
    assert world.internet_ssh(bad)


@pytest.mark.parametrize("cause", CAUSES)
def test_a_group_event_keeps_it_open_too(world: World, cause):
    cause(world)
    bad, stranded = stranded_behind_open_group(world)
    result = world.deliver(
        "authorize_ingress_ip_permissions", {SG: bad}, ssh_require_ssm_online=True
    )
    assert world.internet_ssh(bad), f"SSH closed on {stranded}: Online, but no session can open"
    assert result["fixes"] == {"skipped": 1}
    assert sum(world.calls.values()) > 0


@pytest.mark.parametrize("cause", CAUSES)
def test_an_event_about_another_instance_keeps_it_open_too(world: World, cause):
    why = cause(world)
    bad, stranded = stranded_behind_open_group(world)
    reachable = reachable_in(world, bad)
    world.deliver("state_change_running", {I1: reachable}, ssh_require_ssm_online=True)
    assert world.internet_ssh(bad), f"SSH closed on {stranded} ({why}): no session can open"


def test_a_group_event_closes_it_when_every_instance_can_open_a_session(world: World):
    """The same event, its one instance's role able to: closed within the event."""
    bad = world.group("ops")
    reachable_in(world, bad)
    world.open_ssh(bad)
    result = world.deliver(
        "authorize_ingress_ip_permissions", {SG: bad}, ssh_require_ssm_online=True
    )
    assert result["fixes"] == {"applied": 1} and not world.internet_ssh(bad)
