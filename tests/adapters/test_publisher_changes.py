"""A drift scan imports only what changed: Security Hub bills every imported finding.

Against moto with the emulation extension (GetFindings filters); Stubber for throttling.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from guardrail.clients import AwsClients
from guardrail.controls.ssh_open import SSH_OPEN
from guardrail.engine import Guardrail
from guardrail.findings import FINGERPRINT_FIELD, build_finding, fingerprint
from guardrail.model import ResourceType, Result, Status
from guardrail.publisher import FindingPublisher
from guardrail.settings import Settings

from emulator.calls import CallCounter

from .conftest import OPEN_SSH

ACCOUNT = "123456789012"
REGION = "us-east-1"
T0 = datetime(2026, 5, 4, 3, 0, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def finding(n: int, status: Status = Status.FAILED, at: datetime = T0) -> dict[str, Any]:
    severity = "HIGH" if status is Status.FAILED else "INFORMATIONAL"
    result = Result(SSH_OPEN.id, ResourceType.INSTANCE, f"i-{n:017x}", status, severity,
                    f"status {status.value}", account_id=ACCOUNT, region=REGION)  # fmt: skip
    return build_finding(result, SSH_OPEN, generated_at=at)


class Clock:
    """sleep advances monotonic: pacing is exercised, nobody waits."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def hub(aws):
    client = aws.client("securityhub")
    client.enable_security_hub()
    return client


def publisher(client: Any, clock: Clock | None = None) -> FindingPublisher:
    clock = clock or Clock()
    return FindingPublisher(client, sleep=clock.sleep, monotonic=clock.monotonic)


def stored(client: Any) -> dict[str, dict[str, Any]]:
    pages = client.get_paginator("get_findings").paginate(PaginationConfig={"PageSize": 100})
    return {f["Id"]: f for page in pages for f in page["Findings"]}


def guardrail_at(aws: Any, at: datetime, *later: datetime, **settings: Any) -> Guardrail:
    """The guardrail with a clock that reads `at`, then each of `later` in turn and stays at the
    last, on new clients (a CallCounter sees them)."""
    times = [at, *later]
    clients = AwsClients(session=aws, region=REGION)
    return Guardrail(
        clients,
        Settings(**settings),
        account_id=ACCOUNT,
        publisher=FindingPublisher(clients.securityhub),
        clock=lambda: times.pop(0) if len(times) > 1 else times[0],
    )


def held_for(client: Any, resource_id: str) -> list[dict[str, Any]]:
    return [f for f in stored(client).values() if f["Resources"][0]["Id"].endswith(resource_id)]


def test_fingerprint_ignores_times_and_follows_what_a_reader_sees() -> None:
    a, later = finding(1), finding(1, at=T0 + timedelta(hours=5))
    assert a["UpdatedAt"] != later["UpdatedAt"]
    assert fingerprint(a) == fingerprint(later) == a["ProductFields"][FINGERPRINT_FIELD]
    assert fingerprint(finding(1, Status.PASSED)) != fingerprint(a)
    assert fingerprint(finding(2)) != fingerprint(a)


def test_a_repeated_scan_imports_nothing_and_a_change_imports_only_itself(hub) -> None:
    first = [finding(n) for n in range(150)]
    summary = publisher(hub).publish(first, refresh_before=T0 - WEEK)
    assert summary.ok and summary.imported == 150 and summary.unchanged == 0

    an_hour_later = T0 + timedelta(hours=1)
    again = [finding(n, at=an_hour_later) for n in range(150)]
    again[7] = finding(7, Status.PASSED, at=an_hour_later)  # someone closed port 22 by hand
    summary = publisher(hub).publish(again, refresh_before=an_hour_later - WEEK)

    assert summary.ok and summary.imported == 1 and summary.unchanged == 149
    # Two GetFindings pages of active findings, one (empty) of those archived since, one import.
    assert summary.calls == 2 + 1 + 1
    held = stored(hub)
    assert held[again[7]["Id"]]["Compliance"]["Status"] == "PASSED"
    # first seen stays first seen: the changed finding kept its CreatedAt
    assert held[again[7]["Id"]]["CreatedAt"] == first[7]["CreatedAt"]
    assert held[again[8]["Id"]]["UpdatedAt"] == first[8]["UpdatedAt"]


def test_unchanged_findings_are_refreshed_once_they_are_older_than_the_window(hub) -> None:
    publisher(hub).publish([finding(1), finding(2)], refresh_before=T0 - WEEK)
    eight_days_later = T0 + timedelta(days=8)
    summary = publisher(hub).publish(
        [finding(1, at=eight_days_later), finding(2, at=eight_days_later)],
        refresh_before=eight_days_later - WEEK,
    )
    assert summary.imported == 2 and summary.unchanged == 0
    assert {f["UpdatedAt"] for f in stored(hub).values()} == {
        finding(1, at=eight_days_later)["UpdatedAt"]
    }


def test_without_a_refresh_window_every_finding_is_imported(hub) -> None:
    publisher(hub).publish([finding(1)])
    summary = publisher(hub).publish([finding(1, at=T0 + timedelta(hours=1))])
    assert summary.imported == 1 and summary.unchanged == 0 and summary.calls == 1


def test_a_finding_to_resolve_is_imported_even_if_unchanged(hub) -> None:
    fixed = finding(1, Status.PASSED)
    publisher(hub).publish([fixed], refresh_before=T0 - WEEK)
    later = finding(1, Status.PASSED, at=T0 + timedelta(hours=1))
    summary = publisher(hub).publish(
        [later], {later["Id"]: "ssm-guardrail fixed: revoke internet SSH"}, refresh_before=T0
    )
    assert summary.ok and summary.imported == 1 and summary.resolved == 1
    assert stored(hub)[later["Id"]]["Workflow"]["Status"] == "RESOLVED"


