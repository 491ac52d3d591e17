"""A partly fixed resource stays FAILED; its applied fix, and how to undo it, stays in sight on
its finding at the next drift scans, until a run applies a fix of its own or it passes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from guardrail.controls.ssh_open import SSH_OPEN
from guardrail.findings import fix_records
from guardrail.model import SESSION_DOCUMENT

from tests.adapters import test_publisher_changes
from tests.adapters.test_publisher_changes import T0, guardrail_at, held_for
from tests.adapters.test_session_logging_fix import create_preferences, delivery_policy
from tests.adapters.test_ssh_prefix_lists import prefix_list, via

WIDE = {
    "IpProtocol": "tcp",
    "FromPort": 0,
    "ToPort": 65535,
    "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "legacy"}],
}
HOUR = timedelta(hours=1)
hub = test_publisher_changes.hub  # the emulated Security Hub, enabled
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def records_of(hub: Any, resource_id: str) -> list[dict[str, str]]:
    (held,) = held_for(hub, resource_id)
    assert held["Compliance"]["Status"] == "FAILED"
    return fix_records(held["ProductFields"])


def test_a_revoke_beside_a_skipped_list_rule_keeps_its_record_and_undo(aws, account, hub):
    """The group's CIDR rule was revoked (APPLIED), its prefix-list rule left to a person
    (SKIPPED): still FAILED. The next scan's only record is the SKIPPED one; it went in alone,
    and Security Hub lost what was revoked, the rules re-added and the undo."""
    pl = prefix_list(account, "::/0")
    group = account.group(WIDE, via(pl))
    account.instance([group])
    ssh = {"controls": (SSH_OPEN.id,), "mode": "enforce"}
    (applied,) = [
        f for f in guardrail_at(aws, T0, **ssh).run().fixes if f.outcome.value == "applied"
    ]
    first = {r["Outcome"]: r for r in records_of(hub, group)}
    assert set(first) == {"applied", "skipped"}

    later = guardrail_at(aws, T0 + HOUR, **ssh).run()
    assert [f.outcome.value for f in later.fixes] == ["skipped"]
    carried, own = records_of(hub, group)
    (held,) = held_for(hub, group)
    assert held["ProductFields"]["ssm-guardrail/FixCount"] == "2"  # the records it shows
    assert carried["Outcome"] == "applied" and carried["Undo"] == applied.undo
    assert carried["Reason"] == "(an earlier run) " + first["applied"]["Reason"]
    assert (
        json.loads(carried["Before"])[0]["SecurityGroupRuleId"]
        == (applied.before[0]["SecurityGroupRuleId"])
    )
    assert own["Outcome"] == "skipped" and own["Reason"] == first["skipped"]["Reason"]
    # A third scan finds the finding as it holds it: nothing to import again.
    third = guardrail_at(aws, T0 + 2 * HOUR, **ssh).run()
    assert third.published.imported == 0 and records_of(hub, group) == [carried, own]
    # A report run has no record of its own: the earlier one alone, counted as one.
    guardrail_at(aws, T0 + 3 * HOUR, **{**ssh, "mode": "report"}).run()
    assert records_of(hub, group) == [carried]
    (held,) = held_for(hub, group)
    assert held["ProductFields"]["ssm-guardrail/FixCount"] == "1"


def test_preferences_written_with_the_key_held_keep_their_rollback(aws, account, hub):
    """Version 2 (the guardrail's destinations, the key held back while a role cannot use it)
    replaced the owners' version 1: FAILED, LOW. The next scan has nothing to write (already
    compliant); its record alone hid the way back to version 1."""
    create_preferences(account, {"idleSessionTimeout": "20", "runAsEnabled": False})
    policy = delivery_policy(account)
    account.role("ok", policy, profile="ok")
    account.role("app", profile="app")  # cannot use the key; not the guardrail's to change
    account.instance(profile="app")
    account.instance(profile="ok")
    settings = {
        "session_log_bucket": "guardrail-logs",
        "session_log_group": "/guardrail/sessions",
        "session_log_kms_key": KEY,
        "log_delivery_policy_arn": policy,
        "modify_existing_roles": False,
        "controls": ("ssm-session-logging",),
        "mode": "enforce",
    }
    (written,) = [
        f for f in guardrail_at(aws, T0, **settings).run().fixes if f.outcome.value == "applied"
    ]
    assert written.undo.endswith("--document-version 1")
    guardrail_at(aws, T0 + HOUR, **settings).run()
    assert account.ssm.describe_document(Name=SESSION_DOCUMENT)["Document"]["DefaultVersion"] == "2"
    carried, *own = records_of(hub, "123456789012")
    assert carried["Undo"] == written.undo and own
    assert all(r["Outcome"] != "applied" for r in own)


def test_a_new_applied_fix_or_a_pass_drops_the_earlier_record(aws, account, hub):
    """Carried only while nothing newer applies: a run that fixes something again writes its own
    records alone, and a resource that passes keeps no failing-time record."""
    pl = prefix_list(account, "::/0")
    group = account.group(WIDE, via(pl))
    account.instance([group])
    ssh = {"controls": (SSH_OPEN.id,), "mode": "enforce"}
    guardrail_at(aws, T0, **ssh).run()
    account.ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )  # fmt: skip
    (again,) = [
        f for f in guardrail_at(aws, T0 + HOUR, **ssh).run().fixes if f.outcome.value == "applied"
    ]
    outcomes = {(r["Outcome"], r.get("Undo")) for r in records_of(hub, group)}
    assert outcomes == {("applied", again.undo), ("skipped", None)}
    account.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=1, RemoveEntries=[{"Cidr": "::/0"}]
    )
    guardrail_at(aws, T0 + 2 * HOUR, **ssh).run()
    (held,) = held_for(hub, group)
    assert held["Compliance"]["Status"] == "PASSED"
    assert "(an earlier run)" not in json.dumps(held["ProductFields"])
