"""Settings from the Lambdas' environment: what is malformed is refused, naming the variable,
never ignored into a different mode."""

import pytest
from guardrail.settings import Settings, SettingsError

SSH, ROLE = "ssh-open-to-internet", "ssm-instance-role"


def test_variables_not_the_guardrails_are_not_read():
    settings = Settings.from_env(
        {"GUARDRAIL_MODE": "enforce", "PATH": "/usr/bin", "AWS_REGION": "eu-west-1"}
    )
    assert settings.mode_for(SSH) == "enforce"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("GUARDRAIL_CONTROL_MODE", "did you mean GUARDRAIL_CONTROL_MODES?"),
        ("GUARDRAIL_SESION_LOG_BUCKET", "did you mean GUARDRAIL_SESSION_LOG_BUCKET?"),
        ("GUARDRAIL_SOMETHING_ELSE_ENTIRELY", "GUARDRAIL_SOMETHING_ELSE_ENTIRELY"),
    ],
)
def test_an_unknown_guardrail_variable_is_refused_naming_the_nearest(name, hint):
    """A misspelt override was ignored: SSH meant to stay in report was enforced."""
    with pytest.raises(SettingsError, match="unknown environment variable") as refused:
        Settings.from_env({"GUARDRAIL_MODE": "enforce", name: f"{SSH}=report"})
    assert hint in str(refused.value)


def test_a_control_given_two_modes_is_refused_not_the_last_taken():
    with pytest.raises(SettingsError, match=f"GUARDRAIL_CONTROL_MODES gives {SSH} more than one"):
        Settings.from_env({"GUARDRAIL_CONTROL_MODES": f"{SSH}=report, {SSH} =enforce"})
    distinct = Settings.from_env({"GUARDRAIL_CONTROL_MODES": f"{SSH}=report,{ROLE}=enforce"})
    assert (distinct.mode_for(SSH), distinct.mode_for(ROLE)) == ("report", "enforce")