def test_other_products_findings_do_not_count_as_ours(hub) -> None:
    foreign = {**finding(1), "GeneratorId": "someone-else/check"}
    hub.batch_import_findings(Findings=[foreign])
    summary = publisher(hub).publish([finding(1, at=T0 + timedelta(hours=1))], refresh_before=T0)
    assert summary.imported == 1 and summary.unchanged == 0


def test_when_stored_findings_cannot_be_read_everything_is_imported() -> None:
    client = boto3.client("securityhub", region_name=REGION)
    with Stubber(client) as stub:
        for _ in range(5):  # throttled on every attempt
            stub.add_client_error("get_findings", "TooManyRequestsException", "slow down")
        stub.add_response(
            "batch_import_findings", {"FailedCount": 0, "SuccessCount": 2, "FailedFindings": []}
        )
        summary = publisher(client).publish([finding(1), finding(2)], refresh_before=T0)
        stub.assert_no_pending_responses()
    assert summary.imported == 2 and not summary.fatal  # dearer, but no finding is lost
    assert "could not read stored findings" in summary.errors[0]  # and said so


def test_a_next_token_given_twice_ends_the_read_and_everything_is_imported() -> None:
    """GetFindings answering the same NextToken again would page at 3 calls a second until
    Lambda's timeout, after the scan's fixes and before any finding went in."""
    client = boto3.client("securityhub", region_name=REGION)
    page = {"Findings": [], "NextToken": "again"}
    with Stubber(client) as stub:
        stub.add_response("get_findings", page)
        stub.add_response("get_findings", page)
        stub.add_response(
            "batch_import_findings", {"FailedCount": 0, "SuccessCount": 1, "FailedFindings": []}
        )
        summary = publisher(client).publish([finding(1)], refresh_before=T0)
        stub.assert_no_pending_responses()
    assert summary.imported == 1 and not summary.fatal
    assert "same NextToken twice" in summary.errors[0]


def test_an_hourly_drift_scan_stops_re_importing_a_quiet_account(aws, account, hub) -> None:
    account.instance(count=30)

    def scan(at: datetime) -> dict[str, int]:
        counter = CallCounter(aws)
        report = guardrail_at(aws, at).run()
        assert report.published.ok
        calls = counter.by_operation()
        calls["unchanged"] = report.published.unchanged
        return calls

    first, second = scan(T0), scan(T0 + timedelta(hours=1))
    assert first["securityhub:BatchImportFindings"] == 1 and first["unchanged"] == 0
    assert "securityhub:BatchImportFindings" not in second and second["unchanged"] > 60


def test_reading_stored_findings_keeps_to_getfindings_3_calls_a_second(hub) -> None:
    publisher(hub).publish([finding(n) for n in range(700)])  # 7 pages to read back
    clock = Clock()
    summary = publisher(hub, clock).publish(
        [finding(n, at=T0 + timedelta(hours=1)) for n in range(700)], refresh_before=T0
    )
    assert summary.unchanged == 700 and summary.calls == 7 + 1  # + archived since: none
    assert clock.slept >= 2.0  # 8 reads at 3 a second: two full waits


def test_an_unreachable_read_still_imports_everything() -> None:
    from botocore.exceptions import ReadTimeoutError

    client = boto3.client("securityhub", region_name=REGION)
    calls: list[str] = []

    def timeout(**kwargs: Any) -> None:
        calls.append("get_findings")
        raise ReadTimeoutError(endpoint_url="https://securityhub.us-east-1.amazonaws.com")

    with Stubber(client) as stub:
        stub.add_response(
            "batch_import_findings", {"FailedCount": 0, "SuccessCount": 1, "FailedFindings": []}
        )
        client.get_findings = timeout  # type: ignore[method-assign]
        summary = publisher(client).publish([finding(1)], refresh_before=T0)
        stub.assert_no_pending_responses()
    assert calls == ["get_findings"] and summary.imported == 1 and not summary.fatal
    assert "could not read stored findings" in summary.errors[0]


