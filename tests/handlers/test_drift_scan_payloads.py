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
