"""The drift scan accepts every payload that can invoke it: a classic schedule rule (source
aws.events, detail {}), EventBridge Scheduler (source aws.scheduler, detail the string "{}"), and a
manual invocation with {}. Each runs the full scan and fixes the account."""

from __future__ import annotations

import json
from typing import Any

import pytest
from handlers import drift_scan

from tests.handlers import test_on_change
from tests.handlers.test_on_change import (
    ACCOUNT,
    FIXTURES,
    PLACEHOLDER_ACCOUNT,
    REGION,
    ROLE,
    SSH,
    World,
)

world = test_on_change.world  # the emulated account fixture


def payload(name: str) -> Any:
    if name == "manual":
        return {}
    return json.loads((FIXTURES / f"{name}.json").read_text().replace(PLACEHOLDER_ACCOUNT, ACCOUNT))


def test_the_fixtures_are_the_two_schedule_shapes():
    rule, scheduler = payload("schedule_rule"), payload("scheduler")
    assert rule["source"] == "aws.events" and rule["detail"] == {}
    assert scheduler["source"] == "aws.scheduler" and scheduler["detail"] == "{}"


@pytest.mark.parametrize(
    ("name", "trigger"),
    [("schedule_rule", "aws.events"), ("scheduler", "aws.scheduler"), ("manual", "manual")],
)
def test_every_payload_scans_and_fixes_the_whole_region(world: World, name, trigger):
    bad = world.group("ops")
    world.open_ssh(bad)
    first = world.launch(groups=[bad])[0]
    second = world.launch()[0]  # no instance profile
    assert drift_scan.trigger(payload(name)) == trigger

    result = drift_scan.handle(payload(name), world.guardrail("enforce"))

    assert result["account"] == ACCOUNT and result["region"] == REGION
    assert result["left_failed"] == 0 and result["fixes"]["applied"] >= 2
    assert world.internet_ssh(bad) == []
    assert world.profile_of(first) and world.profile_of(second)
    for instance in (first, second):
        assert world.finding(SSH, instance)["Compliance"]["Status"] == "PASSED"
        assert world.finding(ROLE, instance)["Compliance"]["Status"] == "PASSED"


@pytest.mark.parametrize("name", ["schedule_rule", "scheduler", "manual"])
def test_every_payload_in_report_mode_changes_nothing(world: World, name):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    before = world.state()
    result = drift_scan.handle(payload(name), world.guardrail("report"))
    assert world.state() == before and result["left_failed"] >= 2
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "FAILED"


@pytest.mark.parametrize("detail", ["not json", "[" * 50_000], ids=["not-json", "deeply-nested"])
def test_scheduler_detail_that_is_not_json_still_scans(world: World, detail):
    event = payload("scheduler")
    event["detail"] = detail
    assert drift_scan.trigger(event) == "aws.scheduler"
    assert drift_scan.handle(event, world.guardrail("report"))["region"] == REGION


def test_a_control_taken_out_of_the_deployment_has_its_findings_archived_by_the_drift_scan(
    world: World,
):
    """The stack's `controls` narrowed to SSH: the next drift scan archives the role control's
    findings (as Security Hub does for a control it disables), so they leave the failing
    insights instead of staying FAILED for 90 days, the instance's included. A scan that is not
    the deployment's (the CLI, an engine run) leaves them: it may select controls for a look.
    Put back, the control's findings are active again."""
    bare = world.launch()[0]  # no instance profile: its role finding is FAILED
    drift_scan.handle(payload("manual"), world.guardrail("report"))
    assert world.finding(ROLE, bare)["RecordState"] == "ACTIVE"

    world.guardrail("report", controls=(SSH,)).run()  # as `guardrail scan` runs
    assert world.finding(ROLE, bare)["RecordState"] == "ACTIVE"

    drift_scan.handle(payload("manual"), world.guardrail("report", controls=(SSH,)))
    held = world.finding(ROLE, bare)
    assert held["RecordState"] == "ARCHIVED"
    assert world.finding(SSH, bare)["RecordState"] == "ACTIVE"  # the enabled control's stay

    drift_scan.handle(payload("manual"), world.guardrail("report"))
    again = world.finding(ROLE, bare)
    assert (again["RecordState"], again["Compliance"]["Status"]) == ("ACTIVE", "FAILED")
