"""The emulation extension, in process (mock_aws): the three emulated actions and moto corrections."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from emulator import extension
from emulator.extension import (
    SourcePolicy,
    condition_holds,
    evaluate,
    statement_applies,
)
from tests.e2e.conftest import ACCOUNT, CORE, PRODUCT_ARN, finding


def errors(call, **kwargs) -> str:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]["Code"]


# --- install ---------------------------------------------------------------------------------


def test_install_is_idempotent_and_adds_each_action_once():
    from moto.ec2.models.instances import InstanceBackend
    from moto.iam.responses import IamResponse
    from moto.securityhub import urls
    from moto.securityhub.responses import SecurityHubResponse
    from moto.ssm.responses import SimpleSystemManagerResponse

    extension.install()
    run = InstanceBackend.run_instances
    extension.install()
    assert extension.installed()
    assert InstanceBackend.run_instances is run  # not wrapped twice
    assert not getattr(run.__wrapped__, "emulation", False)
    assert [p for p in urls.url_paths if "batchupdate" in p] == [extension.BATCH_UPDATE_PATH]
    assert callable(SimpleSystemManagerResponse.describe_instance_information)
    assert callable(IamResponse.simulate_principal_policy)
    assert callable(SecurityHubResponse.batch_update_findings)


# --- ssm:DescribeInstanceInformation ---------------------------------------------------------


def test_only_instances_whose_role_lets_the_agent_register_are_managed(
    managed_policies, emulated, build
):
    build.role("core", CORE)
    build.role(
        "plain",
        inline={
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
        },
    )
    equivalent = build.policy(
        "equivalent",
        {
            "Effect": "Allow",
            "Resource": "*",
            "Action": ["ssm:UpdateInstanceInformation", "ssmmessages:*", "ec2messages:*"],
        },
    )
    build.role("narrow", equivalent)
    online = build.instances(2, build.profile("core-p", "core"))
    stopped = build.instances(1, build.profile("core-p2", "core"))
    gone = build.instances(1, "core-p2")
    narrow = build.instances(1, build.profile("narrow-p", "narrow"))
    absent = build.instances(1, build.profile("plain-p", "plain"))
    absent += build.instances(1, build.profile("empty-p"))
    absent += build.instances(1)
    build.ec2.stop_instances(InstanceIds=stopped)
    build.ec2.terminate_instances(InstanceIds=gone)

    listed = emulated.client("ssm").describe_instance_information()["InstanceInformationList"]
    status = {i["InstanceId"]: i["PingStatus"] for i in listed}

    # AWS: "does not return information for nodes that are either Stopped or Terminated".
    assert status == dict.fromkeys(online + narrow, "Online")
    assert not set(absent + gone + stopped) & set(status)
    described = build.ec2.describe_instances(InstanceIds=online[:1])["Reservations"][0][
        "Instances"
    ][0]
    item = next(i for i in listed if i["InstanceId"] == online[0])
    assert item["ResourceType"] == "EC2Instance"
    assert item["PlatformType"] == "Linux"
    assert item["AgentVersion"]
    assert item["IPAddress"] == described["PrivateIpAddress"]


def test_online_as_simulation_answers_for_the_heartbeat_alone(managed_policies, emulated, build):
    """As on AWS, the agent's heartbeat (ssm:UpdateInstanceInformation) alone lists an instance
    Online: a Deny of the session channels leaves it Online, though no session can open. The
    core policy's name is not enough: a Deny or a permissions boundary that refuses the heartbeat
    keeps it out, exactly where SimulatePrincipalPolicy (the product reads it) says so."""
    from guardrail.controls.ssm_role import AGENT_ACTIONS

    def deny(action: str) -> dict:
        return {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Action": action, "Resource": "*"}],
        }

    ec2_only = build.policy("ec2-only", {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"})
    ssm_only = build.policy("ssm-only", {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"})
    wide = build.policy("wide", {"Effect": "Allow", "Action": "*", "Resource": "*"})
    roles = {
        "channels-denied": build.role("channels-denied", CORE, inline=deny("ssmmessages:*")),
        "heartbeat-denied": build.role(
            "heartbeat-denied", CORE, inline=deny("ssm:UpdateInstanceInformation")
        ),
        "ec2-boundary": build.role("ec2-boundary", CORE, boundary=ec2_only),
        "ssm-boundary": build.role("ssm-boundary", CORE, boundary=ssm_only),
        "wide-boundary": build.role("wide-boundary", CORE, boundary=wide),
    }
    ids = {name: build.instances(1, build.profile(f"{name}-p", name))[0] for name in roles}

    listed = emulated.client("ssm").describe_instance_information()["InstanceInformationList"]
    iam = emulated.client("iam")
    sessions = set()
    for name, arn in roles.items():
        decisions = {
            r["EvalActionName"]: r["EvalDecision"]
            for r in iam.simulate_principal_policy(
                PolicySourceArn=arn,
                ActionNames=list(AGENT_ACTIONS),
                ResourceArns=[f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{ids[name]}"],
            )["EvaluationResults"]
        }
        online = ids[name] in {i["InstanceId"] for i in listed}
        assert online == (decisions["ssm:UpdateInstanceInformation"] == "allowed"), name
        if set(decisions.values()) == {"allowed"}:
            sessions.add(name)
    online_names = {n for n, i in ids.items() if i in {x["InstanceId"] for x in listed}}
    assert online_names == {"channels-denied", "ssm-boundary", "wide-boundary"}
    assert sessions == {"wide-boundary"}  # Online is not "can open a session"


def test_pages_with_max_results_and_next_token(managed_policies, emulated, build):
    build.role("core", CORE)
    ids = build.instances(12, build.profile("p", "core"))
    ssm = emulated.client("ssm")

    first = ssm.describe_instance_information(MaxResults=5)
    pages = list(
        ssm.get_paginator("describe_instance_information").paginate(
            PaginationConfig={"PageSize": 5}
        )
    )

    assert len(first["InstanceInformationList"]) == 5 and first["NextToken"]
    assert [len(p["InstanceInformationList"]) for p in pages] == [5, 5, 2]
    assert sorted(i["InstanceId"] for p in pages for i in p["InstanceInformationList"]) == sorted(
        ids
    )
    assert "NextToken" not in pages[-1]


def test_filters_by_instance_ids_in_both_filter_styles(managed_policies, emulated, build):
    build.role("core", CORE)
    ids = build.instances(8, build.profile("p", "core"))
    unmanaged = build.instances(1)
    ssm = emulated.client("ssm")

    new = ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": ids[:3] + unmanaged}]
    )
    old = ssm.describe_instance_information(
        InstanceInformationFilterList=[{"key": "instanceIds", "valueSet": ids[3:5]}]
    )

    assert sorted(i["InstanceId"] for i in new["InstanceInformationList"]) == sorted(ids[:3])
    assert sorted(i["InstanceId"] for i in old["InstanceInformationList"]) == sorted(ids[3:5])


def test_an_instance_id_aws_would_refuse_fails_the_whole_call(managed_policies, emulated, build):
    """AWS answers InvalidInstanceId for an id that is shutting down, terminated or unknown
    (Valid states are: Running, Pending, Stopped, and Stopping); a stopped or unmanaged one is
    only absent."""
    build.role("core", CORE)
    ids = build.instances(3, build.profile("p", "core"))
    build.ec2.stop_instances(InstanceIds=ids[1:2])
    build.ec2.terminate_instances(InstanceIds=ids[2:])
    ssm = emulated.client("ssm")

    def listed(values):
        answer = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": values}]
        )
        return [i["InstanceId"] for i in answer["InstanceInformationList"]]

    assert listed(ids[:2] + build.instances(1)) == ids[:1]
    for refused in (ids, ["i-0123456789abcdef0"]):
        assert (
            errors(
                ssm.describe_instance_information,
                Filters=[{"Key": "InstanceIds", "Values": refused}],
            )
            == "InvalidInstanceId"
        )


DHMC_SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"


def test_the_dhmc_service_setting_reads_what_was_set_per_region(emulated):
    ssm, other = emulated.client("ssm"), emulated.client("ssm", region_name="eu-west-1")

    def value(client, setting_id=DHMC_SETTING):
        return client.get_service_setting(SettingId=setting_id)["ServiceSetting"]

    assert (value(ssm)["SettingValue"], value(ssm)["Status"]) == ("$None", "Default")
    arn = value(ssm)["ARN"]
    assert arn.endswith(":123456789012:servicesetting" + DHMC_SETTING)
    ssm.update_service_setting(SettingId=arn, SettingValue="DhmcRole")  # by ARN or by path
    assert (value(ssm)["SettingValue"], value(ssm)["Status"]) == ("DhmcRole", "Customized")
    assert value(ssm, arn)["SettingValue"] == "DhmcRole"
    assert value(other)["SettingValue"] == "$None"  # one setting per account and region
    assert errors(ssm.get_service_setting, SettingId="/ssm/no/such") == "ServiceSettingNotFound"


def test_default_host_management_registers_an_imdsv2_instance_without_a_profile(
    managed_policies, emulated, build
):
    """An instance without a profile registers with the role Default Host Management's setting
    names (by name, or path and name), once that role exists and may make the heartbeat, and
    only if it requires IMDSv2, as DHMC does."""
    ssm = emulated.client("ssm")

    def launch(tokens: str) -> str:
        return build.ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=1,
            MaxCount=1,
            SubnetId=build.subnet,
            MetadataOptions={"HttpTokens": tokens},
        )["Instances"][0]["InstanceId"]

    def online() -> set[str]:
        listed = ssm.describe_instance_information()["InstanceInformationList"]
        return {i["InstanceId"] for i in listed if i["PingStatus"] == "Online"}

    v2 = launch("required")
    launch("optional")  # IMDSv1 allowed: DHMC does not manage it
    ssm.update_service_setting(SettingId=DHMC_SETTING, SettingValue="service-role/DhmcRole")
    assert online() == set()  # the role it names does not exist yet
    build.role("DhmcRole", CORE)
    assert online() == {v2}
    ssm.update_service_setting(SettingId=DHMC_SETTING, SettingValue="OtherRole")
    assert online() == set()


def test_rejects_what_aws_rejects(emulated):
    ssm = emulated.client("ssm")
    assert errors(ssm.describe_instance_information, MaxResults=51) == "ValidationException"
    assert errors(ssm.describe_instance_information, NextToken="not-ours") == "InvalidNextToken"
    assert (
        errors(ssm.describe_instance_information, Filters=[{"Key": "Nonsense", "Values": ["x"]}])
        == "InvalidFilterKey"
    )
    both = {
        "Filters": [{"Key": "InstanceIds", "Values": ["i-0123456789abcdef0"]}],
        "InstanceInformationFilterList": [
            {"key": "InstanceIds", "valueSet": ["i-0123456789abcdef0"]}
        ],
    }
    two_types = {"Filters": [{"Key": "ResourceType", "Values": ["EC2Instance", "ManagedInstance"]}]}
    for kwargs in (both, two_types):
        assert (
            errors(ssm.describe_instance_information, **kwargs)
            == "InvalidInstanceInformationFilterValue"
        )


# --- securityhub:BatchUpdateFindings ---------------------------------------------------------


@pytest.fixture
def hub(emulated):
    client = emulated.client("securityhub")
    client.enable_security_hub(EnableDefaultStandards=False)
    return client


def stored(hub) -> dict[str, dict]:
    return {
        f["Id"]: f
        for page in hub.get_paginator("get_findings").paginate()
        for f in page["Findings"]
    }


def test_batch_update_sets_workflow_and_note_visible_in_get_findings(hub):
    hub.batch_import_findings(Findings=[finding("a"), finding("b")])

    answer = hub.batch_update_findings(
        FindingIdentifiers=[{"Id": "a", "ProductArn": PRODUCT_ARN}],
        Workflow={"Status": "RESOLVED"},
        Note={"Text": "fixed by test", "UpdatedBy": "tester"},
    )

    assert answer["ProcessedFindings"] == [{"Id": "a", "ProductArn": PRODUCT_ARN}]
    assert answer["UnprocessedFindings"] == []
    findings = stored(hub)
    assert findings["a"]["Workflow"]["Status"] == "RESOLVED"
    assert findings["a"]["Note"]["Text"] == "fixed by test"
    assert findings["a"]["Note"]["UpdatedBy"] == "tester"
    assert findings["a"]["UpdatedAt"] == finding("a")["UpdatedAt"]  # AWS leaves UpdatedAt alone
    assert findings["b"]["Workflow"]["Status"] == "NEW"
    assert "Note" not in findings["b"]


def test_get_findings_applies_string_filters_and_pages(hub):
    hub.batch_import_findings(
        Findings=[
            finding("g1", GeneratorId="ssm-guardrail/ssh-open-to-internet"),
            finding("g2", GeneratorId="ssm-guardrail/ssm-instance-role", status="PASSED"),
            finding("g3", GeneratorId="ssm-guardrail/ssm-instance-role", RecordState="ARCHIVED"),
            finding("other", GeneratorId="inspector/cve"),
        ]
    )

    def ids(**filters):
        pages = hub.get_paginator("get_findings").paginate(
            Filters=filters, PaginationConfig={"PageSize": 1}
        )
        return sorted(f["Id"] for page in pages for f in page["Findings"])

    ours = [{"Value": "ssm-guardrail/", "Comparison": "PREFIX"}]
    assert ids(GeneratorId=ours) == ["g1", "g2", "g3"]  # one per page, all pages
    assert ids(
        GeneratorId=ours, ComplianceStatus=[{"Value": "FAILED", "Comparison": "EQUALS"}]
    ) == [
        "g1",
        "g3",
    ]
    either = [{"Value": "g1", "Comparison": "EQUALS"}, {"Value": "other", "Comparison": "EQUALS"}]
    assert ids(Id=either) == ["g1", "other"]  # positive comparisons of one field are ORed
    archived = [{"Value": "ARCHIVED", "Comparison": "NOT_EQUALS"}]
    assert ids(GeneratorId=ours, RecordState=archived) == ["g1", "g2"]
    assert ids(ProductArn=[{"Value": PRODUCT_ARN + "x", "Comparison": "EQUALS"}]) == []
    with pytest.raises(ClientError, match="not emulated"):
        ids(NoteText=[{"Value": "x", "Comparison": "EQUALS"}])


def test_get_findings_applies_date_filters_inclusive_start_and_end(hub):
    hub.batch_import_findings(
        Findings=[
            finding(name, updated=f"2025-01-0{day}T00:00:00.000Z")
            for name, day in (("jan1", 1), ("jan2", 2), ("jan3", 3))
        ]
    )

    def ids(*conditions):
        found = hub.get_findings(Filters={"UpdatedAt": list(conditions)})["Findings"]
        return sorted(f["Id"] for f in found)

    assert ids({"Start": "2025-01-02T00:00:00.000Z"}) == ["jan2", "jan3"]
    assert ids({"End": "2025-01-02T00:00:00Z"}) == ["jan1", "jan2"]
    assert ids({"Start": "2025-01-01T12:00:00Z", "End": "2025-01-02T12:00:00Z"}) == ["jan2"]
    assert ids({"End": "2025-01-01T00:00:00Z"}, {"Start": "2025-01-03T00:00:00Z"}) == [
        "jan1",
        "jan3",
    ]
    assert ids({"DateRange": {"Value": 1, "Unit": "DAYS"}}) == []  # all in January 2025
    for malformed in ({"Value": 1, "Unit": "WEEKS"}, {"Unit": "DAYS"}):
        with pytest.raises(ClientError, match="DateRange needs Unit DAYS and a Value"):
            ids({"DateRange": malformed})


def test_the_resolved_insight_shows_resolutions_of_the_last_7_days_not_refreshes(hub):
    """The 'resolved in the last 7 days' insight's filter (stacks/dashboards.py; the infra test
    pins the template to it): a finding resolved 30 days ago and re-imported by this week's
    refresh is not in it; one resolved today is. Its first version filtered on UpdatedAt,
    which the refresh moves: it showed both."""
    from datetime import UTC, datetime, timedelta

    from moto.securityhub.models import securityhub_backends

    hub.batch_import_findings(Findings=[finding("today"), finding("long-ago")])
    hub.batch_update_findings(
        FindingIdentifiers=[{"Id": i, "ProductArn": PRODUCT_ARN} for i in ("today", "long-ago")],
        Workflow={"Status": "RESOLVED"},
        Note={"Text": "ssm-guardrail fixed this automatically", "UpdatedBy": "ssm-guardrail"},
    )
    backend = securityhub_backends[ACCOUNT]["us-east-1"]
    (old,) = [f for f in backend.findings if f.id == "long-ago"]
    month_ago = datetime.now(UTC) - timedelta(days=30)
    old.data["Note"]["UpdatedAt"] = month_ago.isoformat().replace("+00:00", "Z")
    refreshed = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    hub.batch_import_findings(
        Findings=[finding(i, status="PASSED", updated=refreshed) for i in ("today", "long-ago")]
    )

    def insight(date_field: str) -> list[str]:
        filters = {
            "WorkflowStatus": [{"Comparison": "EQUALS", "Value": "RESOLVED"}],
            date_field: [{"DateRange": {"Unit": "DAYS", "Value": 7}}],
        }
        return sorted(f["Id"] for f in hub.get_findings(Filters=filters)["Findings"])

    assert insight("NoteUpdatedAt") == ["today"]
    assert insight("UpdatedAt") == ["long-ago", "today"]  # the first version's filter


def test_unknown_finding_ids_come_back_unprocessed(hub):
    hub.batch_import_findings(Findings=[finding("a")])
    other_product = PRODUCT_ARN.replace("default", "other")

    answer = hub.batch_update_findings(
        FindingIdentifiers=[
            {"Id": "a", "ProductArn": PRODUCT_ARN},
            {"Id": "nope", "ProductArn": PRODUCT_ARN},
            {"Id": "a", "ProductArn": other_product},
        ],
        Workflow={"Status": "SUPPRESSED"},
    )

    assert answer["ProcessedFindings"] == [{"Id": "a", "ProductArn": PRODUCT_ARN}]
    assert [
        (u["FindingIdentifier"]["Id"], u["ErrorCode"]) for u in answer["UnprocessedFindings"]
    ] == [("nope", "FindingNotFound"), ("a", "FindingNotFound")]


def test_reimport_keeps_the_workflow_and_reopens_on_regression(hub):
    hub.batch_import_findings(Findings=[finding("a", status="FAILED")])
    hub.batch_update_findings(
        FindingIdentifiers=[{"Id": "a", "ProductArn": PRODUCT_ARN}],
        Workflow={"Status": "RESOLVED"},
        Note={"Text": "n", "UpdatedBy": "u"},
    )

    hub.batch_import_findings(
        Findings=[
            finding(
                "a", status="PASSED", updated="2025-01-02T00:00:00.000Z", Workflow={"Status": "NEW"}
            )
        ]
    )
    assert stored(hub)["a"]["Workflow"]["Status"] == "RESOLVED"  # import cannot change Workflow
    assert stored(hub)["a"]["Compliance"]["Status"] == "PASSED"

    hub.batch_import_findings(
        Findings=[finding("a", status="FAILED", updated="2025-01-03T00:00:00.000Z")]
    )
    assert stored(hub)["a"]["Workflow"]["Status"] == "NEW"  # PASSED → FAILED reopens it
    assert stored(hub)["a"]["Note"]["Text"] == "n"


def test_reimport_that_unarchives_a_finding_reopens_it(hub):
    """AWS: RecordState ARCHIVED → ACTIVE sets a NOTIFIED or RESOLVED workflow back to NEW
    (here with Compliance PASSED throughout, so only the record state can have done it)."""
    hub.batch_import_findings(Findings=[finding("a", status="PASSED")])
    hub.batch_update_findings(
        FindingIdentifiers=[{"Id": "a", "ProductArn": PRODUCT_ARN}],
        Workflow={"Status": "RESOLVED"},
    )
    hub.batch_import_findings(
        Findings=[
            finding(
                "a", status="PASSED", updated="2025-01-02T00:00:00.000Z", RecordState="ARCHIVED"
            )
        ]
    )
    assert stored(hub)["a"]["Workflow"]["Status"] == "RESOLVED"
    hub.batch_import_findings(
        Findings=[
            finding("a", status="PASSED", updated="2025-01-03T00:00:00.000Z", RecordState="ACTIVE")
        ]
    )
    assert stored(hub)["a"]["RecordState"] == "ACTIVE"
    assert stored(hub)["a"]["Workflow"]["Status"] == "NEW"


def test_reimport_that_is_not_newer_is_ignored(hub):
    hub.batch_import_findings(Findings=[finding("a", status="FAILED")])
    answer = hub.batch_import_findings(Findings=[finding("a", status="PASSED")])  # same UpdatedAt

    assert answer["FailedCount"] == 0
    assert stored(hub)["a"]["Compliance"]["Status"] == "FAILED"


def test_security_hub_disabled(emulated):
    hub = emulated.client("securityhub")
    answer = hub.batch_import_findings(Findings=[finding("a")])
    assert answer["FailedCount"] == 1
    assert answer["FailedFindings"][0]["ErrorCode"] == "InvalidAccess"
    assert (
        errors(
            hub.batch_update_findings,
            FindingIdentifiers=[{"Id": "a", "ProductArn": PRODUCT_ARN}],
            Workflow={"Status": "RESOLVED"},
        )
        == "InvalidAccessException"
    )


def test_batch_update_validates_its_input(hub):
    hub.batch_import_findings(Findings=[finding("a")])
    ids = [{"Id": "a", "ProductArn": PRODUCT_ARN}]
    assert (
        errors(hub.batch_update_findings, FindingIdentifiers=ids, Workflow={"Status": "DONE"})
        == "InvalidInputException"
    )
    assert (
        errors(hub.batch_update_findings, FindingIdentifiers=ids * 101, Workflow={"Status": "NEW"})
        == "InvalidInputException"
    )


@pytest.mark.parametrize(
    "note",
    [
        {"Text": "n" * 513, "UpdatedBy": "tester"},
        {"Text": "fixed", "UpdatedBy": "u" * 513},
        {"Text": "   ", "UpdatedBy": "tester"},
    ],
    ids=["text-513", "updated-by-513", "blank-text"],
)
def test_batch_update_refuses_a_note_aws_refuses(hub, note):
    """Note.Text and Note.UpdatedBy: 1 to 512 characters, not blank; a note AWS refuses must
    not be stored here (the product clips its notes to fit)."""
    hub.batch_import_findings(Findings=[finding("a")])
    ids = [{"Id": "a", "ProductArn": PRODUCT_ARN}]
    assert errors(hub.batch_update_findings, FindingIdentifiers=ids, Note=note) == (
        "InvalidInputException"
    )
    assert "Note" not in stored(hub)["a"]
    longest = {"Text": "n" * 512, "UpdatedBy": "u" * 512}
    hub.batch_update_findings(FindingIdentifiers=ids, Note=longest)
    assert stored(hub)["a"]["Note"]["Text"] == longest["Text"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Title": "t" * 257}, "data.Title should NOT be longer than 256"),
        ({"Description": "d" * 1025}, "data.Description should NOT be longer than 1024"),
        ({"ProductFields": {f"k{i}": "v" for i in range(51)}}, "more than 50 properties"),
        ({"ProductFields": {"k": "v" * 2049}}, "should NOT be longer than 2048"),
        ({"Severity": {"Label": "SUPERBAD"}}, "data.Severity.Label should be equal to one of"),
        ({"Compliance": {"Status": "OK"}}, "data.Compliance.Status should be equal to one of"),
        ({"UpdatedAt": "not a time"}, 'data.UpdatedAt should match format "date-time"'),
        ({"CreatedAt": "2025-01-01"}, 'data.CreatedAt should match format "date-time"'),
        ({"UpdatedAt": "2025-01-01T00:00:00"}, "format"),  # no zone
        ({"UpdatedAt": "2025-01-01 00:00:00Z"}, "format"),  # no T
        ({"SchemaVersion": "2020-01-01"}, "data.SchemaVersion should be equal to 2018-10-08"),
        ({"Title": "   "}, "data.Title should match pattern"),
        ({"Resources": [{"Type": "Other", "Id": f"r{i}"} for i in range(33)]}, "32 items"),
        ({"Title": ""}, "required property 'Title'"),
        ({"UserDefinedFields": {f"k{i}": "v" * 1000 for i in range(250)}}, "exceeds the maximum"),
        ({"Types": []}, "required property 'Types'"),
    ],
    ids=lambda v: v if isinstance(v, str) else next(iter(v)),
)
def test_a_finding_asff_refuses_fails_alone_as_aws_answers(hub, change, message):
    """Security Hub refuses what ASFF does not allow, finding by finding: the product's own
    clipping (findings.py) must keep every finding inside these limits."""
    answer = hub.batch_import_findings(Findings=[{**finding("bad"), **change}, finding("good")])
    assert answer["SuccessCount"] == 1 and answer["FailedCount"] == 1
    failed = answer["FailedFindings"][0]
    assert failed["Id"] == "bad" and failed["ErrorCode"] == "InvalidInput"
    assert message in failed["ErrorMessage"]
    assert set(stored(hub)) == {"good"}


@pytest.mark.parametrize(
    "change",
    [
        {"AwsAccountId": "210987654321"},
        {"ProductArn": PRODUCT_ARN.replace("us-east-1", "eu-west-1")},
        {"ProductArn": PRODUCT_ARN.replace("default", "other")},
    ],
    ids=["account", "region", "product"],
)
def test_a_finding_for_another_account_or_product_fails_the_whole_call(hub, change):
    """As AWS Support describes it (prowler#867): AccessDeniedException for the request, so
    the finding beside it is not imported either."""
    code = errors(hub.batch_import_findings, Findings=[finding("good"), {**finding("x"), **change}])
    assert code == "AccessDeniedException"
    assert stored(hub) == {}


def test_timestamps_in_asff_s_formats_are_taken(hub):
    stamps = ["2025-01-01T00:00:00Z", "2025-01-01T00:00:00.123456789Z", "2025-01-01T00:00:00+02:00"]
    answer = hub.batch_import_findings(
        Findings=[finding(f"t{i}", updated=t) for i, t in enumerate(stamps)]
    )
    assert answer["SuccessCount"] == 3


def test_a_finding_at_every_limit_is_taken(hub):
    at_limits = {
        **finding("full"),
        "Title": "t" * 256,
        "Description": "d" * 1024,
        "ProductFields": {f"k{i}": "v" * 2048 for i in range(50)},
    }
    assert hub.batch_import_findings(Findings=[at_limits])["SuccessCount"] == 1


def test_more_than_100_findings_fail_the_whole_request(hub):
    assert (
        errors(hub.batch_import_findings, Findings=[finding(f"f{i}") for i in range(101)])
        == "InvalidInputException"
    )
    assert stored(hub) == {}


# --- iam:SimulatePrincipalPolicy -------------------------------------------------------------


def simulate(
    emulated,
    role_arn: str,
    actions: list[str],
    resources: list[str] | None = None,
    context: dict[str, str] | None = None,
) -> dict:
    iam = emulated.client("iam")
    extra: dict = {"ResourceArns": resources} if resources else {}
    if context:
        extra["ContextEntries"] = [
            {"ContextKeyName": k, "ContextKeyValues": [v], "ContextKeyType": "string"}
            for k, v in context.items()
        ]
    answer = iam.simulate_principal_policy(PolicySourceArn=role_arn, ActionNames=actions, **extra)
    assert answer["IsTruncated"] is False
    # One result per action (IAM's documented shape), each resource's decision in its own entry.
    assert [r["EvalActionName"] for r in answer["EvaluationResults"]] == actions
    return {
        (r["EvalActionName"], entry["EvalResourceName"]): {
            **entry,
            "EvalDecision": entry["EvalResourceDecision"],
        }
        for r in answer["EvaluationResults"]
        for entry in r["ResourceSpecificResults"]
    }


def test_allowed_and_implicit_deny_over_wildcard_resources(emulated, build):
    logs = build.policy(
        "logs",
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": "arn:aws:s3:::bucket/session-logs/*",
        },
        {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"},
    )
    arn = build.role("app", logs)

    results = simulate(
        emulated,
        arn,
        ["s3:PutObject", "kms:GenerateDataKey", "logs:PutLogEvents"],
        ["arn:aws:s3:::bucket/session-logs/x.log", "arn:aws:s3:::bucket/other/x.log"],
    )

    assert (
        results[("s3:PutObject", "arn:aws:s3:::bucket/session-logs/x.log")]["EvalDecision"]
        == "allowed"
    )
    assert (
        results[("s3:PutObject", "arn:aws:s3:::bucket/other/x.log")]["EvalDecision"]
        == "implicitDeny"
    )
    assert (
        results[("kms:GenerateDataKey", "arn:aws:s3:::bucket/other/x.log")]["EvalDecision"]
        == "allowed"
    )
    assert (
        results[("logs:PutLogEvents", "arn:aws:s3:::bucket/other/x.log")]["EvalDecision"]
        == "implicitDeny"
    )
    assert len(results) == 6  # every action x resource pair
    matched = results[("s3:PutObject", "arn:aws:s3:::bucket/session-logs/x.log")][
        "MatchedStatements"
    ]
    assert matched == [{"SourcePolicyId": "logs", "SourcePolicyType": "IAM Policy"}]
    assert (
        results[("logs:PutLogEvents", "arn:aws:s3:::bucket/other/x.log")].get(
            "MatchedStatements", []
        )
        == []
    )


def test_one_result_per_action_whose_top_level_is_the_most_restrictive_over_its_resources(
    emulated, build
):
    """IAM's documented shape: the top-level decision of an action simulated on several
    resources is the most restrictive of them; only ResourceSpecificResults tells them apart."""
    mixed = build.policy(
        "mixed",
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/secret/*"},
    )
    arn = build.role("app", mixed)
    answer = emulated.client("iam").simulate_principal_policy(
        PolicySourceArn=arn,
        ActionNames=["s3:PutObject", "s3:GetObject", "logs:PutLogEvents"],
        ResourceArns=["arn:aws:s3:::b/open/x", "arn:aws:s3:::b/secret/x"],
    )
    top = {r["EvalActionName"]: r for r in answer["EvaluationResults"]}

    assert {a: r["EvalDecision"] for a, r in top.items()} == {
        "s3:PutObject": "explicitDeny",  # allowed on one resource, denied on the other
        "s3:GetObject": "allowed",
        "logs:PutLogEvents": "implicitDeny",
    }
    assert "EvalResourceName" not in top["s3:PutObject"]  # several resources: no single one
    assert [
        (e["EvalResourceName"], e["EvalResourceDecision"])
        for e in top["s3:PutObject"]["ResourceSpecificResults"]
    ] == [("arn:aws:s3:::b/open/x", "allowed"), ("arn:aws:s3:::b/secret/x", "explicitDeny")]


def test_explicit_deny_wins_over_allow(emulated, build):
    arn = build.role(
        "app",
        build.policy("all", {"Effect": "Allow", "Action": "*", "Resource": "*"}),
        inline={
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*"}],
        },
    )

    results = simulate(emulated, arn, ["kms:Decrypt", "s3:PutObject"])

    assert results[("kms:Decrypt", "*")]["EvalDecision"] == "explicitDeny"
    # As IAM names an inline policy: role_<role>_<policy>, of type "IAM Policy".
    assert results[("kms:Decrypt", "*")]["MatchedStatements"] == [
        {"SourcePolicyId": "role_app_inline", "SourcePolicyType": "IAM Policy"}
    ]
    assert results[("s3:PutObject", "*")]["EvalDecision"] == "allowed"


def test_not_action_not_resource_case_and_single_character_wildcards(emulated, build):
    arn = build.role(
        "app",
        inline={
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": "iam:GetRol?",
                    "NotResource": "arn:aws:iam::*:role/admin*",
                },
            ],
        },
    )

    results = simulate(
        emulated,
        arn,
        ["S3:getobject", "iam:CreateUser", "iam:GetRole"],
        ["arn:aws:iam::123456789012:role/app", "arn:aws:iam::123456789012:role/admin-1"],
    )

    assert (
        results[("S3:getobject", "arn:aws:iam::123456789012:role/app")]["EvalDecision"] == "allowed"
    )
    assert (
        results[("iam:CreateUser", "arn:aws:iam::123456789012:role/app")]["EvalDecision"]
        == "implicitDeny"
    )
    assert (
        results[("iam:GetRole", "arn:aws:iam::123456789012:role/app")]["EvalDecision"] == "allowed"
    )
    assert (
        results[("iam:GetRole", "arn:aws:iam::123456789012:role/admin-1")]["EvalDecision"]
        == "implicitDeny"
    )


def test_aws_managed_policy_and_conditions_and_boundary(managed_policies, emulated, build):
    conditional = build.policy(
        "conditional",
        {
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}},
        },
    )
    boundary = build.policy(
        "boundary", {"Effect": "Allow", "Action": ["ssm:*", "s3:*"], "Resource": "*"}
    )
    arn = build.role(
        "app",
        CORE,
        conditional,
        build.policy("kms", {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}),
        boundary=boundary,
    )

    results = simulate(
        emulated, arn, ["ssm:UpdateInstanceInformation", "s3:PutObject", "kms:Decrypt"]
    )

    core = results[("ssm:UpdateInstanceInformation", "*")]
    assert core["EvalDecision"] == "allowed"
    assert {
        "SourcePolicyId": "AmazonSSMManagedInstanceCore",
        "SourcePolicyType": "IAM Policy",
    } in core["MatchedStatements"]
    # The condition's key is not in the request context: not matched, and named as missing;
    # as IAM does, on the other actions' answers too (boto/boto3#3111).
    assert results[("s3:PutObject", "*")]["EvalDecision"] == "implicitDeny"
    assert results[("s3:PutObject", "*")]["MissingContextValues"] == ["aws:RequestedRegion"]
    assert core["MissingContextValues"] == ["aws:RequestedRegion"]
    assert results[("kms:Decrypt", "*")]["EvalDecision"] == "implicitDeny"  # outside the boundary
    assert results[("kms:Decrypt", "*")]["PermissionsBoundaryDecisionDetail"] == {
        "AllowedByPermissionsBoundary": False
    }
    # Given in ContextEntries (key names are case-insensitive), the condition is evaluated.
    for region, decision in (("us-east-1", "allowed"), ("eu-west-1", "implicitDeny")):
        given = simulate(emulated, arn, ["s3:PutObject"], context={"AWS:requestedregion": region})
        assert given[("s3:PutObject", "*")]["EvalDecision"] == decision
        assert "MissingContextValues" not in given[("s3:PutObject", "*")]


def test_pages_with_max_items_and_unknown_role_is_no_such_entity(managed_policies, emulated, build):
    arn = build.role("app", CORE)
    iam = emulated.client("iam")
    pages = list(
        iam.get_paginator("simulate_principal_policy").paginate(
            PolicySourceArn=arn,
            ActionNames=["ssm:GetDocument", "ssm:PutInventory", "s3:GetObject"],
            ResourceArns=["arn:aws:s3:::a", "arn:aws:s3:::b"],
            PaginationConfig={"PageSize": 2},
        )
    )

    # One result per action, whatever the number of resources: 3 actions, pages of 2.
    assert [len(p["EvaluationResults"]) for p in pages] == [2, 1]
    assert (
        errors(
            iam.simulate_principal_policy,
            PolicySourceArn=arn.replace("/app", "/missing"),
            ActionNames=["s3:GetObject"],
        )
        == "NoSuchEntity"
    )


def test_statement_evaluation_is_pure_and_conservative():
    allow = SourcePolicy(
        "p", "role", {"Statement": {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}}
    )
    assert evaluate([allow], "s3:GetObject", "arn:aws:s3:::b/k").decision == "allowed"
    assert evaluate([allow], "s3:PutObject", "arn:aws:s3:::b/k").decision == "implicitDeny"
    assert evaluate([], "s3:GetObject", "*").decision == "implicitDeny"
    # Literal characters stay literal: a dot or bracket in a pattern is not a regex.
    assert not statement_applies(
        {"Effect": "Allow", "Action": "s3:Get.bject", "Resource": "*"}, "s3:GetObject", "*"
    )
    assert not statement_applies(
        {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b[1]"},
        "s3:GetObject",
        "arn:aws:s3:::b1",
    )
    # No Resource at all: not an identity statement that applies.
    assert not statement_applies({"Effect": "Allow", "Action": "*"}, "s3:GetObject", "*")


CONTEXT = {
    "aws:requestedregion": ["us-east-1"],
    "aws:securetransport": ["true"],
    "aws:principalarn": ["arn:aws:iam::123456789012:role/apps/web"],
}
WEB = "arn:aws:iam::123456789012:role/apps/web"


@pytest.mark.parametrize(
    ("condition", "holds", "missing"),
    [
        ({"StringEquals": {"aws:RequestedRegion": "us-east-1"}}, True, ()),
        ({"StringEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}, True, ()),
        ({"StringEquals": {"aws:RequestedRegion": "US-EAST-1"}}, False, ()),
        ({"StringEqualsIgnoreCase": {"aws:RequestedRegion": "US-EAST-1"}}, True, ()),
        ({"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}, False, ()),
        ({"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}, False, ()),
        ({"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "eu-central-1"]}}, True, ()),
        ({"StringLike": {"aws:RequestedRegion": "us-*"}}, True, ()),
        ({"StringNotLike": {"aws:RequestedRegion": "eu-*"}}, True, ()),
        ({"Bool": {"aws:SecureTransport": "false"}}, False, ()),
        ({"Bool": {"aws:SecureTransport": "True"}}, True, ()),
        # JSON true/false/numbers are read as their text (IAM accepts them).
        ({"Bool": {"aws:SecureTransport": True}}, True, ()),
        ({"Bool": {"aws:SecureTransport": False}}, False, ()),
        # ARNs: case-sensitive, each of the six segments matched on its own, wildcards in each.
        ({"ArnEquals": {"aws:PrincipalArn": WEB}}, True, ()),
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/apps/*"}}, True, ()),
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/APPS/*"}}, False, ()),
        ({"ArnLike": {"aws:PrincipalArn": "arn:*/web"}}, False, ()),
        ({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin-*"}}, True, ()),
        # Every key and every operator must hold.
        (
            {
                "StringEquals": {"aws:RequestedRegion": "us-east-1"},
                "Bool": {"aws:SecureTransport": "false"},
            },
            False,
            (),
        ),
        # A key absent from the context: false, but true for a negated operator or IfExists,
        # whatever the operator; over a set, ForAllValues holds and ForAnyValue does not.
        ({"StringEquals": {"aws:SourceVpce": "vpce-1"}}, False, ("aws:SourceVpce",)),
        ({"StringNotEquals": {"aws:SourceVpce": "vpce-1"}}, True, ("aws:SourceVpce",)),
        ({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, True, ("aws:SourceIp",)),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, False, ("aws:SourceIp",)),
        ({"NumericLessThan": {"aws:MultiFactorAuthAge": 3600}}, False, ("aws:MultiFactorAuthAge",)),
        ({"ForAllValues:StringEquals": {"aws:TagKeys": "a"}}, True, ("aws:TagKeys",)),
        ({"ForAnyValue:StringEquals": {"aws:TagKeys": "a"}}, False, ("aws:TagKeys",)),
        ({"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}}, True, ("aws:SourceVpce",)),
        ({"StringEqualsIfExists": {"aws:RequestedRegion": "eu-west-1"}}, False, ()),
        ({"Null": {"aws:SourceVpce": "true"}}, True, ("aws:SourceVpce",)),
        ({"Null": {"aws:RequestedRegion": "true"}}, False, ()),
        ({"Null": {"aws:RequestedRegion": False}}, True, ()),
        # One key named in two cases is one missing key.
        (
            {"StringNotEquals": {"aws:SourceVpce": "v"}, "StringNotLike": {"AWS:sourcevpce": "w"}},
            True,
            ("aws:SourceVpce",),
        ),
    ],
)
def test_conditions_are_evaluated_against_the_request_context(condition, holds, missing):
    assert condition_holds(condition, CONTEXT) == (holds, missing)
    statement = {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": condition}
    assert statement_applies(statement, "s3:GetObject", "*", CONTEXT) is holds


def test_an_operator_not_modelled_on_a_given_key_never_holds_for_allow_or_deny():
    """Numeric, date, address and set operators are not evaluated on a key the context holds:
    the statement never applies, whatever its effect (the emulator's one conservative
    simplification). The keys it lacks are still named."""
    for operator in ("NumericLessThan", "IpAddress", "ForAnyValue:StringEquals"):
        condition = {operator: {"aws:RequestedRegion": "us-east-1"}}
        assert condition_holds(condition, CONTEXT) == (None, ())
        for effect in ("Allow", "Deny"):
            statement = {"Effect": effect, "Action": "*", "Resource": "*", "Condition": condition}
            assert not statement_applies(statement, "s3:GetObject", "*", CONTEXT)
    mixed = {"IpAddress": {"aws:RequestedRegion": "x"}, "StringEquals": {"aws:SourceVpce": "v"}}
    assert condition_holds(mixed, CONTEXT) == (False, ("aws:SourceVpce",))


def test_a_perimeter_deny_on_a_key_not_given_refuses_and_names_the_key(
    managed_policies, emulated, build
):
    """As IAM answers it: a Deny unless from the corporate network (NotIpAddress on
    aws:SourceIp), the key not given, matches; the answer names the key as missing, on each
    resource (the one the Deny does not cover too: IAM names every statement's keys) and on
    the action; a boundary's keys are named too."""
    perimeter = build.policy(
        "perimeter",
        {
            "Effect": "Deny",
            "Action": "s3:*",
            "Resource": "arn:aws:s3:::corp-*",
            "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
        },
    )
    boundary = build.policy(
        "boundary",
        {
            "Effect": "Allow",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}},
        },
    )
    arn = build.role(
        "app",
        build.policy("s3", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}),
        perimeter,
        boundary=boundary,
    )
    iam = emulated.client("iam")
    (result,) = iam.simulate_principal_policy(
        PolicySourceArn=arn,
        ActionNames=["s3:PutObject"],
        ResourceArns=["arn:aws:s3:::corp-logs/k", "arn:aws:s3:::other/k"],
    )["EvaluationResults"]

    entries = {e["EvalResourceName"]: e for e in result["ResourceSpecificResults"]}
    assert entries["arn:aws:s3:::corp-logs/k"]["EvalResourceDecision"] == "explicitDeny"
    assert entries["arn:aws:s3:::corp-logs/k"]["MissingContextValues"] == [
        "aws:SourceIp",
        "aws:SourceVpc",
    ]
    assert entries["arn:aws:s3:::other/k"]["EvalResourceDecision"] == "allowed"
    assert entries["arn:aws:s3:::other/k"]["MissingContextValues"] == [
        "aws:SourceVpc",
        "aws:SourceIp",
    ]
    assert result["EvalDecision"] == "explicitDeny"
    assert result["MissingContextValues"] == ["aws:SourceIp", "aws:SourceVpc"]


