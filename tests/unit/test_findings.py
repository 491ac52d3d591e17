"""ASFF findings: valid for Security Hub's own API model, deterministic Ids, limits, states."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from guardrail.controls.ssh_open import SSH_OPEN
from guardrail.findings import (
    RESOLUTION_NOTE,
    build_finding,
    finding_id,
    product_arn,
    resource_arn,
)
from guardrail.model import (
    FixRecord,
    Instance,
    Outcome,
    ResourceType,
    Result,
    SecurityGroup,
    SecurityGroupRule,
    Status,
    undo_part,
)

ACCOUNT = "123456789012"
REGION = "eu-west-1"
NOW = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
MODEL = botocore.session.get_session().get_service_model("securityhub")
IMPORT_INPUT = MODEL.operation_model("BatchImportFindings").input_shape
FINDING_SHAPE = IMPORT_INPUT.members["Findings"].member


class LoggingControl:
    """A stand-in with the metadata of a regional control that no Security Hub control covers."""

    id = "session-logging-off"
    title = "Session Manager sessions are not logged in this region"
    description = "Session Manager preferences log sessions neither to S3 nor to CloudWatch Logs."
    related_requirements: tuple[str, ...] = ()
    finding_types = ("Software and Configuration Checks/AWS Security Best Practices",)
    recommendation = "Set Session Manager preferences to log to S3 or CloudWatch Logs."
    recommendation_url = "https://docs.aws.amazon.com/systems-manager/latest/userguide/"
    fix_changes: tuple[str, ...] = ()


def result(
    resource_type: ResourceType = ResourceType.INSTANCE,
    resource_id: str = "i-0abc",
    status: Status = Status.FAILED,
    severity: str = "CRITICAL",
    reason: str = "TCP 22 open to the internet through sg-1 (rules sgr-1)",
    **changes: Any,
) -> Result:
    base = Result(
        SSH_OPEN.id, resource_type, resource_id, status, severity, reason,
        account_id=ACCOUNT, region=REGION, partition="aws",
        details={"security_group_ids": ["sg-1"], "rule_ids": ["sgr-1"]},
    )  # fmt: skip
    return replace(base, **changes)


INSTANCE = Instance(
    instance_id="i-0abc",
    state="running",
    security_group_ids=("sg-1",),
    network_interface_ids=("eni-1", "eni-2"),
    public_ip="203.0.113.10",
    private_ip="10.0.0.5",
    vpc_id="vpc-1",
    subnet_id="subnet-1",
    image_id="ami-1",
    instance_type="t3.micro",
    launched_at="2026-01-02T03:04:05+00:00",
    profile_arn=f"arn:aws:iam::{ACCOUNT}:instance-profile/app",
)
GROUP = SecurityGroup(
    group_id="sg-1",
    group_name="web",
    vpc_id="vpc-1",
    owner_id=ACCOUNT,
    rules=(
        SecurityGroupRule("sgr-1", "sg-1", "tcp", 22, 22, cidr_ipv4="0.0.0.0/0"),
        SecurityGroupRule("sgr-2", "sg-1", "tcp", 22, 22, cidr_ipv6="::/0"),
        SecurityGroupRule("sgr-3", "sg-1", "tcp", 443, 443, prefix_list_id="pl-1"),
        SecurityGroupRule("sgr-4", "sg-1", "-1", -1, -1, referenced_group_id="sg-2"),
        SecurityGroupRule("sgr-5", "sg-1", "-1", -1, -1, cidr_ipv4="0.0.0.0/0", is_egress=True),
    ),
)
BIG = {"rules": [{"SecurityGroupRuleId": f"sgr-{n}", "Description": "x" * 200} for n in range(50)]}
FIX = FixRecord(
    SSH_OPEN.id, "sg-1", "revoke internet SSH", Outcome.APPLIED,
    before=BIG, after={"readded": BIG["rules"], "note": "ü\"\\" * 900}, reason="revoked 2 rule(s)",
)  # fmt: skip


def shape_problems(value: Any, shape: Any, path: str) -> list[str]:
    """What ParamValidator does not check: enums and the NonEmptyString pattern."""
    problems: list[str] = []
    if shape.type_name == "structure":
        for key, item in value.items():
            problems += shape_problems(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list":
        for index, item in enumerate(value):
            problems += shape_problems(item, shape.member, f"{path}[{index}]")
    elif shape.type_name == "map":
        for key, item in value.items():
            problems += shape_problems(key, shape.key, f"{path} key {key!r}")
            problems += shape_problems(item, shape.value, f"{path}.{key}")
    elif shape.type_name == "string":
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in {shape.enum}")
        pattern = shape.metadata.get("pattern")
        if pattern and not re.fullmatch(pattern, value, re.DOTALL):
            problems.append(f"{path}: {value!r} does not match {pattern}")
    return problems


def assert_valid(finding: dict[str, Any]) -> None:
    report = ParamValidator().validate({"Findings": [finding]}, IMPORT_INPUT)
    assert not report.has_errors(), report.generate_report()
    assert shape_problems(finding, FINDING_SHAPE, "Finding") == []
    required = [member for member in FINDING_SHAPE.required_members] + ["Severity", "Types"]
    assert all(finding.get(key) for key in required)
    assert len(finding["Id"]) <= 512
    assert len(finding["Title"]) <= 256
    assert len(finding["Description"]) <= 1024
    assert len(finding["Remediation"]["Recommendation"]["Text"]) <= 512
    assert len(finding["ProductFields"]) <= 50
    assert all(len(k) <= 128 and len(v) <= 2048 for k, v in finding["ProductFields"].items())
    assert len(json.dumps(finding).encode()) < 240 * 1024


CASES = {
    "instance failed": lambda: build_finding(
        result(), SSH_OPEN, generated_at=NOW, instance=INSTANCE
    ),
    "instance passed": lambda: build_finding(
        result(status=Status.PASSED, severity="INFORMATIONAL", reason="no internet SSH"),
        SSH_OPEN,
        generated_at=NOW,
        instance=INSTANCE,
    ),
    "instance terminated": lambda: build_finding(
        result(
            status=Status.NOT_APPLICABLE, severity="INFORMATIONAL", reason="instance is terminated"
        ),
        SSH_OPEN,
        generated_at=NOW,
        instance=replace(INSTANCE, state="terminated", public_ip=None),
    ),
    "group remediated with large fixes": lambda: build_finding(
        result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH"),
        SSH_OPEN,
        generated_at=NOW,
        fixes=[FIX] * 12,
        remediated=True,
        group=GROUP,
    ),
    "group failed fix": lambda: build_finding(
        result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH"),
        SSH_OPEN,
        generated_at=NOW,
        fixes=[replace(FIX, outcome=Outcome.FAILED, error_code="UnauthorizedOperation")],
        group=GROUP,
    ),
    "account failed": lambda: build_finding(
        result(
            ResourceType.ACCOUNT,
            ACCOUNT,
            severity="MEDIUM",
            control="session-logging-off",
            reason="no Session Manager preferences document in this region",
            details={},
        ),
        LoggingControl(),
        generated_at=NOW,
    ),
    "account remediated": lambda: build_finding(
        result(ResourceType.ACCOUNT, ACCOUNT, severity="MEDIUM", control="session-logging-off"),
        LoggingControl(),
        generated_at=NOW,
        remediated=True,
        fixes=[
            FixRecord(
                "session-logging-off",
                ACCOUNT,
                "set session logging",
                Outcome.APPLIED,
                before=None,
                after={"s3BucketName": "logs"},
            )
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_finding_is_accepted_by_the_security_hub_api_model(case: str) -> None:
    assert_valid(CASES[case]())


def test_a_failed_instance_finding_carries_what_an_analyst_needs() -> None:
    finding = CASES["instance failed"]()
    assert (
        finding["ProductArn"] == f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
    )
    assert finding["GeneratorId"] == "ssm-guardrail/ssh-open-to-internet"
    assert finding["Severity"] == {"Label": "CRITICAL"}
    assert finding["FindingProviderFields"] == {
        "Severity": {"Label": "CRITICAL"},
        "Types": list(SSH_OPEN.finding_types),
    }
    assert finding["Compliance"] == {
        "Status": "FAILED",
        "RelatedRequirements": list(SSH_OPEN.related_requirements),
    }
    assert finding["RecordState"] == "ACTIVE"
    assert finding["CreatedAt"] == finding["UpdatedAt"] == "2026-05-04T03:02:01.123Z"
    assert "sg-1" in finding["Description"]
    assert finding["Remediation"]["Recommendation"]["Url"] == SSH_OPEN.recommendation_url
    fields = finding["ProductFields"]
    assert fields["ssm-guardrail/ControlId"] == "ssh-open-to-internet"
    assert fields["ssm-guardrail/ResultStatus"] == "FAILED"
    assert "sg-1" in fields["ssm-guardrail/Reason"]
    resource = finding["Resources"][0]
    assert resource["Type"] == "AwsEc2Instance"
    assert resource["Id"] == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0abc"
    assert (resource["Partition"], resource["Region"]) == ("aws", REGION)
    assert resource["Details"]["AwsEc2Instance"] == {
        "Type": "t3.micro",
        "ImageId": "ami-1",
        "IpV4Addresses": ["203.0.113.10", "10.0.0.5"],
        "VpcId": "vpc-1",
        "SubnetId": "subnet-1",
        "IamInstanceProfileArn": f"arn:aws:iam::{ACCOUNT}:instance-profile/app",
        "LaunchedAt": "2026-01-02T03:04:05.000Z",
        "NetworkInterfaces": [{"NetworkInterfaceId": "eni-1"}, {"NetworkInterfaceId": "eni-2"}],
    }


def test_instance_details_leave_out_fields_without_values() -> None:
    bare = Instance(instance_id="i-0abc", state="stopped")
    finding = build_finding(result(), SSH_OPEN, generated_at=NOW, instance=bare)
    assert "Details" not in finding["Resources"][0]
    assert_valid(finding)


def test_group_details_list_ingress_rules_by_source_kind_and_leave_out_egress() -> None:
    finding = build_finding(
        result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH"), SSH_OPEN,
        generated_at=NOW, group=GROUP,
    )  # fmt: skip
    resource = finding["Resources"][0]
    assert resource["Type"] == "AwsEc2SecurityGroup"
    assert resource["Id"] == f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-1"
    details = resource["Details"]["AwsEc2SecurityGroup"]
    assert (details["GroupName"], details["GroupId"], details["OwnerId"], details["VpcId"]) == (
        "web", "sg-1", ACCOUNT, "vpc-1"
    )  # fmt: skip
    assert details["IpPermissions"] == [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
         "PrefixListIds": [{"PrefixListId": "pl-1"}]},
        {"IpProtocol": "-1", "FromPort": -1, "ToPort": -1,
         "UserIdGroupPairs": [{"GroupId": "sg-2"}]},
    ]  # fmt: skip


def test_a_group_with_a_thousand_rules_still_fits_and_says_what_was_left_out() -> None:
    rules = tuple(
        SecurityGroupRule(f"sgr-{n}", "sg-1", "tcp", n, n, cidr_ipv4="10.0.0.0/8")
        for n in range(1000, 2000)
    )
    finding = build_finding(
        result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH"), SSH_OPEN,
        generated_at=NOW, group=replace(GROUP, rules=rules),
    )  # fmt: skip
    assert_valid(finding)
    assert finding["ProductFields"]["ssm-guardrail/IpPermissionsOmitted"] == "800"


def test_a_fixed_group_does_not_show_the_rules_it_had_before_the_fix() -> None:
    """The group was read before its fix: a PASSED finding listing 0.0.0.0/0 on port 22 would
    contradict itself. Its rules are left out (the next read shows them), and so is the count
    of rules left out for size; the rest of the group stays."""
    rules = tuple(
        SecurityGroupRule(f"sgr-{n}", "sg-1", "tcp", n, n, cidr_ipv4="10.0.0.0/8")
        for n in range(1000, 2000)
    )
    big = replace(GROUP, rules=GROUP.rules + rules)
    group = result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH")
    fixed = build_finding(group, SSH_OPEN, generated_at=NOW, group=big, remediated=True)
    details = fixed["Resources"][0]["Details"]["AwsEc2SecurityGroup"]
    assert "IpPermissions" not in details and details["GroupId"] == "sg-1"
    assert "ssm-guardrail/IpPermissionsOmitted" not in fixed["ProductFields"]
    assert_valid(fixed)
    found = build_finding(group, SSH_OPEN, generated_at=NOW, group=big)
    assert found["Resources"][0]["Details"]["AwsEc2SecurityGroup"]["IpPermissions"]


def test_a_partly_fixed_group_does_not_show_the_rules_it_had_before_its_fixes() -> None:
    """One fix closed the group's 0.0.0.0/0 rule, another was left to a person (its prefix
    list's rule): the group is still FAILED, and its finding must not list the revoked rule as
    if it were still there."""
    group = result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH")
    fixes = [
        FixRecord(SSH_OPEN.id, "sg-1", "revoke", Outcome.APPLIED),
        FixRecord(SSH_OPEN.id, "sg-1", "revoke", Outcome.SKIPPED, reason="a prefix list"),
    ]
    partly = build_finding(group, SSH_OPEN, generated_at=NOW, group=GROUP, fixes=fixes)
    assert partly["Compliance"]["Status"] == "FAILED"
    details = partly["Resources"][0]["Details"]["AwsEc2SecurityGroup"]
    assert "IpPermissions" not in details and details["GroupId"] == "sg-1"
    assert_valid(partly)
    # A fix that changed nothing (skipped alone) leaves the rules as read: they are current.
    skipped = build_finding(group, SSH_OPEN, generated_at=NOW, group=GROUP, fixes=fixes[1:])
    assert skipped["Resources"][0]["Details"]["AwsEc2SecurityGroup"]["IpPermissions"]


def test_a_fixed_role_finding_keeps_the_instance_profile_its_fix_left_in_place() -> None:
    """Attaching the core policy (or adding a role to the profile) leaves the instance's profile
    as read: the fixed finding still names it, so a reader sees which profile's role changed."""
    from guardrail.controls.ssm_role import SSM_ROLE

    role = result(control=SSM_ROLE.id, severity="MEDIUM", reason="role app lacks the policy")
    fixed = build_finding(role, SSM_ROLE, generated_at=NOW, instance=INSTANCE, remediated=True)
    details = fixed["Resources"][0]["Details"]["AwsEc2Instance"]
    assert details["IamInstanceProfileArn"] == f"arn:aws:iam::{ACCOUNT}:instance-profile/app"
    assert_valid(fixed)


