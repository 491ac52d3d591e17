"""The drift scan keeps time to report what it did. Lambda kills a run at its timeout: one killed
after its fixes and before Security Hub heard of them loses their record (the next scan finds
them done and cannot tell who did them). Near the end it stops starting fixes (SKIPPED, for the
next scan) and publishes what it did."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

from guardrail.controls.base import OUT_OF_TIME
from guardrail.model import Outcome
from handlers import drift_scan

from tests.handlers import test_on_change
from tests.handlers.test_on_change import ROLE, SSH, World

world = test_on_change.world  # the emulated account fixture

ASSOCIATE = "ec2:AssociateIamInstanceProfile"


class Context(test_on_change.Context):
    """A Lambda context with this much time left."""

    function_name = "ssm-guardrail-DriftScan"

    def __init__(self, remaining_seconds: float) -> None:
        self.remaining_ms = int(remaining_seconds * 1000)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_fixes_stop_at_the_deadline_and_what_was_done_is_published(world: World):
    instances = world.launch(3)  # none has a profile
    guardrail = world.guardrail("enforce", controls=(ROLE,))
    # Time is the number of associations made: the deadline passes after the first.
    guardrail.monotonic = lambda: world.calls.get(ASSOCIATE, 0)

    report = guardrail.run(fix_deadline=1)

    assert world.calls[ASSOCIATE] == 1
    applied = [f for f in report.fixes if f.outcome is Outcome.APPLIED]
    late = [f for f in report.fixes if f.reason == OUT_OF_TIME]
    assert len(applied) == 1 and len(late) == 2
    assert {f.outcome for f in late} == {Outcome.SKIPPED}
    fixed = applied[0].resource_id
    assert [i for i in instances if world.profile_of(i)] == [fixed]
    # The fix is on record and resolved; the other two stay FAILED for the next scan.
    assert report.published is not None and report.published.ok
    finding = world.finding(ROLE, fixed)
    assert finding["Compliance"]["Status"] == "PASSED"
    assert finding["Workflow"]["Status"] == "RESOLVED"
    for instance in set(instances) - {fixed}:
        held = world.finding(ROLE, instance)
        assert held["Compliance"]["Status"] == "FAILED" and held["Workflow"]["Status"] == "NEW"
    # The next scan, with time, makes the rest.
    world.guardrail("enforce", controls=(ROLE,)).run()
    assert all(world.profile_of(i) for i in instances)


def test_a_drift_scan_with_too_little_time_left_changes_nothing_and_reports_all(world: World):
    bad = world.group("ops")
    world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    before = world.state()
    guardrail = world.guardrail("enforce")
    deadline = drift_scan.fix_deadline(Context(100), guardrail.monotonic())

    result = drift_scan.handle({}, guardrail, deadline)

    assert world.state() == before  # no group closed, no profile, no preferences
    # The group's revoke and the instance's profile (the preferences are as the stack left them).
    assert result["fixes"] == {"skipped": 2} and result["left_failed"] >= 2
    assert result["published"]["errors"] == []
    for control in (SSH, ROLE):
        assert world.finding(control, instance)["Compliance"]["Status"] == "FAILED"


def test_the_deadline_keeps_30_percent_and_at_least_2_minutes_to_publish():
    assert drift_scan.fix_deadline(Context(900), now=1000.0) == 1000.0 + 900 - 270
    assert drift_scan.fix_deadline(Context(300), now=0.0) == 300 - 120
    assert drift_scan.fix_deadline(Context(100), now=0.0) < 0  # no time to fix anything
    assert drift_scan.fix_deadline(object(), now=0.0) == math.inf  # a manual run: no limit


def test_the_lambda_handler_passes_its_remaining_time(world: World, monkeypatch):
    bad = world.group("ops")
    world.open_ssh(bad)
    world.launch(groups=[bad])
    guardrail = world.guardrail("enforce")
    monkeypatch.setattr(drift_scan, "_guardrail", lambda _arn: guardrail)
    before = world.state()

    result: Any = drift_scan.lambda_handler({}, Context(60))

    assert world.state() == before and result["fixes"]["skipped"] >= 2
    assert "applied" not in result["fixes"]


def test_a_clean_drift_scan_counts_itself_and_powertools_does_not_warn(world: World, capsys):
    """A clean scan's own counts go out per control (single_metric); the handler's metric set
    held nothing, so Powertools warned "No application metrics to publish" on every such run.
    ScansCompleted fills it: one per scan that got to its end."""
    world.launch()
    guardrail = world.guardrail("report")
    drift_scan.metrics.clear_metrics()  # what earlier tests left in the module's metric set
    capsys.readouterr()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drift_scan.handle({}, guardrail)  # the scan alone, so only the flush below can warn
        drift_scan.metrics.flush_metrics()

    assert [str(w.message) for w in caught] == []
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    # EMF as Powertools writes it: each metric's values as a list.
    assert [blob["ScansCompleted"] for blob in emitted if "ScansCompleted" in blob] == [[1.0]]


def test_a_group_closed_meanwhile_is_done_not_deferred_when_time_is_out(world: World):
    """Someone removed the wide rule between the scan's reading and its fix: with no time left
    the group is still already compliant (PASSED), not a fix deferred to the next scan."""
    bad = world.group("ops")
    rule = world.open_ssh(bad)
    instance = world.launch(groups=[bad])[0]
    guardrail = world.guardrail("enforce", fresh=True, controls=(SSH,))
    reads: list[str] = []

    def someone_closes_it_after_the_first_read(**_: Any) -> None:
        reads.append("DescribeSecurityGroupRules")
        if len(reads) == 2:  # the fix re-reads the group's rules as they are now
            world.ec2.revoke_security_group_ingress(GroupId=bad, SecurityGroupRuleIds=[rule])

    guardrail.clients.session.events.register(
        "before-call.ec2.DescribeSecurityGroupRules", someone_closes_it_after_the_first_read
    )
    report = guardrail.run(fix_deadline=-math.inf)

    assert len(reads) == 2 and world.internet_ssh(bad) == []
    assert [(f.resource_id, f.outcome) for f in report.fixes] == [(bad, Outcome.ALREADY_COMPLIANT)]
    assert report.published is not None and report.published.ok
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "PASSED"