# --- moto corrections --------------------------------------------------------------------------


def test_run_instances_gives_the_profile_to_every_instance(managed_policies, emulated, build):
    build.role("core", CORE)
    ids = build.instances(3, build.profile("p", "core"))
    reservations = build.ec2.describe_instances(InstanceIds=ids)["Reservations"]
    profiles = [
        i.get("IamInstanceProfile", {}).get("Arn", "") for r in reservations for i in r["Instances"]
    ]
    assert len(profiles) == 3 and all(p.endswith(":instance-profile/p") for p in profiles)
    associations = build.ec2.describe_iam_instance_profile_associations()[
        "IamInstanceProfileAssociations"
    ]
    assert sorted(a["InstanceId"] for a in associations) == sorted(ids)


def test_replaced_profile_shows_in_describe_instances(managed_policies, emulated, build):
    build.role("core", CORE)
    build.profile("old", "core")
    build.profile("new", "core")
    instance = build.instances(1, "old")[0]
    association = build.ec2.describe_iam_instance_profile_associations()[
        "IamInstanceProfileAssociations"
    ][0]

    build.ec2.replace_iam_instance_profile_association(
        AssociationId=association["AssociationId"], IamInstanceProfile={"Name": "new"}
    )

    described = build.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0][
        "Instances"
    ][0]
    assert described["IamInstanceProfile"]["Arn"].endswith(":instance-profile/new")
    new = build.iam.get_instance_profile(InstanceProfileName="new")["InstanceProfile"]
    assert described["IamInstanceProfile"]["Id"] == new["InstanceProfileId"]


