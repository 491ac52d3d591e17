"""Least privilege, proven on the synthesized templates (and the walker proven on bad policies)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from guardrail.findings import product_arn

from .conftest import FORWARDER, MAIN, OTHER, PSEUDO, Synth, render
from .policy_walker import identity_statements, violations

pytestmark = pytest.mark.infra


def template(*statements: dict[str, Any], kind: str = "AWS::IAM::Policy") -> dict[str, Any]:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    props = (
        {"PolicyDocument": document}
        if kind != "AWS::IAM::Role"
        else {"Policies": [{"PolicyName": "inline", "PolicyDocument": document}]}
    )
    return {"Resources": {"Bad": {"Type": kind, "Properties": props}}}


GUARDRAIL_ROLE = {"Fn::GetAtt": ["GuardrailRole", "Arn"]}


@pytest.mark.parametrize(
    ("statement", "rule"),
    [
        (
            {"Effect": "Allow", "Action": "ec2:RevokeSecurityGroupIngress", "Resource": "*"},
            "mutating-on-star",
        ),
        (
            {
                "Effect": "Allow",
                "Action": ["ec2:DescribeInstances", "ssm:CreateDocument"],
                "Resource": ["*"],
            },
            "mutating-on-star",
        ),
        (
            {"Effect": "Allow", "Action": "ec2:*", "Resource": "arn:aws:ec2:*:*:instance/*"},
            "wildcard-action",
        ),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "not-action"),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            "passrole-scope",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": {"Fn::GetAtt": ["SomeOtherRole", "Arn"]},
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            "passrole-scope",
        ),
        (
            {"Effect": "Allow", "Action": "iam:PassRole", "Resource": GUARDRAIL_ROLE},
            "passrole-service",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": GUARDRAIL_ROLE,
                "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
            },
            "passrole-service",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": GUARDRAIL_ROLE,
                "Condition": {"ArnLike": {"iam:AssociatedResourceArn": "arn:aws:lambda:*:1:*"}},
            },
            "passrole-service",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:AttachRolePolicy",
                "Resource": "arn:aws:iam::1:role/*",
            },
            "attach-unconditioned",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "iam:AttachRolePolicy",
                "Resource": "arn:aws:iam::1:role/*",
                "Condition": {"ArnLike": {"iam:PolicyARN": "arn:aws:iam::aws:policy/*"}},
            },
            "attach-wildcard",
        ),
    ],
)
def test_walker_catches_a_bad_identity_policy(statement: dict[str, Any], rule: str) -> None:
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Role"):
        found = violations(template(statement, kind=kind), pass_roles={"GuardrailRole"})
        assert rule in {v.rule for v in found}, (kind, found)


def test_walker_accepts_what_the_guardrail_needs() -> None:
    good = template(
        {
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "iam:GetInstanceProfile"],
            "Resource": "*",
        },
        {
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {"StringEquals": {"ec2:CreateAction": "AuthorizeSecurityGroupIngress"}},
        },
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": GUARDRAIL_ROLE,
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        },
        {
            "Effect": "Allow",
            "Action": "iam:AttachRolePolicy",
            "Resource": "arn:aws:iam::1:role/*",
            "Condition": {
                "ArnEquals": {
                    "iam:PolicyARN": ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
                }
            },
        },
        {"Effect": "Deny", "Action": "*", "Resource": "*"},
    )
    assert violations(good, pass_roles={"GuardrailRole"}) == []


def _key_policy(statement: dict[str, Any]) -> dict[str, Any]:
    return {
        "Resources": {
            "K": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Statement": [statement]}}}
        }
    }


PUBLIC = {"Effect": "Allow", "Principal": "*", "Action": "kms:GenerateDataKey", "Resource": "*"}


@pytest.mark.parametrize(
    ("condition", "public"),
    [
        (None, True),
        ({"StringEquals": {"kms:CallerAccount": "*"}}, True),
        ({"StringLike": {"kms:CallerAccount": "1111*"}}, True),
        ({"Null": {"kms:EncryptionContext:aws:ssm:SessionId": "false"}}, True),
        ({"StringEquals": {"kms:CallerAccount": {"Ref": "AWS::AccountId"}}}, False),
        ({"StringEquals": {"aws:PrincipalAccount": "111122223333"}}, False),
    ],
)
def test_walker_catches_a_public_resource_policy(condition: Any, public: bool) -> None:
    """Principal "*" is public unless a condition pins the caller's account."""
    statement = {**PUBLIC, **({"Condition": condition} if condition else {})}
    rules = [v.rule for v in violations(_key_policy(statement), pass_roles=set())]
    assert rules == (["public-resource-policy"] if public else [])


def _instance_roles(t: dict[str, Any]) -> set[str]:
    return {
        k
        for k, v in t["Resources"].items()
        if v["Type"] == "AWS::IAM::Role" and "InstanceRole" in k
    }


def test_synthesized_templates_are_least_privilege(synth: Synth) -> None:
    assert set(synth.templates) == {MAIN, OTHER, FORWARDER}
    for name, t in synth.templates.items():
        assert list(identity_statements(t)), f"{name}: the walker found no policies to judge"
        assert violations(t, pass_roles=_instance_roles(t)) == [], name


