"""EMULATION: one fake AWS account on loopback — moto's ThreadedMotoServer plus `extension`.

`EmulatedAccount` is a context manager: it starts the server on 127.0.0.1 (a free port), points
boto3 at it for this process through AWS_ENDPOINT_URL with fake credentials, and on exit stops the
server and puts the environment back as it was. Nothing leaves the machine.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from types import TracebackType
from typing import Any

import boto3

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

    def __init__(self, region: str = "us-east-1", *, load_managed_policies: bool = True) -> None:
        self.region = region
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
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
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

    def stop(self) -> None:
        if self._server is None:
            return
        try:
            self.reset()  # moto's state is process-wide: leave none behind for the next user
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
