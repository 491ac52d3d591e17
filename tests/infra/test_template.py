"""CDK assertions on the synthesized templates: what a deployer would notice if it broke."""

from __future__ import annotations

import ast
import fnmatch
import json
from typing import Any

import pytest
from aws_cdk.assertions import Match
from guardrail.controls import REGISTRY
from guardrail.events import is_own_change
from guardrail.findings import PRODUCT, product_arn
from guardrail.settings import ENV, Settings

from stacks.config import GuardrailConfig
from stacks.events import CLOUDTRAIL_EVENTS, STATE_CHANGE_DETAIL_TYPE
from tests.aws_events import AWS_NOTES_EVENTS

from .conftest import (
    EMAIL,
    FORWARDER,
    MAIN,
    OTHER,
    PSEUDO,
    REGIONS,
    ROOT,
    Synth,
    cdk_json_context,
    render,
    without_cli_environment,
)

pytestmark = pytest.mark.infra

HANDLERS = {"handlers.drift_scan.lambda_handler", "handlers.on_change.lambda_handler"}


def _ref(value: dict[str, Any]) -> str:
    return value.get("Ref") or value["Fn::GetAtt"][0]


def _functions(synth: Synth, stack: str = MAIN) -> dict[str, dict[str, Any]]:
    return {
        f["Properties"]["Handler"]: f
        for f in synth.resources(stack, "AWS::Lambda::Function").values()
    }


@pytest.mark.parametrize("stack", [MAIN, OTHER])
def test_functions_run_the_engine_handlers_on_python_arm64_with_powertools(
    synth: Synth, stack: str
) -> None:
    functions = _functions(synth, stack)
    assert set(functions) == HANDLERS
    for f in functions.values():
        props = f["Properties"]
        assert props["Runtime"] in ("python3.12", "python3.13")
        assert props["Architectures"] == ["arm64"]
        assert props["Layers"] == [{"Ref": "PowertoolsLayerArn"}]
        assert props["ReservedConcurrentExecutions"] >= 1
        assert props["Timeout"] >= 300
        assert props["MemorySize"] >= 512
    # A full scan of a large account reads EC2 + IAM and imports at Security Hub's 10 TPS.
    drift_scan = functions["handlers.drift_scan.lambda_handler"]["Properties"]
    assert (drift_scan["Timeout"], drift_scan["MemorySize"]) == (900, 1024)
    assert drift_scan["ReservedConcurrentExecutions"] == 1  # never two full scans at once
    # The layer of the version the tests ran (requirements.txt), not `latest`: whatever
    # Powertools released last would go out untested at the next deploy.
    parameter = synth.templates[stack]["Parameters"]["PowertoolsLayerArn"]
    (pin,) = [
        line.split("==")[1]
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("aws-lambda-powertools")
    ]
    assert parameter == {
        "Type": "AWS::SSM::Parameter::Value<String>",
        "Default": f"/aws/service/powertools/python/arm64/python3.13/{pin}",
        "Description": parameter["Description"],
    }


def test_the_code_asset_is_the_lambdas_folder_without_build_litter(synth: Synth) -> None:
    assets = json.loads((synth.outdir / f"{MAIN}.assets.json").read_text())["files"]
    (zipped,) = [a for a in assets.values() if a["source"].get("packaging") == "zip"]
    folder = synth.outdir / zipped["source"]["path"]
    assert (folder / "guardrail" / "permissions.py").is_file()
    assert not list(folder.rglob("__pycache__")) and not list(folder.glob("*.egg-info"))
    # Each handler string names a module in the asset that defines the function (else Lambda
    # fails every invocation with Runtime.ImportModuleError / HandlerNotFound).
    for f in _functions(synth).values():
        module, function = f["Properties"]["Handler"].rsplit(".", 1)
        source = folder / (module.replace(".", "/") + ".py")
        defined = {
            node.name
            for node in ast.parse(source.read_text()).body
            if isinstance(node, ast.FunctionDef)
        }
        assert function in defined, f["Properties"]["Handler"]