def test_the_account_finding_uses_the_asff_account_resource() -> None:
    finding = CASES["account failed"]()
    assert finding["Resources"][0]["Type"] == "AwsAccount"
    assert finding["Resources"][0]["Id"] == f"AWS::::Account:{ACCOUNT}"
    assert "RelatedRequirements" not in finding["Compliance"]  # no Security Hub control covers it


def test_a_remediated_finding_is_passed_informational_and_says_what_changed() -> None:
    finding = CASES["group remediated with large fixes"]()
    assert finding["Compliance"]["Status"] == "PASSED"
    assert finding["Severity"] == {"Label": "INFORMATIONAL"}
    assert finding["FindingProviderFields"]["Severity"] == {"Label": "INFORMATIONAL"}
    assert finding["RecordState"] == "ACTIVE"
    assert finding["Description"].startswith("Fixed by ssm-guardrail: revoke internet SSH on sg-1")
    fields = finding["ProductFields"]
    assert fields["ssm-guardrail/Remediated"] == "true"
    assert fields["ssm-guardrail/FixCount"] == "12"
    assert fields["ssm-guardrail/Fix1/Outcome"] == "applied"
    assert "ssm-guardrail/Fix6/Action" not in fields  # capped: ProductFields holds 50 keys


def test_large_before_and_after_are_cut_to_valid_json_within_2kb() -> None:
    fields = CASES["group remediated with large fixes"]()["ProductFields"]
    for key in ("ssm-guardrail/Fix1/Before", "ssm-guardrail/Fix1/After"):
        value = json.loads(fields[key])
        assert len(fields[key]) <= 2048
        assert value["truncated"] is True and value["length"] > 2048
        assert value["head"].startswith("{")


