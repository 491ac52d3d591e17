"""CallCounter: what the bench and the call-bound tests rely on."""

from __future__ import annotations

from botocore.awsrequest import AWSResponse
from botocore.config import Config
from moto.core.botocore_stubber import MockRawResponse

from emulator.calls import CallCounter


def test_counts_each_operation_through_a_session(emulated):
    counter = CallCounter(emulated)
    ec2, iam = emulated.client("ec2"), emulated.client("iam")
    ec2.describe_vpcs()
    ec2.describe_vpcs()
    ec2.describe_security_groups()
    iam.list_roles()

    assert counter.by_operation() == {
        "ec2:DescribeVpcs": 2,
        "ec2:DescribeSecurityGroups": 1,
        "iam:ListRoles": 1,
    }
    assert counter.total == 4
    assert counter.count("ec2:DescribeVpcs") == 2
    assert counter.by_service() == {"ec2": 3, "iam": 1}
    counter.reset()
    assert counter.total == 0 and counter.by_operation() == {}


def test_counts_every_page_and_clients_attached_later(emulated):
    early = emulated.client("iam")  # made before the counter: needs attaching itself
    counter = CallCounter(emulated)
    early.list_roles()
    assert counter.total == 0
    counter.attach(early)
    for n in range(5):
        early.create_role(RoleName=f"r{n}", AssumeRolePolicyDocument="{}")
    pages = list(early.get_paginator("list_roles").paginate(PaginationConfig={"PageSize": 2}))

    assert len(pages) == 3
    assert counter.count("iam:ListRoles") == 3  # one call per page
    assert counter.count("iam:CreateRole") == 5


def test_retries_count_as_calls(emulated):
    counter = CallCounter(emulated)
    client = emulated.client("sts", config=Config(retries={"mode": "standard", "max_attempts": 3}))
    failures = {"left": 1}

    def flaky(request, **_):
        if failures["left"]:
            failures["left"] -= 1
            return AWSResponse(request.url, 503, {}, MockRawResponse(b""))
        return None

    client.meta.events.register("before-send.sts.GetCallerIdentity", flaky)
    assert client.get_caller_identity()["Account"]
    assert counter.count("sts:GetCallerIdentity") == 2  # the 503 and the retry


def test_a_botocore_session_can_be_counted_too(emulated):
    botocore_session = emulated._session
    counter = CallCounter(botocore_session)
    botocore_session.create_client("sts", region_name="us-east-1").get_caller_identity()
    assert counter.by_operation() == {"sts:GetCallerIdentity": 1}