def _statements_with(t: dict[str, Any], action: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (lid, s)
        for lid, s in identity_statements(t)
        if action in (s.get("Action") if isinstance(s.get("Action"), list) else [s.get("Action")])
    ]


def test_mutating_actions_are_scoped_as_the_issue_requires(synth: Synth) -> None:
    t = synth.templates[MAIN]
    (instance_role,) = _instance_roles(t)
    (delivery_policy,) = [
        k for k, v in t["Resources"].items() if v["Type"] == "AWS::IAM::ManagedPolicy"
    ]
    core = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":iam::aws:policy/AmazonSSMManagedInstanceCore"],
        ]
    }
    lambda_policies = {k for k, v in t["Resources"].items() if v["Type"] == "AWS::IAM::Policy"}
    assert len(lambda_policies) == 2

    profile_lists: list[Any] = []
    for policy in lambda_policies:
        statements = [
            s for lid, s in identity_statements(t) if lid == policy and s["Effect"] == "Allow"
        ]
        by_action: dict[str, list[dict[str, Any]]] = {}
        for s in statements:
            for a in s["Action"] if isinstance(s["Action"], list) else [s["Action"]]:
                by_action.setdefault(a, []).append(s)

        # Only the guardrail's role: to EC2 (associating its profile), or for this account's
        # instances (AddRoleToInstanceProfile's context).
        pass_roles = by_action["iam:PassRole"]
        assert [p["Resource"] for p in pass_roles] == [{"Fn::GetAtt": [instance_role, "Arn"]}] * 2
        assert sorted(json.dumps(p["Condition"], sort_keys=True) for p in pass_roles) == sorted(
            json.dumps(c, sort_keys=True)
            for c in (
                {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
                {
                    "ArnLike": {
                        "iam:AssociatedResourceArn": {
                            "Fn::Join": [
                                "",
                                [
                                    "arn:",
                                    {"Ref": "AWS::Partition"},
                                    ":ec2:*:",
                                    {"Ref": "AWS::AccountId"},
                                    ":instance/*",
                                ],
                            ]
                        }
                    }
                },
            )
        )

        for attach in by_action["iam:AttachRolePolicy"]:
            allowed = attach["Condition"]["ArnEquals"]["iam:PolicyARN"]
            assert allowed and all(v in (core, {"Ref": delivery_policy}) for v in allowed)

        for action in (
            "ssm:CreateDocument",
            "ssm:UpdateDocument",
            "ssm:UpdateDocumentDefaultVersion",
        ):
            (s,) = by_action[action]
            assert s["Resource"]["Fn::Join"][1][-1] == ":document/SSM-SessionManagerRunShell"

        # Only the ProductArn the engine writes on its findings (guardrail.findings.product_arn).
        (imports,) = by_action["securityhub:BatchImportFindings"]
        assert render(imports["Resource"]) == product_arn(
            PSEUDO["AWS::Partition"], PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        )

        # Security groups of this region only; Authorize also on the rules it creates (tagging
        # them on create makes EC2 authorize the call on the new security-group-rule too).
        (revoke,) = by_action["ec2:RevokeSecurityGroupIngress"]
        assert revoke["Resource"]["Fn::Join"][1][-1] == ":security-group/*"
        authorize = sorted(
            s["Resource"]["Fn::Join"][1][-1] for s in by_action["ec2:AuthorizeSecurityGroupIngress"]
        )
        assert authorize == [":security-group-rule/*", ":security-group/*"]
        # IAM authorizes ListInstanceProfiles on no resource type: an ARN would never match.
        profile_lists += [s["Resource"] for s in by_action.get("iam:ListInstanceProfiles", [])]
        # The in-place narrowing at a group's rules quota: EC2 authorizes it on both.
        (modify,) = by_action["ec2:ModifySecurityGroupRules"]
        assert sorted(r["Fn::Join"][1][-1] for r in modify["Resource"]) == [
            ":security-group-rule/*",
            ":security-group/*",
        ]
    assert profile_lists == ["*"]  # the on-change role's, on every resource


def test_each_lambda_has_its_own_role_and_writes_only_its_own_log_group(synth: Synth) -> None:
    t = synth.templates[MAIN]
    functions = synth.resources(MAIN, "AWS::Lambda::Function")
    roles = {f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()}
    assert len(roles) == 2
    for f in functions.values():
        role = f["Properties"]["Role"]["Fn::GetAtt"][0]
        log_group = f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        policies = [
            k
            for k, v in t["Resources"].items()
            if v["Type"] == "AWS::IAM::Policy" and v["Properties"]["Roles"] == [{"Ref": role}]
        ]
        (writes,) = [
            s
            for lid, s in identity_statements(t)
            if lid in policies and "logs:PutLogEvents" in s["Action"]
        ]
        assert writes["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}
        role_props = t["Resources"][role]["Properties"]
        assert "ManagedPolicyArns" not in role_props, "no AWSLambdaBasicExecutionRole (logs on *)"