@pytest.mark.parametrize(
    ("tags", "description", "omitted"),
    [
        ({f"team-{i}": "v" * 100 for i in range(20)}, "legacy", {"TagsOmitted"}),
        ({}, "office-" + "x" * 240, {"DescriptionOmitted"}),
        ({"owner": "ops"}, "office-" + "x" * 240, {"TagsOmitted", "DescriptionOmitted"}),
    ],
)
def test_a_long_ssh_fix_record_keeps_every_rule_whole_in_security_hub(tags, description, omitted):
    """Before is what a person re-authorizes to undo the fix. Too long for its 2,048 characters
    (a rule's owner tags, six rules' long descriptions), it leaves those out, saying so, instead
    of cutting JSON mid-rule: every rule keeps its id, protocol, ports and source."""
    rules = [
        {
            "SecurityGroupRuleId": f"sgr-{i:017x}",
            "IpProtocol": "tcp",
            "FromPort": 0,
            "ToPort": 65535,
            "Source": "0.0.0.0/0",
            "Description": description,
            **({"Tags": tags} if tags else {}),
        }
        for i in range(6)
    ]
    fix = replace(FIX, before=rules, after={"readded": [], "new_rule_ids": []})
    finding = build_finding(
        result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH"),
        SSH_OPEN,
        generated_at=NOW,
        fixes=[fix],
        remediated=True,
        group=GROUP,
    )
    assert_valid(finding)
    before = json.loads(finding["ProductFields"]["ssm-guardrail/Fix1/Before"])
    essentials = ("SecurityGroupRuleId", "IpProtocol", "FromPort", "ToPort", "Source")
    assert [{k: r[k] for k in essentials} for r in before] == [
        {k: r[k] for k in essentials} for r in rules
    ]
    assert all(omitted <= set(r) for r in before)
    if "DescriptionOmitted" not in omitted:
        assert all(r["Description"] == description for r in before)


