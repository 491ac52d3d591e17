"""`guardrail scan` and `guardrail replay`: the Lambdas' engine against a real account (or an
emulator) from a shell.

Exit codes: 0 nothing left FAILED, 1 something left FAILED or a control's step stopped (named on
stderr), 2 usage, credential or setup errors;
a reader that stops reading early (`| head`) changes none of them; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.parsers import ResponseParserError

from .clients import NO_REGION_HINT, AwsClients, region_arg
from .controls import REGISTRY
from .controls.base import error_code
from .controls.ssh_open import SSH_OPEN
from .controls.ssm_role import SSM_ROLE
from .engine import Guardrail, Interrupted, ScanReport
from .model import Outcome, Status, flat
from .permissions import report_policy
from .publisher import FindingPublisher
from .reader import PrefixListChanging
from .replay import add_replay_parser, run_replay
from .scope import Scope
from .settings import ENV, Settings, SettingsError, env_values

CREDENTIAL_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",  # EC2's: expired temporary credentials, or a clock that is off
    "AuthFailure",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
}


# Steer only how an event is routed: a scan covers its one --region and has no actor.
EVENT_ONLY = {"GUARDRAIL_REGIONS", "GUARDRAIL_ACTOR_ARNS"}
# What AWS answers in a region the account has not enabled (opt-in regions), besides bad keys.
REGION_DISABLED_CODES = {"InvalidClientTokenId", "AuthFailure", "UnrecognizedClientException"}


class UsageError(Exception):
    """Something a person must fix before the scan can run (exit 2)."""


def flag_for(variable: str) -> str:
    return "--" + variable.removeprefix("GUARDRAIL_").lower().replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guardrail",
        description="ssm-guardrail: find and fix SSH, SSM role and session-logging gaps",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    scan = commands.add_parser("scan", help="evaluate (and with --mode enforce, fix) one region")
    scan.add_argument(
        "--region",
        type=region_arg,
        help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's)",
    )
    scan.add_argument("--profile", help="AWS named profile")
    scan.add_argument(
        "--control",
        action="append",
        choices=sorted(REGISTRY),
        dest="control_ids",
        metavar="ID",
        help=f"evaluate only this control (repeatable); one of {', '.join(sorted(REGISTRY))}",
    )
    scan.add_argument("--format", choices=("table", "json"), default="table")
    scan.add_argument(
        "--no-publish", action="store_true", help="do not send findings to Security Hub"
    )
    add_settings_flags(scan, skip=EVENT_ONLY)
    add_replay_parser(commands)
    policy = commands.add_parser(
        "permissions",
        help="print the IAM policy scan and replay need in report mode (fixing: the stack's role)",
    )
    policy.add_argument("--partition", choices=("aws", "aws-cn", "aws-us-gov"), default="aws")
    return parser


def add_settings_flags(parser: argparse.ArgumentParser, skip: set[str] | frozenset[str]) -> None:
    """One flag per GUARDRAIL_* variable (GUARDRAIL_CONTROLS is --control)."""
    group = parser.add_argument_group("settings (each mirrors an environment variable)")
    for variable in ENV:
        if variable == "GUARDRAIL_CONTROLS" or variable in skip:
            continue
        group.add_argument(
            flag_for(variable), dest=variable, metavar="VALUE", help=f"overrides ${variable}"
        )


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Defaults, then GUARDRAIL_* environment variables, then flags; the CLI defaults to report.
    --mode sets every control: per-control modes from the environment (a shell's leftover
    GUARDRAIL_CONTROL_MODES=...=enforce under --mode report) give way to it, --control-modes
    given with it do not."""
    values = {"GUARDRAIL_MODE": "report"}
    values.update(env_values(env))
    flags = {k: getattr(args, k) for k in ENV if getattr(args, k, None) is not None}
    if "GUARDRAIL_MODE" in flags:
        values.pop("GUARDRAIL_CONTROL_MODES", None)
    values.update(flags)
    if args.control_ids:
        values["GUARDRAIL_CONTROLS"] = ",".join(args.control_ids)
    if args.no_publish:
        values["GUARDRAIL_PUBLISH"] = "false"
    settings = Settings().with_values(values)
    if missing := lockout_risk(settings):
        raise UsageError(
            f"enforce would close internet SSH on instances whose role fix cannot be made: "
            f"{' and '.join(missing)} not set. Take the stack's settings (env $(CliSettings), "
            "see the README), or set GUARDRAIL_SSH_REQUIRE_SSM_ONLINE=true, or enforce SSH "
            "alone (--control ssh-open-to-internet)"
        )
    return settings


