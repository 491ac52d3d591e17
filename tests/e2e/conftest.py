"""Fixtures for the emulator's own tests: in-process moto with AWS managed policies loaded, and
small builders for roles, profiles and instances."""

from __future__ import annotations

import json

import boto3
import pytest

from emulator import seed

REGION = "us-east-1"
ACCOUNT = "123456789012"
CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
PRODUCT_ARN = f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
EC2_TRUST = json.dumps(seed.EC2_TRUST)


@pytest.fixture
def managed_policies():
    """Ask `emulated` to load AWS managed policies (AmazonSSMManagedInstanceCore); ~2 s a test."""
    return True


@pytest.fixture
def emulated(request, monkeypatch):
    """In-process moto (mock_aws) with the extension installed."""
    from moto import mock_aws

    from emulator.extension import install

    load = "managed_policies" in request.fixturenames
    monkeypatch.setenv(
        "MOTO_IAM_LOAD_MANAGED_POLICIES", "true" if load else "false"
    )  # read at start
    install()
    with mock_aws():
        yield boto3.Session(region_name=REGION)


class Builder:
    """Creates the few resources a test needs through the public APIs."""

    def __init__(self, session: boto3.Session) -> None:
        self.ec2 = session.client("ec2")
        self.iam = session.client("iam")
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/20")["Subnet"][
            "SubnetId"
        ]

    def role(
        self, name: str, *managed: str, inline: dict | None = None, boundary: str | None = None
    ) -> str:
        extra = {"PermissionsBoundary": boundary} if boundary else {}
        arn = self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=EC2_TRUST, **extra)[
            "Role"
        ]["Arn"]
        for policy in managed:
            self.iam.attach_role_policy(RoleName=name, PolicyArn=policy)
        if inline:
            self.iam.put_role_policy(
                RoleName=name, PolicyName="inline", PolicyDocument=json.dumps(inline)
            )
        return arn

    def policy(self, name: str, *statements: dict) -> str:
        document = {"Version": "2012-10-17", "Statement": list(statements)}
        return self.iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))[
            "Policy"
        ]["Arn"]

    def profile(self, name: str, role: str | None = None) -> str:
        self.iam.create_instance_profile(InstanceProfileName=name)
        if role:
            self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
        return name

    def instances(self, count: int = 1, profile: str | None = None) -> list[str]:
        extra = {"IamInstanceProfile": {"Name": profile}} if profile else {}
        out = self.ec2.run_instances(
            ImageId="ami-12345678", MinCount=count, MaxCount=count, SubnetId=self.subnet, **extra
        )
        return [i["InstanceId"] for i in out["Instances"]]


@pytest.fixture
def build(emulated):
    return Builder(emulated)


def finding(
    finding_id: str,
    *,
    status: str = "FAILED",
    updated: str = "2025-01-01T00:00:00.000Z",
    **extra: object,
) -> dict:
    """A minimal valid ASFF finding of the account's default product."""
    return {
        "SchemaVersion": "2018-10-08",
        "Id": finding_id,
        "ProductArn": PRODUCT_ARN,
        "GeneratorId": "test",
        "AwsAccountId": ACCOUNT,
        "Types": ["Software and Configuration Checks"],
        "CreatedAt": "2025-01-01T00:00:00.000Z",
        "UpdatedAt": updated,
        "Severity": {"Label": "HIGH"},
        "Title": "t",
        "Description": "d",
        "Resources": [{"Type": "Other", "Id": finding_id}],
        "Compliance": {"Status": status},
        **extra,
    }