def test_describe_instances_names_the_profiles_id_not_the_associations(
    managed_policies, emulated, build
):
    """AWS: IamInstanceProfile.Id is "the ID of the instance profile" (moto gave the
    association's). It is what tells a deleted profile from one recreated under its name."""
    build.role("core", CORE)
    launched = build.instances(2, build.profile("p", "core"))
    bare = build.instances(1)[0]
    build.ec2.associate_iam_instance_profile(IamInstanceProfile={"Name": "p"}, InstanceId=bare)
    profile = build.iam.get_instance_profile(InstanceProfileName="p")["InstanceProfile"]
    reservations = build.ec2.describe_instances(InstanceIds=[*launched, bare])["Reservations"]
    ids = {i["IamInstanceProfile"]["Id"] for r in reservations for i in r["Instances"]}
    assert ids == {profile["InstanceProfileId"]}


def test_describe_instances_filters_by_the_associated_profile_arn(
    managed_policies, emulated, build
):
    build.role("core", CORE)
    build.profile("web", "core")
    build.profile("web2", "core")
    web = build.instances(2, "web")
    other = build.instances(1, "web2")
    build.instances(1)  # no profile

    def by_arn(*patterns: str) -> list[str]:
        reservations = build.ec2.describe_instances(
            Filters=[{"Name": "iam-instance-profile.arn", "Values": list(patterns)}]
        )["Reservations"]
        return sorted(i["InstanceId"] for r in reservations for i in r["Instances"])

    arn = build.iam.get_instance_profile(InstanceProfileName="web")["InstanceProfile"]["Arn"]
    assert by_arn(arn) == sorted(web)  # exact: web2 is not web
    assert by_arn(arn.replace(":instance-profile/web", ":instance-profile/*")) == sorted(
        web + other
    )
    assert by_arn("arn:aws:iam::123456789012:instance-profile/nothing") == []
    # The filter follows the association: once disassociated, the instance no longer matches.
    association = build.ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [web[0]]}]
    )["IamInstanceProfileAssociations"][0]["AssociationId"]
    build.ec2.disassociate_iam_instance_profile(AssociationId=association)
    assert by_arn(arn) == [web[1]]