def test_an_unreachable_security_hub_does_not_say_every_finding_was_imported() -> None:
    """The read failed (unreachable), so every finding was to be imported; the imports failed
    too. "every finding imported" stood beside "cannot reach Security Hub"."""
    from botocore.exceptions import EndpointConnectionError

    client = boto3.client("securityhub", region_name=REGION)

    def unreachable(**kwargs: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://securityhub.us-east-1.amazonaws.com")

    client.get_findings = unreachable  # type: ignore[method-assign]
    client.batch_import_findings = unreachable  # type: ignore[method-assign]
    summary = publisher(client).publish([finding(1)], refresh_before=T0)
    assert summary.fatal and summary.imported == 0
    assert [e for e in summary.errors if "cannot reach Security Hub" in e]
    assert not [e for e in summary.errors if "every finding imported" in e]


def test_security_hub_disabled_stops_at_the_read_with_a_clear_error(aws) -> None:
    client = aws.client("securityhub")  # never enabled
    summary = publisher(client).publish([finding(1)], refresh_before=T0)
    assert summary.imported == 0 and summary.calls == 1
    assert any("not enabled" in e for e in summary.errors)
    assert not [e for e in summary.errors if "every finding imported" in e]  # none was
    assert [f["ErrorCode"] for f in summary.failed] == ["InvalidAccessException"]


def test_a_full_scan_archives_the_findings_it_no_longer_produces(aws, account, hub) -> None:
    group = account.group(OPEN_SSH)
    instance = account.instance([group])

    guardrail_at(aws, T0).run()
    (group_finding,) = held_for(hub, group)
    assert group_finding["RecordState"] == "ACTIVE"
    assert group_finding["Compliance"]["Status"] == "FAILED"

    # The instance moves to another group: nothing uses the open group, so no result names it.
    other = account.group()
    account.move(instance, [other])
    # A scan of one control only never archives the other controls' findings.
    guardrail_at(aws, T0 + timedelta(hours=1), controls=("ssm-instance-role",)).run()
    assert stored(hub)[group_finding["Id"]]["RecordState"] == "ACTIVE"
    report = guardrail_at(aws, T0 + timedelta(hours=2)).run()

    assert report.published.ok
    after = stored(hub)
    assert after[group_finding["Id"]]["RecordState"] == "ARCHIVED"
    assert after[group_finding["Id"]]["CreatedAt"] == group_finding["CreatedAt"]
    active = {
        f["Resources"][0]["Id"].rsplit("/", 1)[-1]
        for f in after.values()
        if f["RecordState"] == "ACTIVE"
    }
    assert instance in active and other in active and group not in active


@pytest.mark.usefixtures("managed_policies")
def test_unreadable_preferences_leave_the_instances_logging_findings_as_they_are(
    aws, account, hub
) -> None:
    """GetDocument answers without Content (optional in its model): the region is FAILED,
    "not known", and no instance can be judged (nowhere known to deliver to). The full scan
    archived every instance's logging finding as if the instance were gone."""
    from tests.adapters.conftest import CORE
    from tests.adapters.test_session_logging_fix import create_preferences

    create_preferences(account, {"s3BucketName": "owners-logs", "s3EncryptionEnabled": True})
    account.role("app", CORE, profile="app")  # no s3:PutObject: cannot deliver
    instance = account.instance(profile="app")
    logging = {"controls": ("ssm-session-logging",)}
    guardrail_at(aws, T0, **logging).run()
    (before,) = held_for(hub, instance)
    assert (before["RecordState"], before["Compliance"]["Status"]) == ("ACTIVE", "FAILED")

    later = guardrail_at(aws, T0 + timedelta(hours=1), **logging)
    later.clients.ssm.meta.events.register(
        "after-call.ssm.GetDocument", lambda parsed, **_: parsed.pop("Content", None)
    )
    report = later.run()
    (region,) = [e.result for e in report.evaluations]
    assert region.reason.endswith("whether sessions are logged is not known")
    (after,) = held_for(hub, instance)
    assert after == before  # nothing learnt about the instance: not archived, not re-imported
    # Known to log nowhere (the preferences deleted, the guardrail given no destination), the
    # instance's delivery is moot: a full scan archives its finding, as before.
    account.ssm.delete_document(Name="SSM-SessionManagerRunShell")
    guardrail_at(aws, T0 + timedelta(hours=2), **logging).run()
    (moot,) = held_for(hub, instance)
    assert moot["RecordState"] == "ARCHIVED"


def test_a_slow_drift_scan_never_overwrites_a_newer_event_result(aws, account, hub) -> None:
    from guardrail.scope import Scope

    group = account.group()
    account.instance([group])
    scan_report = guardrail_at(aws, T0, publish=False).run()  # the scan reads at T0 ...
    # ... and while it is busy, someone opens port 22 and the event path publishes FAILED.
    account.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[OPEN_SSH])
    event = guardrail_at(aws, T0 + timedelta(minutes=3)).run(Scope(group_ids=frozenset({group})))
    assert event.published.ok
    # The scan publishes its older reading (PASSED) last, minutes later: not even sent.
    late = guardrail_at(aws, T0 + timedelta(minutes=9)).publish(scan_report)
    assert late.ok and late.superseded > 0
    held = held_for(hub, group)
    assert [f["Compliance"]["Status"] for f in held] == ["FAILED"]  # the newer reading stands


@pytest.mark.parametrize(
    ("event_minute", "held_status", "held_workflow"),
    [
        # Between the scan's read (T0) and its fix (T0+5) an event saw the port open: the fix
        # is the newer truth, PASSED and RESOLVED, not a RESOLVED finding still FAILED.
        (3, "PASSED", "RESOLVED"),
        # After the fix someone opened it again and an event saw it (FAILED at T0+7): the scan,
        # publishing minutes later (T0+9), must neither hide that behind its older fix nor mark
        # the newer FAILED reading RESOLVED.
        (7, "FAILED", "NEW"),
    ],
)
def test_a_fixed_finding_carries_its_fix_time_not_its_publish_time(
    aws, account, hub, event_minute: int, held_status: str, held_workflow: str
) -> None:
    group = account.group(OPEN_SSH)
    account.instance([group])
    settings = {"mode": "enforce", "controls": (SSH_OPEN.id,), "publish": False}
    scan = guardrail_at(aws, T0, T0 + timedelta(minutes=5), **settings).run()
    (fixed,) = [e for e in scan.evaluations if e.result.resource_id == group]
    assert fixed.remediated and fixed.fixed_at == T0 + timedelta(minutes=5)
    seen = build_finding(fixed.result, SSH_OPEN, generated_at=T0 + timedelta(minutes=event_minute))
    assert publisher(hub).publish([seen]).ok
    summary = guardrail_at(aws, T0 + timedelta(minutes=9)).publish(scan)
    assert summary.ok and summary.superseded == (held_status == "FAILED")
    (held,) = held_for(hub, group)
    assert held["Compliance"]["Status"] == held_status
    assert held["Workflow"]["Status"] == held_workflow