def lockout_risk(settings: Settings) -> list[str]:
    """The settings the role fix needs that are missing, when SSH and the role are both
    enforced without the lockout guard: an instance without a profile (or with an empty one)
    would lose internet SSH and get no way in through Session Manager."""
    enforced = [c for c in (SSH_OPEN.id, SSM_ROLE.id) if settings.enforces(c)]
    if len(enforced) < 2 or settings.ssh_require_ssm_online:
        return []
    needed = {
        "GUARDRAIL_INSTANCE_PROFILE": settings.instance_profile,
        "GUARDRAIL_INSTANCE_ROLE": settings.instance_role,
    }
    return [name for name, value in needed.items() if not value]


def known_region(session: Any, region: str) -> bool:
    return any(
        region in session.get_available_regions("ec2", partition_name=p)
        for p in session.get_available_partitions()
    )


def clients_for(
    regions: Sequence[str | None], profile: str | None, settings: Settings
) -> list[AwsClients]:
    """Clients for each region (None: the default one), no call made yet. An unknown profile or
    region, or settings of another region, is a usage error, every region checked before any is
    used."""
    try:
        made = [AwsClients.create(region=region, profile=profile) for region in regions]
    except (ProfileNotFound, ValueError) as error:
        raise UsageError(str(error)) from error
    unknown = [c.region for c in made if not known_region(c.session, c.region)]
    if unknown:
        raise UsageError(f"unknown region {', '.join(map(repr, unknown))}")
    for clients in made:
        settings.check_region(clients.region)
    return made


def run_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = settings_from(args, dict(os.environ))
    (clients,) = clients_for([args.region], args.profile, settings)
    progress = err.isatty()
    publisher = FindingPublisher(clients.securityhub) if settings.publish else None
    guardrail = Guardrail(clients, settings, publisher=publisher)
    if progress:
        modes: dict[str, list[str]] = {}
        for control in guardrail.selected(Scope.everything()):
            modes.setdefault(settings.mode_for(control.id), []).append(control.id)
        how = (
            f"{next(iter(modes), settings.mode)} mode"
            if len(modes) <= 1
            else "; ".join(f"{mode}: {', '.join(ids)}" for mode, ids in modes.items())
        )
        print(f"scanning {clients.region} ({how})...", file=err, flush=True)
    report = guardrail.run()
    if progress:
        print(f"evaluated {len(report.evaluations)} results", file=err, flush=True)
    emit(out, lambda o: (print_json if args.format == "json" else print_table)(report, o))
    name_crashes([report], err)
    return exit_code(crashed_or_failed(report), report.published, err)


def print_interrupted(interrupt: Interrupted, err: TextIO) -> None:
    """Ctrl-C while fixing or publishing: what was already changed, each with how to undo it.
    The findings were not (all) published; the next scan judges the account as it is."""
    report = interrupt.report
    published = "partly published at most" if interrupt.publishing else "not published"
    print(
        f"guardrail: interrupted in {report.region}; findings {published}; "
        f"{len(report.fixes)} fix record(s) made before it (a fix cut off part-way is not "
        "listed: the next scan judges what it left)" + (":" if report.fixes else ""),
        file=err,
    )
    for fix in report.fixes:
        print(
            f"  {fix.outcome.value.upper():<18} {fix.action} {fix.resource_id}: {fix.reason}",
            file=err,
        )
        if fix.outcome is Outcome.APPLIED and fix.before is not None:
            print(f"  {'':<18} before: {json.dumps(fix.before, default=str)}", file=err)


def emit(out: TextIO, write: Callable[[TextIO], None]) -> None:
    """Print the results and flush them (main's streams take a reader that has left)."""
    write(out)
    out.flush()


