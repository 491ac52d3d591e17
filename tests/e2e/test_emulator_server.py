"""EmulatedAccount and the extension through a real loopback ThreadedMotoServer."""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlparse

import boto3
import pytest

from emulator.server import EmulatedAccount
from tests.e2e.conftest import CORE, EC2_TRUST, PRODUCT_ARN, finding

pytestmark = pytest.mark.e2e


def test_points_the_process_at_loopback_and_puts_everything_back():
    before = dict(os.environ)
    with EmulatedAccount(load_managed_policies=False) as account:
        url = urlparse(account.endpoint_url)
        assert url.hostname == "127.0.0.1"
        assert os.environ["AWS_ENDPOINT_URL"] == account.endpoint_url
        assert os.environ["AWS_ACCESS_KEY_ID"] == "emulated"
        assert "AWS_SESSION_TOKEN" not in os.environ
        assert os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] == "false"
        assert os.environ["AWS_DEFAULT_REGION"] == account.region
        # A client built the ordinary way reaches the emulator, not AWS.
        assert boto3.client("sts").get_caller_identity()["Account"] == account.account_id
    assert dict(os.environ) == before
    with pytest.raises(OSError), socket.create_connection((url.hostname, url.port), timeout=1):
        pass  # the server is gone


@pytest.fixture(scope="module")
def account():
    with EmulatedAccount() as running:
        yield running


def test_describe_instance_information_pages_over_the_wire(account):
    session = account.session()
    iam, ec2 = session.client("iam"), session.client("ec2")
    iam.create_role(RoleName="core", AssumeRolePolicyDocument=EC2_TRUST)
    iam.attach_role_policy(RoleName="core", PolicyArn=CORE)
    iam.create_instance_profile(InstanceProfileName="core")
    iam.add_role_to_instance_profile(InstanceProfileName="core", RoleName="core")
    managed = [
        i["InstanceId"]
        for i in ec2.run_instances(
            ImageId="ami-12345678", MinCount=11, MaxCount=11, IamInstanceProfile={"Name": "core"}
        )["Instances"]
    ]
    ec2.run_instances(ImageId="ami-12345678", MinCount=2, MaxCount=2)  # no profile: not managed

    pages = list(
        session.client("ssm")
        .get_paginator("describe_instance_information")
        .paginate(PaginationConfig={"PageSize": 5})
    )

    assert [len(p["InstanceInformationList"]) for p in pages] == [5, 5, 1]
    listed = [i for p in pages for i in p["InstanceInformationList"]]
    assert sorted(i["InstanceId"] for i in listed) == sorted(managed)
    assert {i["PingStatus"] for i in listed} == {"Online"}


def test_batch_update_findings_over_the_wire(account):
    hub = account.session().client("securityhub")
    hub.enable_security_hub(EnableDefaultStandards=False)
    hub.batch_import_findings(Findings=[finding("wire-a"), finding("wire-b")])

    answer = hub.batch_update_findings(
        FindingIdentifiers=[
            {"Id": "wire-a", "ProductArn": PRODUCT_ARN},
            {"Id": "wire-missing", "ProductArn": PRODUCT_ARN},
        ],
        Workflow={"Status": "RESOLVED"},
        Note={"Text": "closed", "UpdatedBy": "test"},
    )

    assert [p["Id"] for p in answer["ProcessedFindings"]] == ["wire-a"]
    assert answer["UnprocessedFindings"][0]["ErrorCode"] == "FindingNotFound"
    stored = {f["Id"]: f for f in hub.get_findings()["Findings"]}
    assert stored["wire-a"]["Workflow"]["Status"] == "RESOLVED"
    assert stored["wire-a"]["Note"]["Text"] == "closed"
    assert stored["wire-b"]["Workflow"]["Status"] == "NEW"


def test_simulate_principal_policy_over_the_wire(account):
    iam = account.session().client("iam")
    arn = iam.create_role(RoleName="writer", AssumeRolePolicyDocument=EC2_TRUST)["Role"]["Arn"]
    iam.put_role_policy(
        RoleName="writer",
        PolicyName="w",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::logs/*"},
                    {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
                ],
            }
        ),
    )

    results = iam.simulate_principal_policy(
        PolicySourceArn=arn,
        ActionNames=["s3:PutObject", "s3:DeleteObject", "kms:Decrypt"],
        ResourceArns=["arn:aws:s3:::logs/a"],
    )["EvaluationResults"]

    assert {r["EvalActionName"]: r["EvalDecision"] for r in results} == {
        "s3:PutObject": "allowed",
        "s3:DeleteObject": "explicitDeny",
        "kms:Decrypt": "implicitDeny",
    }