def test_functions_get_every_setting_the_engine_reads(synth: Synth) -> None:
    t = synth.templates[MAIN]
    for f in _functions(synth).values():
        env = f["Properties"]["Environment"]["Variables"]
        # Exactly the engine's variables: a misspelt GUARDRAIL_* name would be silently ignored.
        assert {k for k in env if k.startswith("GUARDRAIL_")} == set(ENV)
        literal = {k: v for k, v in env.items() if k in ENV and isinstance(v, str)}
        settings = Settings.from_env(literal)  # the engine accepts every literal value
        assert settings.finding_refresh_days == GuardrailConfig().finding_refresh_days
        assert env["POWERTOOLS_SERVICE_NAME"] == "ssm-guardrail"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "SsmGuardrail"
        assert env["GUARDRAIL_MODE"] == "report"
        assert env["GUARDRAIL_CONTROL_MODES"] == ",".join(f"{c}=enforce" for c in sorted(REGISTRY))
        assert env["GUARDRAIL_SESSION_LOG_PREFIX"] == "session-logs/"
        assert (
            t["Resources"][_ref(env["GUARDRAIL_SESSION_LOG_BUCKET"])]["Type"] == "AWS::S3::Bucket"
        )
        assert (
            t["Resources"][_ref(env["GUARDRAIL_SESSION_LOG_GROUP"])]["Type"]
            == "AWS::Logs::LogGroup"
        )
        assert env["GUARDRAIL_SESSION_LOG_KMS_KEY"]["Fn::GetAtt"][1] == "Arn"
        assert t["Resources"][_ref(env["GUARDRAIL_SESSION_LOG_KMS_KEY"])]["Type"] == "AWS::KMS::Key"
        assert (
            t["Resources"][_ref(env["GUARDRAIL_INSTANCE_PROFILE"])]["Type"]
            == "AWS::IAM::InstanceProfile"
        )
        assert t["Resources"][_ref(env["GUARDRAIL_INSTANCE_ROLE"])]["Type"] == "AWS::IAM::Role"
        assert (
            t["Resources"][_ref(env["GUARDRAIL_LOG_DELIVERY_POLICY_ARN"])]["Type"]
            == "AWS::IAM::ManagedPolicy"
        )
        # The functions' roles in every guarded region count as the guardrail's own: IAM events
        # one regional stack causes reach all of them. Exact ARNs: a role someone names with
        # the same prefix, or the roles of a region not guarded, are not the guardrail.
        written = render(env["GUARDRAIL_ACTOR_ARNS"])
        actors = Settings.from_env({"GUARDRAIL_ACTOR_ARNS": written}).actor_arns
        here, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        prefixes = [
            render(
                t["Resources"][f2["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]["RoleName"]
            ).removesuffix(here)
            for f2 in _functions(synth).values()
        ]
        assert sorted(actors) == sorted(
            f"arn:aws:iam::{account}:role/{prefix}{region}"
            for prefix in prefixes
            for region in REGIONS
        )
        for outsider in ("ssm-guardrail-on-change-mine", "ssm-guardrail-on-change-ap-south-1"):
            detail = {"userIdentity": {"arn": f"arn:aws:iam::{account}:role/{outsider}"}}
            assert not is_own_change(detail, actors)
        assert env["GUARDRAIL_REGIONS"] == {"Ref": "AWS::Region"}


def test_synth_needs_no_context_lookup(synth: Synth) -> None:
    # A lookup (Vpc.from_lookup, ...) would need credentials at synth: offline synth must not.
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    assert manifest.get("missing", []) == []


def test_drift_scan_runs_hourly_and_change_rules_cover_every_event(synth: Synth) -> None:
    rules = synth.resources(MAIN, "AWS::Events::Rule").values()
    functions = _functions(synth)
    drift = next(
        k
        for k, v in synth.resources(MAIN, "AWS::Lambda::Function").items()
        if v is functions["handlers.drift_scan.lambda_handler"]
    )
    on_change = next(
        k
        for k, v in synth.resources(MAIN, "AWS::Lambda::Function").items()
        if v is functions["handlers.on_change.lambda_handler"]
    )
    (schedule,) = [r for r in rules if "ScheduleExpression" in r["Properties"]]
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    assert schedule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [drift, "Arn"]}

    seen: dict[str, set[str]] = {}
    state_change = False
    for rule in rules:
        pattern = rule["Properties"].get("EventPattern")
        if not pattern:
            continue
        assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [
            {"Fn::GetAtt": [on_change, "Arn"]}
        ]
        assert "Security Hub Findings - Imported" not in pattern["detail-type"]
        assert pattern["source"] != ["aws.securityhub"]
        if pattern["detail-type"] == [STATE_CHANGE_DETAIL_TYPE]:
            assert pattern["source"] == ["aws.ec2"]
            assert pattern["detail"] == {"state": ["pending", "running"]}
            state_change = True
            continue
        assert pattern["detail-type"] == ["AWS API Call via CloudTrail"]
        (source,) = pattern["source"]
        assert pattern["detail"]["eventSource"] == [CLOUDTRAIL_EVENTS[source][0]]
        seen.setdefault(source, set()).update(pattern["detail"]["eventName"])
    assert seen == AWS_NOTES_EVENTS
    assert state_change


def test_every_rule_target_retries_then_dead_letters_to_the_encrypted_queue(synth: Synth) -> None:
    for stack in (MAIN, OTHER, FORWARDER):
        (queue_id,) = synth.resources(stack, "AWS::SQS::Queue")
        queue = synth.templates[stack]["Resources"][queue_id]["Properties"]
        assert queue["SqsManagedSseEnabled"] is True
        for rule in synth.resources(stack, "AWS::Events::Rule").values():
            for target in rule["Properties"]["Targets"]:
                assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
                if ":lambda:" in json.dumps(target["Arn"]) or "Fn::GetAtt" in target["Arn"]:
                    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 2
        synth.assertion(stack).has_resource_properties(
            "AWS::SQS::QueuePolicy",
            {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            },
        )
    for config in synth.resources(MAIN, "AWS::Lambda::EventInvokeConfig").values():
        (queue_id,) = synth.resources(MAIN, "AWS::SQS::Queue")
        assert config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": [queue_id, "Arn"]
        }


