"""`guardrail scan`: exit codes, JSON and table output, settings from flags and environment."""

from __future__ import annotations

import io
import json

import pytest
from guardrail.cli import main

from tests.aws_errors import cli_without_rule_ids

from .conftest import OPEN_SSH

SSH_CONTROL = "ssh-open-to-internet"
TWO_MODES = f"{SSH_CONTROL}=report,{SSH_CONTROL}=enforce"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def scan_against(monkeypatch, endpoint: str):
    """`guardrail scan` with test credentials against `endpoint` (AWS_ENDPOINT_URL)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return run("scan", "--region", "us-east-1", "--no-publish")


@pytest.fixture
def exposed(account):
    gid = account.group(OPEN_SSH)
    iid = account.instance([gid])
    account.session.client("securityhub").enable_security_hub()
    return account, gid, iid


def test_json_report_lists_every_result_and_exits_1(exposed):
    account, gid, iid = exposed
    code, out, _ = run(
        "scan", "--region", "us-east-1", "--format", "json", "--control", "ssh-open-to-internet"
    )
    assert code == 1
    results = json.loads(out)["results"]
    assert {tuple(sorted(r)) for r in results} == {
        tuple(
            sorted(
                [
                    "control",
                    "resource_type",
                    "resource_id",
                    "region",
                    "status",
                    "severity",
                    "reason",
                    "remediation",
                ]
            )
        )
    }
    by_id = {r["resource_id"]: r for r in results}
    assert by_id[iid]["status"] == "FAILED" and by_id[iid]["resource_type"] == "AwsEc2Instance"
    assert (
        by_id[gid]["status"] == "FAILED"
        and by_id[gid]["remediation"] == "report only (mode report)"
    )
    assert account.ingress(gid)  # report is the CLI's default: nothing changed
    published = json.loads(out)["published"]  # what Security Hub took, so a script can check
    assert published["imported"] == len(results) and published["failed"] == []


def test_enforce_fixes_and_exits_0_with_status_as_found(exposed):
    account, gid, _ = exposed
    code, out, _ = run(
        "scan",
        "--region",
        "us-east-1",
        "--format",
        "json",
        "--mode",
        "enforce",
        "--control",
        "ssh-open-to-internet",
    )
    assert code == 0
    by_id = {r["resource_id"]: r for r in json.loads(out)["results"]}
    assert by_id[gid]["status"] == "FAILED" and "applied" in by_id[gid]["remediation"]
    assert account.ingress(gid) == []
    code, _, _ = run("scan", "--region", "us-east-1", "--control", "ssh-open-to-internet")
    assert code == 0


def test_a_fix_stopped_by_what_is_not_an_aws_error_is_named_and_exits_1(account, monkeypatch):
    """An AuthorizeSecurityGroupIngress answer without rule ids (optional in its model) stops
    the SSH fix: the command names it on stderr and exits 1 (the group is left FAILED)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    gid = account.group({**OPEN_SSH, "FromPort": 0, "ToPort": 1024})
    account.instance([gid])
    cli_without_rule_ids(monkeypatch)
    code, _, err = run("scan", "--mode", "enforce", "--no-publish", "--control", SSH_CONTROL)
    assert code == 1
    assert f"guardrail: error: {SSH_CONTROL} fix stopped: KeyError" in err
    assert account.ingress(gid)  # never revoked: the re-adds came first


def test_a_check_that_stops_is_named_and_exits_1_though_nothing_failed(account, monkeypatch):
    """A defect in the SSH check stops it: the scan names the stop on stderr and exits 1,
    though it has no FAILED result (exit 0 would read as compliant)."""
    from guardrail.controls.ssh_open import SshOpenToInternet

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    account.group(OPEN_SSH)

    def stops(*_: object) -> None:
        raise KeyError("IpPermissions")

    monkeypatch.setattr(SshOpenToInternet, "check", stops)
    code, out, err = run("scan", "--no-publish", "--format", "json", "--control", SSH_CONTROL)
    assert code == 1
    assert f"guardrail: error: {SSH_CONTROL} check stopped: KeyError" in err
    assert json.loads(out)["results"] == []
    assert json.loads(out)["stopped"] == [f"{SSH_CONTROL} check stopped: KeyError: 'IpPermissions'"]


