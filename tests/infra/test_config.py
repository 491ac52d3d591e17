"""Context knobs and stack planning: pure, no synth."""

from __future__ import annotations

import pytest
from guardrail.controls import REGISTRY
from guardrail.settings import Settings

from app import STACK_PREFIX, plan
from stacks.config import ConfigError, GuardrailConfig

from .conftest import cdk_json_context


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


def test_cdk_json_runs_offline() -> None:
    import json

    from .conftest import ROOT

    cdk_json = json.loads((ROOT / "cdk.json").read_text())
    assert cdk_json["notices"] is False
    assert "app.py" in cdk_json["app"]


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
        ("notificationEmail", "not-an-email"),
        ("regions", "eu-west-1,eu-west-1"),
        ("regions", "Europe"),
        ("sessionLogRetentionDays", "100"),
        ("modifyExistingRoles", "maybe"),
        ("equivalentPolicyArns", "AmazonSSMManagedInstanceCore"),
        ("onChangeConcurrency", "-1"),
        ("insightScope", "world"),
    ],
)
def test_bad_context_fails_synth_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config(**{key: value})


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
        ("SsmGuardrail-IamEvents", "us-east-1", "iam-forwarder"),
    ]
    assert stacks[1].forward_to == ("eu-west-1",)


def test_plan_forwards_iam_events_only_to_regions_other_than_us_east_1() -> None:
    stacks = plan(config(regions="us-east-1,eu-west-1,ap-southeast-2"), None)
    assert [p.region for p in stacks if p.kind == "guardrail"] == [
        "us-east-1",
        "eu-west-1",
        "ap-southeast-2",
    ]
    forwarders = [p for p in stacks if p.kind == "iam-forwarder"]
    assert len(forwarders) == 1
    assert forwarders[0].region == "us-east-1"
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
