"""`guardrail replay EVENT.json`: one event through the on_change path, from a shell, printing what
it touched and did. Runs against moto in process (boto3 is mocked, so no endpoint is needed)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from guardrail import cli
from guardrail.replay import format_outcome, outcome_dict, replay, run_replay

from tests.aws_errors import cli_without_rule_ids
from tests.handlers import test_on_change
from tests.handlers.test_on_change import (
    ACCOUNT,
    CORE,
    FIXTURES,
    GUARDRAIL_PROFILE,
    GUARDRAIL_ROLE,
    I1,
    PLACEHOLDER_ACCOUNT,
    REGION,
    SG,
    SSH,
    World,
    answer_error,
    range_open_to_internet,
    refuse,
)

world = test_on_change.world  # the emulated account fixture


def write_event(tmp_path: Path, event: dict[str, Any]) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return str(path)


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_replay(cli.build_parser().parse_args(argv), out, err, env=env or {})
    return code, out.getvalue()


def main(argv: list[str]) -> tuple[int, str, str]:
    """The whole CLI, as a person runs it: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_replay_of_a_captured_event_runs_in_the_callers_account(world: World):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    captured = json.loads(
        (FIXTURES / "authorize_ingress_ip_permissions.json").read_text().replace(SG, bad)
    )
    assert captured["account"] == PLACEHOLDER_ACCOUNT  # from another account, as captured
    outcome = replay(captured, world.guardrail("enforce"), home_account=ACCOUNT)
    assert outcome.report is not None and outcome.report.account_id == ACCOUNT
    assert outcome.notes == [
        f"event from account {PLACEHOLDER_ACCOUNT}, evaluated in account {ACCOUNT}"
    ]
    assert world.internet_ssh(bad) == []
    text = format_outcome(outcome)
    assert f"groups {bad}" in text and "controls ssh-open-to-internet" in text
    assert f"FIXED          ssh-open-to-internet   {instance}" in text
    assert "-> revoke internet SSH: applied" in text
    assert "Security Hub: 2 imported, 0 failed, 2 resolved" in text
    as_json = outcome_dict(outcome)
    assert as_json["fixes"][0]["outcome"] == "applied" and as_json["event"]["group_ids"] == [bad]


def test_cli_replay_report_mode_exits_1_and_changes_nothing(world: World, tmp_path):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    path = write_event(tmp_path, world.event("state_change_running", {I1: instance}))
    before = world.state()
    code, out = run(["replay", path, "--mode", "report"])
    assert code == 1 and world.state() == before
    assert f"instances {instance}" in out and "report only (mode report)" in out


def test_cli_replay_of_a_prefix_list_change_names_the_list_and_what_it_left(world, tmp_path):
    from tests.handlers.test_on_change import PL, office_list_on_ssh

    pl, ops, instance = office_list_on_ssh(world)
    world.ec2.modify_managed_prefix_list(
        PrefixListId=pl, CurrentVersion=1, AddEntries=[{"Cidr": "0.0.0.0/0"}]
    )
    path = write_event(tmp_path, world.event("modify_managed_prefix_list", {PL: pl}))
    before = world.state()
    code, out = run(["replay", path, "--mode", "enforce", "--control", SSH])
    assert code == 1 and world.state() == before  # left FAILED: a person's to change
    assert f"prefix lists {pl}" in out and "groups -" in out
    assert (
        f"-> revoke internet SSH: skipped - internet SSH through a prefix list ({pl} holds " in out
    )
    assert instance in out and ops in out


def test_cli_replay_of_a_list_still_being_changed_exits_2_saying_so(world, tmp_path, monkeypatch):
    from guardrail import reader

    from tests.handlers.test_on_change import PL, office_list_on_ssh

    pl = office_list_on_ssh(world)[0]
    path = write_event(tmp_path, world.event("modify_managed_prefix_list", {PL: pl}))

    def changing(self, prefix_list_ids):
        raise reader.PrefixListChanging(pl, "modify-in-progress")

    monkeypatch.setattr(reader.SnapshotReader, "_groups_using", changing)
    before = world.state()
    code, _, err = main(["replay", path, "--control", SSH])
    assert code == 2 and world.state() == before
    assert f"prefix list {pl} is still being changed (modify-in-progress)" in err