def test_enforce_without_the_role_fixs_settings_is_refused_before_any_change(exposed, monkeypatch):
    """Every control enforced from a shell without the stack's settings: the role fix could not
    give a profile-less instance a way in, yet SSH would close. Refused (exit 2), naming what is
    missing and the ways out; nothing is changed. Each way out then runs."""
    account, gid, _ = exposed
    code, out, err = run("scan", "--region", "us-east-1", "--mode", "enforce")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "GUARDRAIL_INSTANCE_PROFILE and GUARDRAIL_INSTANCE_ROLE not set" in err
    assert account.ingress(gid) != []  # internet SSH still as it was
    # Report mode, or the lockout guard, is not refused.
    assert run("scan", "--region", "us-east-1", "--no-publish")[0] == 1
    monkeypatch.setenv("GUARDRAIL_SSH_REQUIRE_SSM_ONLINE", "true")
    assert run("scan", "--region", "us-east-1", "--mode", "enforce", "--no-publish")[0] != 2


def test_environment_variables_work_and_flags_override_them(exposed, monkeypatch):
    account, gid, _ = exposed
    monkeypatch.setenv("GUARDRAIL_MODE", "enforce")
    code, _, _ = run(
        "scan", "--region", "us-east-1", "--mode", "report", "--control", "ssh-open-to-internet"
    )
    assert code == 1 and account.ingress(gid)
    code, _, _ = run("scan", "--region", "us-east-1", "--control", "ssh-open-to-internet")
    assert code == 0 and account.ingress(gid) == []


def test_mode_flag_sets_every_control_over_per_control_modes_from_the_environment(
    exposed, monkeypatch
):
    """A shell's leftover GUARDRAIL_CONTROL_MODES=...=enforce made `--mode report` revoke the
    rule. --control-modes given with --mode still applies."""
    account, gid, _ = exposed
    monkeypatch.setenv("GUARDRAIL_CONTROL_MODES", f"{SSH_CONTROL}=enforce")
    ssh_only = ("scan", "--region", "us-east-1", "--control", SSH_CONTROL, "--no-publish")
    code, _, _ = run(*ssh_only, "--mode", "report")
    assert code == 1 and account.ingress(gid)
    code, _, _ = run(*ssh_only, "--mode", "report", "--control-modes", f"{SSH_CONTROL}=enforce")
    assert code == 0 and account.ingress(gid) == []


@pytest.mark.parametrize("at", ["the second revoke", "publishing", "resolving"])
def test_ctrl_c_while_fixing_lists_what_was_already_changed_and_exits_130(account, monkeypatch, at):
    """A Ctrl-C during an enforce scan ended it silently: the rules it had already revoked, and
    how to put them back, were shown nowhere. Once publishing began, Security Hub may hold
    findings: "not published" was wrong there."""
    from botocore.client import BaseClient

    first, second = account.group(OPEN_SSH), account.group(OPEN_SSH)
    account.instance([first])
    account.instance([second])
    account.session.client("securityhub").enable_security_hub()
    real, revokes = BaseClient._make_api_call, []

    def ctrl_c(client, operation, params):
        if operation == "RevokeSecurityGroupIngress":
            revokes.append(params["GroupId"])
            if at == "the second revoke" and len(revokes) == 2:
                raise KeyboardInterrupt
        if (at, operation) in {
            ("publishing", "BatchImportFindings"),
            ("resolving", "BatchUpdateFindings"),
        }:
            raise KeyboardInterrupt
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", ctrl_c)
    code, out, err = run(
        "scan", "--region", "us-east-1", "--mode", "enforce", "--control", SSH_CONTROL
    )
    made = revokes[:1] if at == "the second revoke" else revokes
    assert code == 130 and out == "" and "Traceback" not in err
    assert all(account.ingress(g) == [] for g in made)  # as the output says:
    published = "not published" if at == "the second revoke" else "partly published at most"
    assert f"findings {published}; {len(made)} fix record(s)" in err
    lines = err.splitlines()
    for group in made:
        (n,) = [n for n, line in enumerate(lines) if group in line]
        assert lines[n].split()[:2] == ["APPLIED", "revoke"]
        before = lines[n + 1].split("before: ", 1)[1]  # what to put back to undo it
        (rule,) = json.loads(before)
        assert "0.0.0.0/0" in json.dumps(rule) and "22" in json.dumps(rule)
    if at == "the second revoke":
        assert account.ingress(revokes[1]) and revokes[1] not in err  # cut off: not listed
    stored = account.session.client("securityhub").get_findings()["Findings"]
    assert bool(stored) is (at == "resolving")