def test_describe_instances_filters_by_a_group_on_any_interface(emulated, build):
    vpc = build.ec2.describe_subnets(SubnetIds=[build.subnet])["Subnets"][0]["VpcId"]
    secondary = build.ec2.create_security_group(GroupName="eni-only", Description="d", VpcId=vpc)[
        "GroupId"
    ]
    plain, dual = build.instances(2)
    eni = build.ec2.create_network_interface(SubnetId=build.subnet, Groups=[secondary])[
        "NetworkInterface"
    ]["NetworkInterfaceId"]
    build.ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=dual, DeviceIndex=1)

    def by_group(*groups: str) -> list[str]:
        reservations = build.ec2.describe_instances(
            Filters=[{"Name": "network-interface.group-id", "Values": list(groups)}]
        )["Reservations"]
        return sorted(i["InstanceId"] for r in reservations for i in r["Instances"])

    assert by_group(secondary) == [dual]  # only on the second interface
    by_interface = build.ec2.describe_instances(
        Filters=[{"Name": "network-interface.network-interface-id", "Values": [eni]}]
    )["Reservations"]
    assert [i["InstanceId"] for r in by_interface for i in r["Instances"]] == [dual]
    assert by_group("sg-00000000000000000") == []
    primary = build.ec2.create_security_group(GroupName="primary", Description="d", VpcId=vpc)[
        "GroupId"
    ]
    build.ec2.modify_instance_attribute(InstanceId=plain, Groups=[primary])
    assert by_group(primary) == [plain]
    assert by_group(primary, secondary) == sorted([dual, plain])  # values of a filter are ORed


