"""EMULATION: one fake AWS account on loopback — moto's ThreadedMotoServer plus `extension`.

`EmulatedAccount` is a context manager: it starts the server on 127.0.0.1 (a free port), points
boto3 at it for this process through AWS_ENDPOINT_URL with fake credentials, and on exit stops the
server and puts the environment back as it was. Nothing leaves the machine.

`python -m emulator.server` (`make emulator`) keeps one running, seeded as the demo's account, for
`guardrail scan` and `guardrail replay` from another shell, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import boto3
from guardrail.cli import known_region

from . import extension

ACCOUNT_ID = "123456789012"  # moto's default account for any access key it does not know

# Values set for the duration of the context; None removes the variable.
_ENVIRONMENT: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "emulated",
    "AWS_SECRET_ACCESS_KEY": "emulated",
    "AWS_SESSION_TOKEN": None,
    "AWS_SECURITY_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None,
    "AWS_CONFIG_FILE": os.devnull,  # never read the person's real profiles
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    # The emulator's scans start from an empty AMI catalogue (faster, fewer surprise resources).
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}


class EmulatedAccount:
    """A loopback moto server with the emulation extension, and this process pointed at it.

    `load_managed_policies` loads AWS managed policies into the emulated IAM (about a second per
    account): AttachRolePolicy of AmazonSSMManagedInstanceCore fails without it.
    """

    def __init__(
        self, region: str = "us-east-1", *, load_managed_policies: bool = True, port: int = 0
    ) -> None:
        self.region = region
        self.port = port  # 0: any free port
        self.account_id = ACCOUNT_ID
        self.load_managed_policies = load_managed_policies
        self.endpoint_url = ""
        self._server: Any = None
        self._saved: dict[str, str | None] = {}
        self._log_level = logging.NOTSET

    def __enter__(self) -> EmulatedAccount:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        if self._server is not None:
            raise RuntimeError("the emulated account is already running")
        extension.install()  # before the first request: the server maps each service's URLs then
        changes = dict(_ENVIRONMENT)
        changes["AWS_DEFAULT_REGION"] = self.region
        changes["AWS_REGION"] = self.region
        changes["MOTO_IAM_LOAD_MANAGED_POLICIES"] = (
            "true" if self.load_managed_policies else "false"
        )
        # A per-service endpoint variable would send that service past the emulator.
        changes.update({k: None for k in os.environ if k.startswith("AWS_ENDPOINT_URL_")})
        werkzeug = logging.getLogger("werkzeug")  # one access-log line per request otherwise
        self._log_level = werkzeug.level
        werkzeug.setLevel(logging.ERROR)
        if self.port and not port_free(self.port):  # moto's start() would wait forever
            raise OSError(f"127.0.0.1:{self.port} is in use")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        changes["AWS_ENDPOINT_URL"] = self.endpoint_url
        for name in ("NO_PROXY", "no_proxy"):  # loopback never goes through a proxy
            changes[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))
        self._apply(changes)
        try:
            self.reset()  # start from an empty account even if this process used moto before
        except Exception:
            self.stop()
            raise

    def stop(self, *, reset: bool = True) -> None:
        """Stop the server and put the environment back. `reset` forgets the emulated resources
        first (moto's state is process-wide); a process that exits next can skip it."""
        if self._server is None:
            return
        try:
            if reset:
                self.reset()  # leave nothing behind for the next user in this process
        except OSError:
            pass  # the server is going away anyway; the next EmulatedAccount resets on start
        finally:
            self._server.stop()
            self._server = None
            self._restore()
            logging.getLogger("werkzeug").setLevel(self._log_level)

    def reset(self) -> None:
        """Forget every emulated resource (moto's documented /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            response.read()

    def session(self) -> boto3.Session:
        """A boto3 session for the emulated account (the environment already points at it)."""
        return boto3.Session(region_name=self.region)

    def _apply(self, changes: dict[str, str | None]) -> None:
        for name, value in changes.items():
            self._saved.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def shell_lines(account: EmulatedAccount, settings: dict[str, str]) -> list[str]:
    """What another shell runs to point the CLI at this account and nothing else: a profile
    would win over the emulator's keys, a per-service endpoint variable would send that service
    past the emulator, and a leftover GUARDRAIL_* setting of that shell (whichever it has) would
    change the scan, so every one of them is unset there."""
    point = {
        "AWS_ENDPOINT_URL": account.endpoint_url,
        "AWS_REGION": account.region,
        "AWS_ACCESS_KEY_ID": "emulated",
        "AWS_SECRET_ACCESS_KEY": "emulated",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    # A proxy set in that shell must not get loopback (EmulatedAccount added it to this one's).
    point["NO_PROXY"] = point["no_proxy"] = os.environ.get("NO_PROXY", "127.0.0.1,localhost")
    leftovers = "env | cut -d= -f1 | grep -E '^(GUARDRAIL_|AWS_ENDPOINT_URL_)'"
    return [
        "unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN",
        f'for v in $({leftovers}); do unset "$v"; done',
    ] + [f"export {k}={shlex.quote(v)}" for k, v in {**point, **settings}.items()]


def refuse_bad_seed(
    parser: argparse.ArgumentParser,
    region: str,
    instances: int | None,
    explicit_deny: bool = False,
) -> None:
    """The demo's and the server's usage errors (exit 2) before anything starts: too few
    instances to seed every case (None: nothing seeded), a region AWS does not have."""
    from .seed import minimum_instances

    if instances is not None and instances < (least := minimum_instances(explicit_deny)):
        parser.error(f"--instances: at least {least} (every seeded case, plus one)")
    if not known_region(boto3.session.Session(), region):
        parser.error(f"--region: {region} is not an AWS region")


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    parser = argparse.ArgumentParser(
        prog="python -m emulator.server",
        description="Keep an emulated account running on 127.0.0.1 for the CLI, until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=5000, help="0: any free port")
    parser.add_argument("--region", default="us-east-1")
    from .seed import minimum_instances, sample_events, seed_account

    parser.add_argument(
        "--instances",
        type=int,
        default=60,
        help=f"instances to seed (at least {minimum_instances()})",
    )
    parser.add_argument("--empty", action="store_true", help="seed nothing")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port: {args.port} is not 0-65535")
    refuse_bad_seed(parser, args.region, None if args.empty else args.instances)

    if args.port and not port_free(args.port):
        print(
            f"emulator: 127.0.0.1:{args.port} is in use "
            "(choose another: make emulator PORT=N, or --port N)",
            file=err,
        )
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C stops it even when started with SIGINT ignored (from a script run in the
    # background, say): Python then installs no KeyboardInterrupt of its own.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    account = EmulatedAccount(args.region, port=args.port)
    try:
        account.start()
        events = tempfile.TemporaryDirectory(prefix="guardrail-events-")
        try:
            settings, replays = {}, []
            if not args.empty:
                seeded = seed_account(account.session(), args.region, instances=args.instances)
                settings = seeded.settings_env()
                for name, event in sample_events(seeded).items():
                    path = Path(events.name, name)
                    path.write_text(json.dumps(event, indent=2) + "\n")
                    replays.append(f"  .venv/bin/guardrail replay {path}")
            print(f"emulated account {account.account_id} at {account.endpoint_url}", file=out)
            print("in another shell (Ctrl-C here stops it):", file=out)
            for line in shell_lines(account, settings):
                print(f"  {line}", file=out)
            print("  .venv/bin/guardrail scan", file=out)
            # Events about this account's own resources (the tests' fixtures name another).
            for line in replays:
                print(line, file=out)
            out.flush()
            stop.wait()
        finally:
            account.stop(reset=False)  # this process ends: nothing to forget
            events.cleanup()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    print("emulator stopped", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