def test_a_reader_that_stops_early_leaves_replays_exit_code_as_the_results_say(
    world: World, tmp_path
):
    """`guardrail replay EVENT.json | head`: as scan, no traceback and the exit code still
    says that something was left FAILED (1), not 141."""
    from tests.adapters.test_cli import ClosedPipe

    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    path = write_event(tmp_path, world.event("state_change_running", {I1: instance}))
    err = io.StringIO()
    code = cli.main(["replay", path, "--mode", "report", "--no-publish"], ClosedPipe(), err)
    assert (code, err.getvalue()) == (1, "")


def test_a_message_from_the_dead_letter_queue_replays_as_its_event(world: World, tmp_path):
    """An event that failed every retry lands in the DLQ wrapped by Lambda's on-failure
    destination; the message body replays as it is."""
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    message = {
        "version": "1.0",
        "timestamp": "2026-11-26T10:00:00.000Z",
        "requestContext": {
            "requestId": "c9b4f8d2-0000-4000-8000-000000000001",
            "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:on-change:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": world.event("state_change_running", {I1: instance}),
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorType": "ThrottlingException"},
    }
    path = write_event(tmp_path, message)
    code, out = run(["replay", path, "--mode", "report"])
    assert code == 1 and f"instances {instance}" in out and "report only (mode report)" in out


def test_cli_replay_enforce_fixes_and_exits_0(world: World, tmp_path):
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    path = write_event(tmp_path, world.event("state_change_running", {I1: instance}))
    code, out = run(
        [
            "replay",
            path,
            "--mode",
            "enforce",
            "--instance-profile",
            GUARDRAIL_PROFILE,
            "--instance-role",
            GUARDRAIL_ROLE,
            "--format",
            "json",
        ]
    )
    assert code == 0, out
    result = json.loads(out)
    assert {f["action"] for f in result["fixes"]} == {
        "revoke internet SSH",
        "associate instance profile",
    }
    assert world.internet_ssh(bad) == [] and world.profile_of(instance) == GUARDRAIL_PROFILE


def test_cli_replay_names_a_fix_stopped_by_what_is_not_an_aws_error(
    world: World, tmp_path, monkeypatch
):
    """As `guardrail scan` does: the crash is named on stderr (exit 1, its results FAILED)."""
    _, instance = range_open_to_internet(world)
    path = write_event(tmp_path, world.event("state_change_running", {I1: instance}))
    cli_without_rule_ids(monkeypatch)
    out, err = io.StringIO(), io.StringIO()
    argv = [
        "replay",
        path,
        "--mode",
        "enforce",
        "--no-publish",
        "--control",
        SSH,
        "--format",
        "json",
    ]
    code = run_replay(cli.build_parser().parse_args(argv), out, err, env={})
    assert code == 1
    assert f"guardrail: error: {SSH} fix stopped: KeyError" in err.getvalue()
    outcome = json.loads(out.getvalue())
    assert [s.split(":")[:2] for s in outcome["stopped"]] == [[f"{SSH} fix stopped", " KeyError"]]


def test_cli_replay_of_an_iam_event_runs_in_every_covered_region(world: World, tmp_path):
    path = write_event(tmp_path, world.event("iam_detach_role_policy"))
    code, out = run(
        ["replay", path, "--no-publish"], env={"GUARDRAIL_REGIONS": f"{REGION},us-west-2"}
    )
    assert code == 0
    assert out.count("DetachRolePolicy") == 2
    assert f"region {REGION}" in out and "region us-west-2" in out


SCAN_RESULT_KEYS = {
    "control", "resource_type", "resource_id", "region", "status", "severity", "reason",
    "remediation",
}  # fmt: skip


def test_replay_json_is_one_object_whose_results_read_as_scans_do(world: World, tmp_path):
    """The README documents `--format json` as `{"results": [{control, ..., region, status,
    severity, reason, remediation}], ...}`. replay's results lacked region and severity, an
    event run in several regions printed a bare list, and a dropped event had no results."""
    world.app_role(core=False)
    world.launch(profile="app-profile")
    path = write_event(tmp_path, world.event("iam_detach_role_policy"))
    covered = {"GUARDRAIL_REGIONS": f"{REGION},us-west-2"}
    code, out = run(["replay", path, "--no-publish", "--format", "json"], env=covered)
    assert code == 1
    document = json.loads(out)
    assert [r["region"] for r in document["regions"]] == [REGION, "us-west-2"]
    (failed,) = [r for r in document["results"] if r["status"] == "FAILED"]
    assert set(failed) == SCAN_RESULT_KEYS | {"remediated"}
    assert (failed["region"], failed["severity"], failed["remediated"]) == (REGION, "MEDIUM", False)
    assert document["results"] == [r for o in document["regions"] for r in o["results"]]

    failed_call = write_event(tmp_path, world.event("failed_authorize_ingress"))
    code, out = run(["replay", failed_call, "--format", "json"])
    document = json.loads(out)
    assert code == 0 and document["results"] == [] and document["dropped"]["kind"] == "failed_call"


def test_an_unknown_region_among_the_covered_ones_stops_replay_before_any_change(
    world: World, tmp_path
):
    world.app_role(core=False)
    world.launch(profile="app-profile")
    before = world.state()
    path = write_event(tmp_path, world.event("iam_detach_role_policy"))
    covered = {"GUARDRAIL_REGIONS": f"{REGION},xx-fake-1"}
    with pytest.raises(cli.UsageError, match=r"unknown region.*'xx-fake-1'"):
        run(["replay", path, "--mode", "enforce", "--instance-profile", GUARDRAIL_PROFILE,
             "--instance-role", GUARDRAIL_ROLE, "--no-publish"], env=covered)  # fmt: skip
    assert world.state() == before  # us-east-1's role was not fixed first


def test_settings_of_one_region_stop_replay_in_another_before_any_change(world: World, tmp_path):
    """An IAM event replayed in every covered region with one region's settings: its KMS key
    would be judged, and set, as the other region's session key. Refused before any region is
    changed; replayed in the key's own region, it runs."""
    from guardrail.settings import SettingsError

    world.app_role(core=False)
    world.launch(profile="app-profile")
    before = world.state()
    path = write_event(tmp_path, world.event("iam_detach_role_policy"))
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c3d-0000-4000-8000-00000000000a"
    covered = {"GUARDRAIL_REGIONS": f"{REGION},us-west-2", "GUARDRAIL_SESSION_LOG_KMS_KEY": key}
    argv = ["replay", path, "--mode", "enforce", "--instance-profile", GUARDRAIL_PROFILE,
            "--instance-role", GUARDRAIL_ROLE, "--no-publish"]  # fmt: skip
    with pytest.raises(SettingsError, match=f"is a key of {REGION}, not of us-west-2"):
        run(argv, env=covered)
    assert world.state() == before  # the key's own region was not fixed first
    code, out = run([*argv, "--region", REGION], env=covered)
    assert code == 0 and f"region {REGION}" in out and world.state() != before


def test_what_earlier_regions_did_is_printed_when_a_later_region_fails(
    world: World, tmp_path, monkeypatch
):
    """AccessDenied (say) in the second covered region: the first region's outcome, changes
    included, is printed before the error reaches cli.main."""
    from botocore.exceptions import ClientError
    from guardrail import replay as replay_module

    real, regions = replay_module.replay, []

    def second_denied(event: Any, guardrail: Any, **kwargs: Any) -> Any:
        regions.append(guardrail.clients.region)
        if len(regions) == 2:
            raise ClientError({"Error": {"Code": "AccessDenied"}}, "DescribeInstances")
        return real(event, guardrail, **kwargs)

    monkeypatch.setattr(replay_module, "replay", second_denied)
    path = write_event(tmp_path, world.event("iam_detach_role_policy"))
    out = io.StringIO()
    args = cli.build_parser().parse_args(["replay", path, "--no-publish"])
    with pytest.raises(ClientError):
        run_replay(args, out, io.StringIO(), env={"GUARDRAIL_REGIONS": f"{REGION},us-west-2"})
    assert regions == [REGION, "us-west-2"]
    assert f"region {REGION}" in out.getvalue() and "us-west-2" not in out.getvalue()


def test_replay_of_a_policy_version_names_the_policy_and_reaches_its_roles_instances(
    world: World, tmp_path
):
    """SetDefaultPolicyVersion names no role: the touched line shows the policy, and its role's
    instance is evaluated (found through the policy)."""
    world.app_role()
    instance = world.launch(profile="app-profile")[0]
    policy = world.iam.create_policy(
        PolicyName="app-policy", PolicyDocument=test_on_change.TEAM_POLICY
    )["Policy"]["Arn"]
    world.iam.attach_role_policy(RoleName="app-role", PolicyArn=policy)
    path = write_event(tmp_path, world.event("iam_set_default_policy_version"))
    here = {"GUARDRAIL_REGIONS": REGION}
    code, out = run(["replay", path, "--mode", "report", "--no-publish"], env=here)
    assert code == 0, out
    assert f"roles -; policies {policy}; preferences no;" in out
    assert f"PASSED         ssm-instance-role      {instance}" in out
    code, out = run(["replay", path, "--no-publish", "--format", "json"], env=here)
    assert json.loads(out)["event"]["policy_arns"] == [policy]


def test_cli_replay_of_a_dropped_event_says_why(world: World, tmp_path):
    path = write_event(tmp_path, world.event("failed_authorize_ingress"))
    code, out = run(["replay", path])
    assert code == 0
    assert out.startswith("AuthorizeSecurityGroupIngress: dropped (failed_call)")


def test_cli_replay_usage_errors(tmp_path):
    with pytest.raises(cli.UsageError, match="cannot read"):
        run(["replay", str(tmp_path / "missing.json")])
    bad = tmp_path / "bad.json"
    for text in ("{not json", '{"id": ' + "1" * 5000 + "}"):  # past Python's 4,300 digits
        bad.write_text(text)
        with pytest.raises(cli.UsageError, match="is not JSON"):
            run(["replay", str(bad)])


def test_guardrail_replay_through_main_reports_usage_errors_with_exit_2(tmp_path):
    code, _, err = main(["replay", str(tmp_path / "missing.json")])
    assert code == 2 and err.startswith("guardrail: cannot read")
    assert "Traceback" not in err


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"], ids=["utf16-powershell", "utf8-bom"])
def test_an_event_saved_as_utf16_or_with_a_bom_replays_as_utf8_does(
    world: World, tmp_path, monkeypatch, encoding
):
    """Windows PowerShell 5.1's `>` writes UTF-16 (with a byte-order mark); other editors add
    a UTF-8 one. Either replays exactly as the plain UTF-8 file."""
    event = json.dumps(world.event("failed_authorize_ingress"))
    plain, saved = tmp_path / "plain.json", tmp_path / "saved.json"
    plain.write_text(event, encoding="utf-8")
    saved.write_bytes(event.encode(encoding))
    assert run(["replay", str(saved)]) == run(["replay", str(plain)])
    # Piped in (`replay - < saved.json`) too: stdin read as text saw "\ufeff{" or UTF-16 bytes.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(event.encode(encoding))))
    assert run(["replay", "-"]) == run(["replay", str(plain)])
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"detail": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(cli.UsageError, match="neither UTF-8 nor UTF-16"):
        run(["replay", str(latin)])


@pytest.mark.parametrize(
    "body",
    [{}, [], None, "not an event", json.dumps({"detail-type": "x"})],
    ids=["empty", "list", "null", "string", "double-encoded"],
)
def test_an_event_that_cannot_be_read_is_a_usage_error_for_the_cli(tmp_path, body):
    """A dead-letter body copied as a JSON string (`--output json` quotes it again), an empty
    object: the Lambda counts and drops these; a person replaying a file is told (exit 2), with
    the reason printed."""
    path = write_event(tmp_path, body)
    code, out, err = main(["replay", path, "--no-publish"])
    # Said on stderr, as every exit 2 is: `replay ev.json > out.txt` still shows why.
    assert code == 2 and out == "" and err.startswith("guardrail: event: dropped (malformed)")
    code, out, _ = main(["replay", path, "--no-publish", "--format", "json"])
    assert code == 2 and json.loads(out)["dropped"]["kind"] == "malformed"  # JSON: stdout


def test_an_event_nested_too_deeply_exits_2_without_a_traceback(tmp_path):
    """json gives up on deep nesting with RecursionError: a detail string nested so is a
    malformed event, a whole file nested so is not JSON we can read."""
    deep = "[" * 100_000
    path = write_event(tmp_path, {"detail-type": "AWS API Call via CloudTrail", "detail": deep})
    code, out, err = main(["replay", path, "--no-publish"])
    assert code == 2
    assert "dropped (malformed)" in err and "Traceback" not in err and out == ""
    Path(path).write_text(deep)
    code, _, err = main(["replay", path, "--no-publish"])
    assert code == 2
    assert "is nested too deeply" in err and "Traceback" not in err


def test_invalid_ids_beside_valid_ones_are_evaluated_without_them_and_logged(
    world: World, tmp_path
):
    """RunInstances naming a good instance and "i-BOGUS": the good one is evaluated, the bogus
    one is named in a warning (a shape the parser may not know), with the event's name and id."""
    instance = world.launch()[0]
    event = world.event("run_instances_two", {I1: instance})
    event["detail"]["responseElements"]["instancesSet"]["items"][1]["instanceId"] = "i-BOGUS"
    argv = ["replay", write_event(tmp_path, event), "--mode", "report", "--no-publish"]
    _, out, err = main([*argv, "--format", "json"])
    assert json.loads(out)["event"]["instance_ids"] == [instance]
    (warning,) = [line for line in err.splitlines() if "invalid ids" in line]
    assert warning.startswith("guardrail: warning: event named invalid ids")
    assert "'i-BOGUS'" in warning and "RunInstances" in warning and event["id"] in warning


def test_the_lambda_logs_invalid_ids_beside_valid_ones(world: World, caplog, monkeypatch):
    instance = world.launch()[0]
    event = world.event("run_instances_two", {I1: instance})
    event["detail"]["responseElements"]["instancesSet"]["items"][1]["instanceId"] = "i-BOGUS"
    # The handler's Powertools logger writes the engine's records; let caplog see them too.
    monkeypatch.setattr(logging.getLogger("guardrail"), "propagate", True)
    with caplog.at_level("WARNING", logger="guardrail"):
        result = world.deliver(event, mode="report")
    assert result["event"]["instance_ids"] == [instance]
    (logged,) = [r for r in caplog.records if r.getMessage() == "event named invalid ids"]
    assert logged.levelname == "WARNING" and logged.ignored == ["'i-BOGUS'"]
    assert (logged.event_name, logged.event_id) == ("RunInstances", event["id"])


def test_replay_reads_stdin(world: World, monkeypatch):
    event = world.event("ssm_update_other_document")
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(event)))
    code, out = run(["replay", "-"])
    assert code == 0 and "dropped (irrelevant)" in out