# Every commercial region (34): a deployment that guards them all.
ALL_REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "mx-central-1",
    "sa-east-1",
]
LAMBDA_ENVIRONMENT_QUOTA = 4096  # bytes, every variable's name and value together


def _longest(value: Any) -> str:
    """A template value as long as AWS could make it: the longest partition and region, and
    names and ARNs of resources at generous lengths (128 and 256 characters)."""
    if isinstance(value, str):
        return value
    pseudo = {"AWS::Partition": "aws-us-gov", "AWS::Region": "ap-southeast-7"}
    if "Ref" in value:
        return pseudo.get(value["Ref"], "1" * 12 if value["Ref"] == "AWS::AccountId" else "x" * 128)
    if "Fn::GetAtt" in value:
        return "x" * 256
    separator, parts = value["Fn::Join"]
    return separator.join(_longest(p) for p in parts)


def test_the_functions_environment_fits_lambdas_4_kb_with_every_region_guarded() -> None:
    """Lambda refuses a function whose variables pass 4 KB. The roles of every guarded region
    are written as alternatives, so guarding all 34 regions costs some 500 characters, not
    one ARN per region and function (about 4,600 by themselves)."""
    from aws_cdk import App, Environment
    from aws_cdk.assertions import Template

    from stacks import GuardrailConfig, GuardrailStack

    context = {**cdk_json_context(), "regions": ALL_REGIONS, "notificationEmail": EMAIL}
    with without_cli_environment():
        app = App(context=context)
        config = GuardrailConfig.from_context(app.node.try_get_context)
        stack = GuardrailStack(
            app, "Sized", config=config, env=Environment(region="ap-southeast-7")
        )
        template = Template.from_stack(stack).to_json()
    functions = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    assert len(functions) == 2
    for function in functions:
        env = {k: _longest(v) for k, v in function["Environment"]["Variables"].items()}
        actors = Settings.from_env({"GUARDRAIL_ACTOR_ARNS": env["GUARDRAIL_ACTOR_ARNS"]})
        assert len(actors.actor_arns) == 2 * len(ALL_REGIONS)
        size = sum(len(k) + len(v) for k, v in env.items())
        assert size <= LAMBDA_ENVIRONMENT_QUOTA, size


def test_each_functions_memory_is_a_setting() -> None:
    """The drift scan holds the whole account-region (about 910 MB at 20,000 instances, as
    measured on the emulator): `driftScanMemoryMb` gives a larger fleet more. On-change holds a
    group's every instance (321 MB at 10,000 behind one group): `onChangeMemoryMb`. Each is
    its own; unset, on-change keeps 512."""
    from aws_cdk import App, Environment
    from aws_cdk.assertions import Template

    from stacks import GuardrailConfig, GuardrailStack

    with without_cli_environment():
        memory = []
        for knobs in ({"driftScanMemoryMb": "3008"}, {"onChangeMemoryMb": "1024"}):
            app = App(context={**cdk_json_context(), **knobs})
            config = GuardrailConfig.from_context(app.node.try_get_context)
            stack = GuardrailStack(app, "Big", config=config, env=Environment(region="eu-west-1"))
            template = Template.from_stack(stack).to_json()
            memory.append(
                {
                    r["Properties"]["Handler"]: r["Properties"]["MemorySize"]
                    for r in template["Resources"].values()
                    if r["Type"] == "AWS::Lambda::Function"
                }
            )
    assert memory == [
        {"handlers.drift_scan.lambda_handler": 3008, "handlers.on_change.lambda_handler": 512},
        {"handlers.drift_scan.lambda_handler": 1024, "handlers.on_change.lambda_handler": 1024},
    ]


def _stack_with(**context: Any) -> dict[str, Any]:
    """One regional stack's template with these context knobs (no cdk-nag: quick)."""
    from aws_cdk import App, Environment
    from aws_cdk.assertions import Template

    from stacks import GuardrailConfig, GuardrailStack

    with without_cli_environment():
        app = App(context={**cdk_json_context(), **context})
        config = GuardrailConfig.from_context(app.node.try_get_context)
        stack = GuardrailStack(app, "Knobs", config=config, env=Environment(region="eu-west-1"))
        return dict(Template.from_stack(stack).to_json())