def test_an_undo_is_published_whole_in_its_own_field_never_cut() -> None:
    """The Description (1,024 characters for every fix) and the Reason field are cut to fit: an
    undo cut there could run its revoke without its re-authorize. It goes whole into
    Fix{n}/Undo, or, too long for it, that field says where it is whole; the Description points
    to it."""
    short = "aws ec2 revoke-security-group-ingress --group-id sg-1 --security-group-rule-ids sgr-2"
    long = "aws ec2 authorize-security-group-ingress --ip-permissions '" + "x" * 2100 + "'"
    fixes = [
        replace(FIX, reason="revoked 1 rule(s)" + undo_part(short)),
        replace(FIX, reason="x" * 900 + undo_part(short, long)),
    ]
    finding = build_finding(
        result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH"),
        SSH_OPEN,
        generated_at=NOW,
        fixes=fixes,
        remediated=True,
        group=GROUP,
    )
    assert_valid(finding)
    fields = finding["ProductFields"]
    assert fields["ssm-guardrail/Fix1/Reason"] == "revoked 1 rule(s)"
    assert fields["ssm-guardrail/Fix1/Undo"] == short
    assert fields["ssm-guardrail/Fix2/Undo"].startswith("too long for this field (")
    assert "aws ec2" not in fields["ssm-guardrail/Fix2/Reason"]
    assert "revoked 1 rule(s) (undo: ssm-guardrail/Fix1/Undo)" in finding["Description"]
    assert "aws ec2" not in finding["Description"]