def test_prefix_list_associations_name_each_group_referencing_the_list_once(emulated, build):
    """GetManagedPrefixListAssociations (moto lacks it): the groups with an ingress or egress
    rule naming the list, once each however many rules; an unknown list is NotFound."""
    ec2 = build.ec2
    vpc = ec2.describe_subnets(SubnetIds=[build.subnet])["Subnets"][0]["VpcId"]

    def new_list(name: str) -> str:
        return ec2.create_managed_prefix_list(
            PrefixListName=name, MaxEntries=5, AddressFamily="IPv4", Entries=[]
        )["PrefixList"]["PrefixListId"]

    office, other = new_list("office"), new_list("other")
    ingress, egress, unrelated = (
        ec2.create_security_group(GroupName=n, Description="d", VpcId=vpc)["GroupId"]
        for n in ("in", "out", "none")
    )
    via = [{"PrefixListIds": [{"PrefixListId": office}]}]
    for low in (22, 443):  # two rules of one group: listed once
        ec2.authorize_security_group_ingress(
            GroupId=ingress,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": low, "ToPort": low, **via[0]}],
        )
    ec2.authorize_security_group_egress(
        GroupId=egress,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, **via[0]}],
    )

    def associations(pl: str) -> list[tuple[str, str]]:
        pages = ec2.get_paginator("get_managed_prefix_list_associations").paginate(PrefixListId=pl)
        return sorted(
            (a["ResourceId"], a["ResourceOwner"])
            for p in pages
            for a in p["PrefixListAssociations"]
        )

    assert associations(office) == sorted([(ingress, ACCOUNT), (egress, ACCOUNT)])
    assert unrelated not in dict(associations(office))
    assert associations(other) == []
    code = errors(ec2.get_managed_prefix_list_associations, PrefixListId="pl-00000000000000000")
    assert code == "InvalidPrefixListID.NotFound"


