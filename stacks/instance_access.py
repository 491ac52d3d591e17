"""What the guardrail's fixes hand to instances: an EC2 role, its instance profile, and the
managed policy that lets any instance role deliver session logs to the SessionLogStore."""

from __future__ import annotations

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_iam as iam
from constructs import Construct
from guardrail.controls.session_logging import DELIVERY_ACTIONS
from guardrail.controls.ssm_role import CORE_POLICY

from .nag import acknowledge
from .session_log_store import SessionLogStore


class InstanceAccess(Construct):
    """The guardrail's EC2 role + instance profile, and the session-log delivery managed policy."""

    def __init__(self, scope: Construct, construct_id: str, *, store: SessionLogStore) -> None:
        super().__init__(scope, construct_id)
        # Session Manager's documented instance permissions for S3 and CloudWatch Logs delivery
        # (the agent checks the bucket's encryption and the group before streaming).
        self.log_delivery_policy = iam.ManagedPolicy(
            self,
            "LogDeliveryPolicy",
            description="ssm-guardrail: lets an instance role deliver Session Manager logs to the "
            "guardrail's encrypted bucket and log group",
            statements=[
                iam.PolicyStatement(
                    sid="WriteSessionLogObjects",
                    actions=list(DELIVERY_ACTIONS["objects"]),
                    resources=[store.object_arn_pattern],
                ),
                iam.PolicyStatement(
                    sid="CheckBucketEncryption",
                    actions=list(DELIVERY_ACTIONS["bucket"]),
                    resources=[store.bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="StreamToSessionLogGroup",
                    actions=[*DELIVERY_ACTIONS["log_stream"], *DELIVERY_ACTIONS["log_group"]],
                    resources=[store.log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="FindSessionLogGroup",
                    actions=list(DELIVERY_ACTIONS["log_groups"]),
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="UseSessionLogKey",
                    actions=list(DELIVERY_ACTIONS["bucket_key"]),  # its bucket's key too
                    resources=[store.key.key_arn],
                ),
            ],
        )
        # Kept on destroy, as the bucket, log group and key are: the preferences the fixes wrote
        # still log there (with the key and encryption flags the agent checks before every
        # session), and the roles it was attached to would otherwise be refused every session.
        self.log_delivery_policy.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge(
            self.log_delivery_policy,
            f"AwsSolutions-IAM5[Resource::<{_logical(store.bucket)}.Arn>/{store.prefix}*]",
            "Session Manager writes one object per session under the configured prefix; object "
            "keys are not known in advance, so the wildcard is limited to the prefix of this bucket.",
        )
        acknowledge(
            self.log_delivery_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "Only logs:DescribeLogGroups, a read-only call that Session Manager's documented "
            "instance policy grants on *; the agent uses it to find the log group before streaming.",
        )

        self.role = iam.Role(
            self,
            "InstanceRole",
            description="ssm-guardrail: EC2 role given to instances without one (Session Manager + "
            "session-log delivery)",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(CORE_POLICY),
                self.log_delivery_policy,
            ],
        )
        acknowledge(
            self.role,
            f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{CORE_POLICY}]",
            "The ssm-instance-role control defines compliance as having AmazonSSMManagedInstanceCore "
            "(AWS keeps it current with the SSM Agent's needs); a copy would drift and fail the check.",
        )
        self.profile = iam.InstanceProfile(self, "InstanceProfile", role=self.role)

    @property
    def core_policy_arn(self) -> str:
        return f"arn:{Aws.PARTITION}:iam::aws:policy/{CORE_POLICY}"


def _logical(construct: Construct) -> str:
    """The logical id cdk-nag prints for a construct's CloudFormation resource."""
    from aws_cdk import Stack

    child = construct.node.default_child
    return Stack.of(construct).resolve(child.logical_id)  # type: ignore[union-attr]
