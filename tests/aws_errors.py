"""Answers AWS can give and moto does not, through botocore's hooks: an error answer
(`before-call`: botocore retries or raises exactly as for a real error), and an answer without
a field its model calls optional (`after-call`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def error_answer(
    code: str, status: int = 400, message: str | None = None
) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """A before-call handler answering every call it is registered for with the error `code`
    (and AWS's `message`, when the test needs its wording)."""

    class Response:
        status_code = status
        headers: dict[str, str] = {}

    def answer(**_: Any) -> tuple[Any, dict[str, Any]]:
        return Response(), {
            "Error": {"Code": code, "Message": message or f"emulated {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    return answer


def without_rule_ids(parsed: dict[str, Any], **_: Any) -> None:
    """An after-call handler: AuthorizeSecurityGroupIngress answered without the new rules' ids
    (SecurityGroupRules[].SecurityGroupRuleId, optional in its model)."""
    for rule in parsed.get("SecurityGroupRules", []):
        rule.pop("SecurityGroupRuleId", None)


def cli_without_rule_ids(monkeypatch: Any) -> None:
    """`guardrail scan` and `guardrail replay` build their own clients: wrap the CLI's
    clients_for so that each region's EC2 client answers without rule ids."""
    from guardrail import cli

    opened = cli.clients_for

    def clients_for(*args: Any, **kwargs: Any) -> list[Any]:
        every = opened(*args, **kwargs)
        for clients in every:
            events = clients.ec2.meta.events
            events.register("after-call.ec2.AuthorizeSecurityGroupIngress", without_rule_ids)
        return every

    monkeypatch.setattr(cli, "clients_for", clients_for)


def on_first_try(
    clients: Any, operation: str, act: Callable[[dict[str, Any], Any], Any], service: str = "ec2"
) -> None:
    """The first try of the next `operation` these clients' `service` client sends never reaches
    the emulator as such: `act(params, request)` stands in for it; botocore's retries go through
    as usual."""
    events, sent = getattr(clients, service).meta.events, {}

    def keep(params: dict[str, Any], **_: Any) -> None:  # the parameters, as the caller gave them
        events.unregister(f"before-parameter-build.{service}.{operation}", keep)
        sent.update(params)

    def first(request: Any, **_: Any) -> Any:
        events.unregister(f"before-send.{service}.{operation}", first)
        return act(sent, request)

    events.register(f"before-parameter-build.{service}.{operation}", keep)
    events.register_first(f"before-send.{service}.{operation}", first)


def answer_lost_once(account: Any, clients: Any, operation: str, service: str = "ec2") -> None:
    """AWS carries out the next `operation` (or refuses it) but its answer never arrives, a read
    timeout: botocore sends it again. `account` holds the direct clients that carry it out."""
    import contextlib

    from botocore import xform_name
    from botocore.exceptions import ClientError, ReadTimeoutError

    def done_unanswered(params: dict[str, Any], request: Any) -> None:
        with contextlib.suppress(ClientError):  # refused: that answer is lost too
            getattr(getattr(account, service), xform_name(operation))(**params)
        raise ReadTimeoutError(endpoint_url=request.url)

    on_first_try(clients, operation, done_unanswered, service)