def test_later_scans_keep_the_record_of_a_fix_while_the_resource_stays_fixed(
    aws, account, hub
) -> None:
    """The RESOLVED note says what changed is in the finding: a re-scan must not erase it."""
    group = account.group(OPEN_SSH)
    account.instance([group])
    guardrail_at(aws, T0, mode="enforce", controls=(SSH_OPEN.id,)).run()
    (fixed,) = held_for(hub, group)
    assert fixed["Workflow"]["Status"] == "RESOLVED"
    record = {k: v for k, v in fixed["ProductFields"].items() if "/Fix" in k}
    assert record["ssm-guardrail/Fix1/Outcome"] == "applied" and "Fix1/Before" in str(record)
    for hours in (1, 24 * 8):  # a drift scan an hour later; one after the weekly refresh
        later = T0 + timedelta(hours=hours)
        guardrail_at(aws, later, mode="report", controls=(SSH_OPEN.id,)).run()
        (held,) = held_for(hub, group)
        assert held["Compliance"]["Status"] == "PASSED"
        assert {k: v for k, v in held["ProductFields"].items() if "/Fix" in k} == record
        assert held["Description"] == fixed["Description"]
    assert held["UpdatedAt"].startswith(later.strftime("%Y-%m-%d"))  # refreshed, record kept
    # Opened again: the new FAILED reading replaces the old fix's record.
    account.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[OPEN_SSH])
    guardrail_at(aws, later + timedelta(hours=1), mode="report", controls=(SSH_OPEN.id,)).run()
    (held,) = held_for(hub, group)
    assert held["Compliance"]["Status"] == "FAILED"
    assert not [k for k in held["ProductFields"] if "/Fix" in k]


def test_a_fix_an_event_confirmed_first_is_still_recorded_and_resolved(aws, account, hub) -> None:
    """The scan fixes at T0+5; an event re-reads the resource at T0+7 and imports a plain PASSED
    reading; the scan publishes at T0+9. The newer reading agrees, so the fix goes in just after
    it: PASSED, RESOLVED, with its record (not left NEW without one)."""
    from guardrail.scope import Scope

    group = account.group(OPEN_SSH)
    instance = account.instance([group])
    only_ssh = {"controls": (SSH_OPEN.id,)}
    guardrail_at(aws, T0 - timedelta(hours=1), **only_ssh).run()  # reported FAILED, NEW
    scan = guardrail_at(
        aws, T0, T0 + timedelta(minutes=5), mode="enforce", publish=False, **only_ssh
    ).run()
    event_at = T0 + timedelta(minutes=7)
    guardrail_at(aws, event_at, **only_ssh).run(Scope(instance_ids=frozenset({instance})))
    summary = guardrail_at(aws, T0 + timedelta(minutes=9), **only_ssh).publish(scan)
    assert summary.ok and summary.superseded == 0
    for resource in (instance, group):
        (held,) = held_for(hub, resource)
        assert held["Compliance"]["Status"] == "PASSED"
        assert held["Workflow"]["Status"] == "RESOLVED"
        assert held["ProductFields"]["ssm-guardrail/Remediated"] == "true"
        assert (
            held["UpdatedAt"]
            > build_finding(scan.evaluations[0].result, SSH_OPEN, generated_at=event_at)[
                "UpdatedAt"
            ]
        )


def fix_record(finding: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in finding["ProductFields"].items() if "/Fix" in k}


def test_an_events_newer_fix_keeps_its_record_over_the_scans_older_one(aws, account, hub) -> None:
    """The scan closes port 22 at T0+5; someone opens it again and an event closes it at T0+7;
    the scan publishes at T0+9. The record on the finding is the event's (the rule it revoked)."""
    from guardrail.scope import Scope

    group = account.group(OPEN_SSH)
    account.instance([group])
    only_ssh = {"controls": (SSH_OPEN.id,)}
    scan = guardrail_at(
        aws, T0, T0 + timedelta(minutes=5), mode="enforce", publish=False, **only_ssh
    ).run()
    account.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[OPEN_SSH])
    guardrail_at(aws, T0 + timedelta(minutes=7), mode="enforce", **only_ssh).run(
        Scope(group_ids=frozenset({group}))
    )
    (by_event,) = held_for(hub, group)
    late = guardrail_at(aws, T0 + timedelta(minutes=9), **only_ssh).publish(scan)
    (held,) = held_for(hub, group)
    assert late.superseded > 0 and fix_record(held) == fix_record(by_event)
    assert held["Workflow"]["Status"] == "RESOLVED"


def test_a_fix_found_already_done_does_not_replace_the_record_of_who_did_it(
    aws, account, hub
) -> None:
    """An event fixes the group (T0+3) while the scan, which read it open at T0, is about to:
    the scan finds the rule already revoked and its finding must not overwrite the event's."""
    from guardrail.scope import Scope

    group = account.group(OPEN_SSH)
    account.instance([group])
    only_ssh = {"controls": (SSH_OPEN.id,)}
    scan = guardrail_at(aws, T0, T0 + timedelta(minutes=5), mode="enforce", **only_ssh)
    by_event: list[dict[str, Any]] = []

    def event_fixes_first(**_: Any) -> None:
        if not by_event:
            guardrail_at(aws, T0 + timedelta(minutes=3), mode="enforce", **only_ssh).run(
                Scope(group_ids=frozenset({group}))
            )
            by_event.extend(held_for(hub, group))

    scan.clients.ec2.meta.events.register(
        "before-call.ec2.RevokeSecurityGroupIngress", event_fixes_first
    )
    report = scan.run()
    assert [f.outcome.value for f in report.fixes] == ["already_compliant"]
    (held,) = held_for(hub, group)
    assert fix_record(held) == fix_record(by_event[0])
    assert held["ProductFields"]["ssm-guardrail/Fix1/Outcome"] == "applied"


