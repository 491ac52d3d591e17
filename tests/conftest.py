"""Shared fixtures: fake credentials (never real AWS), moto accounts, and a seeded-resource helper."""

from __future__ import annotations

import os

import boto3
import pytest
from hypothesis import settings

os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    MOTO_EC2_LOAD_DEFAULT_AMIS="false",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_NAMESPACE="SsmGuardrail",
    POWERTOOLS_SERVICE_NAME="ssm-guardrail",
    JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
)
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
    os.environ.pop(_name, None)

REGION = "us-east-1"

# Property tests draw the same examples on every run: CI stays reproducible (a failure found
# once is found again), and `HYPOTHESIS_PROFILE=explore` searches afresh on a workstation.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def rule_key(raw: dict) -> tuple:
    """A DescribeSecurityGroupRules item as (protocol, from, to, source): what a test compares."""
    return (
        raw["IpProtocol"],
        raw.get("FromPort"),
        raw.get("ToPort"),
        raw.get("CidrIpv4")
        or raw.get("CidrIpv6")
        or raw.get("PrefixListId")
        or (raw.get("ReferencedGroupInfo") or {}).get("GroupId"),
    )


@pytest.fixture
def aws():
    """An empty emulated account (moto, in-process) with the guardrail's extension installed."""
    from moto import mock_aws

    from emulator.extension import install

    install()
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def clients(aws):
    from guardrail.clients import AwsClients

    return AwsClients(session=aws, region=REGION)