def test_a_failed_fix_reports_its_error_code() -> None:
    fields = CASES["group failed fix"]()["ProductFields"]
    assert fields["ssm-guardrail/Fix1/Outcome"] == "failed"
    assert fields["ssm-guardrail/Fix1/ErrorCode"] == "UnauthorizedOperation"
    assert fields["ssm-guardrail/Remediated"] == "false"


def test_a_passed_result_is_informational_even_if_the_control_said_otherwise() -> None:
    finding = build_finding(
        result(status=Status.PASSED, severity="HIGH"), SSH_OPEN, generated_at=NOW
    )
    assert finding["Compliance"]["Status"] == "PASSED"
    assert finding["Severity"]["Label"] == "INFORMATIONAL"


def test_a_not_applicable_result_is_archived_and_not_available() -> None:
    finding = CASES["instance terminated"]()
    assert finding["RecordState"] == "ARCHIVED"
    assert finding["Compliance"]["Status"] == "NOT_AVAILABLE"
    assert finding["Description"] == "instance is terminated"


def test_long_reasons_and_titles_are_cut_to_the_asff_limits() -> None:
    class Wordy(LoggingControl):
        title = "T" * 400
        recommendation = "R" * 900

    finding = build_finding(
        result(reason="why " * 2000, resource_id="i-" + "9" * 600), Wordy(), generated_at=NOW
    )
    assert_valid(finding)
    assert finding["Title"].endswith("…") and len(finding["Title"]) == 256
    assert len(finding["Description"]) == 1024
    assert len(finding["ProductFields"]["ssm-guardrail/Reason"]) == 2048


def test_timestamps_are_utc_with_z_whatever_the_input_zone() -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    finding = build_finding(
        result(), SSH_OPEN, generated_at=tokyo, created_at=NOW - timedelta(days=1)
    )
    assert finding["UpdatedAt"] == "2026-05-04T03:02:01.123Z"
    assert finding["CreatedAt"] == "2026-05-03T03:02:01.123Z"


def test_an_unknown_severity_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="severity"):
        build_finding(result(severity="SEVERE"), SSH_OPEN, generated_at=NOW)