def test_authorize_ingress_answers_with_every_rule_it_created(emulated, build):
    """The fix record's new rule ids come from this answer (moto named only the last one)."""
    vpc = build.ec2.describe_subnets(SubnetIds=[build.subnet])["Subnets"][0]["VpcId"]
    gid = build.ec2.create_security_group(GroupName="two", Description="d", VpcId=vpc)["GroupId"]
    ftp = {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 21, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    answer = build.ec2.authorize_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            ftp,
            {
                "IpProtocol": "udp",
                "FromPort": 53,
                "ToPort": 53,
                "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "0.0.0.0/0"}],
            },
        ],
    )["SecurityGroupRules"]
    held = build.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])[
        "SecurityGroupRules"
    ]
    assert len(answer) == 3
    assert {r["SecurityGroupRuleId"] for r in answer} == {
        r["SecurityGroupRuleId"] for r in held if not r["IsEgress"]
    }
    assert (
        errors(
            build.ec2.authorize_security_group_ingress,
            GroupId=gid,
            IpPermissions=[ftp],
        )
        == "InvalidPermission.Duplicate"
    )


def test_authorize_ingress_is_all_or_nothing(emulated, build):
    """A call refused part-way (here its second permission is a duplicate) leaves none of its
    rules, as in EC2: the SSH fix takes back exactly what an answer said it created."""
    vpc = build.ec2.describe_subnets(SubnetIds=[build.subnet])["Subnets"][0]["VpcId"]
    gid = build.ec2.create_security_group(GroupName="one", Description="d", VpcId=vpc)["GroupId"]

    def rule(low, high):
        return {
            "IpProtocol": "tcp",
            "FromPort": low,
            "ToPort": high,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        }

    build.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[rule(80, 80)])
    refused = errors(
        build.ec2.authorize_security_group_ingress,
        GroupId=gid,
        IpPermissions=[rule(0, 21), rule(80, 80)],
    )
    held = build.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])[
        "SecurityGroupRules"
    ]
    assert refused == "InvalidPermission.Duplicate"
    assert [(r["FromPort"], r["ToPort"]) for r in held if not r["IsEgress"]] == [(80, 80)]


