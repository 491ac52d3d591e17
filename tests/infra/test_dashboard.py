"""The CloudWatch dashboard graphs exactly the metrics the Lambdas emit.

The emitted side is not a list typed into this test: the real handler code (drift_scan.handle,
on_change.handle and runtime.record_metrics) runs through real Powertools with the environment
the template gives the functions, and its EMF output is read back. A renamed metric, a changed
dimension or a different namespace/service name then shows up here as an empty graph would in
the console.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from guardrail.controls import REGISTRY
from guardrail.controls.base import OUT_OF_TIME
from guardrail.engine import ScanReport, Stop
from guardrail.events import Change, DropKind, Dropped
from guardrail.model import Outcome, Status
from guardrail.publisher import PublishSummary
from guardrail.replay import EventOutcome, RetryableEventError
from guardrail.runtime import ControlCrashed
from guardrail.scope import Scope

from .conftest import MAIN, Synth

pytestmark = pytest.mark.infra

# (namespace, dimension names, metric name, service dimension value)
MetricKey = tuple[str, tuple[str, ...], str, str]

SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)', 'Sum', 300\)")
TERM = re.compile(r'(?P<key>\w+)="(?P<value>[^"]*)"')


def dashboard_body(synth: Synth, stack: str = MAIN) -> dict[str, Any]:
    """The dashboard JSON with CloudFormation tokens (function names, region) as "TOKEN"."""
    (dashboard,) = synth.resources(stack, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))


def graphed(body: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """(widget title, metric entry) for every metric line of every graph."""
    return [
        (w["properties"].get("title", ""), m)
        for w in body["widgets"]
        if w["type"] == "metric"
        for m in w["properties"].get("metrics", [])
    ]


def searched(body: dict[str, Any]) -> set[MetricKey]:
    """What each schema-bound SEARCH of the dashboard asks CloudWatch for."""
    keys: set[MetricKey] = set()
    for _, entry in graphed(body):
        options = entry[-1] if entry and isinstance(entry[-1], dict) else {}
        expression = options.get("expression", "")
        if "SEARCH(" not in expression:
            continue
        match = SEARCH.fullmatch(expression)
        assert match, f"not a schema-bound SEARCH over 5 minutes: {expression}"
        namespace, *dimensions = match["schema"].split(",")
        terms = {t["key"]: t["value"] for t in TERM.finditer(match["terms"])}
        keys.add((namespace, tuple(sorted(dimensions)), terms["MetricName"], terms["service"]))
    return keys


def _report() -> ScanReport:
    """A report with every status and every fix outcome of every control, and a Security Hub
    answer with a throttled entry (which makes on-change ask EventBridge to retry)."""
    evaluations = [
        SimpleNamespace(
            result=SimpleNamespace(control=cid, status=status),
            left_failed=status is Status.FAILED,
        )
        for cid in REGISTRY
        for status in Status
    ]
    fixes = [
        SimpleNamespace(
            control=cid,
            outcome=outcome,
            action="fix",
            resource_id="r-1",
            error_code=None,
            reason=reason,
        )
        for cid in REGISTRY
        for outcome in Outcome
        for reason in ("", OUT_OF_TIME)
    ]
    published = PublishSummary(
        imported=1,
        failed=[{"Id": "f-2", "ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}],
        errors=["publishing to Security Hub failed: boom"],
    )
    return ScanReport(
        account_id="111122223333",
        region="us-east-1",
        evaluations=evaluations,  # type: ignore[arg-type]
        fixes=fixes,  # type: ignore[arg-type]
        published=published,
    )


def emitted(
    function_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> set[MetricKey]:
    """Every metric the two handlers emit, as Powertools writes it (EMF on stdout)."""
    import handlers.drift_scan as drift_scan
    import handlers.on_change as on_change
    from aws_lambda_powertools import Metrics

    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.setenv(name, function_env[name])
    metrics = Metrics()  # what the handler module builds at cold start, from this environment
    metrics.clear_metrics()
    monkeypatch.setattr(drift_scan, "metrics", metrics)
    monkeypatch.setattr(on_change, "metrics", metrics)
    capsys.readouterr()

    report = _report()
    drift_scan.handle({}, SimpleNamespace(run=lambda scope, **_: report))  # type: ignore[arg-type]
    stopped = _report()  # every control's check stopped: counted, then the invocation fails
    stopped.crashed = [Stop(cid, "check", "KeyError: 'x'") for cid in REGISTRY]
    with pytest.raises(ControlCrashed):
        drift_scan.handle({}, SimpleNamespace(run=lambda scope, **_: stopped))  # type: ignore[arg-type]
    dropped = EventOutcome(Dropped("not an event", DropKind.MALFORMED))
    ignored = EventOutcome(Dropped("our own change", DropKind.OWN_CHANGE))
    deferred = EventOutcome(Dropped("more roles than an event evaluates", DropKind.DEFERRED))
    evaluated = EventOutcome(Change(Scope(instance_ids=frozenset({"i-1"})), "RunInstances"), report)
    for outcome in (dropped, ignored, deferred, evaluated):
        monkeypatch.setattr(on_change, "process_event", lambda *a, _o=outcome, **k: _o)
        if outcome is evaluated:
            # The throttled Security Hub entry: counted as EventsRetried, raised for EventBridge.
            with pytest.raises(RetryableEventError):
                on_change.handle({}, SimpleNamespace())  # type: ignore[arg-type]
        else:
            on_change.handle({}, SimpleNamespace())  # type: ignore[arg-type]
    metrics.flush_metrics()
    metrics.clear_metrics()

    keys: set[MetricKey] = set()
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    keys.add(
                        (
                            directive["Namespace"],
                            tuple(sorted(dimensions)),
                            metric["Name"],
                            blob["service"],
                        )
                    )
    return keys


def _function_envs(synth: Synth) -> list[dict[str, Any]]:
    return [
        f["Properties"]["Environment"]["Variables"]
        for f in synth.resources(MAIN, "AWS::Lambda::Function").values()
    ]


def test_dashboard_graphs_exactly_the_metrics_the_lambdas_emit(
    synth: Synth, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    envs = _function_envs(synth)
    assert (
        len({(e["POWERTOOLS_SERVICE_NAME"], e["POWERTOOLS_METRICS_NAMESPACE"]) for e in envs}) == 1
    )
    produced = emitted(envs[0], monkeypatch, capsys)
    names = {name for _, _, name, _ in produced}
    # The run above must have exercised what the issue asks the dashboard to show.
    assert {
        "FindingsFailed",
        "FixesApplied",
        "FixesFailed",
        "FixesDeferred",
        "PublishErrors",
        "ScansCompleted",
    } <= names
    per_control = {(dims, name) for _, dims, name, _ in produced if "control" in dims}
    assert ("control", "service") in {dims for dims, _ in per_control}

    shown = searched(dashboard_body(synth))
    assert shown - produced == set(), "graphs that would stay empty (name, namespace or dims)"
    assert produced - shown == set(), "metrics the Lambdas emit that no graph shows"


def test_per_control_graphs_label_each_line_with_its_control(synth: Synth) -> None:
    for title, entry in graphed(dashboard_body(synth)):
        options = entry[-1] if isinstance(entry[-1], dict) else {}
        if "{SsmGuardrail,control,service}" in options.get("expression", ""):
            assert "per control" in title
            assert options["label"] == "${PROP('Dim.control')}"


def test_dashboard_shows_each_lambdas_errors_duration_invocations_and_throttles(
    synth: Synth,
) -> None:
    lambda_lines = [
        (title, entry)
        for title, entry in graphed(dashboard_body(synth))
        if entry and entry[0] == "AWS/Lambda"
    ]
    functions = len(synth.resources(MAIN, "AWS::Lambda::Function"))
    for metric, statistic in (
        ("Errors", "Sum"),
        ("Duration", "p99"),
        ("Invocations", "Sum"),
        ("Throttles", "Sum"),
    ):
        lines = [e for _, e in lambda_lines if e[1] == metric]
        assert len(lines) == functions, metric
        assert all(e[2] == "FunctionName" and e[-1]["stat"] == statistic for e in lines)
    (alarms,) = [w for w in dashboard_body(synth)["widgets"] if w["type"] == "alarm"]
    assert len(alarms["properties"]["alarms"]) == len(
        synth.resources(MAIN, "AWS::CloudWatch::Alarm")
    )


def test_a_failed_fix_refused_findings_or_an_unreadable_event_sound_an_alarm(
    synth: Synth, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Each ends the invocation normally, so neither the Lambda errors nor the dead letters
    alarm fired: a fix that failed (internet SSH left open) reached only a graph. Each alarm
    names a metric exactly as the Lambdas emit it (namespace, dimensions, service), per
    control for the fixes, and notifies the alarm topic."""
    produced = emitted(_function_envs(synth)[0], monkeypatch, capsys)
    alarms = [
        a["Properties"]
        for a in synth.resources(MAIN, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") not in (None, "AWS/Lambda", "AWS/SQS")
    ]
    watched = {}
    for alarm in alarms:
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        key = (alarm["Namespace"], tuple(sorted(dimensions)), alarm["MetricName"])
        assert (*key, dimensions["service"]) in produced, f"an alarm that can never fire: {key}"
        assert alarm["Threshold"] == 1 and alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"], "an alarm nobody hears"
        watched[alarm["MetricName"]] = watched.get(alarm["MetricName"], set()) | {
            dimensions.get("control")
        }
    assert watched == {
        "FixesFailed": set(REGISTRY),
        "PublishErrors": {None},
        "EventsDropped": {None},
    }