def test_finding_ids_are_deterministic_and_differ_by_every_part() -> None:
    base = finding_id(ACCOUNT, REGION, "ssh-open-to-internet", "i-0abc")
    assert base == f"ssm-guardrail/{REGION}/{ACCOUNT}/ssh-open-to-internet/i-0abc"
    assert base == finding_id(ACCOUNT, REGION, "ssh-open-to-internet", "i-0abc")
    variants = {
        finding_id("210987654321", REGION, "ssh-open-to-internet", "i-0abc"),
        finding_id(ACCOUNT, "us-east-1", "ssh-open-to-internet", "i-0abc"),
        finding_id(ACCOUNT, REGION, "ssm-role-missing", "i-0abc"),
        finding_id(ACCOUNT, REGION, "ssh-open-to-internet", "i-0def"),
    }
    assert base not in variants and len(variants) == 4
    assert build_finding(result(), SSH_OPEN, generated_at=NOW)["Id"] == base


def test_an_overlong_resource_id_is_hashed_into_a_stable_id() -> None:
    long_id = finding_id(ACCOUNT, REGION, "c", "r" * 600)
    assert len(long_id) <= 512
    assert long_id == finding_id(ACCOUNT, REGION, "c", "r" * 600)
    assert long_id != finding_id(ACCOUNT, REGION, "c", "r" * 601)


def test_arns_follow_the_partition() -> None:
    gov = result(partition="aws-us-gov", region="us-gov-west-1")
    assert resource_arn(gov) == f"arn:aws-us-gov:ec2:us-gov-west-1:{ACCOUNT}:instance/i-0abc"
    assert product_arn("aws-cn", "cn-north-1", ACCOUNT) == (
        f"arn:aws-cn:securityhub:cn-north-1:{ACCOUNT}:product/{ACCOUNT}/default"
    )


def test_a_shared_groups_resource_arn_names_the_account_that_owns_it() -> None:
    """A group shared through a VPC by another account: its ARN is the owner's, so the finding
    matches that account's own EC2.13 and Config findings for the group."""
    owner = "210987654321"
    shared = replace(GROUP, owner_id=owner)
    group_result = result(ResourceType.SECURITY_GROUP, "sg-1", severity="HIGH")
    own = build_finding(group_result, SSH_OPEN, generated_at=NOW, group=GROUP)
    theirs = build_finding(group_result, SSH_OPEN, generated_at=NOW, group=shared)
    assert own["Resources"][0]["Id"] == f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-1"
    assert theirs["Resources"][0]["Id"] == f"arn:aws:ec2:{REGION}:{owner}:security-group/sg-1"
    assert theirs["AwsAccountId"] == ACCOUNT  # found and reported by the scanned account


def test_every_controls_title_states_the_requirement_not_the_violation() -> None:
    """The title shows on PASSED findings too (a compliant or fixed resource): like Security
    Hub's own controls it says what should hold, never that the resource is wrong."""
    from guardrail.controls import REGISTRY

    for control in REGISTRY.values():
        for status, remediated in ((Status.PASSED, False), (Status.FAILED, True)):
            r = replace(result(status=status, severity="INFORMATIONAL"), control=control.id)
            title = build_finding(r, control, generated_at=NOW, remediated=remediated)["Title"]
            assert " should " in title, title
            assert not re.search(r"\b(admits|lacks|are not|is not)\b", title), title


def test_the_resolution_note_fits_and_points_to_the_detail() -> None:
    assert len(RESOLUTION_NOTE) <= 512 and "ProductFields" in RESOLUTION_NOTE


@pytest.mark.parametrize(
    ("partition", "region", "named"),
    [
        ("aws-us-gov", "us-gov-west-1", "aws-us-gov"),
        ("aws-cn", "cn-north-1", "aws-cn"),
        ("aws-iso", "us-iso-east-1", None),
        ("aws-iso-b", "us-isob-east-1", None),
    ],
)
def test_a_resource_names_its_partition_only_where_asff_allows_it(
    partition: str, region: str, named: str | None
) -> None:
    """Resources[].Partition is an ASFF enum (aws, aws-cn, aws-us-gov): a result from another
    partition leaves it out rather than have the finding refused (InvalidInput); its ARN still
    says where the resource lives."""
    finding = build_finding(
        result(partition=partition, region=region), SSH_OPEN, generated_at=NOW, instance=INSTANCE
    )
    assert_valid(finding)
    resource = finding["Resources"][0]
    assert resource.get("Partition") == named
    assert resource["Id"] == f"arn:{partition}:ec2:{region}:{ACCOUNT}:instance/i-0abc"
    assert resource["Region"] == region
