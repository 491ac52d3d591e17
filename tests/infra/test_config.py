"""Context knobs and stack planning: pure, no synth."""

from __future__ import annotations

import ast
import json
import re

import pytest
from guardrail.controls import REGISTRY
from guardrail.settings import Settings

from app import STACK_PREFIX, plan
from stacks.config import ConfigError, GuardrailConfig
from stacks.functions import pinned_version

from .conftest import ROOT, cdk_json_context


def config(**context: object) -> GuardrailConfig:
    return GuardrailConfig.from_context(context.get)


def test_cdk_json_documents_every_knob_with_the_code_default() -> None:
    context = cdk_json_context()
    defaults = GuardrailConfig.context_keys()
    assert {k: context[k] for k in defaults} == defaults
    assert set(context["guardrail:help"]) == set(defaults), (
        "every knob needs a line in guardrail:help"
    )
    assert context["cli-telemetry"] is False


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("guardrailmode", "guardrailMode"),
        ("GuardrailMode", "guardrailMode"),
        ("controlMode", "controlModes"),
        ("region", "regions"),
        ("mode", None),  # nothing close: every key is listed
        # Spelled as a CLI flag or in Python: these deployed the default without a word.
        ("ssh-require-ssm-online", "sshRequireSsmOnline"),
        ("modify-existing-roles", "modifyExistingRoles"),
        ("guardrail-mode", "guardrailMode"),
        ("ssh_require_ssm_online", "sshRequireSsmOnline"),
        ("controlModes.ssh-open-to-internet", "controlModes"),  # keys do not nest
    ],
)
def test_a_misspelled_context_key_fails_the_synth_naming_it(typo: str, meant: str | None) -> None:
    """`cdk deploy -c guardrailmode=enforce` used to deploy report mode without a word."""
    from app import build_app

    context = {**cdk_json_context(), typo: "enforce"}
    with pytest.raises(ConfigError, match=f"unknown context key '{typo}'") as raised:
        build_app(context=context)
    message = str(raised.value)
    if meant:
        assert f"did you mean '{meant}'?" in message
    else:
        assert "did you mean" not in message and "guardrailMode" in message


def test_cdk_s_own_context_keys_are_not_taken_for_typos() -> None:
    """cdk.json's, the CLI's (`aws:cdk:...`), lookups cached in cdk.context.json, and
    `cdk acknowledge`'s list."""
    GuardrailConfig.check_keys(
        [
            *cdk_json_context(),
            "aws:cdk:enable-path-metadata",
            "aws-cdk:enableDiffNoFail",
            "availability-zones:account=111122223333:region=eu-west-1",
            "acknowledged-issue-numbers",
            "@aws-cdk/core:newStyleStackSynthesis",
            "team-cost-centre",  # another tool's, hyphenated, like none of ours
        ]
    )


def test_cdk_json_runs_offline() -> None:
    cdk_json = json.loads((ROOT / "cdk.json").read_text())
    assert cdk_json["notices"] is False
    assert "app.py" in cdk_json["app"]


def test_the_cdk_cli_is_pinned_to_2_1148() -> None:
    # npm's aws-cdk@latest (3.0.0) cannot read this cloud-assembly schema: an unpinned or
    # drifted CLI breaks `make synth` / `cdk deploy`.
    package = json.loads((ROOT / "package.json").read_text())
    pin = package["devDependencies"]["aws-cdk"]
    assert re.fullmatch(r"2\.1148\.\d+", pin), pin
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == pin
    assert lock["packages"][""]["devDependencies"]["aws-cdk"] == pin


