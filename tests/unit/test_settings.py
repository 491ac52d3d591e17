"""Settings from the Lambdas' environment: what is malformed is refused, naming the variable,
never ignored into a different mode."""

import pytest
from guardrail.settings import Settings, SettingsError

SSH, ROLE = "ssh-open-to-internet", "ssm-instance-role"


POLICY = "arn:aws:iam::123456789012:policy"
ROLE_ARN = "arn:aws:iam::123456789012:role"


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


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GUARDRAIL_INSTANCE_PROFILE", "arn:aws:iam::123456789012:instance-profile/ssm"),
        ("GUARDRAIL_INSTANCE_ROLE", "arn:aws:iam::123456789012:role/ssm-guardrail-instance"),
        ("GUARDRAIL_INSTANCE_ROLE", "r" * 65),
        ("GUARDRAIL_SESSION_LOG_BUCKET", "s3://ssm-guardrail-session-logs"),
        ("GUARDRAIL_SESSION_LOG_BUCKET", "arn:aws:s3:::ssm-guardrail-session-logs"),
        ("GUARDRAIL_SESSION_LOG_GROUP", "arn:aws:logs:eu-west-1:123456789012:log-group:/ssm"),
        ("GUARDRAIL_INSTANCE_PROFILE", "profilé"),
        ("GUARDRAIL_LOG_DELIVERY_POLICY_ARN", "ssm-guardrail-log-delivery"),
        # Each of these was accepted and could never match (exact ARN, exact role, prefix):
        # policies joined by a blank or a comma, a wildcard, a path without a name ...
        ("GUARDRAIL_LOG_DELIVERY_POLICY_ARN", f"{POLICY}/x,{POLICY}/y"),
        ("GUARDRAIL_EQUIVALENT_POLICY_ARNS", f"{POLICY}/x {POLICY}/y"),
        ("GUARDRAIL_EQUIVALENT_POLICY_ARNS", f"{POLICY}/ssm-*"),
        ("GUARDRAIL_EQUIVALENT_POLICY_ARNS", f"{POLICY}/team/"),
        ("GUARDRAIL_EQUIVALENT_POLICY_ARNS", "arn:foo:iam::aws:policy/x"),  # no such partition
        # ... a role's name, or ARNs joined by a blank: the guardrail's own changes trigger it
        # again ...
        ("GUARDRAIL_ACTOR_ARNS", "ssm-guardrail-on-change-eu-west-1"),
        ("GUARDRAIL_ACTOR_ARNS", f"{ROLE_ARN}/a {ROLE_ARN}/b"),
        # ... and a prefix that grants the whole bucket ("" or "/"), or one with a blank.
        ("GUARDRAIL_SESSION_LOG_PREFIX", ""),
        ("GUARDRAIL_SESSION_LOG_PREFIX", "/"),
        ("GUARDRAIL_SESSION_LOG_PREFIX", "/session-logs"),
        ("GUARDRAIL_SESSION_LOG_PREFIX", "session logs/"),
    ],
)
def test_a_resource_setting_in_the_wrong_form_is_refused(variable, value):
    """An ARN or URL where a name goes was taken: every fix handing it out then failed with
    AWS's validation error, on every instance, until someone read the log."""
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_resource_settings_as_the_stack_gives_them_are_accepted():
    settings = Settings.from_env(
        {
            "GUARDRAIL_EQUIVALENT_POLICY_ARNS": (
                f"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore, {POLICY}/a/b/ssm+=.@-_x,"
                "arn:aws-us-gov:iam::123456789012:policy/gov, "
                # IAM allows any printable ASCII in a path (events accepted it; settings did not)
                f"{POLICY}/a!b~/name"
            ),
            "GUARDRAIL_ACTOR_ARNS": (
                f"{ROLE_ARN}/{{ssm-guardrail-drift-scan-|ssm-guardrail-on-change-}}"
                "{eu-west-1|us-east-1}, arn:aws-cn:iam::*:role/ssm-guardrail/*"
            ),
            "GUARDRAIL_SESSION_LOG_PREFIX": "session-logs/team-a/",
            "GUARDRAIL_INSTANCE_PROFILE": "SsmGuardrail-InstanceProfile-1A2B3C4D5E6F",
            "GUARDRAIL_INSTANCE_ROLE": "ssm-guardrail-instance_role+=,.@",
            "GUARDRAIL_SESSION_LOG_BUCKET": "Legacy_Bucket.From-2017",  # us-east-1 allowed it
            "GUARDRAIL_SESSION_LOG_GROUP": "/ssm-guardrail/sessions#1_a",
            "GUARDRAIL_LOG_DELIVERY_POLICY_ARN": "arn:aws:iam::123456789012:policy/path/delivery",
        }
    )
    assert settings.session_log_group == "/ssm-guardrail/sessions#1_a"