def test_revoke_ingress_is_all_or_nothing_in_a_non_default_vpc(emulated, build):
    """EC2 documents it: a permission matching no rule fails the call (InvalidPermission.NotFound)
    "and no rules are revoked". moto revoked those before it, so a fix revoking two rules, one
    changed meanwhile, lost the other as if someone else had revoked it."""
    vpc = build.ec2.describe_subnets(SubnetIds=[build.subnet])["Subnets"][0]["VpcId"]
    gid = build.ec2.create_security_group(GroupName="two", Description="d", VpcId=vpc)["GroupId"]
    wide = {
        "IpProtocol": "tcp",
        "FromPort": 0,
        "ToPort": 65535,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    gone = {**wide, "FromPort": 22, "ToPort": 22}
    build.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[wide])
    refused = errors(
        build.ec2.revoke_security_group_ingress, GroupId=gid, IpPermissions=[wide, gone]
    )
    held = build.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])[
        "SecurityGroupRules"
    ]
    assert refused == "InvalidPermission.NotFound"
    assert [(r["FromPort"], r["ToPort"]) for r in held if not r["IsEgress"]] == [(0, 65535)]
    build.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[wide])  # alone: revoked
    held = build.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])[
        "SecurityGroupRules"
    ]
    assert [r for r in held if not r["IsEgress"]] == []


def test_the_emulated_agent_and_the_guardrail_agree_on_what_the_agent_needs():
    """The emulator models the SSM Agent on its own (so it can catch the guardrail's mistakes),
    but a change to the actions or the DHMC setting on one side alone would make the demo judge
    against an agent AWS does not run."""
    from guardrail.controls import ssm_role

    assert extension.HEARTBEAT == ssm_role.AGENT_ACTIONS[:1] == ("ssm:UpdateInstanceInformation",)
    assert extension.DHMC_SETTING_ID == ssm_role.DHMC_SETTING
