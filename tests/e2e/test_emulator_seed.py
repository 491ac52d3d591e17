"""The seeded account: every condition and its compliant twin exist, as the APIs show them."""

from __future__ import annotations

import boto3
import pytest
from guardrail.settings import ENV, Settings

from emulator.seed import (
    ACCOUNT_CASES,
    FAILED,
    LOGGING,
    NA,
    ROLE,
    SSH,
    seed_account,
)
from tests.conftest import rule_key
from tests.e2e.conftest import CORE, REGION


@pytest.fixture(scope="module")
def account():
    """One seeded account for the module (in-process moto: seeding is the slow part)."""
    from moto import mock_aws

    from emulator.extension import install

    install()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        with mock_aws():
            session = boto3.Session(region_name=REGION)
            yield session, seed_account(session, REGION, instances=64)


def described(session) -> dict[str, dict]:
    ec2 = session.client("ec2")
    return {
        i["InstanceId"]: i
        for page in ec2.get_paginator("describe_instances").paginate()
        for r in page["Reservations"]
        for i in r["Instances"]
    }


def ingress(session, group_id: str) -> list[dict]:
    rules = session.client("ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )["SecurityGroupRules"]
    return [r for r in rules if not r["IsEgress"]]


def test_counts_vpcs_and_every_case(account):
    session, seeded = account
    instances = described(session)
    assert len(seeded.instance_ids) == 64 and set(seeded.instance_ids) == set(instances)
    assert len(seeded.vpcs) == 2
    vpcs = {v["VpcId"]: v["CidrBlock"] for v in session.client("ec2").describe_vpcs()["Vpcs"]}
    assert {vpcs[v] for v in seeded.vpcs.values()} == {"10.0.0.0/16", "10.1.0.0/16"}
    for case in ACCOUNT_CASES:
        ids = seeded.instances[case.name]
        assert len(ids) == case.count >= 1, case.name
        assert all(instances[i]["Tags"] for i in ids)
    assert len(seeded.instances["compliant"]) == 64 - sum(c.count for c in ACCOUNT_CASES)


def test_every_ssh_shape_and_its_twin_is_in_the_rules(account):
    session, seeded = account
    g = seeded.groups

    def sources(name: str) -> set[tuple]:
        return {rule_key(r) for r in ingress(session, g[name])}

    assert ("tcp", 22, 22, "0.0.0.0/0") in sources("ssh-world")
    assert ("tcp", 22, 22, "::/0") in sources("ssh-world-v6")
    assert ("tcp", 0, 65535, "0.0.0.0/0") in sources("all-tcp")
    assert {("-1", -1, -1, "0.0.0.0/0"), ("-1", -1, -1, "::/0")} <= sources("all-traffic")
    assert ("tcp", 0, 1024, "0.0.0.0/0") in sources("admin-range")
    assert sources("udp-22") == {("udp", 22, 22, "0.0.0.0/0")}
    assert sources("ssh-private") == {("tcp", 22, 22, "10.0.0.0/8")}
    assert sources("ssh-prefix-list") == {("tcp", 22, 22, seeded.prefix_list_id)}
    assert sources("ssh-from-bastion") == {("tcp", 22, 22, g["bastion"])}
    assert ("tcp", 22, 22, "0.0.0.0/0") in sources("staging-ssh-world")


def test_instance_shapes_match_their_cases(account):
    session, seeded = account
    instances = described(session)

    def of(case: str) -> list[dict]:
        return [instances[i] for i in seeded.instances[case]]

    for i in of("ssh-secondary-eni"):
        by_device = {
            n["Attachment"]["DeviceIndex"]: [x["GroupId"] for x in n["Groups"]]
            for n in i["NetworkInterfaces"]
        }
        assert by_device[1] == [seeded.groups["ssh-secondary"]]
        assert seeded.groups["ssh-secondary"] not in by_device[0]
    assert all(i["State"]["Name"] == "stopped" for i in of("ssh-stopped") + of("compliant-stopped"))
    assert all(i["State"]["Name"] == "terminated" for i in of("ssh-terminated"))
    assert all(i.get("PublicIpAddress") for i in of("ssh-ipv4-public") + of("ssh-staging-shared"))
    assert not any(i.get("PublicIpAddress") for i in of("ssh-private-ip-only"))
    assert not any("IamInstanceProfile" in i for i in of("role-no-profile"))
    assert all(
        i["IamInstanceProfile"]["Arn"].endswith("/ssm-guardrail-instance") for i in of("compliant")
    )
    staging = {
        s["SubnetId"]
        for s in session.client("ec2").describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [seeded.vpcs["staging"]]}]
        )["Subnets"]
    }
    assert all(i["SubnetId"] in staging for i in of("ssh-staging-shared"))