def test_replay_uses_the_events_region_by_default(world: World, tmp_path):
    """A regional event is replayed where it happened (here eu-west-1, the session default is
    us-east-1), so ids found in the event exist where the guardrail looks."""
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    path = write_event(tmp_path, world.event("state_change_running", {I1: instance}))
    code, out = run(
        ["replay", path, "--mode", "report", "--control", SSH],
        env={"AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert code == 1 and f"region {REGION}" in out and "FAILED" in out


def test_a_deleted_instance_is_archived_only_when_replay_publishes(world: World, tmp_path):
    """With --no-publish the text said ARCHIVED, and the JSON listed it archived, though
    nothing reached Security Hub; so it did for an instance whose findings Security Hub never
    held (nothing to archive, none imported)."""
    path = write_event(tmp_path, world.event("start_instances"))  # I1 never existed
    for publish in (["--no-publish"], []):
        code, out = run(["replay", path, *publish, "--control", SSH])
        assert code == 0 and "GONE" in out and "ARCHIVED" not in out and I1 in out
        code, out = run(["replay", path, *publish, "--control", SSH, "--format", "json"])
        result = json.loads(out)
        assert (result["gone"], result["archived"]) == ([I1], [])
        assert (result["published"] is None) is bool(publish)
    # Held, then terminated: its finding is archived, and said to be.
    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    path = write_event(tmp_path, world.event("start_instances", {I1: instance}))
    assert run(["replay", path, "--control", SSH])[0] == 0
    world.ec2.terminate_instances(InstanceIds=[instance])
    code, out = run(["replay", path, "--control", SSH])
    assert code == 0 and f"ARCHIVED       {SSH}   {instance}" in out
    code, out = run(["replay", path, "--control", SSH, "--format", "json"])
    assert json.loads(out)["archived"] == [instance]
    assert world.finding(SSH, instance)["RecordState"] == "ARCHIVED"


def test_a_deleted_instance_is_not_called_archived_when_security_hub_took_nothing(
    world: World, tmp_path, monkeypatch
):
    """Security Hub off (every call refused): replay listed the instance as archived and
    printed ARCHIVED though no finding was stored. Now it is GONE, and archived is empty."""
    from botocore.client import BaseClient

    real = BaseClient._make_api_call

    def hub_off(client, operation, params):
        if client.meta.service_model.service_name == "securityhub":
            raise ClientError(
                {"Error": {"Code": "InvalidAccessException", "Message": "not subscribed"}},
                operation,
            )
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", hub_off)
    path = write_event(tmp_path, world.event("start_instances"))  # I1 never existed
    code, out, err = main(["replay", path, "--control", SSH, "--format", "json"])
    result = json.loads(out)
    assert code == 2 and "Security Hub is not enabled" in err
    assert result["published"]["imported"] == 0
    assert (result["gone"], result["archived"]) == ([I1], [])
    code, out, _ = main(["replay", path, "--control", SSH])
    assert code == 2 and "GONE" in out and "ARCHIVED" not in out


def test_ctrl_c_while_replay_publishes_lists_the_fixes_already_made(
    world: World, tmp_path, monkeypatch
):
    """Replay publishes after its run: a Ctrl-C there exited 130 with nothing on stderr, though
    the event's group had been closed. Now the fix is listed with what to put back."""
    from botocore.client import BaseClient

    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    path = write_event(tmp_path, world.event("state_change_running", {I1: instance}))
    real = BaseClient._make_api_call

    def ctrl_c(client, operation, params):
        if operation == "BatchImportFindings":
            raise KeyboardInterrupt
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", ctrl_c)
    code, _, err = main(["replay", path, "--mode", "enforce", "--control", SSH])
    assert code == 130 and world.internet_ssh(bad) == []
    assert "findings partly published at most; 1 fix record(s)" in err
    (line,) = [line for line in err.splitlines() if bad in line]
    assert line.split()[:2] == ["APPLIED", "revoke"] and "before: " in err


@pytest.mark.parametrize(
    ("limit", "controls"), [(2, []), (2, ["--control", "ssm-instance-role"]), (3, [])]
)
def test_a_replay_whose_roles_are_left_to_the_drift_scan_exits_1_and_says_so(
    world: World, tmp_path, monkeypatch, limit, controls
):
    """StartInstances of three instances on three roles without the core policy, no internet
    SSH. Over the event's role limit (2) the roles are left to the drift scan (with SSH judged,
    or the whole event when only the role is asked for): replay exited 0, which says nothing
    is left FAILED, though the roles were not judged. Within it (3), exit 1 for the FAILED
    roles, as before, and no warning."""
    from guardrail import reader

    monkeypatch.setattr(reader, "EVENT_ROLE_LIMIT", limit)
    ids = []
    for n in range(3):
        world.app_role(name=f"team-{n}", profile=f"team-{n}", core=False)
        ids += world.launch(profile=f"team-{n}")
    event = world.event("start_instances")
    for part in ("requestParameters", "responseElements"):
        event["detail"][part]["instancesSet"]["items"] = [{"instanceId": i} for i in ids]
    out, err = io.StringIO(), io.StringIO()
    argv = ["replay", write_event(tmp_path, event), "--no-publish", *controls]
    assert run_replay(cli.build_parser().parse_args(argv), out, err, env={}) == 1
    warned = "guardrail: warning: not judged: " in err.getvalue()
    assert warned is (limit == 2), err.getvalue()
    assert ("drift scan" in out.getvalue()) is (limit == 2)


def test_replay_with_security_hub_errors_prints_then_fails_like_scan(
    world: World, tmp_path, monkeypatch
):
    from guardrail.publisher import FindingPublisher, PublishSummary

    def publish(self: Any, findings: Any, resolutions: Any = None, **_: Any) -> PublishSummary:
        return PublishSummary(errors=["Security Hub is not enabled in eu-west-1"], fatal=True)

    monkeypatch.setattr(FindingPublisher, "publish", publish)
    path = write_event(tmp_path, world.event("ssm_delete_document"))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(cli.UsageError, match="not enabled"):
        run_replay(cli.build_parser().parse_args(["replay", path]), out, err, env={})
    assert out.getvalue().startswith("DeleteDocument")  # the results were printed first


def test_replay_with_rejected_findings_warns_and_exits_by_the_results(
    world: World, tmp_path, monkeypatch
):
    from guardrail.publisher import FindingPublisher, PublishSummary

    def publish(self: Any, findings: Any, resolutions: Any = None, **_: Any) -> PublishSummary:
        rejected = {"Id": findings[0]["Id"], "ErrorCode": "InvalidInput", "ErrorMessage": "x"}
        return PublishSummary(imported=len(findings) - 1, failed=[rejected])

    monkeypatch.setattr(FindingPublisher, "publish", publish)
    path = write_event(tmp_path, world.event("ssm_delete_document"))
    out, err = io.StringIO(), io.StringIO()
    code = run_replay(cli.build_parser().parse_args(["replay", path]), out, err, env={})
    assert code == 0  # the preferences were evaluated and (report mode) pass: nothing FAILED
    assert "warning: Security Hub: 1 finding(s) not imported" in err.getvalue()


# --- which failures make the on-change Lambda raise (EventBridge retries it) -------------------


@pytest.mark.parametrize(
    ("control", "operation", "code"),
    [
        (SSH, "ec2.RevokeSecurityGroupIngress", "UnauthorizedOperation"),
        (test_on_change.ROLE, "iam.AttachRolePolicy", "AccessDenied"),
    ],
    ids=["ec2-unauthorized", "iam-access-denied"],
)
def test_a_fix_the_guardrail_may_not_make_is_recorded_not_retried(
    world: World, control: str, operation: str, code: str
):
    """A denied fix fails the same way on every retry: the event is handled (no exception for
    EventBridge to retry, then dead-letter), the failure recorded and the finding FAILED."""
    from handlers import on_change

    if control == SSH:
        bad = world.group("ops")
        instance = world.launch(groups=[bad])[0]
        world.open_ssh(bad)
        event = world.event("authorize_ingress_ip_permissions", {SG: bad})
    else:
        world.app_role()
        instance = world.launch(profile="app-profile")[0]
        world.iam.detach_role_policy(RoleName="app-role", PolicyArn=CORE)
        event = world.event("iam_detach_role_policy")
    guardrail = world.guardrail(fresh=True)
    refuse(guardrail, operation, code)
    result = on_change.handle(event, guardrail, home_account=ACCOUNT)  # no RetryableEventError
    assert result["fixes"] == {"failed": 1} and result["left_failed"] >= 1
    assert world.finding(control, instance)["Compliance"]["Status"] == "FAILED"
    if control == SSH:
        assert world.internet_ssh(bad)
    else:
        assert CORE not in world.attached("app-role")


def test_a_throttled_security_hub_import_raises_and_the_retry_publishes(world: World):
    """Security Hub throttles every BatchImportFindings attempt (TooManyRequestsException, past
    the publisher's retries): nothing reached it, so the event raises for EventBridge to retry,
    and the retry publishes the finding."""
    from guardrail.replay import RetryableEventError
    from handlers import on_change

    bad = world.group("ops")
    instance = world.launch(groups=[bad])[0]
    world.open_ssh(bad)
    event = world.event("authorize_ingress_ip_permissions", {SG: bad})
    guardrail = world.guardrail("report", fresh=True)

    assert guardrail.publisher is not None
    hub = guardrail.publisher._client
    # Security Hub's throttling answer.
    answer_error(guardrail, "securityhub.BatchImportFindings", "TooManyRequestsException", 429, hub)
    with pytest.raises(RetryableEventError, match=r"Security Hub .*: TooManyRequestsException"):
        on_change.handle(event, guardrail, home_account=ACCOUNT)
    assert world.findings() == {}
    world.deliver(event, mode="report")  # EventBridge's retry
    assert world.finding(SSH, instance)["Compliance"]["Status"] == "FAILED"