def test_refresh_days_0_imports_everything_and_still_respects_newer_readings(
    aws, account, hub
) -> None:
    group = account.group(OPEN_SSH)
    account.instance([group])
    settings = {"mode": "enforce", "controls": (SSH_OPEN.id,), "finding_refresh_days": 0}
    scan = guardrail_at(aws, T0, T0 + timedelta(minutes=5), publish=False, **settings).run()
    (fixed,) = [e for e in scan.evaluations if e.result.resource_id == group]
    seen = build_finding(fixed.result, SSH_OPEN, generated_at=T0 + timedelta(minutes=7))
    assert publisher(hub).publish([seen]).ok  # an event saw it re-opened after the fix
    late = guardrail_at(aws, T0 + timedelta(minutes=9), finding_refresh_days=0).publish(scan)
    assert late.superseded == 1 and late.unchanged == 0  # the rest re-imported (0: every scan)
    (held,) = held_for(hub, group)
    assert (held["Compliance"]["Status"], held["Workflow"]["Status"]) == ("FAILED", "NEW")


def test_a_person_who_reopens_a_fixed_finding_is_not_overridden(aws, account, hub) -> None:
    group = account.group(OPEN_SSH)
    account.instance([group])
    guardrail_at(aws, T0, mode="enforce", controls=(SSH_OPEN.id,)).run()
    (held,) = held_for(hub, group)
    assert held["Workflow"]["Status"] == "RESOLVED"
    identifier = [{"Id": held["Id"], "ProductArn": held["ProductArn"]}]
    for note in ({"Text": "reopened: review this fix", "UpdatedBy": "alice"}, None):
        update: dict[str, Any] = {"FindingIdentifiers": identifier, "Workflow": {"Status": "NEW"}}
        if note:
            update["Note"] = note
        hub.batch_update_findings(**update)
        later = guardrail_at(aws, T0 + timedelta(hours=1), controls=(SSH_OPEN.id,)).run()
        (held,) = held_for(hub, group)
        assert held["Workflow"]["Status"] == "NEW" and later.published.resolved == 0


def test_an_archived_fix_record_does_not_come_back_with_the_group(aws, account, hub) -> None:
    """A fixed group no instance uses is archived; used again, it is a new life: PASSED and NEW,
    without the old fix's record or a RESOLVED it did not earn."""
    group = account.group(OPEN_SSH)
    instance = account.instance([group])
    only_ssh = {"controls": (SSH_OPEN.id,)}
    guardrail_at(aws, T0, mode="enforce", **only_ssh).run()
    account.move(instance, [account.group()])
    guardrail_at(aws, T0 + timedelta(hours=1), **only_ssh).run()
    (held,) = held_for(hub, group)
    assert held["RecordState"] == "ARCHIVED"
    account.move(instance, [group])
    for hours in (2, 3):
        guardrail_at(aws, T0 + timedelta(hours=hours), **only_ssh).run()
    (held,) = held_for(hub, group)
    assert (held["RecordState"], held["Compliance"]["Status"]) == ("ACTIVE", "PASSED")
    assert held["Workflow"]["Status"] == "NEW"
    assert held["ProductFields"]["ssm-guardrail/Remediated"] == "false"
    assert not [k for k in held["ProductFields"] if "/Fix" in k]


def test_a_finding_that_comes_back_after_being_archived_is_active_again(aws, hub) -> None:
    from guardrail.publisher import ArchiveMissing

    generators = frozenset({f"ssm-guardrail/{SSH_OPEN.id}"})
    product = finding(1)["ProductArn"]
    publisher(hub).publish([finding(1), finding(2)], refresh_before=T0 - WEEK)
    # Finding 1 is no longer produced: archived.
    at = T0 + timedelta(hours=1)
    publisher(hub).publish(
        [finding(2, at=at)],
        refresh_before=at - WEEK,
        archive=ArchiveMissing(product, generators, at),
    )
    assert stored(hub)[finding(1)["Id"]]["RecordState"] == "ARCHIVED"
    # ...and an hour later it is produced again, unchanged from before: it must become ACTIVE.
    later = T0 + timedelta(hours=2)
    summary = publisher(hub).publish(
        [finding(1, at=later), finding(2, at=later)],
        refresh_before=later - WEEK,
        archive=ArchiveMissing(product, generators, later),
    )
    assert summary.imported == 1 and stored(hub)[finding(1)["Id"]]["RecordState"] == "ACTIVE"


def test_access_denied_on_the_optional_read_still_imports_everything() -> None:
    client = boto3.client("securityhub", region_name=REGION)
    with Stubber(client) as stub:
        stub.add_client_error("get_findings", "AccessDeniedException", "not allowed: GetFindings")
        stub.add_response(
            "batch_import_findings", {"FailedCount": 0, "SuccessCount": 2, "FailedFindings": []}
        )
        summary = publisher(client).publish([finding(1), finding(2)], refresh_before=T0)
        stub.assert_no_pending_responses()
    assert summary.imported == 2 and not summary.fatal
    # Reported, not silent: every finding was billed again (PublishErrors, the CLI's warning).
    assert len(summary.errors) == 1 and "could not read stored findings" in summary.errors[0]