def test_table_groups_by_control_with_counts(exposed):
    _, gid, _ = exposed
    code, out, _ = run("scan", "--region", "us-east-1", "--no-publish")
    assert code == 1
    assert "ssh-open-to-internet: FAILED 2  PASSED 0" in out
    assert "ssm-instance-role: FAILED 1" in out and gid in out
    assert "Security Hub" not in out


def test_findings_reach_security_hub(exposed):
    account, _, iid = exposed
    run("scan", "--region", "us-east-1", "--control", "ssh-open-to-internet")
    findings = account.session.client("securityhub").get_findings()["Findings"]
    ids = {f["Resources"][0]["Id"].rsplit("/", 1)[-1] for f in findings}
    assert iid in ids


@pytest.fixture
def hub_not_enabled(account, monkeypatch):
    """An account with an open group whose Security Hub is not enabled. moto imports findings
    even then; AWS answers InvalidAccessException, stubbed here."""
    import guardrail.cli
    from botocore.stub import Stubber
    from guardrail.publisher import FindingPublisher

    hub = account.session.client("securityhub")
    stub = Stubber(hub)
    stub.add_client_error(
        "get_findings",  # a full scan first reads what Security Hub holds
        "InvalidAccessException",
        "Account 123456789012 is not subscribed to AWS Security Hub",
    )
    stub.activate()
    monkeypatch.setattr(guardrail.cli, "FindingPublisher", lambda _client: FindingPublisher(hub))
    account.instance([account.group(OPEN_SSH)])


@pytest.mark.usefixtures("hub_not_enabled")
def test_security_hub_not_enabled_is_a_clear_exit_2():
    code, out, err = run("scan", "--region", "us-east-1", "--control", "ssh-open-to-internet")
    assert code == 2
    assert "Security Hub" in err and "not enabled" in err and "Traceback" not in err
    assert "FAILED" in out  # the scan itself still ran and printed


