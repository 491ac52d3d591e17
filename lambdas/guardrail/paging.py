"""Batched, paginated reads: the helpers every describe call of the guardrail goes through."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

FILTER_VALUES = 200  # EC2 accepts up to 200 values in one filter
EC2_PAGE = 1000  # DescribeInstances and DescribeSecurityGroupRules: at most 1,000 per page


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    items = sorted(set(items))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def pages(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    """Every item under `key` across all pages (moto and AWS both page below the asked size)."""
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def security_group_rules(ec2: Any, group_ids: Iterable[str] | None) -> Iterator[dict[str, Any]]:
    """DescribeSecurityGroupRules items of these groups (one paginated call per 200), or of
    every group of the region (None)."""
    filters: Iterable[list[dict[str, Any]]] = (
        [[]]
        if group_ids is None
        else ([{"Name": "group-id", "Values": b}] for b in chunks(group_ids, FILTER_VALUES))
    )
    for f in filters:
        extra = {"Filters": f} if f else {}
        yield from pages(
            ec2, "describe_security_group_rules", "SecurityGroupRules", MaxResults=EC2_PAGE, **extra
        )