def test_iam_conditions(account):
    session, seeded = account
    iam = session.client("iam")

    def attached(role: str) -> set[str]:
        return {
            p["PolicyArn"]
            for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        }

    assert attached(seeded.instance_role) == {CORE, seeded.log_delivery_policy_arn}
    assert attached("app-core-role") == {CORE}
    assert attached("app-legacy-role") == set()
    assert attached("app-hardened-role") == {
        seeded.equivalent_policy_arn,
        seeded.log_delivery_policy_arn,
    }
    assert (
        iam.get_instance_profile(InstanceProfileName="app-empty")["InstanceProfile"]["Roles"] == []
    )
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_instance_profile(InstanceProfileName="app-retired")
    retired = described(session)[seeded.instances["profile-deleted"][0]]
    assert retired["IamInstanceProfile"]["Arn"].endswith("/app-retired")


def test_log_delivery_policy_grants_exactly_what_session_manager_needs(account):
    session, seeded = account
    iam = session.client("iam")
    role = iam.get_role(RoleName=seeded.instance_role)["Role"]["Arn"]
    group = f"arn:aws:logs:{REGION}:{seeded.account_id}:log-group:{seeded.log_group}"
    pairs = [
        ("s3:PutObject", f"arn:aws:s3:::{seeded.bucket}/session-logs/i-1/session.log"),
        ("s3:GetEncryptionConfiguration", f"arn:aws:s3:::{seeded.bucket}"),
        ("logs:CreateLogStream", f"{group}:log-stream:s"),
        ("logs:PutLogEvents", f"{group}:log-stream:s"),
        ("logs:DescribeLogStreams", f"{group}:log-stream:"),
        ("logs:DescribeLogGroups", "*"),
        ("kms:Decrypt", seeded.kms_key_arn),
        ("kms:GenerateDataKey", seeded.kms_key_arn),
    ]
    for action, resource in pairs:
        result = iam.simulate_principal_policy(
            PolicySourceArn=role, ActionNames=[action], ResourceArns=[resource]
        )["EvaluationResults"][0]
        assert result["EvalDecision"] == "allowed", (action, resource)
    outside = iam.simulate_principal_policy(
        PolicySourceArn=role,
        ActionNames=["s3:PutObject"],
        ResourceArns=[f"arn:aws:s3:::{seeded.bucket}/elsewhere/x"],
    )
    assert outside["EvaluationResults"][0]["EvalDecision"] == "implicitDeny"


def test_guardrail_resources_and_fresh_region(account):
    session, seeded = account
    assert session.client("kms").describe_key(KeyId=seeded.kms_key_arn)["KeyMetadata"]["Enabled"]
    encryption = session.client("s3").get_bucket_encryption(Bucket=seeded.bucket)
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"
    ]
    assert rule["SSEAlgorithm"] == "aws:kms"
    groups = session.client("logs").describe_log_groups(logGroupNamePrefix=seeded.log_group)[
        "logGroups"
    ]
    assert groups[0]["kmsKeyId"] == seeded.kms_key_arn
    assert session.client("securityhub").describe_hub()["HubArn"].endswith(":hub/default")
    with pytest.raises(session.client("ssm").exceptions.InvalidDocument):
        session.client("ssm").get_document(Name="SSM-SessionManagerRunShell")
    managed = {
        i["InstanceId"]: i["PingStatus"]
        for page in session.client("ssm").get_paginator("describe_instance_information").paginate()
        for i in page["InstanceInformationList"]
    }
    assert {managed.get(i) for i in seeded.instances["compliant"]} == {"Online"}
    assert not set(managed) & set(  # stopped: AWS lists no stopped instance
        seeded.instances["role-no-profile"]
        + seeded.instances["role-without-core"]
        + seeded.instances["compliant-stopped"]
    )


def test_settings_env_builds_valid_settings(account):
    _, seeded = account
    env = seeded.settings_env()
    assert set(env) <= set(ENV)
    settings = Settings.from_env(env)
    assert settings.instance_profile == "ssm-guardrail-instance"
    assert settings.session_log_kms_key == seeded.kms_key_arn
    assert settings.equivalent_policy_arns == (seeded.equivalent_policy_arn,)
    assert settings.log_delivery_policy_arn.endswith(":policy/ssm-guardrail-session-log-delivery")
    assert all(isinstance(v, str) and v for v in env.values())


def test_expectations_cover_every_control(account):
    _, seeded = account
    for control in (SSH, ROLE, LOGGING):
        assert seeded.expected(control, FAILED), control
    assert seeded.expected(SSH, NA) == set(seeded.instances["ssh-terminated"])
    assert seeded.case_of(seeded.instances["profile-deleted"][0]).fixable is False


def test_every_internet_ssh_case_names_its_severity():
    """SSH severity depends on reachability, which the status does not tell: each failing SSH
    case states CRITICAL or HIGH rather than falling back to the role/logging MEDIUM."""
    from emulator.seed import EXPLICIT_DENY_CASE, FLEET_SHARES

    cases = [*ACCOUNT_CASES, EXPLICIT_DENY_CASE, *(c for c, _ in FLEET_SHARES)]
    for case in cases:
        for control in (SSH, ROLE, LOGGING):
            severity = case.expected_severity(control)
            if case.expected(control) != FAILED:
                assert severity == "INFORMATIONAL", (case.name, control)
            elif control == SSH:
                assert case.severity.get(SSH) in ("CRITICAL", "HIGH"), case.name
            else:
                assert severity == "MEDIUM", (case.name, control)
