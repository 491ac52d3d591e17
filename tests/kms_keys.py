"""KMS keys at the ARNs tests name. moto gives every new key a random id; the settings and
preferences under test name the guardrail's key (or the owners') by a fixed ARN, which the
guardrail asks KMS about (DescribeKey): the key must exist, Enabled, or the region is judged
"no session can start". Only for the emulator's own account (another raises KeyError); moto
finds a key by its id alone, whatever region or account an ARN names, where AWS does not."""

from __future__ import annotations

from typing import Any


def key_at(session: Any, arn: str) -> str:
    """Creates an Enabled symmetric key in the emulator whose ARN is `arn` (its region and
    account the emulator's); returns the ARN."""
    from moto.kms.models import kms_backends

    _, _, _, region, account, resource = arn.split(":", 5)
    wanted = resource.removeprefix("key/")
    made = session.client("kms", region_name=region).create_key()["KeyMetadata"]["KeyId"]
    backend = kms_backends[account][region]
    key = backend.keys.pop(made)
    key.id, key.arn = wanted, arn
    backend.keys[wanted] = key
    return arn
