"""Typed, frozen configuration shared by the Lambdas (environment) and the CLI (flags)."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from difflib import get_close_matches

MODES = ("report", "enforce")


# One managed policy: arn:<partition>:iam::<12 digits, or "aws" for AWS's own>:policy/<path/>
# name, as IAM spells them: path segments of printable ASCII but `*` and `:` (so no wildcard or
# second ARN joined by a comma), a name of 1-128 of IAM's name characters. Settings match it
# exactly against attached policies; events name the policy they changed with it.
POLICY_ARN = re.compile(
    r"^arn:aws(?:-[a-z0-9]+)*:iam::(?:[0-9]{12}|aws):policy/"
    r"(?:[!-)+-.0-9;-~]+/)*[A-Za-z0-9+=,.@_-]{1,128}$"
)
# The guardrail's own roles: role or assumed-role ARNs (`*` and `{a|b}` spelled out already).
_ACTOR_ARN = re.compile(r"^arn:[\w*-]+:(iam|sts)::[\d*]*:\S+$", re.ASCII)
# A key, not an alias: IAM authorizes kms: actions on the key's ARN, and only KMS resolves an
# alias, so with one the guardrail could not tell which roles may use the key.
_KEY_ARN = re.compile(r"^arn:[\w-]+:kms:[a-z0-9-]+:\d{12}:key/[\w-]+$")


# Names as IAM, S3 and CloudWatch Logs accept them (an ARN has ':' and no bucket has '/').
PROFILE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,128}$")  # an instance profile's
ROLE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")
_BUCKET_NAME = re.compile(r"^[\w.-]{3,255}$", re.ASCII)  # as legacy us-east-1 names allow
LOG_GROUP_NAME = re.compile(r"^[\w./#-]{1,512}\Z", re.ASCII)  # CloudWatch Logs' own rule
# Security Hub deletes a finding not updated for 90 days: a refresh at most this far apart.
MAX_FINDING_REFRESH_DAYS = 60


def is_policy_arn(value: str) -> bool:
    """An IAM managed policy ARN (AWS's or an account's), as attached policies are listed."""
    return bool(POLICY_ARN.match(value))


def is_key_prefix(value: str) -> bool:
    """A session-log key prefix, for the Lambdas and the stack alike: not empty and not starting
    with / ("" or "/" would read as the whole bucket), no blank, quote or glob character (the
    stack's CliSettings output is used as `env $(...)`)."""
    return bool(value) and not value.startswith("/") and not re.search(r"[\s*?\[\]'\"$`\\]", value)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


# Environment variable → Settings field. The CLI's flags mirror these one for one.
ENV = {
    "GUARDRAIL_MODE": "mode",
    "GUARDRAIL_CONTROL_MODES": "control_modes",
    "GUARDRAIL_CONTROLS": "controls",
    "GUARDRAIL_INSTANCE_PROFILE": "instance_profile",
    "GUARDRAIL_INSTANCE_ROLE": "instance_role",
    "GUARDRAIL_SESSION_LOG_BUCKET": "session_log_bucket",
    "GUARDRAIL_SESSION_LOG_PREFIX": "session_log_prefix",
    "GUARDRAIL_SESSION_LOG_GROUP": "session_log_group",
    "GUARDRAIL_SESSION_LOG_KMS_KEY": "session_log_kms_key",
    "GUARDRAIL_LOG_DELIVERY_POLICY_ARN": "log_delivery_policy_arn",
    "GUARDRAIL_EQUIVALENT_POLICY_ARNS": "equivalent_policy_arns",
    "GUARDRAIL_MODIFY_EXISTING_ROLES": "modify_existing_roles",
    "GUARDRAIL_ACCEPT_DHMC": "accept_dhmc",
    "GUARDRAIL_PUBLISH": "publish",
    "GUARDRAIL_ACTOR_ARNS": "actor_arns",
    "GUARDRAIL_REGIONS": "regions",
    "GUARDRAIL_FINDING_REFRESH_DAYS": "finding_refresh_days",
    "GUARDRAIL_SSH_REQUIRE_SSM_ONLINE": "ssh_require_ssm_online",
}


def env_values(env: Mapping[str, str]) -> dict[str, str]:
    """The GUARDRAIL_* variables of `env`. One the guardrail does not know is refused, naming
    the nearest it does: a misspelt GUARDRAIL_CONTROL_MODE ignored would enforce what it was
    set to keep in report."""
    ours = {k: v for k, v in env.items() if k.startswith("GUARDRAIL_")}
    if unknown := sorted(set(ours) - set(ENV)):
        hints = [
            f"{name} (did you mean {near[0]}?)"
            if (near := get_close_matches(name, ENV, 1))
            else name
            for name in unknown
        ]
        raise SettingsError(f"unknown environment variable(s): {', '.join(hints)}")
    return ours


BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


_ALTERNATIVES = re.compile(r"\{([^{}]*)\}")


def expand_alternatives(pattern: str) -> list[str]:
    """`{a|b}` groups spelled out, e.g. "role/{scan-|change-}{us-east-1|eu-west-1}" is four
    ARNs. IAM names cannot hold braces or bars, so the groups are never part of a real name;
    the stack writes its roles in every guarded region this way (34 regions' ARNs listed one by
    one would pass Lambda's 4 KB environment limit)."""
    match = _ALTERNATIVES.search(pattern)
    head = pattern if match is None else pattern[: match.start()]
    if "{" in head or "}" in head:
        raise SettingsError(f"unbalanced braces in {pattern!r}")
    if match is None:
        return [pattern]
    rest = expand_alternatives(pattern[match.end() :])
    choices = [c.strip() for c in match.group(1).split("|")]
    return [head + choice + tail for choice in choices for tail in rest]


@dataclass(frozen=True)
class Settings:
    mode: str = "report"  # default for every control
    control_modes: Mapping[str, str] = field(default_factory=dict)  # per-control override
    controls: tuple[str, ...] = ()  # enabled controls; empty means all
    instance_profile: str = ""  # the guardrail's EC2 instance profile (name)
    instance_role: str = ""  # the guardrail's EC2 role (name), added to profiles without a role
    session_log_bucket: str = ""
    session_log_prefix: str = "session-logs/"
    session_log_group: str = ""
    session_log_kms_key: str = ""  # key ARN
    log_delivery_policy_arn: str = ""  # the guardrail's managed policy for session-log delivery
    equivalent_policy_arns: tuple[
        str, ...
    ] = ()  # declared equivalent to AmazonSSMManagedInstanceCore
    modify_existing_roles: bool = True
    accept_dhmc: bool = (
        False  # count instances managed through Default Host Management as compliant
    )
    publish: bool = True
    actor_arns: tuple[
        str, ...
    ] = ()  # the guardrail's own principals: their changes are not re-fixed
    regions: tuple[str, ...] = ()  # regions the deployment covers (IAM events fan out to them)
    # A full scan re-imports an unchanged finding only once it is this old (Security Hub bills
    # every imported finding and deletes those not updated for 90 days); 0 = every scan.
    finding_refresh_days: int = 7
    # Leave internet SSH open on a group while a running instance behind it is not Online in
    # Systems Manager (closing it would leave no way in); the fix is SKIPPED with the reason.
    ssh_require_ssm_online: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SettingsError(f"GUARDRAIL_MODE must be one of {MODES}, not {self.mode!r}")
        from .controls import REGISTRY  # controls import this module: import when used

        unknown = sorted({*self.controls, *self.control_modes} - set(REGISTRY))
        if unknown:
            raise SettingsError(
                f"unknown control id(s) {', '.join(unknown)} in GUARDRAIL_CONTROLS or "
                f"GUARDRAIL_CONTROL_MODES; known: {', '.join(sorted(REGISTRY))}"
            )
        for control, mode in self.control_modes.items():
            if mode not in MODES:
                raise SettingsError(
                    f"GUARDRAIL_CONTROL_MODES: {control}={mode!r}; mode must be one of {MODES}"
                )
        if not 0 <= self.finding_refresh_days <= MAX_FINDING_REFRESH_DAYS:
            raise SettingsError(
                "GUARDRAIL_FINDING_REFRESH_DAYS must be a whole number from 0 to "
                f"{MAX_FINDING_REFRESH_DAYS}"
            )
        names = [p for p in self.equivalent_policy_arns if not is_policy_arn(p)]
        if names:
            # A name would never match an attached policy's ARN: every role carrying it would
            # be FAILED, and enforce would attach the core policy to each of them.
            raise SettingsError(
                "GUARDRAIL_EQUIVALENT_POLICY_ARNS takes policy ARNs "
                f"(arn:aws:iam::123456789012:policy/name), not {', '.join(map(repr, names))}"
            )
        for variable, value, form in (
            ("GUARDRAIL_INSTANCE_PROFILE", self.instance_profile, PROFILE_NAME),
            ("GUARDRAIL_INSTANCE_ROLE", self.instance_role, ROLE_NAME),
            ("GUARDRAIL_SESSION_LOG_BUCKET", self.session_log_bucket, _BUCKET_NAME),
            ("GUARDRAIL_SESSION_LOG_GROUP", self.session_log_group, LOG_GROUP_NAME),
        ):
            # An ARN or s3:// URL where a name goes would fail every fix that hands it out.
            if value and not form.match(value):
                raise SettingsError(f"{variable} takes a name, not {value!r}")
        if strays := [a for a in self.actor_arns if not _ACTOR_ARN.match(a)]:
            # A name or a blank-separated list would never match: the guardrail's own changes
            # would trigger it again.
            raise SettingsError(
                "GUARDRAIL_ACTOR_ARNS takes role ARNs, comma-separated "
                f"(arn:aws:iam::123456789012:role/name), not {', '.join(map(repr, strays))}"
            )
        prefix = self.session_log_prefix
        if not is_key_prefix(prefix):
            # Empty (or "/") reads as the whole bucket: logs written outside the prefix the
            # delivery policy grants would pass as delivered.
            raise SettingsError(
                "GUARDRAIL_SESSION_LOG_PREFIX must be a non-empty key prefix without a leading "
                f"/, blanks, quotes or glob characters, not {prefix!r}"
            )
        if self.log_delivery_policy_arn and not is_policy_arn(self.log_delivery_policy_arn):
            raise SettingsError(
                "GUARDRAIL_LOG_DELIVERY_POLICY_ARN takes a policy ARN, "
                f"not {self.log_delivery_policy_arn!r}"
            )
        if self.session_log_kms_key and not _KEY_ARN.match(self.session_log_kms_key):
            raise SettingsError(
                "GUARDRAIL_SESSION_LOG_KMS_KEY must be a key ARN "
                f"(arn:aws:kms:<region>:<account>:key/<id>), not {self.session_log_kms_key!r}"
            )

    def check_region(self, region: str) -> None:
        """A KMS key belongs to one region, and the stack makes the guardrail's in each region it
        deploys to: a key of another region is that region's settings (its stack's outputs)
        used for this one. Judged and fixed with it, this region's preferences would be set to
        a key of elsewhere."""
        key_region = self.session_log_kms_key.split(":")[3] if self.session_log_kms_key else ""
        if key_region and key_region != region:
            raise SettingsError(
                f"GUARDRAIL_SESSION_LOG_KMS_KEY is a key of {key_region}, not of {region}: "
                f"give {region} its own stack's settings (one region per run for IAM events)"
            )

    def mode_for(self, control: str) -> str:
        return self.control_modes.get(control, self.mode)

    def may_modify(self, role_name: str) -> bool:
        """Whether a fix may attach a policy to the role: any role, or with
        GUARDRAIL_MODIFY_EXISTING_ROLES=false only the guardrail's own (its stack made it)."""
        return self.modify_existing_roles or role_name == self.instance_role

    def enabled(self, control: str) -> bool:
        return not self.controls or control in self.controls

    def enforces(self, control: str) -> bool:
        return self.enabled(control) and self.mode_for(control) == "enforce"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, required: tuple[str, ...] = ()
    ) -> Settings:
        """Build from GUARDRAIL_* variables; fail fast naming any missing or malformed one."""
        env = os.environ if env is None else env
        missing = [name for name in required if not env.get(name)]
        if missing:
            raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
        return cls().with_values(env_values(env))

    def with_values(self, values: Mapping[str, str]) -> Settings:
        """Apply textual values keyed by environment variable name (flags use the same path)."""
        changes: dict[str, object] = {}
        for name, raw in values.items():
            if raw is None:
                continue
            attr = ENV[name]
            default = getattr(Settings(), attr)
            if isinstance(default, bool):
                if raw.strip().lower() not in BOOLS:
                    raise SettingsError(f"{name} must be true or false, not {raw!r}")
                changes[attr] = BOOLS[raw.strip().lower()]
            elif isinstance(default, int):
                try:
                    changes[attr] = int(raw.strip())
                except ValueError:
                    raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
            elif attr == "actor_arns":
                try:
                    changes[attr] = tuple(a for p in _csv(raw) for a in expand_alternatives(p))
                except SettingsError as error:
                    raise SettingsError(f"{name}: {error}") from None
            elif isinstance(default, tuple):
                changes[attr] = _csv(raw)
            elif attr == "control_modes":
                pairs = [p.split("=", 1) for p in _csv(raw)]
                if any(len(p) != 2 for p in pairs):
                    raise SettingsError(f"{name} must look like control-id=enforce,other=report")
                named = Counter(k.strip() for k, _ in pairs)
                if twice := sorted(k for k, n in named.items() if n > 1):
                    raise SettingsError(f"{name} gives {', '.join(twice)} more than one mode")
                changes[attr] = {k.strip(): v.strip() for k, v in pairs}
            else:
                changes[attr] = raw.strip()
        return replace(self, **changes)  # type: ignore[arg-type]
