"""Counts AWS API calls ("service:Operation") made through a boto3 session or client.

It listens on botocore's `before-send` event, which fires once per HTTP attempt, so retries count.
Attach it to a session *before* that session creates its clients (clients copy the session's event
handlers when they are created), or attach it to existing clients one by one.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import boto3


class CallCounter:
    """Per-operation counts of the HTTP requests botocore sends."""

    def __init__(self, *targets: Any) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        for target in targets:
            self.attach(target)

    def attach(self, target: Any) -> CallCounter:
        """Listen on a boto3/botocore session, or on one client (`client.meta.events`)."""
        if isinstance(target, boto3.Session):
            events = target.events
        elif hasattr(target, "meta") and hasattr(target.meta, "events"):
            events = target.meta.events
        else:
            events = target.get_component("event_emitter")  # a botocore session
        events.register("before-send", self._on_send, unique_id=f"call-counter-{id(self)}")
        return self

    def _on_send(self, event_name: str = "", **_: Any) -> None:
        # event_name is "before-send.<service id, hyphenated>.<Operation>".
        parts = event_name.split(".")
        key = f"{parts[1]}:{parts[2]}" if len(parts) >= 3 else event_name
        with self._lock:
            self._counts[key] += 1
        return None  # never answer the request: moto or AWS does

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def by_operation(self) -> dict[str, int]:
        """Counts by "service:Operation", most frequent first."""
        with self._lock:
            return dict(sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def by_service(self) -> dict[str, int]:
        services: Counter[str] = Counter()
        for key, count in self.by_operation().items():
            services[key.split(":", 1)[0]] += count
        return dict(services)

    def count(self, operation: str) -> int:
        """Calls of one "service:Operation" (e.g. "ec2:DescribeInstances")."""
        with self._lock:
            return self._counts.get(operation, 0)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