def _granted(template: dict[str, Any], action: str) -> list[Any]:
    """The Resource of every Lambda role statement allowing `action`."""
    return [
        s["Resource"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Policy"
        for s in r["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
        and action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]


def test_neither_function_may_attach_a_policy_to_the_guardrails_own_roles() -> None:
    """Their grant covers every role of the account (instance roles have any name): an explicit
    Deny keeps both functions' roles, in every region, out of it, so neither can give itself or
    the other AmazonSSMManagedInstanceCore (every SSM parameter) or the log-delivery policy. In
    report mode there is no grant, and no Deny is needed."""
    enforce = {cid: "enforce" for cid in REGISTRY}
    template = _stack_with(controlModes=enforce)
    lambda_roles = {
        k: v["Properties"]["RoleName"]
        for k, v in template["Resources"].items()
        if v["Type"] == "AWS::IAM::Role"
        and "lambda.amazonaws.com" in json.dumps(v["Properties"]["AssumeRolePolicyDocument"])
        and "RoleName" in v["Properties"]
    }
    assert len(lambda_roles) == 2
    for policy in [v for v in template["Resources"].values() if v["Type"] == "AWS::IAM::Policy"]:
        if not any(r["Ref"] in lambda_roles for r in policy["Properties"]["Roles"]):
            continue
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        (deny,) = [s for s in statements if s["Effect"] == "Deny"]
        assert deny["Action"] == "iam:AttachRolePolicy"
        denied = sorted(render(r) for r in deny["Resource"])
        assert denied == [
            f"arn:aws:iam::{PSEUDO['AWS::AccountId']}:role/ssm-guardrail-drift-scan-*",
            f"arn:aws:iam::{PSEUDO['AWS::AccountId']}:role/ssm-guardrail-on-change-*",
        ]
        for name in lambda_roles.values():  # each region's name falls under it
            arn = f"arn:aws:iam::{PSEUDO['AWS::AccountId']}:role/{render(name)}"
            assert any(fnmatch.fnmatch(arn, d) for d in denied), arn
    report = _stack_with()
    assert not _granted(report, "iam:AttachRolePolicy")
    assert "Deny" not in json.dumps(
        [v for v in report["Resources"].values() if v["Type"] == "AWS::IAM::Policy"]
    )


def test_modify_existing_roles_false_lets_the_lambdas_attach_to_the_guardrails_role_only() -> None:
    """With modifyExistingRoles=false the engine attaches policies only to the guardrail's own
    instance role (Settings.may_modify); IAM says the same, so a defect or a wrong environment
    variable cannot reach any other role of the account."""
    enforce = {cid: "enforce" for cid in REGISTRY}
    for knob, everywhere in (("true", True), ("false", False)):
        template = _stack_with(controlModes=enforce, modifyExistingRoles=knob)
        (role,) = [
            k
            for k, v in template["Resources"].items()
            if v["Type"] == "AWS::IAM::Role"
            and "ec2.amazonaws.com" in json.dumps(v["Properties"]["AssumeRolePolicyDocument"])
        ]
        granted = _granted(template, "iam:AttachRolePolicy")
        assert granted, knob
        if everywhere:
            assert all(json.dumps(r).endswith(':role/*"]]}') for r in granted), granted
        else:
            assert granted == [{"Fn::GetAtt": [role, "Arn"]}] * len(granted)


def test_publish_findings_false_deploys_nothing_of_security_hub() -> None:
    """publishFindings=false (often: Security Hub is not enabled in that account-region): no
    insight, which would fail the deploy there, and no Security Hub permission the Lambdas
    never use."""
    on, off = _stack_with(), _stack_with(publishFindings="false")
    kinds = [[v["Type"] for v in t["Resources"].values()] for t in (on, off)]
    assert kinds[0].count("AWS::SecurityHub::Insight") == 4
    assert "AWS::SecurityHub::Insight" not in kinds[1]
    for action in ("BatchImportFindings", "BatchUpdateFindings", "GetFindings"):
        assert _granted(on, f"securityhub:{action}") and not _granted(off, f"securityhub:{action}")


# EventBridge's default quota on an event pattern, in characters (adjustable to 4,096): a rule
# whose pattern grows past it fails at deploy time, never at synth.
EVENT_PATTERN_QUOTA = 2048


def test_every_event_pattern_fits_eventbridges_default_size_quota(synth: Synth) -> None:
    sizes = {
        (stack, logical_id): len(json.dumps(rule["Properties"]["EventPattern"]))
        for stack in (MAIN, OTHER, FORWARDER)
        for logical_id, rule in synth.resources(stack, "AWS::Events::Rule").items()
        if "EventPattern" in rule["Properties"]
    }
    assert len(sizes) >= 4  # the EC2, IAM, SSM and state-change rules, the forwarder's
    assert max(sizes.values()) <= EVENT_PATTERN_QUOTA, sizes


def test_us_east_1_forwards_iam_events_to_the_other_regions_default_bus(synth: Synth) -> None:
    rules = list(synth.resources(FORWARDER, "AWS::Events::Rule").values())
    assert len(rules) == 1
    pattern = rules[0]["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.iam"]
    assert set(pattern["detail"]["eventName"]) == AWS_NOTES_EVENTS["aws.iam"]
    (target,) = rules[0]["Properties"]["Targets"]
    assert json.dumps(target["Arn"]).count("eu-west-1") == 1
    assert target["Arn"]["Fn::Join"][1][-1].endswith(":event-bus/default")
    assert "RoleArn" in target
    # The guardrail stacks themselves carry no cross-region targets.
    for stack in (MAIN, OTHER):
        assert "event-bus" not in json.dumps(synth.resources(stack, "AWS::Events::Rule"))


def test_people_of_the_account_may_encrypt_sessions_with_the_session_log_key(synth: Synth) -> None:
    """Once the preferences name the key, each person's Session Manager plugin calls
    kms:GenerateDataKey on it: the key policy allows that to this account's principals, for
    Session Manager's encryption context only, so nobody with a minimal policy is locked out."""
    (key,) = [
        k
        for k in synth.resources(MAIN, "AWS::KMS::Key").values()
        if "session logs" in k["Properties"].get("Description", "")
    ]
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    (grant,) = [s for s in statements if s.get("Principal") == {"AWS": "*"}]
    assert grant["Effect"] == "Allow" and grant["Action"] == "kms:GenerateDataKey"
    assert grant["Condition"] == {
        "StringEquals": {"kms:CallerAccount": {"Ref": "AWS::AccountId"}},
        "Null": {"kms:EncryptionContext:aws:ssm:SessionId": "false"},
    }


def test_session_log_store_is_encrypted_private_versioned_and_expiring(synth: Synth) -> None:
    t = synth.assertion(MAIN)
    t.has_resource_properties(
        "AWS::KMS::Key",
        {
            "EnableKeyRotation": True,
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {
                                    "Service": {
                                        "Fn::Join": [
                                            "",
                                            ["logs.", {"Ref": "AWS::Region"}, ".amazonaws.com"],
                                        ]
                                    }
                                },
                                "Condition": {
                                    "ArnEquals": {
                                        "kms:EncryptionContext:aws:logs:arn": Match.any_value()
                                    }
                                },
                            }
                        )
                    ]
                )
            },
        },
    )
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "BucketKeyEnabled": True,
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": Match.any_value(),
                            },
                        }
                    )
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {
                "DestinationBucketName": Match.any_value(),
                "LogFilePrefix": Match.any_value(),
            },
            "LifecycleConfiguration": {
                "Rules": [
                    Match.object_like(
                        {"Prefix": "session-logs/", "ExpirationInDays": 365, "Status": "Enabled"}
                    )
                ]
            },
        },
    )
    buckets = synth.resources(MAIN, "AWS::S3::Bucket")
    assert {b["DeletionPolicy"] for b in buckets.values()} == {"Retain"}
    for bucket_policy in synth.resources(MAIN, "AWS::S3::BucketPolicy").values():
        # Kept with its bucket on destroy: the TLS-only and transcript-read Denies, the access
        # logs' delivery grant. Deleted, the kept bucket of transcripts loses all three.
        assert bucket_policy["DeletionPolicy"] == "Retain"
        statements = bucket_policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )
    # The instances may decrypt with the key (to deliver): none may read a transcript with it.
    (reads,) = [
        s
        for p in synth.resources(MAIN, "AWS::S3::BucketPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Sid") == "DenySessionLogReadsFromInstanceCredentials"
    ]
    assert (reads["Effect"], reads["Principal"]) == ("Deny", {"AWS": "*"})
    assert {"s3:GetObject", "s3:GetObjectVersion"} <= set(reads["Action"])
    assert reads["Condition"] == {"Null": {"ec2:SourceInstanceARN": "false"}}
    assert json.dumps(reads["Resource"]).count("/*") == 1  # every object of the bucket
    t.has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "LogGroupName": "/ssm-guardrail/session-logs",
            "KmsKeyId": Match.any_value(),
            "RetentionInDays": 365,
        },
    )
    for log_group in synth.resources(MAIN, "AWS::Logs::LogGroup").values():
        assert log_group["Properties"]["RetentionInDays"] > 0
        assert log_group["DeletionPolicy"] == "Retain"


