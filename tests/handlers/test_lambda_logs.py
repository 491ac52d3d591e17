"""The engine's log lines as the Lambda Python runtime handles them.

The runtime (awslambdaric's bootstrap) gives the root logger a plain handler ("[LEVEL] message",
no `extra` fields) and leaves its level at Python's WARNING unless the function uses JSON
logging with an application log level, which the stack does not. Each test puts such a root in
place (as Powertools leaves it) and reads what the handlers' Powertools logger writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.logging.filters import SuppressFilter
from handlers import drift_scan

from tests.handlers import test_on_change
from tests.handlers.test_on_change import World

world = test_on_change.world


@pytest.fixture
def lambda_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """(the Powertools logger's output, the runtime root handler's output)."""
    powertools, runtime = io.StringIO(), io.StringIO()
    monkeypatch.setattr(drift_scan.logger.registered_handler, "stream", powertools)
    root = logging.getLogger()
    plain = logging.StreamHandler(runtime)
    plain.setFormatter(logging.Formatter("[%(levelname)s]\t%(message)s"))
    # What Powertools' Logger does to the root's handlers it finds at cold start: its own
    # records are not printed there a second time.
    plain.addFilter(SuppressFilter(drift_scan.logger.service))
    saved = root.level, root.handlers[:]
    root.handlers = [plain]
    root.setLevel(logging.WARNING)
    try:
        yield powertools, runtime
    finally:
        root.handlers = saved[1]
        root.setLevel(saved[0])


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_each_fix_is_in_the_lambda_log_with_its_record(world: World, lambda_logs) -> None:
    """An enforce drift scan gives an instance the guardrail's profile: the log holds the fix's
    record (control, resource, action, outcome, after) as JSON, once, not a bare "[INFO] fix"
    in the runtime's format (nor nothing at all, as before: the root kept only WARNING)."""
    powertools, runtime = lambda_logs
    (instance,) = world.launch(1)

    result = drift_scan.handle({}, world.guardrail("enforce", controls=("ssm-instance-role",)))

    assert result["fixes"] == {"applied": 1} and world.profile_of(instance)
    fixes = [line["fix"] for line in lines(powertools.getvalue()) if line["message"] == "fix"]
    assert [(f["control"], f["resource_id"], f["outcome"]) for f in fixes] == [
        ("ssm-instance-role", instance, "applied")
    ]
    assert fixes[0]["action"].startswith("associate instance profile")
    assert runtime.getvalue() == ""  # not twice


def test_an_engine_error_keeps_its_fields(world: World, lambda_logs, monkeypatch) -> None:
    """A stop is logged by the engine at ERROR with its control: in the log as JSON with that
    field and the traceback, where the runtime's format printed the bare message."""
    from guardrail.controls.ssh_open import SshOpenToInternet

    def stops(*_: object) -> None:
        raise KeyError("IpPermissions")

    monkeypatch.setattr(SshOpenToInternet, "check", stops)
    powertools, runtime = lambda_logs

    with pytest.raises(Exception, match="check stopped"):
        drift_scan.handle({}, world.guardrail("report", controls=("ssh-open-to-internet",)))

    logged = lines(powertools.getvalue())
    (stop,) = [line for line in logged if line["message"] == "control step stopped"]
    assert stop["level"] == "ERROR" and stop["control"] == "ssh-open-to-internet"
    assert stop["step"] == "check" and "KeyError" in stop["exception"]
    assert "step stopped" not in runtime.getvalue()
