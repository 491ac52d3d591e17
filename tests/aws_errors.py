"""AWS error answers for botocore's `before-call` hook: the call answers as AWS would, so botocore
retries or raises exactly as for a real error (moto cannot produce most of these)."""

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
