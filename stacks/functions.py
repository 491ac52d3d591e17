"""The drift-scan and on-change Lambdas: code from `lambdas/`, Powertools from its public layer,
IAM generated from the engine's declared permissions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from aws_cdk import Aws, CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from guardrail.findings import product_arn as finding_product_arn
from guardrail.permissions import PUBLISH_PERMISSIONS
from guardrail.settings import ENV

from . import iam as generated
from .config import GuardrailConfig
from .instance_access import InstanceAccess
from .nag import acknowledge
from .session_log_store import SessionLogStore

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "*.egg-info", "**/.mypy_cache", "**/.pytest_cache"]
RUNTIME = lambda_.Runtime.PYTHON_3_13
REQUIREMENTS = LAMBDAS_DIR.parent / "requirements.txt"


def pinned_version(package: str, requirements: str) -> str:
    """The version `requirements` pins the package to (`name[extras]==X`): the one the tests ran."""
    line = rf"^{re.escape(package)}(\[[^\]]*\])?==([0-9][0-9A-Za-z.]*)\s*(#.*)?$"
    match = re.search(line, requirements, re.MULTILINE)
    if match is None:
        raise ValueError(f"{package} is not pinned (==) in requirements.txt")
    return match[2]


# The layer of the Powertools version the tests run (Powertools publishes one parameter per
# version): `latest` would deploy whatever was released last, untested.
POWERTOOLS_VERSION = pinned_version("aws-lambda-powertools", REQUIREMENTS.read_text())
POWERTOOLS_PARAMETER = f"/aws/service/powertools/python/arm64/python3.13/{POWERTOOLS_VERSION}"
SERVICE_NAME = "ssm-guardrail"
METRICS_NAMESPACE = "SsmGuardrail"
# Settings only the deployed Lambdas take: their modes, their own roles, their region.
DEPLOYMENT_ONLY = frozenset(
    {"GUARDRAIL_MODE", "GUARDRAIL_CONTROL_MODES", "GUARDRAIL_ACTOR_ARNS", "GUARDRAIL_REGIONS"}
)

# Why each wildcard resource the engine declares is as narrow as IAM allows. Keys are the
# resources as cdk-nag prints them; a new wildcard in the engine fails synth until reviewed here.
_EC2 = "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>"
_IAM = "arn:<AWS::Partition>:iam::<AWS::AccountId>"
WILDCARD_REASONS = {
    "*": (
        "Only read actions (ec2:Describe*, iam:Get*/List*, ssm:Describe*/Get*) that either "
        "support no resource-level permissions or must read "
        "every instance, group and profile in the account-region; every mutating action is "
        "scoped by ARN or condition."
    ),
    f"{_EC2}:security-group/*": (
        "ec2:RevokeSecurityGroupIngress/AuthorizeSecurityGroupIngress (and "
        "ModifySecurityGroupRules in a group at its rules quota) must reach whichever security "
        "group admits SSH from the internet; the group is only known at run time, so the ARN is "
        "limited to this account and region and nothing else."
    ),
    f"{_EC2}:security-group-rule/*": (
        "The security-group rules the SSH fix re-adds exist only once AuthorizeSecurityGroupIngress "
        "creates them, so their ids cannot be named; ec2:CreateTags there is allowed only at "
        "creation (condition ec2:CreateAction = AuthorizeSecurityGroupIngress) to label each new "
        "rule with the rule it replaces, and otherwise only to add keys under "
        "ssm-guardrail:relied-on: (aws:TagKeys) to a rule that already carries "
        "ssm-guardrail:replaces, i.e. one the guardrail re-added; ec2:DeleteTags only takes such "
        "a named key off such a rule again; ec2:ModifySecurityGroupRules narrows the offending "
        "rule in place (only in a group at its rules quota), which EC2 authorizes on the rule too."
    ),
    f"{_EC2}:instance/*": (
        "ec2:AssociateIamInstanceProfile on an instance that has no profile: any instance in "
        "this account-region may be the one found, and only the guardrail role may be passed "
        "(iam:PassRole is limited to it)."
    ),
    f"{_IAM}:role/*": (
        "iam:AttachRolePolicy is conditioned on iam:PolicyARN being AmazonSSMManagedInstanceCore "
        "or the guardrail's log-delivery policy; iam:SimulatePrincipalPolicy only reads. The "
        "role is whichever one an instance carries."
    ),
    f"{_IAM}:policy/*": (
        "iam:ListEntitiesForPolicy (on-change role only) only reads which roles use a "
        "customer-managed policy whose default version an IAM event changed; the policy is "
        "whichever one the event names, so the ARN is limited to this account's managed policies "
        "(AWS's own are never asked about). iam:GetPolicy/GetPolicyVersion only read the policy "
        "holding a Deny that the policy simulation matched on a role but could not evaluate, "
        "whichever policy that is."
    ),
    "arn:<AWS::Partition>:iam::aws:policy/*": (
        "iam:GetPolicy/GetPolicyVersion only read an AWS managed policy holding a Deny that the "
        "policy simulation matched on a role but could not evaluate; AWS's own policies, read "
        "only."
    ),
    "arn:<AWS::Partition>:kms:<AWS::Region>:<AWS::AccountId>:key/*": (
        "kms:DescribeKey only reads the key the region's Session Manager preferences give as "
        "kmsKeyId: whether sessions can use it (its state and type) and, for an alias, which "
        "key it names (IAM authorizes the instances' kms:Decrypt on the key); the key is "
        "whichever one the owners chose, so the ARN is limited to this account and region's "
        "keys. No cryptographic action is granted."
    ),
    f"{_IAM}:instance-profile/*": (
        "iam:AddRoleToInstanceProfile fills an instance profile that has no role; the profile is "
        "whichever one an instance carries, and the only role it can add is the guardrail's "
        "(iam:PassRole is limited to it)."
    ),
}


@dataclass(frozen=True)
class FunctionSpec:
    construct_id: str
    handler: str
    description: str
    timeout: Duration
    memory_mb: int
    retry_attempts: int
    role_prefix: str  # its role is <role_prefix><region>: the same name pattern in every region
    # It evaluates events: its role also gets the reads only a targeted read makes (events_only).
    events: bool = False

    def role_name(self) -> str:
        return f"{self.role_prefix}{Aws.REGION}"


def actor_arns(specs: Sequence[FunctionSpec], regions: Sequence[str]) -> str:
    """The functions' roles in each guarded region of the account: IAM's events reach every
    regional stack (IamEventForwarder), so each must know the others' changes as the guardrail's.
    Exact names, not a `*`: anyone allowed to create a role could name one to match. Written as
    `{a|b}` alternatives, which the settings spell out: listed one by one, 34 regions' ARNs
    would pass Lambda's 4 KB limit on a function's environment."""
    names = "|".join(spec.role_prefix for spec in specs)
    places = "|".join(regions or (Aws.REGION,))
    return f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/{{{names}}}{{{places}}}"


DRIFT_SCAN = FunctionSpec(
    "DriftScan",
    "handlers.drift_scan.lambda_handler",
    "ssm-guardrail: evaluates every instance in the account-region and fixes what is enabled",
    # A full scan of thousands of instances reads EC2 + IAM (IAM throttles at ~10 TPS) and
    # publishes at Security Hub's 10 TPS: give it Lambda's maximum.
    Duration.minutes(15),
    1024,
    1,
    "ssm-guardrail-drift-scan-",
)
ON_CHANGE = FunctionSpec(
    "OnChange",
    "handlers.on_change.lambda_handler",
    "ssm-guardrail: evaluates the instances a CloudTrail or state-change event touched",
    Duration.minutes(5),
    512,
    2,
    "ssm-guardrail-on-change-",
    events=True,
)

FUNCTIONS = (DRIFT_SCAN, ON_CHANGE)


class GuardrailFunctions(Construct):
    """Both Lambdas, each with its own role, log group, reserved concurrency and the same settings."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: GuardrailConfig,
        store: SessionLogStore,
        access: InstanceAccess,
        failures: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.failures = failures
        # Resolved by CloudFormation at deploy time from the public parameter Powertools publishes
        # in each region, so synth stays offline; pass another path for another version.
        # Defined on the stack for a stable logical id: `--parameters PowertoolsLayerArn=<path>`.
        layer_arn = CfnParameter(
            Stack.of(self),
            "PowertoolsLayerArn",
            type="AWS::SSM::Parameter::Value<String>",
            default=POWERTOOLS_PARAMETER,
            description="SSM parameter holding the Powertools for AWS Lambda (Python) layer ARN "
            f"(default: version {POWERTOOLS_VERSION}, the one requirements.txt pins)",
        )
        self.layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "Powertools", layer_arn.value_as_string
        )
        self.code = lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=ASSET_EXCLUDES)

        # The ProductArn the engine puts on every finding (and BatchImportFindings is scoped to).
        product_arn = finding_product_arn(Aws.PARTITION, Aws.REGION, Aws.ACCOUNT_ID)
        self.placeholders = {
            "partition": Aws.PARTITION,
            "region": Aws.REGION,
            "account": Aws.ACCOUNT_ID,
            "guardrail_role_arn": access.role.role_arn,
            "guardrail_profile_arn": access.profile.instance_profile_arn,
            "log_delivery_policy_arn": access.log_delivery_policy.managed_policy_arn,
            "core_policy_arn": access.core_policy_arn,
            "product_arn": product_arn,
        }
        self.product_arn = product_arn

        self.permissions = generated.needed_permissions(config.enforced())
        if not config.modify_existing_roles:
            # Settings.may_modify: only the guardrail's own instance role gets a policy attached.
            self.permissions = [
                replace(p, resources=("{guardrail_role_arn}",))
                if p.actions == ("iam:AttachRolePolicy",)
                else p
                for p in self.permissions
            ]
        if not config.publish:
            self.permissions = [p for p in self.permissions if p not in PUBLISH_PERMISSIONS]
        self.roles: dict[str, iam.Role] = {}
        for spec in FUNCTIONS:
            self.roles[spec.construct_id] = self._role(spec)

        settings = {
            **config.environment(),
            "GUARDRAIL_INSTANCE_PROFILE": access.profile.instance_profile_name,
            "GUARDRAIL_INSTANCE_ROLE": access.role.role_name,
            "GUARDRAIL_SESSION_LOG_BUCKET": store.bucket.bucket_name,
            "GUARDRAIL_SESSION_LOG_GROUP": store.log_group.log_group_name,
            "GUARDRAIL_SESSION_LOG_KMS_KEY": store.key.key_arn,
            "GUARDRAIL_LOG_DELIVERY_POLICY_ARN": access.log_delivery_policy.managed_policy_arn,
            # Its roles in every region: an IAM change one regional stack makes (a policy
            # attached, a role added to a profile) is forwarded to all of them.
            "GUARDRAIL_ACTOR_ARNS": actor_arns(FUNCTIONS, config.regions),
            # Each regional stack evaluates its own region; IAM events are forwarded to it by
            # EventBridge (IamEventForwarder), not fanned out by the function.
            "GUARDRAIL_REGIONS": Aws.REGION,
        }
        missing = set(ENV) - set(settings)
        if missing:
            raise ValueError(
                f"settings the engine reads but the stack does not set: {sorted(missing)}"
            )
        # What `guardrail scan` needs to judge and fix as this deployment does (the CliSettings
        # output); not its mode (the CLI's is its own, report unless asked) nor event routing.
        self.cli_settings = {k: v for k, v in settings.items() if k not in DEPLOYMENT_ONLY}
        self.environment = {
            **settings,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            # No X-Ray: its PutTraceSegments allows no resource scoping (Resource "*").
            "POWERTOOLS_TRACE_DISABLED": "true",
        }

        concurrency = {
            DRIFT_SCAN.construct_id: config.drift_scan_concurrency,
            ON_CHANGE.construct_id: config.on_change_concurrency,
        }
        specs = (
            replace(DRIFT_SCAN, memory_mb=config.drift_scan_memory_mb),
            replace(ON_CHANGE, memory_mb=config.on_change_memory_mb),
        )
        self.log_groups: dict[str, logs.LogGroup] = {}
        self.functions: dict[str, lambda_.Function] = {}
        for spec in specs:
            self.functions[spec.construct_id] = self._function(
                spec, config.function_log_retention_days, concurrency[spec.construct_id]
            )
        self.drift_scan = self.functions[DRIFT_SCAN.construct_id]
        self.on_change = self.functions[ON_CHANGE.construct_id]

    def _role(self, spec: FunctionSpec) -> iam.Role:
        role = iam.Role(
            self,
            f"{spec.construct_id}Role",
            role_name=spec.role_name(),
            description=f"ssm-guardrail {spec.construct_id}: reads, fixes and reports (generated from "
            "the engine's declared permissions)",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        permissions = [p for p in self.permissions if spec.events or not p.events_only]
        for statement in generated.statements(permissions, self.placeholders):
            role.add_to_policy(statement)
        if any("iam:AttachRolePolicy" in p.actions for p in permissions):
            # The fixes attach policies to instance roles, never to the guardrail's own: neither
            # function may give itself or the other AmazonSSMManagedInstanceCore (which reads
            # every SSM parameter) or more, in any region.
            role.add_to_policy(
                iam.PolicyStatement(
                    effect=iam.Effect.DENY,
                    actions=["iam:AttachRolePolicy"],
                    resources=[
                        f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/{s.role_prefix}*"
                        for s in FUNCTIONS
                    ],
                )
            )
        wildcards = sorted({_nag_form(r) for p in permissions for r in p.resources if "*" in r})
        for resource in wildcards:
            if resource not in WILDCARD_REASONS:
                raise ValueError(
                    f"the engine declares a new wildcard resource {resource!r}: review it and add "
                    "its reason to stacks/functions.py WILDCARD_REASONS"
                )
            acknowledge(
                role, f"AwsSolutions-IAM5[Resource::{resource}]", WILDCARD_REASONS[resource]
            )
        return role

    def _function(
        self, spec: FunctionSpec, retention_days: int, concurrency: int
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self, f"{spec.construct_id}Logs", removal_policy=RemovalPolicy.RETAIN
        )
        log_group.node.default_child.retention_in_days = retention_days  # type: ignore[union-attr]
        self.log_groups[spec.construct_id] = log_group
        role = self.roles[spec.construct_id]
        log_group.grant_write(role)
        function = lambda_.Function(
            self,
            spec.construct_id,
            description=spec.description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=spec.handler,
            code=self.code,
            layers=[self.layer],
            role=role,
            timeout=spec.timeout,
            memory_size=spec.memory_mb,
            environment=self.environment,
            log_group=log_group,
            # 0 means "no reservation": new accounts with a concurrency quota of 10 cannot reserve any.
            reserved_concurrent_executions=concurrency or None,
            retry_attempts=spec.retry_attempts,
            max_event_age=Duration.hours(6),
            # After Lambda's own async retries, the event and the error land in the dead-letter queue.
            on_failure=destinations.SqsDestination(self.failures),
        )
        acknowledge(
            function,
            "AwsSolutions-L1",
            "Issue 3 fixes the runtime at Python 3.12 or 3.13 and the Powertools layer is resolved "
            "from its python3.13 arm64 SSM parameter; 3.14 is a change of RUNTIME and "
            "POWERTOOLS_PARAMETER here once the engine's tests run on 3.14.",
        )
        return function


def _nag_form(resource: str) -> str:
    """A declared resource as cdk-nag prints it once the pseudo-parameter placeholders are filled."""
    return resource.format_map(_NagPlaceholders())


class _NagPlaceholders(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return {
            "partition": "<AWS::Partition>",
            "region": "<AWS::Region>",
            "account": "<AWS::AccountId>",
        }.get(key, "{" + key + "}")
