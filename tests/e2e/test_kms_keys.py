"""tests.kms_keys: a key at a fixed ARN behaves as any emulated key."""

from __future__ import annotations

import boto3
from moto import mock_aws

from tests.kms_keys import key_at

ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_a_key_at_a_fixed_arn_is_described_disabled_and_aliased_by_it():
    with mock_aws():
        session = boto3.Session(region_name="eu-west-1")
        kms = session.client("kms")
        assert key_at(session, ARN) == ARN
        meta = kms.describe_key(KeyId=ARN)["KeyMetadata"]
        assert (meta["Arn"], meta["KeyState"]) == (ARN, "Enabled")
        kms.create_alias(AliasName="alias/owners", TargetKeyId=ARN.rsplit("/", 1)[1])
        assert kms.describe_key(KeyId="alias/owners")["KeyMetadata"]["Arn"] == ARN
        kms.disable_key(KeyId=ARN.rsplit("/", 1)[1])
        assert kms.describe_key(KeyId=ARN)["KeyMetadata"]["KeyState"] == "Disabled"
        assert len(kms.list_keys()["Keys"]) == 1