def test_an_error_escaping_a_fix_is_one_line_on_stderr_not_a_traceback(exposed, monkeypatch):
    """The SSH fix's re-read throttled past botocore's retries: the engine records the fix as
    FAILED and logs the error; the CLI shows that log as one line with its details."""
    from botocore.exceptions import ClientError
    from guardrail.controls.ssh_open import SshOpenToInternet

    def throttled(*_: object) -> None:
        error = {"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}}
        raise ClientError(error, "DescribeSecurityGroupRules")

    monkeypatch.setattr(SshOpenToInternet, "_current_rules", staticmethod(throttled))
    code, _, err = run(
        "scan", "--region", "us-east-1", "--mode", "enforce", "--control", "ssh-open-to-internet",
        "--no-publish",
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line]
    assert lines and all(line.startswith("guardrail: ") for line in lines), err
    assert "guardrail: error: remediation failed (control=ssh-open-to-internet)" in lines


def test_a_proxy_page_in_a_logged_error_stays_on_one_line(account, monkeypatch):
    """Security Hub behind a proxy that answers with an HTML page: the publisher logs the
    error, whose message quotes the page line by line; stderr showed it across five lines."""
    from botocore.client import BaseClient
    from botocore.parsers import ResponseParserError

    real = BaseClient._make_api_call
    page = "<html>\n<head><title>Proxy</title></head>\n<body>Access denied</body>\n</html>"

    def proxied(client, operation, params):
        if client.meta.service_model.service_name == "securityhub":
            raise ResponseParserError(f"Unable to parse response, invalid XML received:\n{page}")
        return real(client, operation, params)

    account.instance([account.group(OPEN_SSH)])
    monkeypatch.setattr(BaseClient, "_make_api_call", proxied)
    code, out, err = run("scan", "--region", "us-east-1", "--control", SSH_CONTROL)
    lines = err.splitlines()
    assert code == 2 and "FAILED" in out and "Traceback" not in err
    assert lines and all(line.startswith("guardrail: ") for line in lines), err
    assert any("<head><title>Proxy</title></head> <body>" in line for line in lines), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "--region", "mars-north-1"], "unknown region"),
        (["scan", "--region", "us-east-1", "--mode", "fix-everything"], "GUARDRAIL_MODE"),
        (["scan", "--region", "us-east-1", "--modify-existing-roles", "maybe"], "true or false"),
        (["scan", "--region", "us-east-1", "--session-log-kms-key", "alias/x"], "key ARN"),
        # A policy name would never match an attached ARN: every role would be FAILED.
        (
            ["scan", "--region", "us-east-1", "--equivalent-policy-arns", "our-ssm-core"],
            "takes policy ARNs",
        ),
        (["scan", "--region", "us-east-1", "--control", "no-such-control"], "invalid choice"),
        (
            ["scan", "--region", "us-east-1", "--control-modes", "ssh-open=enforce"],
            "unknown control",
        ),
        (
            ["scan", "--region", "us-east-1", "--control-modes", TWO_MODES],
            f"gives {SSH_CONTROL} more than one mode",
        ),
        (["scan", "--region", "us-east-1", "--finding-refresh-days", "weekly"], "whole number"),
        (["nothing"], "invalid choice"),
        # A scan covers its one --region: these steer only how events are routed (replay).
        (["scan", "--regions", "eu-west-1"], "unrecognized arguments: --regions"),
        (["scan", "--actor-arns", "arn:aws:iam::1:role/x"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2_without_traceback(aws, argv, message):
    code, _, err = run(*argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_misspelt_setting_in_the_environment_exits_2_before_any_change(exposed, monkeypatch):
    """GUARDRAIL_CONTROL_MODE (no S) was ignored: SSH meant to stay in report was enforced."""
    account, gid, _ = exposed
    monkeypatch.setenv("GUARDRAIL_MODE", "enforce")
    monkeypatch.setenv("GUARDRAIL_SSH_REQUIRE_SSM_ONLINE", "true")
    monkeypatch.setenv("GUARDRAIL_CONTROL_MODE", f"{SSH_CONTROL}=report")
    code, out, err = run("scan", "--region", "us-east-1", "--no-publish")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "GUARDRAIL_CONTROL_MODE (did you mean GUARDRAIL_CONTROL_MODES?)" in err
    assert account.ingress(gid)  # internet SSH as it was


def test_a_kms_key_of_another_region_exits_2_before_any_change(exposed, monkeypatch):
    """eu-west-1's stack outputs pasted into a shell that scans us-east-1: its KMS key would
    be judged, and set, as us-east-1's session key. A usage error naming both regions; the
    scanned region's own key runs."""
    account, gid, _ = exposed
    key = "arn:aws:kms:{}:123456789012:key/0a1b2c3d-0000-4000-8000-00000000000b"
    monkeypatch.setenv("GUARDRAIL_SESSION_LOG_KMS_KEY", key.format("eu-west-1"))
    monkeypatch.setenv("GUARDRAIL_SSH_REQUIRE_SSM_ONLINE", "true")  # enforce may run
    argv = ["scan", "--region", "us-east-1", "--mode", "enforce", "--no-publish"]
    code, out, err = run(*argv)
    assert code == 2 and out == "" and "Traceback" not in err
    assert "GUARDRAIL_SESSION_LOG_KMS_KEY is a key of eu-west-1, not of us-east-1" in err
    assert account.ingress(gid)  # internet SSH as it was
    monkeypatch.setenv("GUARDRAIL_SESSION_LOG_KMS_KEY", key.format("us-east-1"))
    assert run(*argv)[0] != 2


def test_a_logged_list_is_cut_short_on_stderr():
    """With Security Hub off, 'findings not imported' listed every finding id on one line
    (15 KB at 60 instances) before the message that says what to do."""
    import logging

    from guardrail.cli import LogLine

    ids = [f"finding-{n}" for n in range(60)]
    record = logging.makeLogRecord(
        {"msg": "findings not imported", "levelname": "ERROR", "ids": ids, "count": 60}
    )
    line = LogLine().format(record)
    assert line == (
        "guardrail: error: findings not imported (ids=[finding-0, finding-1, finding-2, "
        "finding-3, finding-4, and 55 more], count=60)"
    )
    few = logging.makeLogRecord({"msg": "m", "levelname": "WARNING", "ids": ids[:5]})
    assert LogLine().format(few).endswith(f"(ids={ids[:5]})")


def test_missing_credentials_exit_2(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, _, err = run("scan", "--region", "us-east-1", "--no-publish")
    assert code == 2 and "credentials" in err and "Traceback" not in err


def test_unknown_profile_exit_2(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code, _, err = run("scan", "--region", "us-east-1", "--profile", "nope")
    assert code == 2 and "nope" in err


def test_an_explicit_profile_wins_over_a_stale_aws_profile(aws, monkeypatch, tmp_path):
    """AWS_PROFILE left over in the shell names a profile that no longer exists: --profile
    is what the user asked for, and every session the scan builds uses it."""
    config = tmp_path / "config"
    config.write_text(
        "[profile good]\nregion = us-east-1\n"
        "aws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "stale")
    code, out, err = run(
        "scan", "--profile", "good", "--no-publish", "--control", "ssh-open-to-internet"
    )
    assert (code, err) == (0, "") and "region us-east-1" in out


def test_aws_region_names_the_default_region_over_aws_default_region(exposed, monkeypatch):
    """AWS_REGION is what the AWS CLI v2, the other SDKs and Lambda read first; boto3 alone
    ignores it. The scan must go where it says, not exit 2 or scan AWS_DEFAULT_REGION's."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    code, out, err = run("scan", "--no-publish", "--control", "ssh-open-to-internet")
    assert (code, err) == (1, "") and "region us-east-1" in out  # the open group is found
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # empty there: it would exit 0
    code, out, _ = run("scan", "--no-publish", "--control", "ssh-open-to-internet")
    assert code == 1 and "region us-east-1" in out
    code, out, _ = run(
        "scan", "--region", "eu-west-1", "--no-publish", "--control", "ssh-open-to-internet"
    )
    assert code == 0 and "region eu-west-1" in out  # --region still wins


def test_no_region_anywhere_says_where_one_can_be_given(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code, _, err = run("scan", "--no-publish")
    assert code == 2 and "no AWS region" in err
    assert "AWS_REGION" in err and "AWS_DEFAULT_REGION" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "page",
    [
        b"<html><body>Proxy login required<br></body></html>",  # not XML
        b"<html><body><p>Proxy login required</p></body></html>",  # XML: botocore's KeyError
    ],
    ids=["html", "well-formed-xml"],
)
def test_an_answer_that_is_not_aws_s_exits_2_without_traceback(monkeypatch, page):
    """A proxy or a wrong endpoint answering with an HTML page: botocore cannot parse it
    (ResponseParserError, which is not a BotoCoreError), or, when the page happens to be
    well-formed XML, does not find the result element in it (a KeyError inside its parser).
    Exit 2 with the reason, no traceback, either way."""
    import http.server
    import threading

    class HtmlPage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HtmlPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, _, err = scan_against(monkeypatch, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and "not AWS's" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err  # one line, as the README says


def test_a_key_error_of_the_guardrail_s_own_code_is_not_blamed_on_aws(account, monkeypatch):
    """Only a KeyError raised inside botocore's parser means a foreign answer: one from the
    guardrail's own code is a defect and keeps its traceback."""
    import guardrail.cli

    def broken(*_args, **_kwargs):
        return {}["missing"]

    monkeypatch.setattr(guardrail.cli, "run_scan", broken)
    with pytest.raises(KeyError, match="missing"):
        run("scan", "--region", "us-east-1", "--no-publish")


@pytest.mark.parametrize("endpoint", ["127.0.0.1:5077", "http://127.0.0.1:abc", "http://"])
def test_a_malformed_endpoint_exits_2_naming_it(monkeypatch, endpoint):
    """The README has users set AWS_ENDPOINT_URL for the emulator; a typo in it (no scheme, a
    port that is not a number) is a usage error, not a traceback and not exit 1 ("left
    FAILED")."""
    code, _, err = scan_against(monkeypatch, endpoint)
    assert code == 2 and "AWS_ENDPOINT_URL" in err and "Traceback" not in err


def test_a_value_error_of_the_guardrail_s_own_code_is_not_blamed_on_the_endpoint(monkeypatch):
    import guardrail.cli

    def broken(*_args, **_kwargs):
        raise ValueError("ours")

    monkeypatch.setattr(guardrail.cli, "run_scan", broken)
    with pytest.raises(ValueError, match="ours"):
        run("scan", "--region", "us-east-1", "--no-publish")


def refused_by_sts(account, monkeypatch, code: str, message: str, region: str) -> str:
    """`guardrail scan --region region` whose first call, STS's, is refused with `code`: its
    stderr (the exit is 2)."""
    import guardrail.cli
    from botocore.stub import Stubber
    from guardrail.clients import AwsClients

    clients = AwsClients(session=account.session, region=region)
    sts = account.session.client("sts", region_name=region)
    clients.__dict__["sts"] = sts
    stub = Stubber(sts)
    stub.add_client_error("get_caller_identity", code, message)
    stub.activate()
    monkeypatch.setattr(guardrail.cli.AwsClients, "create", classmethod(lambda *_, **__: clients))
    exit_code, _, err = run("scan", "--region", region, "--no-publish")
    assert exit_code == 2 and code in err and "Traceback" not in err
    return err


def test_a_region_the_account_has_not_enabled_is_named_as_a_possible_cause(account, monkeypatch):
    """In an opt-in region that is not enabled AWS answers InvalidClientTokenId (STS) or
    AuthFailure (EC2): the message must not send the user only after their keys."""
    err = refused_by_sts(
        account,
        monkeypatch,
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
        "af-south-1",
    )
    assert "region is not enabled for this account" in err


def test_ec2_s_code_for_expired_credentials_is_named_as_refused_credentials(account, monkeypatch):
    """EC2 answers expired temporary credentials (or a request signed by a clock that is off)
    with RequestExpired, not ExpiredToken: it read as an unexplained "AWS error"."""
    err = refused_by_sts(
        account, monkeypatch, "RequestExpired", "Request has expired.", "us-east-1"
    )
    assert "AWS refused the credentials or the call (RequestExpired)" in err
    assert "clock is off" in err and "region is not enabled" not in err


class ClosedPipe(io.StringIO):
    def write(self, _text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_stops_reading_changes_nothing_but_the_output(exposed):
    """`guardrail scan --format json | head`: no traceback, and the exit code still says
    whether something was left FAILED (here it was: 1)."""
    err = io.StringIO()
    code = main(
        ["scan", "--region", "us-east-1", "--no-publish", "--format", "json"],
        out=ClosedPipe(),
        err=err,
    )
    assert code == 1 and err.getvalue() == ""


def test_output_still_buffered_when_the_reader_left_is_dropped_quietly(exposed):
    """A short report sits in the buffer until exit; a reader that has already gone (`| true`)
    must not turn that flush into "Exception ignored ... BrokenPipeError"."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w") as out:
        code = main(["scan", "--region", "us-east-1", "--no-publish"], out=out, err=io.StringIO())
        assert code == 1
    # leaving the block flushed and closed the pipe without an error


@pytest.mark.usefixtures("hub_not_enabled")
def test_security_hub_problems_reach_stderr_when_stdout_is_cut_short():
    err = io.StringIO()
    code = main(["scan", "--region", "us-east-1"], out=ClosedPipe(), err=err)
    assert code == 2 and "Security Hub is not enabled" in err.getvalue()


@pytest.mark.usefixtures("hub_not_enabled")
def test_a_setup_error_still_exits_2_when_stderr_is_cut_short_too():
    """`guardrail scan 2>&1 | head -0`: the one-line message has nowhere to go, but the exit
    code still says "setup error" (2), not "something left FAILED" (1)."""
    assert main(["scan", "--region", "us-east-1"], out=ClosedPipe(), err=ClosedPipe()) == 2


def test_a_stop_still_exits_1_when_both_streams_are_cut_short(account, monkeypatch):
    """A stop is logged and named on stderr mid-run; with that reader gone too, the command
    still ends as the run decides (1), not as a tool killed by SIGPIPE (141)."""
    from guardrail.controls.ssh_open import SshOpenToInternet

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    account.group(OPEN_SSH)

    def stops(*_: object) -> None:
        raise KeyError("IpPermissions")

    monkeypatch.setattr(SshOpenToInternet, "check", stops)
    argv = ["scan", "--no-publish", "--control", SSH_CONTROL]
    assert main(argv, out=ClosedPipe(), err=ClosedPipe()) == 1


def test_an_endpoint_that_drops_every_connection_fails_fast(monkeypatch):
    """The first call (STS, the account) meets a server that closes every connection: exit 2
    after two tries, not after the nine (and up to a minute of backoff) the scan's other calls
    are allowed for throttling."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def drop_each():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=drop_each, daemon=True).start()
    try:
        code, _, err = scan_against(monkeypatch, f"http://127.0.0.1:{listener.getsockname()[1]}")
    finally:
        listener.close()
    assert code == 2 and "Traceback" not in err, err
    assert len(accepted) == 2, len(accepted)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_lines_still_reach_a_terminal(exposed):
    """stderr is a terminal: the scan says what it is doing (a large account takes minutes)."""
    err = Terminal()
    main(["scan", "--region", "us-east-1", "--no-publish"], out=io.StringIO(), err=err)
    assert "scanning us-east-1 (report mode)..." in err.getvalue()


def test_the_progress_line_names_each_controls_mode(exposed):
    """--control-modes enforces SSH under the default report mode: the rule is revoked, and the
    line said "report mode"."""
    account, gid, _ = exposed
    err = Terminal()
    argv = ["scan", "--region", "us-east-1", "--no-publish", "--control", SSH_CONTROL]
    main([*argv, "--control-modes", f"{SSH_CONTROL}=enforce"], out=io.StringIO(), err=err)
    assert account.ingress(gid) == []
    assert "scanning us-east-1 (enforce mode)..." in err.getvalue()
    err = Terminal()
    main(
        [
            "scan",
            "--region",
            "us-east-1",
            "--no-publish",
            "--control-modes",
            f"{SSH_CONTROL}=enforce",
        ],
        out=io.StringIO(),
        err=err,
    )
    assert (
        "(report: ssm-instance-role, ssm-session-logging; enforce: ssh-open-to-internet)"
        in err.getvalue()
    )


def test_every_finding_refused_for_access_exits_2(exposed, monkeypatch):
    """README: exit 2 when Security Hub is denied, "whether the call or every finding says so".
    Every entry AccessDenied (InvalidAccess already counted) imported nothing, and exited 0."""
    from botocore.client import BaseClient

    account, gid, _ = exposed
    account.ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[OPEN_SSH])
    real = BaseClient._make_api_call

    def denied(client, operation, params):
        if operation != "BatchImportFindings":
            return real(client, operation, params)
        failed = [
            {"Id": f["Id"], "ErrorCode": "AccessDenied", "ErrorMessage": "not authorized"}
            for f in params["Findings"]
        ]
        return {"FailedCount": len(failed), "SuccessCount": 0, "FailedFindings": failed}

    monkeypatch.setattr(BaseClient, "_make_api_call", denied)
    code, out, err = run("scan", "--region", "us-east-1", "--control", SSH_CONTROL)
    assert code == 2 and "0 imported" in out, (code, err)


def test_an_empty_region_is_a_usage_error_not_the_default_region(exposed, tmp_path):
    """`--region "$REGION"` with REGION unset scanned the default region, as if it were left
    out."""
    event = tmp_path / "event.json"
    event.write_text("{}")
    for argv in (["scan", "--region", ""], ["replay", str(event), "--region", " "]):
        code, out, err = run(*argv, "--no-publish")
        assert (code, out) == (2, ""), (argv, code, err)
        assert "argument --region: is empty" in err and "Traceback" not in err, err


def test_actor_arns_with_unbalanced_braces_name_the_variable(tmp_path):
    event = tmp_path / "event.json"
    event.write_text("{}")
    code, _, err = run("replay", str(event), "--actor-arns", "arn:aws:iam::1:role/{a|b")
    assert code == 2 and err.startswith("guardrail: GUARDRAIL_ACTOR_ARNS: unbalanced braces")


def test_the_printed_policy_allows_every_call_a_report_scan_makes(exposed, monkeypatch):
    """`guardrail permissions` prints the policy to give a person or a CI role that runs scans:
    every call a report scan makes is allowed by it (STS's GetCallerIdentity needs none), so
    following the README never ends in AccessDenied (exit 2, no results). The account has what
    makes the scan read everything: an open group, a role to simulate, preferences naming
    their key by an alias (kms:DescribeKey), findings to publish."""
    from guardrail import cli

    from emulator.calls import CallCounter

    account, _, _ = exposed
    account.role("app", profile="app")
    account.instance(profile="app")
    kms = account.session.client("kms")
    kms.create_alias(
        AliasName="alias/sessions", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"]
    )
    inputs = {"s3BucketName": "logs", "kmsKeyId": "alias/sessions"}
    account.ssm.create_document(
        Name="SSM-SessionManagerRunShell",
        Content=json.dumps(
            {"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": inputs}
        ),
        DocumentType="Session",
        DocumentFormat="JSON",
    )
    counter = CallCounter()
    opened = cli.clients_for

    def counted(*args, **kwargs):
        every = opened(*args, **kwargs)
        for clients in every:
            counter.attach(clients.session)  # before the session makes its clients
        return every

    monkeypatch.setattr(cli, "clients_for", counted)
    code, _, err = run("scan", "--region", "us-east-1")
    assert code == 1, err  # FAILED results: the scan ran to the end
    code, printed, _ = run("permissions")
    assert code == 0
    policy = json.loads(printed)
    allowed = {a.lower() for s in policy["Statement"] for a in s["Action"]}
    called = {op.lower() for op in counter.by_operation()} - {"sts:getcalleridentity"}
    assert {
        "kms:describekey",
        "iam:simulateprincipalpolicy",
        "securityhub:batchimportfindings",
    } <= called
    assert called <= allowed, called - allowed
    # Report mode: nothing that changes the account; Security Hub's import and update only.
    writes = {
        a
        for a in allowed
        if not a.split(":")[1].startswith(("describe", "get", "list", "simulate"))
    }
    assert writes == {"securityhub:batchimportfindings", "securityhub:batchupdatefindings"}