def test_instance_role_has_core_and_scoped_log_delivery_policies(synth: Synth) -> None:
    t = synth.templates[MAIN]
    ((policy_id, policy),) = synth.resources(MAIN, "AWS::IAM::ManagedPolicy").items()
    # Kept on destroy with the bucket, log group and key the preferences still name: deleted,
    # every role it was attached to would be refused its sessions (the key, the encryption
    # checks the agent makes before each one).
    assert policy["DeletionPolicy"] == "Retain"
    actions = {
        a
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert actions == {
        "s3:PutObject",
        "s3:GetEncryptionConfiguration",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
        "logs:DescribeLogGroups",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    roles = [
        r
        for r in synth.resources(MAIN, "AWS::IAM::Role").values()
        if "ec2.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    (role,) = roles
    managed = role["Properties"]["ManagedPolicyArns"]
    assert {"Ref": policy_id} in managed
    assert any("AmazonSSMManagedInstanceCore" in json.dumps(m) for m in managed)
    (profile,) = synth.resources(MAIN, "AWS::IAM::InstanceProfile").values()
    assert profile["Properties"]["Roles"] == [
        {"Ref": next(k for k, v in t["Resources"].items() if v is role)}
    ]


def test_insights_cover_the_guardrails_own_findings(synth: Synth) -> None:
    insights = {
        i["Properties"]["Name"]: i["Properties"]
        for i in synth.resources(MAIN, "AWS::SecurityHub::Insight").values()
    }
    assert {n: p["GroupByAttribute"] for n, p in insights.items()} == {
        "ssm-guardrail: failing resources by control": "GeneratorId",
        "ssm-guardrail: failing resources by severity": "SeverityLabel",
        "ssm-guardrail: failing resources": "ResourceId",
        "ssm-guardrail: resolved in the last 7 days": "GeneratorId",
    }
    for name, props in insights.items():
        filters = props["Filters"]
        # The GeneratorId and ProductArn the engine writes on every finding (guardrail.findings).
        assert filters["GeneratorId"] == [{"Comparison": "PREFIX", "Value": f"{PRODUCT}/"}]
        (product,) = filters["ProductArn"]
        assert product["Comparison"] == "EQUALS"
        assert render(product["Value"]) == product_arn(
            PSEUDO["AWS::Partition"], PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        )
        if "resolved" in name:
            assert filters["WorkflowStatus"] == [{"Comparison": "EQUALS", "Value": "RESOLVED"}]
            # The exact filter tests/e2e/test_emulator_extension.py applies to findings.
            assert filters["NoteUpdatedAt"] == [{"DateRange": {"Unit": "DAYS", "Value": 7}}]
            assert "UpdatedAt" not in filters
        else:
            assert filters["ComplianceStatus"] == [{"Comparison": "EQUALS", "Value": "FAILED"}]
            assert filters["RecordState"] == [{"Comparison": "EQUALS", "Value": "ACTIVE"}]


def test_alarms_notify_an_encrypted_topic_with_the_configured_email(synth: Synth) -> None:
    for stack in (MAIN, FORWARDER):
        ((topic_id, topic),) = synth.resources(stack, "AWS::SNS::Topic").items()
        assert "KmsMasterKeyId" in topic["Properties"]
        subscriptions = topic["Properties"].get("Subscription") or [
            s["Properties"] for s in synth.resources(stack, "AWS::SNS::Subscription").values()
        ]
        assert [s.get("Endpoint") for s in subscriptions] == [EMAIL]
        alarms = synth.resources(stack, "AWS::CloudWatch::Alarm").values()
        assert alarms and all(
            a["Properties"]["AlarmActions"] == [{"Ref": topic_id}] for a in alarms
        )
    metrics = {
        a["Properties"]["MetricName"]
        for a in synth.resources(MAIN, "AWS::CloudWatch::Alarm").values()
    }
    assert metrics == {
        "Errors",
        "ApproximateNumberOfMessagesVisible",
        "FixesFailed",
        "PublishErrors",
        "EventsDropped",
    }
    # Each function's errors, the dead letters, a failed fix per control, two guardrail errors.
    assert len(synth.resources(MAIN, "AWS::CloudWatch::Alarm")) == 3 + len(REGISTRY) + 2


def test_alarm_topic_policies_let_this_accounts_cloudwatch_alarms_publish(synth: Synth) -> None:
    # enforce_ssl gives each topic a policy that replaces SNS's default one: without an explicit
    # Allow for cloudwatch.amazonaws.com, alarms fail with "no resource-based policy allows".
    alarm_arn = "arn:{}:cloudwatch:{}:{}:alarm:*".format(
        PSEUDO["AWS::Partition"], PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
    )
    for stack in (MAIN, OTHER, FORWARDER):
        topics = {
            action["Ref"]
            for alarm in synth.resources(stack, "AWS::CloudWatch::Alarm").values()
            for action in alarm["Properties"]["AlarmActions"]
        }
        assert topics, stack
        for topic_id in topics:
            synth.assertion(stack).has_resource_properties(
                "AWS::SNS::TopicPolicy",
                {
                    "Topics": [{"Ref": topic_id}],
                    "PolicyDocument": {
                        "Statement": Match.array_with(
                            [
                                Match.object_like(
                                    {
                                        "Effect": "Allow",
                                        "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                        "Action": "sns:Publish",
                                        "Resource": {"Ref": topic_id},
                                        "Condition": {
                                            "StringEquals": {
                                                "aws:SourceAccount": {"Ref": "AWS::AccountId"}
                                            },
                                            "ArnLike": {"aws:SourceArn": Match.any_value()},
                                        },
                                    }
                                )
                            ]
                        )
                    },
                },
            )
            statements = [
                s
                for policy in synth.resources(stack, "AWS::SNS::TopicPolicy").values()
                if {"Ref": topic_id} in policy["Properties"]["Topics"]
                for s in policy["Properties"]["PolicyDocument"]["Statement"]
            ]
            (allow,) = [s for s in statements if s["Effect"] == "Allow"]
            assert render(allow["Condition"]["ArnLike"]["aws:SourceArn"]) == alarm_arn
            assert any(
                s["Effect"] == "Deny"
                and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                for s in statements
            )


def test_replaced_queue_and_bucket_policies_still_let_aws_services_deliver(synth: Synth) -> None:
    # enforce_ssl also gives the DLQ and the buckets their own policies; the services that write
    # to them through a resource policy must each be allowed there.
    for stack in (MAIN, OTHER, FORWARDER):
        (queue_id,) = synth.resources(stack, "AWS::SQS::Queue")
        (queue_policy,) = synth.resources(stack, "AWS::SQS::QueuePolicy").values()
        statements = queue_policy["Properties"]["PolicyDocument"]["Statement"]
        allowed = {
            json.dumps(s["Condition"]["ArnEquals"]["aws:SourceArn"], sort_keys=True)
            for s in statements
            if s["Effect"] == "Allow"
            and s["Principal"] == {"Service": "events.amazonaws.com"}
            and s["Action"] == "sqs:SendMessage"
            and s["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
        }
        rules = synth.resources(stack, "AWS::Events::Rule")
        assert rules
        for rule_id, rule in rules.items():
            for target in rule["Properties"]["Targets"]:
                assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
                assert json.dumps({"Fn::GetAtt": [rule_id, "Arn"]}, sort_keys=True) in allowed
    # S3 server access logging delivers through the log bucket's policy (Session Manager uploads
    # use the instance role's identity policy, which the session-log bucket's Deny leaves alone).
    buckets = synth.resources(MAIN, "AWS::S3::Bucket")
    (source_id,) = [k for k, b in buckets.items() if "LoggingConfiguration" in b["Properties"]]
    logging = buckets[source_id]["Properties"]["LoggingConfiguration"]
    target_id = logging["DestinationBucketName"]["Ref"]
    (log_policy,) = [
        p
        for p in synth.resources(MAIN, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": target_id}
    ]
    synth.assertion(MAIN).has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": target_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                                "Condition": {
                                    "ArnLike": {
                                        "aws:SourceArn": {"Fn::GetAtt": [source_id, "Arn"]}
                                    },
                                    "StringEquals": {
                                        "aws:SourceAccount": {"Ref": "AWS::AccountId"}
                                    },
                                },
                            }
                        )
                    ]
                )
            },
        },
    )
    (delivery,) = [
        s
        for s in log_policy["Properties"]["PolicyDocument"]["Statement"]
        if s["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    ]
    assert delivery["Resource"]["Fn::Join"][1][-1] == f"/{logging['LogFilePrefix']}*"


def test_organization_insights_drop_the_per_account_product_filter() -> None:
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    from stacks.dashboards import FindingInsights

    stack = Stack(App(), "Admin")
    FindingInsights(stack, "Insights", product_arn="unused", insight_scope="organization")
    insights = Template.from_stack(stack).find_resources("AWS::SecurityHub::Insight")
    assert len(insights) == 4
    for insight in insights.values():
        filters = insight["Properties"]["Filters"]
        assert "ProductArn" not in filters
        assert filters["GeneratorId"] == [{"Comparison": "PREFIX", "Value": "ssm-guardrail/"}]


def test_destroy_keeps_the_session_log_key_and_schedules_the_alarm_keys_deletion(
    synth: Synth,
) -> None:
    """`cdk destroy` keeps what audit evidence needs and nothing that would stay billed for
    no purpose: the session-log key is retained; each alarm topic's key (messages in flight
    only) is scheduled for deletion with the shortest wait."""
    retained, deleted = [], []
    for stack in (MAIN, OTHER, FORWARDER):
        for key in synth.resources(stack, "AWS::KMS::Key").values():
            description = key["Properties"]["Description"]
            if key["DeletionPolicy"] == "Retain":
                retained.append(description)
            else:
                assert key["DeletionPolicy"] == "Delete"
                assert key["Properties"]["PendingWindowInDays"] == 7
                deleted.append(description)
    assert retained and all("session" in d for d in retained), retained
    assert len(deleted) == 3 and all("alarm topic" in d for d in deleted), deleted


def _tokens(value: Any) -> str:
    """A template value with every reference written as <LogicalId> or <LogicalId.Attribute>."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    separator, parts = value["Fn::Join"]
    return separator.join(_tokens(p) for p in parts)


def test_cli_settings_output_lets_guardrail_scan_judge_and_fix_as_the_lambdas_do(
    synth: Synth,
) -> None:
    """`env $(CliSettings) guardrail scan --mode enforce`: the guardrail's profile, role, bucket,
    key and policies and every judgement setting, exactly as the Lambdas have them; never the
    Lambdas' modes (a CLI scan stays report unless asked), actor roles or region."""
    import shlex

    output = synth.templates[MAIN]["Outputs"]["CliSettings"]["Value"]
    pairs = dict(item.split("=", 1) for item in shlex.split(_tokens(output)))
    (function, *_) = _functions(synth).values()
    env = {
        k: _tokens(v)
        for k, v in function["Properties"]["Environment"]["Variables"].items()
        if k.startswith("GUARDRAIL_")
    }
    excluded = {"GUARDRAIL_MODE", "GUARDRAIL_CONTROL_MODES", "GUARDRAIL_ACTOR_ARNS"}
    assert pairs == {k: v for k, v in env.items() if k not in excluded | {"GUARDRAIL_REGIONS"}}
    assert {"GUARDRAIL_INSTANCE_ROLE", "GUARDRAIL_LOG_DELIVERY_POLICY_ARN"} <= set(pairs)
    # The deployment enforces every control here; the CLI with these settings still reports.
    literal = Settings.from_env({k: v for k, v in pairs.items() if "<" not in v})
    assert {literal.mode_for(c) for c in REGISTRY} == {"report"}


def _longest_call(config: Any) -> float:
    """Seconds one AWS call that never answers can take: every try waits out the connect and
    read timeouts, and botocore waits up to min(2^(n-1), 20) s before retry n."""
    retries = config.retries
    tries = retries.get("total_max_attempts") or retries["max_attempts"] + 1
    backoff = sum(min(2 ** (n - 1), 20) for n in range(1, tries))
    return float(tries * (config.connect_timeout + config.read_timeout) + backoff)


def test_a_call_that_never_answers_gives_up_before_the_lambdas_do() -> None:
    """A hung endpoint (a connection accepted, no answer): botocore gives up, so the on-change
    Lambda fails as retryable on its own rather than being killed at its timeout, and a fix the
    drift scan started at its deadline still leaves time to publish (its reserve at 15 minutes)."""
    from guardrail.clients import CONFIG, SECURITY_HUB_CONFIG, STS_CONFIG
    from handlers.drift_scan import PUBLISH_RESERVE_SECONDS, PUBLISH_RESERVE_SHARE

    from stacks.functions import DRIFT_SCAN, ON_CHANGE

    longest = max(_longest_call(c) for c in (CONFIG, SECURITY_HUB_CONFIG, STS_CONFIG))
    assert longest == 9 * 15 + 91
    reserve = max(PUBLISH_RESERVE_SECONDS, PUBLISH_RESERVE_SHARE * DRIFT_SCAN.timeout.to_seconds())
    assert longest < ON_CHANGE.timeout.to_seconds() and longest < reserve


def test_the_ssm_rule_routes_only_the_session_preferences_document(synth: Synth) -> None:
    """Every SSM document call of the account (Quick Setup, Config remediation and Automation
    churn them) invoked the on-change Lambda, which dropped all but the preferences document's.
    The rule itself now matches only that document, named by name or by ARN, in either
    spelling the parser reads; EventBridge's own matcher (as the emulator implements it) says
    which events it routes."""
    from pathlib import Path

    from moto.events.models import EventPattern

    (pattern,) = [
        rule["Properties"]["EventPattern"]
        for rule in synth.resources(MAIN, "AWS::Events::Rule").values()
        if rule["Properties"].get("EventPattern", {}).get("source") == ["aws.ssm"]
    ]
    rule = EventPattern(json.dumps(pattern), pattern)
    fixtures = Path(__file__).parents[1] / "fixtures" / "events"
    routed = {
        path.name: rule.matches_event(json.loads(path.read_text()))
        for path in sorted(fixtures.glob("ssm_*.json"))
    }
    assert routed == {
        "ssm_create_document.json": True,
        "ssm_delete_document.json": True,
        "ssm_update_document.json": True,
        "ssm_update_document_default_version.json": True,
        "ssm_update_other_document.json": False,
    }
    event = json.loads((fixtures / "ssm_update_document.json").read_text())
    arn = "arn:aws:ssm:eu-west-1:111122223333:document/SSM-SessionManagerRunShell"
    for named in ({"name": arn}, {"Name": "SSM-SessionManagerRunShell"}):
        event["detail"]["requestParameters"] = named
        assert rule.matches_event(event), named
    event["detail"]["requestParameters"] = {"name": "Team-SSM-SessionManagerRunShell"}
    assert not rule.matches_event(event)
