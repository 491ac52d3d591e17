"""Where Session Manager sessions are logged: a KMS key, an S3 bucket and a CloudWatch log group.

The guardrail's session-logging fix points the region's Session Manager preferences at these;
everything is retained on stack deletion because session logs are audit evidence.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct


class SessionLogStore(Construct):
    """KMS key (rotated), S3 bucket (KMS, TLS only, versioned, lifecycle, access-logged), log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        log_group_name: str,
        retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.prefix = prefix
        self.log_group_name = log_group_name
        log_group_arn = Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=log_group_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

        self.key = kms.Key(
            self,
            "Key",
            description="ssm-guardrail: encrypts Session Manager session logs (S3 and CloudWatch Logs)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )
        # CloudWatch Logs encrypts a log group with a CMK only if the key policy lets the regional
        # service principal use it, scoped by the encryption context to this one log group.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsForTheSessionLogGroup",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_group_arn}},
            )
        )

        # Once the preferences name this key, the Session Manager plugin of whoever starts a
        # session calls kms:GenerateDataKey on it with their own credentials (encryption context
        # aws:ssm:SessionId / aws:ssm:TargetId): without this grant, every person whose IAM
        # policy lacks that action (AWS's minimal Session Manager policies do) is locked out.
        # Only principals of this account, only data keys for Session Manager sessions.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowSessionUsersOfThisAccountToEncryptSessions",
                principals=[iam.AnyPrincipal()],
                actions=["kms:GenerateDataKey"],
                resources=["*"],
                conditions={
                    "StringEquals": {"kms:CallerAccount": Aws.ACCOUNT_ID},
                    "Null": {"kms:EncryptionContext:aws:ssm:SessionId": "false"},
                },
            )
        )

        # S3 server access logging cannot deliver to an SSE-KMS bucket: the log bucket uses SSE-S3.
        # (cdk-nag's S1 does not ask a log-target bucket to log itself.)
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # one KMS call per bucket key, not per object
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="session-log-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-session-logs",
                    prefix=prefix,
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )

        # The log-delivery policy grants the instances kms:Decrypt on this key (a multipart upload
        # needs it). With s3:GetObject on * of their own (AmazonS3ReadOnlyAccess, say) any
        # instance role could then read every session's transcript: reads signed with an
        # instance's role credentials (ec2:SourceInstanceARN is set on those alone) are refused.
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenySessionLogReadsFromInstanceCredentials",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={"Null": {"ec2:SourceInstanceARN": "false"}},
            )
        )

        # Kept with the buckets on destroy: the TLS-only Deny, the Deny above and the access
        # logs' delivery grant (CloudFormation would delete the policies of kept buckets).
        for bucket in (self.bucket, self.access_log_bucket):
            assert bucket.policy is not None  # enforce_ssl made it
            bucket.policy.apply_removal_policy(RemovalPolicy.RETAIN)

        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=log_group_name,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.log_group.node.default_child.retention_in_days = retention_days  # type: ignore[union-attr]

    @property
    def object_arn_pattern(self) -> str:
        return self.bucket.arn_for_objects(f"{self.prefix}*")