def test_every_python_package_is_pinned_and_the_pins_agree() -> None:
    """requirements*.txt name what we depend on, constraints.txt what those pull in: every line
    an exact version, and the two agree, so a clean clone installs what CI tested."""

    def pins(name: str) -> dict[str, str]:
        found = {}
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line or line.startswith("-r"):
                continue
            package, _, version = line.partition("==")
            assert re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version), f"{name}: {line} is not pinned"
            found[re.sub(r"[-_.]+", "-", package.split("[")[0]).lower()] = version
        return found

    constraints = pins("constraints.txt")
    for name in ("requirements.txt", "requirements-dev.txt"):
        for package, version in pins(name).items():
            assert constraints.get(package) == version, (name, package, version)
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_app_and_stacks_make_no_aws_or_git_calls() -> None:
    """Synth must run offline with no credentials: no SDK, no subprocess, no context lookups."""
    forbidden_modules = {"boto3", "botocore", "subprocess", "urllib", "http", "socket"}
    for path in [ROOT / "app.py", *sorted((ROOT / "stacks").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        assert imported.isdisjoint(forbidden_modules), (path.name, imported & forbidden_modules)
        lookups = [
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.endswith("from_lookup")
        ]
        assert lookups == [], (path.name, lookups)


def test_the_stack_defaults_are_the_engine_defaults() -> None:
    """A deployment with cdk.json's defaults behaves as the engine documents its defaults."""
    stack = Settings.from_env(GuardrailConfig().environment())
    engine = Settings()
    for name in (
        "mode",
        "control_modes",
        "controls",
        "equivalent_policy_arns",
        "modify_existing_roles",
        "accept_dhmc",
        "ssh_require_ssm_online",
        "publish",
        "finding_refresh_days",
        "session_log_prefix",
    ):
        assert getattr(stack, name) == getattr(engine, name), name


def test_cli_strings_are_parsed_like_cdk_json_values() -> None:
    from_cli = config(
        regions="us-east-1, eu-west-1",
        controlModes="ssh-open-to-internet=enforce,ssm-instance-role=report",
        modifyExistingRoles="false",
        driftScanConcurrency="2",
        equivalentPolicyArns="arn:aws:iam::123456789012:policy/Core",
    )
    assert from_cli.regions == ("us-east-1", "eu-west-1")
    assert from_cli.control_modes == {
        "ssh-open-to-internet": "enforce",
        "ssm-instance-role": "report",
    }
    assert from_cli.modify_existing_roles is False
    assert from_cli.drift_scan_concurrency == 2
    assert config(regions=["us-east-1"]).regions == ("us-east-1",)
    assert config(controlModes='{"ssm-session-logging": "enforce"}').control_modes == {
        "ssm-session-logging": "enforce"
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("guardrailMode", "fix"),
        ("controlModes", "no-such-control=enforce"),
        ("controlModes", "ssh-open-to-internet=fix"),
        ("controls", "ssh-open"),
        ("scanSchedule", "every hour"),
        # EventBridge refuses these only at deploy time: caught at synth instead.
        ("scanSchedule", "rate(1 hours)"),
        ("scanSchedule", "rate(5 hour)"),
        ("scanSchedule", "rate(0 minutes)"),
        ("scanSchedule", "cron(0 * * * *)"),
        ("scanSchedule", "cron(0 * * * * *)"),
        ("scanSchedule", "cron(0 * ? * ? *)"),
        ("scanSchedule", "cron(99 * * * ? *)"),  # minute 99
        ("scanSchedule", "cron(0 24 * * ? *)"),
        ("scanSchedule", "cron(0 12 ? * 0 *)"),  # day-of-week is 1-7
        ("scanSchedule", "cron(0 12 ? FOO MON *)"),
        ("scanSchedule", "cron(*/0 * * * ? *)"),
        ("scanSchedule", "cron(0 ? 1 * ? *)"),  # ? in hours
        ("scanSchedule", "cron(0 12 ? * 6#6 *)"),
        ("scanSchedule", "cron(0 12 ? * MON 1969)"),
        (
            "scanSchedule",
            "cron(\u00b2 12 * * ? *)",
        ),  # a superscript two: not a digit to EventBridge
        # CreateLogGroup refuses these at deploy time: caught at synth instead.
        ("sessionLogGroupName", "session logs"),
        ("sessionLogGroupName", "aws/ssm/sessions"),
        ("sessionLogGroupName", "x" * 513),
        ("sessionLogGroupName", ""),
        ("notificationEmail", "not-an-email"),
        ("regions", "eu-west-1,eu-west-1"),
        ("regions", "Europe"),
        ("sessionLogRetentionDays", "100"),
        # CliSettings is used as `env $(...)`: a blank or a glob would break or expand it.
        ("sessionLogPrefix", "audit logs/"),
        ("sessionLogPrefix", "logs-*/"),
        ("sessionLogPrefix", "/logs/"),
        ("modifyExistingRoles", "maybe"),
        ("equivalentPolicyArns", "AmazonSSMManagedInstanceCore"),
        ("onChangeConcurrency", "-1"),
        ("driftScanMemoryMb", "64"),  # Lambda's range is 128-10240
        ("driftScanMemoryMb", "20000"),
        ("onChangeMemoryMb", "100"),
        ("onChangeMemoryMb", "10241"),
        ("insightScope", "world"),
        ("findingRefreshDays", "61"),
        ("findingRefreshDays", "-1"),
        # JSON that does not parse names its key, as any other bad value does.
        ("controlModes", '{"ssh-open-to-internet": "enforce"'),
        ("regions", "[us-east-1]"),
        # int() would read these as 1 and 365.
        ("sessionLogRetentionDays", True),
        ("sessionLogRetentionDays", 365.9),
    ],
)
def test_bad_context_fails_synth_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        config(**{key: value})


@pytest.mark.parametrize(
    ("context", "why"),
    [
        # A copy-paste slip: the last mode won unseen (the CLI and the Lambdas refuse it).
        (
            {"controlModes": "ssh-open-to-internet=report,ssh-open-to-internet=enforce"},
            "ssh-open-to-internet more than once",
        ),
        (
            {"controlModes": '{"ssm-session-logging": "enforce", "ssm-session-logging": "report"}'},
            "ssm-session-logging more than once",
        ),
        # A mode for a control the deployment does not run: its author believes it enforced.
        (
            {"controls": "ssh-open-to-internet", "controlModes": "ssm-instance-role=enforce"},
            "gives a mode to ssm-instance-role, which 'controls' leaves out",
        ),
    ],
)
def test_control_modes_that_cannot_be_what_was_meant_fail_the_synth(
    context: dict[str, str], why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        config(**context)


def test_control_modes_for_controls_the_deployment_runs_are_taken() -> None:
    taken = config(
        controls="ssh-open-to-internet,ssm-instance-role",
        controlModes="ssm-instance-role=enforce",
    )
    assert taken.mode_for("ssm-instance-role") == "enforce"
    assert taken.mode_for("ssh-open-to-internet") == "report"


@pytest.mark.parametrize(
    "schedule",
    [
        "rate(1 hour)",
        "rate(2 hours)",
        "rate(30 minutes)",
        "cron(0 * * * ? *)",
        "cron(0 6 ? * MON-FRI *)",
        "cron(0/15 8-17 ? * 2-6 2025-2030)",
        "cron(0 12 L * ? *)",
        "cron(0 12 15W * ? *)",
        "cron(0 12 ? * 6#3 *)",
        "cron(0 12 ? * 5L *)",
        "cron(0 12 1,15 JAN-MAR ? *)",
        # Forms EventBridge's table does not spell out are let through (it checks at deploy):
        # refusing a valid schedule would block the deploy, accepting a bad one changes nothing.
        "cron(0 12 L-2 * ? *)",
        "cron(0 12 15w * ? *)",
        "cron(0 12 ? * fri#2 *)",
    ],
)
def test_valid_schedules_are_accepted(schedule: str) -> None:
    assert config(scanSchedule=schedule).scan_schedule == schedule


@pytest.mark.parametrize("name", ["/aws/ssm/sessions", "team.logs/ssm_sessions#1", "x" * 512])
def test_log_group_names_cloudwatch_takes_are_accepted(name: str) -> None:
    assert config(sessionLogGroupName=name).session_log_group_name == name


def test_context_becomes_engine_settings_the_engine_accepts() -> None:
    cfg = config(
        guardrailMode="enforce",
        controlModes="ssh-open-to-internet=report",
        controls="ssh-open-to-internet,ssm-instance-role",
        modifyExistingRoles="false",
        equivalentPolicyArns="arn:aws:iam::123456789012:policy/Core",
    )
    settings = Settings.from_env(cfg.environment())
    assert settings.mode == "enforce"
    assert settings.mode_for("ssh-open-to-internet") == "report"
    assert settings.mode_for("ssm-instance-role") == "enforce"
    assert settings.controls == ("ssh-open-to-internet", "ssm-instance-role")
    assert settings.modify_existing_roles is False
    assert settings.equivalent_policy_arns == ("arn:aws:iam::123456789012:policy/Core",)


def test_by_default_every_control_follows_guardrail_mode() -> None:
    assert GuardrailConfig().control_modes == {}
    assert config(guardrailMode="enforce").enforced() == list(REGISTRY)
    assert GuardrailConfig().enforced() == []


def test_plan_without_regions_is_one_environment_agnostic_stack() -> None:
    assert [(p.stack_id, p.region, p.kind) for p in plan(config(), None)] == [
        (STACK_PREFIX, None, "guardrail")
    ]


def test_plan_uses_the_cli_region_when_no_regions_are_given() -> None:
    stacks = plan(config(), "eu-west-1")
    assert [(p.stack_id, p.region, p.kind) for p in stacks] == [
        ("SsmGuardrail-eu-west-1", "eu-west-1", "guardrail"),
        ("SsmGuardrail-IamEvents-eu-west-1", "us-east-1", "iam-forwarder"),
    ]
    assert stacks[1].forward_to == ("eu-west-1",)


def test_deploying_region_by_region_keeps_every_regions_forwarder() -> None:
    """`cdk deploy --all` from a shell in eu-west-1, then from one in eu-central-1: each deploy's
    forwarder is its own stack, so the second does not replace the first and leave eu-west-1
    without IAM's events (only the hourly drift scan would see a detached core policy)."""
    forwarders = {
        (p.stack_id, p.forward_to)
        for region in ("eu-west-1", "eu-central-1")
        for p in plan(config(), region)
        if p.kind == "iam-forwarder"
    }
    assert forwarders == {
        ("SsmGuardrail-IamEvents-eu-west-1", ("eu-west-1",)),
        ("SsmGuardrail-IamEvents-eu-central-1", ("eu-central-1",)),
    }


def test_plan_forwards_iam_events_only_to_regions_other_than_us_east_1() -> None:
    stacks = plan(config(regions="us-east-1,eu-west-1,ap-southeast-2"), None)
    assert [p.region for p in stacks if p.kind == "guardrail"] == [
        "us-east-1",
        "eu-west-1",
        "ap-southeast-2",
    ]
    forwarders = [p for p in stacks if p.kind == "iam-forwarder"]
    assert len(forwarders) == 1
    assert (forwarders[0].stack_id, forwarders[0].region) == ("SsmGuardrail-IamEvents", "us-east-1")
    assert forwarders[0].forward_to == ("eu-west-1", "ap-southeast-2")


def test_plan_for_us_east_1_alone_needs_no_forwarder() -> None:
    assert [p.kind for p in plan(config(regions="us-east-1"), "eu-west-1")] == ["guardrail"]


def test_plan_honours_another_iam_event_region() -> None:
    stacks = plan(config(regions="cn-north-1,cn-northwest-1", iamEventRegion="cn-north-1"), None)
    (forwarder,) = [p for p in stacks if p.kind == "iam-forwarder"]
    assert (forwarder.region, forwarder.forward_to) == ("cn-north-1", ("cn-northwest-1",))


def test_account_must_be_an_account_id() -> None:
    assert config(account="123456789012").account == "123456789012"
    with pytest.raises(ConfigError, match="account"):
        config(account="prod")


@pytest.mark.parametrize(
    ("requirements", "pin"),
    [
        ("boto3==1.43.11\naws-lambda-powertools[tracer]==3.37.0\n", "3.37.0"),
        ("aws-lambda-powertools==3.4.1  \n", "3.4.1"),
        ("aws-lambda-powertools[tracer]==3.37.0  # the layer's version\n", "3.37.0"),
        ("aws-lambda-powertools>=3.37.0\n", None),  # a range deploys whatever is newest
        ("aws-lambda-powertools-extra==1.0\n", None),  # another package
        ("# aws-lambda-powertools==3.37.0\n", None),
        ("aws-lambda-powertools==3.*\n", None),  # no parameter of that name
        ('aws-lambda-powertools==3.37.0; python_version < "4"\n', None),
    ],
)
def test_the_powertools_layer_is_the_version_requirements_pin(requirements, pin):
    if pin is None:
        with pytest.raises(ValueError, match="aws-lambda-powertools is not pinned"):
            pinned_version("aws-lambda-powertools", requirements)
    else:
        assert pinned_version("aws-lambda-powertools", requirements) == pin
