"""cdk-nag (AwsSolutions) and cfn-lint gate every synth; acknowledgements are exact and needed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import REGIONS, Synth, cdk_json_context, enforce_context, without_cli_environment

pytestmark = pytest.mark.infra


def test_synth_passes_cdk_nag(synth: Synth, tmp_path: Path) -> None:
    """The fixture's synth raises RuntimeError("ValidationFailed") on any unacknowledged
    finding, so it passing says nothing unless cdk-nag runs on that app: the same app with one
    unacknowledged finding added fails synth, naming it (an empty report proved nothing)."""
    from aws_cdk import Stack, aws_sqs

    from app import build_app

    report = json.loads((synth.outdir / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r.get("conclusion") != "success"] == []
    with without_cli_environment():
        app = build_app(context=enforce_context(), outdir=str(tmp_path))
        (stack, *_) = [c for c in app.node.children if isinstance(c, Stack)]
        aws_sqs.Queue(stack, "PlantedQueue")  # no DLQ, no SSL-only policy: AwsSolutions-SQS3/4
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            app.synth()
    (nag,) = json.loads((tmp_path / "validation-report.json").read_text())["pluginReports"]
    flagged = {c["constructPath"] for v in nag["violations"] for c in v["violatingConstructs"]}
    assert flagged and all("PlantedQueue" in path for path in flagged), flagged


def test_cfn_lint_finds_no_errors(synth: Synth) -> None:
    from cfnlint.api import ManualArgs, lint_file

    assert len(synth.template_files) == 3
    for path in synth.template_files:
        matches = lint_file(path, config=ManualArgs(regions=list(REGIONS)))
        errors = [
            f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E")
        ]
        assert errors == [], path.name
        # CDK's own DependsOn next to a Ref is the only warning we accept (W3005).
        assert {m.rule.id for m in matches} <= {"W3005"}, [str(m) for m in matches]


class RecordingValidations:
    """Stands in for aws_cdk.Validations inside stacks.nag: records acknowledgements, applies none."""

    acknowledged: list[tuple[str, str, str]] = []

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    @classmethod
    def of(cls, scope: Any) -> RecordingValidations:
        return cls(scope)

    def acknowledge(self, *rules: Any) -> None:
        for rule in rules:
            self.acknowledged.append((self.scope.node.path, rule.id, rule.reason))

    def add_plugins(self, *plugins: Any) -> None:
        from aws_cdk import Validations

        Validations.of(self.scope).add_plugins(*plugins)


@dataclass
class Unacknowledged:
    acknowledged: list[tuple[str, str, str]]  # (construct path, finding, reason)
    violations: list[dict[str, Any]]
    template: dict[str, Any]  # written before validation runs
    template_file: Path


@pytest.fixture(scope="module")
def unacknowledged(tmp_path_factory: pytest.TempPathFactory) -> Unacknowledged:
    """Synthesize the default app (cdk.json context: report mode, region-agnostic) with
    acknowledgements off: what the code acknowledges, and what cdk-nag then reports."""
    import stacks.nag
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out.unacknowledged")
    RecordingValidations.acknowledged = []
    real = stacks.nag.Validations
    stacks.nag.Validations = RecordingValidations  # type: ignore[assignment,misc]
    try:
        with without_cli_environment(), pytest.raises(RuntimeError, match="ValidationFailed"):
            build_app(context=cdk_json_context(), outdir=str(outdir)).synth()
    finally:
        stacks.nag.Validations = real  # type: ignore[misc]
    report = json.loads(Path(outdir, "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    template_file = Path(outdir, "SsmGuardrail.template.json")
    return Unacknowledged(
        acknowledged=list(RecordingValidations.acknowledged),
        violations=nag["violations"],
        template=json.loads(template_file.read_text()),
        template_file=template_file,
    )


def _covers(ack_path: str, construct_path: str) -> bool:
    return construct_path == ack_path or construct_path.startswith(ack_path + "/")


def test_build_app_runs_aws_solutions_checks(unacknowledged: Unacknowledged) -> None:
    violations = unacknowledged.violations
    assert violations, (
        "without acknowledgements cdk-nag must report findings: is the plugin registered?"
    )
    assert {v["severity"] for v in violations} == {"error"}


def test_every_finding_is_acknowledged_exactly_and_every_acknowledgement_is_needed(
    unacknowledged: Unacknowledged,
) -> None:
    acknowledged, violations = unacknowledged.acknowledged, unacknowledged.violations
    findings = [
        (v["ruleName"], c["constructPath"]) for v in violations for c in v["violatingConstructs"]
    ]
    uncovered = [
        f
        for f in findings
        if not any(rule == f[0] and _covers(path, f[1]) for path, rule, _ in acknowledged)
    ]
    assert uncovered == []
    unused = [
        (path, rule)
        for path, rule, _ in acknowledged
        if not any(rule == r and _covers(path, p) for r, p in findings)
    ]
    assert unused == [], "acknowledgements that match no finding (stale or misspelled)"


def test_acknowledgements_give_reasons(unacknowledged: Unacknowledged) -> None:
    acknowledged = unacknowledged.acknowledged
    assert acknowledged
    for path, rule, reason in acknowledged:
        assert rule.startswith("AwsSolutions-"), rule
        assert len(reason.split()) >= 12, (path, rule, reason)


def test_default_report_mode_stack_grants_no_fix_and_lints_clean(
    unacknowledged: Unacknowledged,
) -> None:
    from cfnlint.api import ManualArgs, lint_file

    from .policy_walker import identity_statements, is_mutating, violations

    t = unacknowledged.template
    lambda_policies = {k for k, v in t["Resources"].items() if v["Type"] == "AWS::IAM::Policy"}
    mutating = {
        a
        for lid, s in identity_statements(t)
        if lid in lambda_policies
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        if is_mutating(a)
    }
    assert mutating == {
        "securityhub:BatchImportFindings",
        "securityhub:BatchUpdateFindings",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
    }
    assert violations(t, pass_roles=set()) == []
    matches = lint_file(unacknowledged.template_file, config=ManualArgs(regions=["us-east-1"]))
    assert [str(m) for m in matches if m.rule.id.startswith("E")] == []


def test_without_notification_email_the_alarm_topic_has_no_subscription(
    unacknowledged: Unacknowledged,
) -> None:
    # cdk.json's default notificationEmail is "": nobody gets an unexpected confirmation mail.
    t = unacknowledged.template
    (topic,) = [r for r in t["Resources"].values() if r["Type"] == "AWS::SNS::Topic"]
    assert "Subscription" not in topic["Properties"]
    assert [r for r in t["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"] == []
    alarms = [r for r in t["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert alarms and all(a["Properties"]["AlarmActions"] for a in alarms)


def test_python_app_py_synthesizes_with_cdk_json_as_the_cli_would(tmp_path) -> None:
    """`python app.py` with no CDK CLI in front (no CDK_CONTEXT_JSON): cdk.json's context, feature
    flags included, still applies. Without it the access-log bucket failed synth (its ownership
    rule needs @aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy)."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDK_")}
    env.update(CDK_OUTDIR=str(tmp_path), JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    run = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert list(tmp_path.glob("SsmGuardrail*.template.json"))