class ReaderMayLeave(io.TextIOBase):
    """A stream whose reader may stop early (`| head`, `2>&1 | head`): it had what it wanted.
    From then on what is written goes nowhere, so the command goes on and its result still
    decides the exit code. The stream itself is pointed at /dev/null, so that neither Python's
    flush at exit fails nor the stream loses what it still holds."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream, self.gone = stream, False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # progress lines go to a terminal only
        return bool(self.stream.isatty())

    def write(self, text: str) -> int:
        self._quietly(lambda: self.stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._quietly(self.stream.flush)

    def _quietly(self, act: Callable[[], object]) -> None:
        if self.gone:
            return
        try:
            act()
        except BrokenPipeError:
            self.gone = True
            try:
                self.stream.flush()
            except BrokenPipeError:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())


def name_crashes(reports: Iterable[ScanReport], err: TextIO) -> None:
    """Steps stopped by what is not an AWS error (the Lambdas fail the invocation for them):
    named on stderr; the exit code is then 1 (crashed_or_failed)."""
    for report in reports:
        for stop in report.stopped:
            print(f"guardrail: error: {stop}", file=err)


def crashed_or_failed(report: ScanReport | None) -> bool:
    """Exit 1: results left FAILED, or a step that stopped."""
    return bool(report and (report.left_failed or report.crashed))


def exit_code(failed: bool, published: Any, err: TextIO) -> int:
    """2 when Security Hub could take nothing (not enabled, denied, unreachable); otherwise 1
    when `failed` (crashed_or_failed), and findings Security Hub rejected are a warning."""
    if published is not None and published.fatal:
        raise UsageError("Security Hub: " + "; ".join(published.errors))
    if published is not None and (published.errors or published.failed or published.unresolved):
        problems = [*published.errors]
        if published.failed:
            problems.append(f"{len(published.failed)} finding(s) not imported")
        if published.unresolved:
            problems.append(f"{len(published.unresolved)} finding(s) not resolved")
        print("guardrail: warning: Security Hub: " + "; ".join(problems), file=err)
    return 1 if failed else 0


def print_json(report: ScanReport, out: TextIO) -> None:
    results = [e.as_dict() for e in report.evaluations]
    payload: dict[str, Any] = {
        "results": results,
        "fixes": [f.as_dict() for f in report.fixes],
        "published": None if report.published is None else report.published.as_dict(),
        "stopped": report.stopped,
    }
    json.dump(payload, out, indent=2, default=str)
    out.write("\n")


def print_table(report: ScanReport, out: TextIO) -> None:
    print(f"account {report.account_id}  region {report.region}", file=out)
    by_control: dict[str, list[Any]] = {}
    for evaluation in report.evaluations:
        by_control.setdefault(evaluation.result.control, []).append(evaluation)
    for control, evaluations in by_control.items():
        counts = Counter(e.result.status.value for e in evaluations)
        fixed = sum(e.remediated for e in evaluations)
        line = "  ".join(
            f"{s.value} {counts.get(s.value, 0)}"
            for s in (Status.FAILED, Status.PASSED, Status.NOT_APPLICABLE)
        )
        print(f"\n{control}: {line}" + (f"  fixed {fixed}" if fixed else ""), file=out)
        for e in evaluations:
            if e.result.status is not Status.FAILED:
                continue
            mark = "FIXED " if e.remediated else "FAILED"
            print(
                f"  {mark} {e.result.severity:<8} {e.result.resource_id:<22} {e.result.reason}",
                file=out,
            )
            if e.remediation:
                print(f"         -> {e.remediation}", file=out)
    left = len(report.left_failed)
    print(f"\n{left} result(s) left FAILED", file=out)
    if report.published is not None:
        s = report.published
        print(
            f"Security Hub: {s.imported} imported, {s.unchanged} unchanged (not re-imported), "
            f"{s.superseded} superseded by newer readings, {len(s.failed)} failed, "
            f"{s.resolved} resolved",
            file=out,
        )


_RECORD_FIELDS = {*vars(logging.makeLogRecord({})), "message"}


class LogLine(logging.Formatter):
    """The engine's warnings as one line each on stderr, their `extra` fields after the
    message; never a traceback (the results, the line and the exit code say what went wrong)."""

    SHOWN = 5  # items of a list field (finding ids, say): the rest counted, not listed

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        line = f"guardrail: {record.levelname.lower()}: {flat(record.getMessage())}"
        details = ", ".join(f"{k}={self._short(v)}" for k, v in extra.items())
        return f"{line} ({details})" if details else line

    @classmethod
    def _short(cls, value: Any) -> str:
        if isinstance(value, (list, tuple)) and len(value) > cls.SHOWN:
            shown = ", ".join(map(str, value[: cls.SHOWN]))
            return flat(f"[{shown}, and {len(value) - cls.SHOWN} more]")
        return flat(str(value))


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = (cast(TextIO, ReaderMayLeave(s)) for s in (out or sys.stdout, err or sys.stderr))
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)  # warnings and errors, one line each: not the fix log
    handler.setFormatter(LogLine())
    engine_log = logging.getLogger("guardrail")
    engine_log.addHandler(handler)
    try:
        return _main(argv, out, err)
    finally:
        engine_log.removeHandler(handler)


def one_line(error: BaseException) -> str:
    return flat(str(error))


def _main(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help exits 0, a usage error 2
        return int(exit_.code or 0) and 2
    try:
        if args.command == "permissions":
            print(json.dumps(report_policy(args.partition), indent=2), file=out)
            return 0
        result = run_scan(args, out, err) if args.command == "scan" else run_replay(args, out, err)
        out.flush()  # a reader that has left shows here, not in Python's flush at exit
        return result
    except Interrupted as interrupt:
        print_interrupted(interrupt, err)
        return 130
    except KeyboardInterrupt:
        return 130
    except (UsageError, SettingsError, PrefixListChanging) as error:
        print(f"guardrail: {one_line(error)}", file=err)
        return 2
    except (NoCredentialsError, PartialCredentialsError) as error:
        print(
            f"guardrail: no AWS credentials ({one_line(error)}); set a profile or AWS_* variables",
            file=err,
        )
        return 2
    except NoRegionError:
        print(f"guardrail: no AWS region: {NO_REGION_HINT}", file=err)
        return 2
    except EndpointConnectionError as error:
        print(f"guardrail: cannot reach AWS: {one_line(error)}", file=err)
        return 2
    except ClientError as error:
        code = error_code(error)
        if code in CREDENTIAL_CODES:
            hint = (
                " (or the region is not enabled for this account: opt-in regions need enabling)"
                if code in REGION_DISABLED_CODES
                else " (or this machine's clock is off: check it)"
                if code == "RequestExpired"
                else ""
            )
            print(
                f"guardrail: AWS refused the credentials or the call ({code}){hint}: {one_line(error)}",
                file=err,
            )
        else:
            print(f"guardrail: AWS error {code}: {one_line(error)}", file=err)
        return 2
    except BotoCoreError as error:
        print(f"guardrail: {one_line(error)}", file=err)
        return 2
    except ResponseParserError as error:  # not a BotoCoreError: an HTML page from a proxy, say
        print(
            f"guardrail: the answer was not AWS's (a proxy or wrong endpoint?): {one_line(error)}",
            file=err,
        )
        return 2
    except ValueError as error:
        if not raised_below_botocore(error):
            raise  # ours: a defect, shown with its traceback
        # A malformed endpoint (AWS_ENDPOINT_URL, a profile's endpoint_url): botocore refuses it
        # while building a client or signing the first request.
        print(
            f"guardrail: {one_line(error)} (check AWS_ENDPOINT_URL or the profile's endpoint_url)",
            file=err,
        )
        return 2
    except KeyError as error:
        if not raised_by_botocore_parser(error):
            raise  # ours: a defect, shown with its traceback
        # A page that is well-formed XML but not an AWS answer (a proxy's login page, say):
        # botocore's parser looks for the operation's result element and does not find it.
        print(
            f"guardrail: the answer was not AWS's (a proxy or wrong endpoint?): "
            f"it lacks the element {error!s}",
            file=err,
        )
        return 2


def raised_below_botocore(error: BaseException) -> bool:
    """Whether `error` was raised within a botocore call (the standard library's URL parsing
    under it included), past the guardrail's own last frame."""
    files = [f.filename.replace(os.sep, "/") for f in traceback.extract_tb(error.__traceback__)]
    inside = [i for i, f in enumerate(files) if "/botocore/" in f]
    ours = [i for i, f in enumerate(files) if "/guardrail/" in f]
    return bool(inside) and max(inside) > max(ours, default=-1)


def raised_by_botocore_parser(error: BaseException) -> bool:
    """Whether `error` was raised inside botocore's response parser (its innermost frame)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.replace(os.sep, "/").endswith("botocore/parsers.py")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
