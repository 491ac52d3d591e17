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


def test_make_emulator_serves_the_demo_account_to_the_cli_until_stopped():
    """`make emulator` in one shell, the lines it prints and `guardrail scan` in another: the
    scan runs against the seeded account (every control finds something, exit 1) and judges
    profiles as AWS would (plain moto's association id in IamInstanceProfile.Id would make every
    profile look recreated); Ctrl-C stops the server and frees its port."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "emulator.server", "--port", "0"],
        # As a script run in the background would start it: Ctrl-C ignored unless it says not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GUARDRAIL_"))},
    )
    try:
        lines, deadline = [], time.monotonic() + 120
        while sum("guardrail replay" in line for line in lines) < 2:
            assert time.monotonic() < deadline and server.poll() is None, lines
            lines.append(server.stdout.readline())
        # The other shell, where the lines are pasted, has a proxy (as corporate machines do)
        # and leftovers of its own, which the emulator's shell never had.
        other = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NO_PROXY"))},
            "GUARDRAIL_MODE": "enforce",
            "AWS_ENDPOINT_URL_EC2": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",  # nothing listens there
            "HTTPS_PROXY": "http://127.0.0.1:9",
        }
        start = next(n for n, line in enumerate(lines) if "in another shell" in line) + 1
        end = next(n for n, line in enumerate(lines) if "guardrail scan" in line)
        pasted = subprocess.run(
            ["sh", "-c", "\n".join(line.strip() for line in lines[start:end]) + "\nenv -0"],
            env=other,
            capture_output=True,
            text=True,
            check=True,
        )
        shell = dict(v.split("=", 1) for v in pasted.stdout.split("\0") if "=" in v)
        assert "AWS_ENDPOINT_URL_EC2" not in shell
        assert shell["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert shell["GUARDRAIL_INSTANCE_PROFILE"]  # enforce from that shell has what it needs
        scan = subprocess.run(
            [sys.executable, "-m", "guardrail", "scan", "--format", "json", "--no-publish"],
            cwd=root,
            env={**shell, "PYTHONPATH": str(root / "lambdas")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert scan.returncode == 1, scan.stderr  # report mode: GUARDRAIL_MODE was unset
        results = json.loads(scan.stdout)["results"]
        failed = {r["control"] for r in results if r["status"] == "FAILED"}
        assert failed == {"ssh-open-to-internet", "ssm-instance-role", "ssm-session-logging"}
        assert sum(r["status"] == "PASSED" for r in results) > 20  # the compliant fleet
        assert not [r for r in results if "was created since" in r["reason"]]
        # The leftover GUARDRAIL_MODE=enforce was unset: nothing was changed.
        assert all(
            r["remediation"] == "report only (mode report)"
            for r in results
            if r["status"] == "FAILED"
        )
        # The events it wrote name its own resources (the tests' fixtures name another account's):
        # replayed, each evaluates what it names, none is GONE.
        replays = [
            line.split("guardrail replay ", 1)[1].strip() for line in lines if "replay" in line
        ]
        for path, named in zip(replays, ("ssh-open-to-internet", "ssm-instance-role"), strict=True):
            replay = subprocess.run(
                [sys.executable, "-m", "guardrail", "replay", path, "--no-publish"],
                cwd=root,
                env={**shell, "PYTHONPATH": str(root / "lambdas")},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert replay.returncode == 1, replay.stderr  # something FAILED, in report mode
            assert f"FAILED         {named}" in replay.stdout and "GONE" not in replay.stdout
        port = urlparse(shell["AWS_ENDPOINT_URL"]).port
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=90)  # about 2 s; a busy 2-core CI machine takes longer
        except subprocess.TimeoutExpired:
            server.kill()
            pytest.fail(f"the emulator did not stop on Ctrl-C: {server.communicate()[1][-2000:]}")
        assert code == 0
        assert "emulator stopped" in server.stdout.read()
        assert not any(Path(path).exists() for path in replays)  # its events went with it
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_taken_port_is_refused_at_once_with_the_way_out():
    """moto's start() on a taken port would wait forever: the command says so and exits 2."""
    import io

    from emulator.server import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out, err = io.StringIO(), io.StringIO()
        assert main(["--port", str(port), "--empty"], out, err) == 2
    assert f"127.0.0.1:{port} is in use" in err.getvalue() and "PORT=N" in err.getvalue()
    assert out.getvalue() == ""  # no server was started, no lines to copy
    with pytest.raises(OSError, match="in use"), socket.socket() as again:
        again.bind(("127.0.0.1", 0))
        again.listen()
        EmulatedAccount(port=again.getsockname()[1], load_managed_policies=False).start()


def test_sigterm_stops_the_server_and_gives_the_process_its_handler_back():
    """A `kill` (what a process manager sends) stops it like Ctrl-C; the caller's own SIGTERM
    handler is in place again afterwards, and the environment is as it was."""
    import io
    import signal

    from emulator.server import main

    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))

    class Terminal(io.StringIO):
        def write(self, text: str) -> int:
            written = super().write(text)
            if "guardrail scan" in text:  # the last line: the server is up
                os.kill(os.getpid(), signal.SIGTERM)
            return written

    before = dict(os.environ)
    out = Terminal()
    try:
        assert main(["--port", "0", "--empty"], out, io.StringIO()) == 0
        ours = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert out.getvalue().rstrip().endswith("emulator stopped")
    assert received == []  # the emulator's handler took the signal while it ran
    assert ours is not None and ours not in (signal.SIG_DFL, signal.SIG_IGN)
    ours(signal.SIGTERM, None)  # the handler back in place is the caller's
    assert received == [signal.SIGTERM]
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--port", "99999"], "--port: 99999 is not 0-65535"),
        (["--instances", "5"], "--instances: at least"),
        (["--region", "xx-foo-1"], "--region: xx-foo-1 is not an AWS region"),
    ],
)
def test_bad_arguments_are_a_usage_error_before_anything_starts(argv, said, capsys):
    """Each was a traceback (OverflowError, ValueError, UnknownRegionError) after starting."""
    from emulator.server import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