def calls_to(client: Any, operation: str = "GetFindings") -> list[dict[str, Any]]:
    """The parameters of every Security Hub `operation` call made from now on."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        f"provide-client-params.securityhub.{operation}", lambda params, **_: calls.append(params)
    )
    return calls


def test_archived_findings_are_not_read_again_by_every_scan(hub) -> None:
    """Archived findings stay 90 days: with instance churn they outnumber the fleet. A scan
    reads only the active ones (3 GetFindings a second; ~9 KB of memory each)."""
    from guardrail.publisher import ArchiveMissing

    generators = frozenset({f"ssm-guardrail/{SSH_OPEN.id}"})
    product = finding(0)["ProductArn"]
    publisher(hub).publish([finding(n) for n in range(251)], refresh_before=T0 - WEEK)
    at = T0 + timedelta(hours=1)  # 250 instances are gone: their findings are archived
    archived = publisher(hub).publish(
        [finding(0, at=at)],
        refresh_before=at - WEEK,
        archive=ArchiveMissing(product, generators, at),
    )
    assert archived.imported == 250
    later = T0 + timedelta(hours=2)
    calls = calls_to(hub)
    summary = publisher(hub).publish(
        [finding(0, at=later)],
        refresh_before=later - WEEK,
        archive=ArchiveMissing(product, generators, later),
    )
    # 1 page of active findings (251 stored would take 3), 1 of those archived since the read.
    assert len(calls) == 2
    # Archived since the scan's reading, with an End as well (a Start alone may be refused).
    assert calls[1]["Filters"]["UpdatedAt"] == [
        {"Start": "2026-05-04T05:00:00.000Z", "End": "2027-05-05T05:00:00.000Z"}
    ]
    assert summary.ok and summary.imported == 0 and summary.unchanged == 1
    held = stored(hub)
    assert sum(f["RecordState"] == "ARCHIVED" for f in held.values()) == 250


def test_an_instance_gone_before_it_was_ever_seen_leaves_no_archived_finding(hub) -> None:
    """A terminated instance is NOT_APPLICABLE, its finding archived: one Security Hub holds
    active is archived; one it never held is not created just to be archived."""
    publisher(hub).publish([finding(1)], refresh_before=T0 - WEEK)
    at = T0 + timedelta(hours=1)
    gone = [finding(n, Status.NOT_APPLICABLE, at=at) for n in (1, 2)]
    assert {f["RecordState"] for f in gone} == {"ARCHIVED"}
    summary = publisher(hub).publish(gone, refresh_before=at - WEEK)
    assert summary.imported == 1
    held = stored(hub)
    assert held[finding(1)["Id"]]["RecordState"] == "ARCHIVED"
    assert finding(2)["Id"] not in held


def test_an_events_newer_archived_reading_stands_over_an_older_scans_fix(hub) -> None:
    """The instance terminated between the scan's read and its publish: the event's archived
    NOT_APPLICABLE reading is newer. The scan reads findings archived since its own reading
    (one small GetFindings), so it neither imports over it nor marks it RESOLVED."""
    from guardrail.findings import RESOLUTION_NOTE

    publisher(hub).publish([finding(1)], refresh_before=T0 - WEEK)  # FAILED, ACTIVE
    gone = finding(1, Status.NOT_APPLICABLE, at=T0 + timedelta(minutes=7))  # an event's
    assert publisher(hub).publish([gone]).ok
    fixed = finding(1, Status.PASSED, at=T0 + timedelta(minutes=5))  # the scan fixed it first
    calls = calls_to(hub)
    summary = publisher(hub).publish(
        [fixed], {fixed["Id"]: RESOLUTION_NOTE}, refresh_before=T0 - WEEK
    )
    assert len(calls) == 2  # the active findings, then those archived since the scan's reading
    held = stored(hub)[fixed["Id"]]
    assert (summary.superseded, summary.imported, summary.resolved) == (1, 0, 0)
    assert (held["RecordState"], held["Workflow"]["Status"]) == ("ARCHIVED", "NEW")


@pytest.mark.parametrize(
    "event_after_read", [timedelta(0), timedelta(minutes=3)], ids=["at-the-read", "after-it"]
)
def test_a_slow_drift_scan_does_not_archive_what_an_event_published_during_it(
    hub, event_after_read: timedelta
) -> None:
    """The scan reads the account at `at` and produces finding 1 only. While it runs, events
    publish findings it never produced: finding 2 re-read (its port closed), finding 3 new (an
    instance launched after the read). They are newer than anything the scan knows: left
    active, and not sent (an archived copy would be billed, and is older than what it hides).
    Finding 4, untouched since the last scan, is archived as before."""
    from guardrail.publisher import ArchiveMissing

    generators = frozenset({f"ssm-guardrail/{SSH_OPEN.id}"})
    product = finding(1)["ProductArn"]
    publisher(hub).publish([finding(n) for n in (1, 2, 4)], refresh_before=T0 - WEEK)
    at = T0 + timedelta(hours=1)
    by_events = [
        finding(2, Status.PASSED, at=at + event_after_read),
        finding(3, at=at + event_after_read),
    ]
    assert publisher(hub).publish(by_events).ok
    imports = calls_to(hub, "BatchImportFindings")  # each finding sent is billed

    summary = publisher(hub).publish(
        [finding(1, at=at)],
        refresh_before=at - WEEK,
        archive=ArchiveMissing(product, generators, at),
    )

    assert summary.ok and summary.unchanged == 1
    sent = [f["Id"] for call in imports for f in call["Findings"]]
    assert sent == [finding(4)["Id"]] and summary.imported == 1
    held = stored(hub)
    assert held[finding(4)["Id"]]["RecordState"] == "ARCHIVED"
    for by_event in by_events:
        kept = held[by_event["Id"]]
        assert (kept["RecordState"], kept["UpdatedAt"]) == ("ACTIVE", by_event["UpdatedAt"])
        assert kept["Compliance"] == by_event["Compliance"]


def archived(n: int, at: datetime) -> dict[str, Any]:
    """What an event (or a scan) builds for a resource gone since: NOT_APPLICABLE, archived."""
    return finding(n, Status.NOT_APPLICABLE, at=at)


def test_a_drift_scan_archiving_a_fixed_instance_keeps_it_resolved(aws, account, hub) -> None:
    """Fixed (PASSED, RESOLVED), then terminated: the next drift scan, still listing it, archives
    its finding PASSED. NOT_AVAILABLE would make Security Hub reset RESOLVED to NEW and the fix
    would drop out of the resolved insight."""
    group = account.group(OPEN_SSH)
    instance = account.instance([group])
    only_ssh = {"controls": (SSH_OPEN.id,)}
    guardrail_at(aws, T0, mode="enforce", **only_ssh).run()
    (fixed,) = held_for(hub, instance)
    assert (fixed["Compliance"]["Status"], fixed["Workflow"]["Status"]) == ("PASSED", "RESOLVED")
    account.ec2.terminate_instances(InstanceIds=[instance])
    guardrail_at(aws, T0 + timedelta(hours=1), **only_ssh).run()
    (held,) = held_for(hub, instance)
    assert held["RecordState"] == "ARCHIVED"
    assert (held["Compliance"]["Status"], held["Workflow"]["Status"]) == ("PASSED", "RESOLVED")


def test_an_event_archives_what_security_hub_holds_as_it_holds_it(hub) -> None:
    """An event names resources gone since (no scan read-back): it reads back just those Ids.
    A stored PASSED (fixed, RESOLVED) finding is archived PASSED and stays RESOLVED; a stored
    FAILED one is archived NOT_AVAILABLE; a newer stored reading is left alone; one never
    stored is not imported (nothing to archive)."""
    fixed, failing, newer = finding(1, Status.PASSED), finding(2), finding(3, at=T0 + WEEK)
    assert publisher(hub).publish([fixed, failing, newer], {fixed["Id"]: "fixed"}).ok
    later = T0 + timedelta(hours=1)
    gone = [archived(n, later) for n in (1, 2, 3, 4)]
    summary = publisher(hub).publish(gone, read_back=[f["Id"] for f in gone])
    assert summary.ok and summary.imported == 2
    assert summary.superseded == 1 and summary.unchanged == 1
    held = stored(hub)
    assert held[fixed["Id"]]["RecordState"] == held[failing["Id"]]["RecordState"] == "ARCHIVED"
    assert held[fixed["Id"]]["Compliance"]["Status"] == "PASSED"
    assert held[fixed["Id"]]["Workflow"]["Status"] == "RESOLVED"
    assert held[failing["Id"]]["Compliance"]["Status"] == "NOT_AVAILABLE"
    assert held[newer["Id"]]["RecordState"] == "ACTIVE"
    assert archived(4, later)["Id"] not in held
    # One GetFindings for the four Ids, one import.
    assert summary.calls == 2


def test_an_event_that_cannot_read_back_archives_as_built(hub) -> None:
    """GetFindings refused (an older policy, an SCP): the archived findings go in as built,
    as before the read-back; nothing is lost."""
    publisher(hub).publish([finding(1)])
    stub = Stubber(hub)
    stub.add_client_error("get_findings", "AccessDeniedException", http_status_code=403)
    with stub:
        stub.add_response(
            "batch_import_findings", {"FailedCount": 0, "SuccessCount": 2, "FailedFindings": []}
        )
        gone = [archived(1, T0 + WEEK), archived(2, T0 + WEEK)]
        summary = publisher(hub).publish(gone, read_back=[f["Id"] for f in gone])
    assert summary.imported == 2 and not summary.failed


ONLY_SSH = {"controls": (SSH_OPEN.id,)}


def fixed_late_then_open_again(aws: Any, account: Any, hub: Any) -> tuple[str, Any, dict]:
    """An event fixes a group at T0+5 without publishing yet; the group is opened again and a
    newer reading (T0+7) of it, FAILED, is in Security Hub. Returns the group, the event's
    report (to publish late) and that newer finding."""
    from guardrail.scope import Scope

    group = account.group(OPEN_SSH)
    account.instance([group])
    event = guardrail_at(
        aws, T0, T0 + timedelta(minutes=5), mode="enforce", publish=False, **ONLY_SSH
    ).run(Scope(group_ids=frozenset({group})))
    (fixed,) = [e for e in event.evaluations if e.result.resource_id == group]
    assert fixed.remediated
    account.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[OPEN_SSH])
    newer = build_finding(fixed.result, SSH_OPEN, generated_at=T0 + timedelta(minutes=7))
    assert publisher(hub).publish([newer]).ok
    return group, event, newer


@pytest.mark.parametrize("late_mark_by", ["ssm-guardrail", "alice"])
def test_a_drift_scan_reopens_a_failing_finding_only_a_late_fix_mark_resolved(
    aws, account, hub, late_mark_by
) -> None:
    """An event fixes the group at T0+5 but publishes late: meanwhile a newer reading (T0+7)
    found it open again and could not fix it. The fix's PASSED import is ignored (older), yet
    BatchUpdateFindings marks the FAILED finding RESOLVED: hidden from every failing insight.
    The next drift scan, finding it still failing, sets it NEW again. A person's RESOLVED
    (their own note) is theirs: left alone."""
    from guardrail.publisher import REOPEN_NOTE

    group, event, newer = fixed_late_then_open_again(aws, account, hub)
    if late_mark_by == "ssm-guardrail":
        guardrail_at(aws, T0 + timedelta(minutes=9), **ONLY_SSH).publish(event)
    else:
        hub.batch_update_findings(
            FindingIdentifiers=[{"Id": newer["Id"], "ProductArn": newer["ProductArn"]}],
            Workflow={"Status": "RESOLVED"},
            Note={"Text": "accepted until the migration", "UpdatedBy": late_mark_by},
        )
    (hidden,) = held_for(hub, group)
    assert (hidden["Compliance"]["Status"], hidden["Workflow"]["Status"]) == ("FAILED", "RESOLVED")

    scan = guardrail_at(aws, T0 + timedelta(hours=1), **ONLY_SSH).run()

    (held,) = held_for(hub, group)
    assert held["Compliance"]["Status"] == "FAILED"
    if late_mark_by == "ssm-guardrail":
        assert held["Workflow"]["Status"] == "NEW" and held["Note"]["Text"] == REOPEN_NOTE
        assert scan.published.reopened == 1 and scan.published.ok
    else:
        assert held["Workflow"]["Status"] == "RESOLVED" and scan.published.reopened == 0


def test_a_person_resolving_after_our_reopen_is_not_reopened_again(aws, account, hub) -> None:
    """After the drift scan reopened a finding a late fix mark had hidden (our REOPEN note), a
    person sets it RESOLVED without a note (console, automation rule): their choice stands.
    Taking our reopen note for a late fix mark reopened it again at every scan."""
    from guardrail.publisher import REOPEN_NOTE

    group, event, _ = fixed_late_then_open_again(aws, account, hub)
    guardrail_at(aws, T0 + timedelta(minutes=9), **ONLY_SSH).publish(event)  # the late mark
    assert guardrail_at(aws, T0 + timedelta(hours=1), **ONLY_SSH).run().published.reopened == 1
    (held,) = held_for(hub, group)
    assert held["Workflow"]["Status"] == "NEW" and held["Note"]["Text"] == REOPEN_NOTE
    hub.batch_update_findings(
        FindingIdentifiers=[{"Id": held["Id"], "ProductArn": held["ProductArn"]}],
        Workflow={"Status": "RESOLVED"},
    )
    again = guardrail_at(aws, T0 + timedelta(hours=2), **ONLY_SSH).run()
    (held,) = held_for(hub, group)
    assert again.published.reopened == 0 and held["Workflow"]["Status"] == "RESOLVED"


@pytest.mark.parametrize("commented", [False, True], ids=["no-note", "a-persons-note-before"])
def test_a_missed_resolve_is_redone_despite_a_persons_comment_before_the_fix(
    hub, commented
) -> None:
    """A fix's RESOLVED mark failed to land, with no note at all or after a person commented
    while the finding was failing (a ticket link). The next drift scan resolves it: only a note
    written after the fix (a person reopening it) stands in the way. It stayed PASSED and NEW
    for good."""
    from guardrail.model import FixRecord, Outcome

    failed = finding(1, at=T0)
    assert publisher(hub).publish([failed]).ok
    if commented:
        hub.batch_update_findings(
            FindingIdentifiers=[{"Id": failed["Id"], "ProductArn": failed["ProductArn"]}],
            Note={"Text": "OPS-42: owner asked to close port 22", "UpdatedBy": "alice"},
        )
    fix_at = datetime.now(UTC) + timedelta(minutes=1)  # after the note Security Hub timestamps
    result = Result(SSH_OPEN.id, ResourceType.INSTANCE, f"i-{1:017x}", Status.FAILED, "HIGH",
                    "open", account_id=ACCOUNT, region=REGION)  # fmt: skip
    record = FixRecord(SSH_OPEN.id, result.resource_id, "revoke", Outcome.APPLIED, at=fix_at)
    fixed = build_finding(result, SSH_OPEN, generated_at=fix_at, fixes=[record], remediated=True)
    assert publisher(hub).publish([fixed]).ok  # imported, its RESOLVED mark never sent
    assert stored(hub)[fixed["Id"]]["Workflow"]["Status"] == "NEW"
    scan = finding(1, Status.PASSED, at=fix_at + timedelta(hours=1))
    summary = publisher(hub).publish([scan], refresh_before=fix_at - WEEK)
    held = stored(hub)[fixed["Id"]]
    assert held["Workflow"]["Status"] == "RESOLVED", summary
    assert held["Note"]["UpdatedBy"] == "ssm-guardrail"


def test_the_resolved_insight_counts_fixes_not_a_persons_accepted_risk(hub) -> None:
    """RESOLVED by a person on a finding still FAILED is not in "resolved in the last 7 days"
    (the fixes); a fixed, PASSED and RESOLVED one is."""
    from guardrail.findings import RESOLUTION_NOTE
    from guardrail.insights import RESOLVED_INSIGHT, finding_insights

    now = datetime.now(UTC) - timedelta(hours=1)
    accepted, fixed = finding(1, at=now), finding(2, Status.PASSED, at=now)
    assert publisher(hub).publish([accepted, fixed]).ok
    for item, who, text in (
        (accepted, "alice", "bastion: risk accepted"),
        (fixed, "ssm-guardrail", RESOLUTION_NOTE),
    ):
        hub.batch_update_findings(
            FindingIdentifiers=[{"Id": item["Id"], "ProductArn": item["ProductArn"]}],
            Workflow={"Status": "RESOLVED"},
            Note={"Text": text, "UpdatedBy": who},
        )
    insight = finding_insights(fixed["ProductArn"])[RESOLVED_INSIGHT]
    shown = hub.get_findings(Filters=insight.filters)["Findings"]
    assert [f["Id"] for f in shown] == [fixed["Id"]]
