"""The deployment's knobs, read once from CDK context into a typed, frozen config.

Every knob has a default here and the same default in cdk.json (a test keeps them equal); CLI
overrides arrive as strings (`-c regions=us-east-1,eu-west-1`), cdk.json values as JSON.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any

from guardrail.controls import REGISTRY
from guardrail.settings import (
    BOOLS,
    LOG_GROUP_NAME,
    MAX_FINDING_REFRESH_DAYS,
    MODES,
    is_key_prefix,
    is_policy_arn,
)

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]\Z")
RATE = re.compile(r"^rate\(([0-9]+) (minute|hour|day)(s?)\)\Z")
CRON = re.compile(r"^cron\((.+)\)\Z")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
INSIGHT_SCOPES = ("account", "organization")


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# EventBridge's cron fields, in order: name, lowest and highest value, the names it also takes.
CRON_FIELDS = (
    ("minutes", 0, 59, ()),
    ("hours", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 1, 7, DAYS),
    ("year", 1970, 2199, ()),
)
DAY_OF_MONTH, DAY_OF_WEEK = 2, 4
# The forms only the day fields take: L (last), L-n (n days before it), nW (nearest weekday), nL
# and n#k (the last, the k-th such day of the week in the month). Letters in any case: an
# unknown form is refused at deploy anyway, so doubt is resolved in favour of accepting.
DAY_FORMS = {
    DAY_OF_MONTH: re.compile(r"^(?:L|LW|L-[0-9]+|([0-9]+)W)\Z"),
    DAY_OF_WEEK: re.compile(r"^(?:L|([0-9A-Z]+)L|([0-9A-Z]+)#[1-5])\Z"),
}


def cron_field_problem(index: int, text: str) -> str:
    """Why EventBridge would refuse one cron field ("" if it is valid): values out of range,
    unknown names, steps below 1, or wildcards the field does not take."""
    name, low, high, names = CRON_FIELDS[index]
    valid = f"{name} takes {low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")

    def value_ok(value: str) -> bool:
        if re.fullmatch("[0-9]+", value):
            return low <= int(value) <= high
        return value.upper() in names

    if text == "?":
        return "" if index in DAY_FORMS else f"{name} cannot be ?"
    if index in DAY_FORMS and (form := DAY_FORMS[index].match(text.upper())):
        given = [g for g in form.groups() if g is not None]
        return "" if all(value_ok(g) for g in given) else f"{text!r}: {valid}"
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and not (re.fullmatch("[0-9]+", step) and int(step) >= 1):
            return f"{text!r}: a step after / is a number of at least 1"
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        if not all(value_ok(v) for v in ((first, last) if dash else (first,))):
            return f"{text!r}: {valid}"
    return ""


def schedule_problem(expression: str) -> str:
    """Why EventBridge would refuse the schedule expression at deploy time ("" if it is valid):
    a rate's unit is singular for 1 and plural otherwise; a cron has six fields, each in its
    range, with "?" in exactly one of day-of-month and day-of-week."""
    if rate := RATE.match(expression):
        value, plural = int(rate.group(1)), bool(rate.group(3))
        if value < 1:
            return "a rate must be at least 1"
        if plural != (value > 1):
            return "a rate's unit is singular for 1 and plural otherwise, e.g. rate(1 hour)"
        return ""
    if cron := CRON.match(expression):
        fields = cron.group(1).split()
        if len(fields) != 6:
            return "a cron expression has six fields: minutes hours day-of-month month day-of-week year"
        if (fields[DAY_OF_MONTH] == "?") == (fields[DAY_OF_WEEK] == "?"):
            return "a cron expression takes ? in exactly one of day-of-month and day-of-week"
        return next((p for i, f in enumerate(fields) if (p := cron_field_problem(i, f))), "")
    return "it must be rate(N unit) or cron(...)"


class ConfigError(ValueError):
    """A context value is malformed; the message names the context key."""


def _unique(key: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's pairs, refused when a name comes twice (the last would win unseen)."""
    if twice := sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1):
        raise ConfigError(f"context {key!r} names {', '.join(twice)} more than once")
    return dict(pairs)


def _json(key: str, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=partial(_unique, key))
    except json.JSONDecodeError as error:
        raise ConfigError(f"context {key!r} is not valid JSON ({error.msg}): {text!r}") from None


def _list(key: str, value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = _json(key, text)
        else:
            return tuple(v.strip() for v in text.split(",") if v.strip())
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"context {key!r} must be a list of strings or a comma-separated string")
    return tuple(v.strip() for v in value if v.strip())


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in BOOLS:
        return BOOLS[text]
    raise ConfigError(f"context {key!r} must be true or false, not {value!r}")


def _int(key: str, value: Any) -> int:
    try:
        # int() would take true as 1 and 365.9 as 365.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"context {key!r} must be an integer, not {value!r}") from None


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"context {key!r} must be a string, not {value!r}")
    return value.strip()


def squash(key: str) -> str:
    """A key without case, `-`, `_` or `.`: how a misspelling of one of ours still reads."""
    return re.sub(r"[-_.]", "", key).lower()


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = _json(key, text)
        else:  # control-id=enforce,other=report (the engine's own GUARDRAIL_CONTROL_MODES syntax)
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError(f"context {key!r} must look like control-id=enforce,other=report")
            value = _unique(key, [(k.strip(), v.strip()) for k, v in pairs])
    if not isinstance(value, dict):
        raise ConfigError(f"context {key!r} must be an object")
    return dict(value)


@dataclass(frozen=True)
class GuardrailConfig:
    """What one deployment of the guardrail looks like; field metadata names the context key."""

    guardrail_mode: str = field(default="report", metadata={"key": "guardrailMode", "parse": _str})
    # Per-control overrides of guardrail_mode; empty: every control follows guardrail_mode.
    control_modes: Mapping[str, str] = field(
        default_factory=dict, metadata={"key": "controlModes", "parse": _mapping}
    )
    controls: tuple[str, ...] = field(default=(), metadata={"key": "controls", "parse": _list})
    scan_schedule: str = field(
        default="rate(1 hour)", metadata={"key": "scanSchedule", "parse": _str}
    )
    modify_existing_roles: bool = field(
        default=True, metadata={"key": "modifyExistingRoles", "parse": _bool}
    )
    accept_dhmc: bool = field(default=False, metadata={"key": "acceptDhmc", "parse": _bool})
    ssh_require_ssm_online: bool = field(
        default=False, metadata={"key": "sshRequireSsmOnline", "parse": _bool}
    )
    equivalent_policy_arns: tuple[str, ...] = field(
        default=(), metadata={"key": "equivalentPolicyArns", "parse": _list}
    )
    publish: bool = field(default=True, metadata={"key": "publishFindings", "parse": _bool})
    # A full scan re-imports an unchanged finding only once it is this many days old (Security Hub
    # bills every imported finding and deletes findings not updated for 90 days); 0 = every scan.
    finding_refresh_days: int = field(
        default=7, metadata={"key": "findingRefreshDays", "parse": _int}
    )
    notification_email: str = field(
        default="", metadata={"key": "notificationEmail", "parse": _str}
    )
    regions: tuple[str, ...] = field(default=(), metadata={"key": "regions", "parse": _list})
    account: str = field(default="", metadata={"key": "account", "parse": _str})
    iam_event_region: str = field(
        default="us-east-1", metadata={"key": "iamEventRegion", "parse": _str}
    )
    session_log_prefix: str = field(
        default="session-logs/", metadata={"key": "sessionLogPrefix", "parse": _str}
    )
    session_log_group_name: str = field(
        default="/ssm-guardrail/session-logs",
        metadata={"key": "sessionLogGroupName", "parse": _str},
    )
    session_log_retention_days: int = field(
        default=365, metadata={"key": "sessionLogRetentionDays", "parse": _int}
    )
    function_log_retention_days: int = field(
        default=90, metadata={"key": "functionLogRetentionDays", "parse": _int}
    )
    drift_scan_concurrency: int = field(
        default=1, metadata={"key": "driftScanConcurrency", "parse": _int}
    )
    on_change_concurrency: int = field(
        default=5, metadata={"key": "onChangeConcurrency", "parse": _int}
    )
    # The drift scan holds the whole account-region: about 910 MB at 20,000 instances.
    drift_scan_memory_mb: int = field(
        default=1024, metadata={"key": "driftScanMemoryMb", "parse": _int}
    )
    # On-change holds what an event touched: a group's every instance, about 24 KB each (321 MB
    # measured at 10,000 instances behind one group).
    on_change_memory_mb: int = field(
        default=512, metadata={"key": "onChangeMemoryMb", "parse": _int}
    )
    insight_scope: str = field(default="account", metadata={"key": "insightScope", "parse": _str})

    def __post_init__(self) -> None:
        known = set(REGISTRY)
        if self.guardrail_mode not in MODES:
            raise ConfigError(f"context 'guardrailMode' must be one of {MODES}")
        for cid, mode in self.control_modes.items():
            if cid not in known:
                raise ConfigError(
                    f"context 'controlModes': unknown control {cid!r}; known: {sorted(known)}"
                )
            if mode not in MODES:
                raise ConfigError(
                    f"context 'controlModes': {cid}={mode!r}; mode must be one of {MODES}"
                )
        unknown = [c for c in self.controls if c not in known]
        if unknown:
            raise ConfigError(
                f"context 'controls': unknown control(s) {unknown}; known: {sorted(known)}"
            )
        if self.controls and (left_out := sorted(set(self.control_modes) - set(self.controls))):
            raise ConfigError(
                f"context 'controlModes' gives a mode to {', '.join(left_out)}, which 'controls' "
                "leaves out: that control would not run at all"
            )
        if problem := schedule_problem(self.scan_schedule):
            raise ConfigError(f"context 'scanSchedule' {self.scan_schedule!r}: {problem}")
        if self.notification_email and not EMAIL.match(self.notification_email):
            raise ConfigError(
                f"context 'notificationEmail' is not an email address: {self.notification_email!r}"
            )
        for region in (*self.regions, self.iam_event_region):
            if not REGION.match(region):
                raise ConfigError(
                    f"context 'regions'/'iamEventRegion': {region!r} is not a region name"
                )
        if self.account and not re.fullmatch(r"[0-9]{12}", self.account):
            raise ConfigError(
                f"context 'account' must be a 12-digit account id, not {self.account!r}"
            )
        if len(set(self.regions)) != len(self.regions):
            raise ConfigError("context 'regions' lists a region twice")
        for arn in self.equivalent_policy_arns:
            if not is_policy_arn(arn):  # the Lambdas' Settings would refuse it at start-up
                raise ConfigError(f"context 'equivalentPolicyArns': {arn!r} is not a policy ARN")
        if not is_key_prefix(self.session_log_prefix):
            raise ConfigError(
                "context 'sessionLogPrefix' must be a non-empty key prefix without a leading /, "
                "blanks, quotes or glob characters"
            )
        group = self.session_log_group_name
        # CloudWatch Logs' own rule for names (CreateLogGroup refuses others at deploy time).
        if not LOG_GROUP_NAME.match(group) or group.startswith("aws/"):
            raise ConfigError(
                f"context 'sessionLogGroupName' {group!r} is not a log group name: 1-512 of "
                "letters, digits and . - _ / #, not starting with aws/"
            )
        for key, days in (
            ("sessionLogRetentionDays", self.session_log_retention_days),
            ("functionLogRetentionDays", self.function_log_retention_days),
        ):
            if days not in RETENTION_DAYS:
                raise ConfigError(f"context {key!r} must be one of {RETENTION_DAYS}")
        for key, value in (
            ("driftScanConcurrency", self.drift_scan_concurrency),
            ("onChangeConcurrency", self.on_change_concurrency),
        ):
            if value < 0:
                raise ConfigError(
                    f"context {key!r} must be 0 (no reservation) or a positive number"
                )
        if not 0 <= self.finding_refresh_days <= MAX_FINDING_REFRESH_DAYS:
            raise ConfigError(
                f"context 'findingRefreshDays' must be 0 (every scan) to "
                f"{MAX_FINDING_REFRESH_DAYS}: Security Hub deletes findings not updated for 90 days"
            )
        for key, mb in (
            ("driftScanMemoryMb", self.drift_scan_memory_mb),
            ("onChangeMemoryMb", self.on_change_memory_mb),
        ):
            if not 128 <= mb <= 10240:
                raise ConfigError(f"context {key!r} must be 128 to 10240 (Lambda's range)")
        if self.insight_scope not in INSIGHT_SCOPES:
            raise ConfigError(f"context 'insightScope' must be one of {INSIGHT_SCOPES}")

    def mode_for(self, control: str) -> str:
        return self.control_modes.get(control, self.guardrail_mode)

    def enforced(self) -> list[str]:
        """Control ids that are enabled and in enforce mode (the ones that need fix permissions)."""
        return [
            cid
            for cid in REGISTRY
            if (not self.controls or cid in self.controls) and self.mode_for(cid) == "enforce"
        ]

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> GuardrailConfig:
        """Build from a context getter (`app.node.try_get_context`); absent keys keep the default."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(f.metadata["key"])
            if raw is not None:
                values[f.name] = f.metadata["parse"](f.metadata["key"], raw)
        return cls(**values)

    @classmethod
    def check_keys(cls, keys: Iterable[str]) -> None:
        """A context key spelled like one of ours but not ours (`guardrailmode`, `mode`,
        `region`, `guardrail-mode`, `ssh_require_ssm_online`, `controlModes.ssh-open-to-internet`)
        fails the synth naming it: ignored, it would deploy the default (report mode, the
        CLI's region, the guard off) while its author believes otherwise. CDK's own keys are
        left alone: they carry `@` or `:` (`@aws-cdk/...`, `aws:cdk:...`), or a `-` and look
        like none of ours (`cli-telemetry`), as does our own `guardrail:help`."""
        known = cls.context_keys()
        squashed = {squash(k): k for k in known}
        for key in sorted(keys):
            if key in known or "@" in key or ":" in key:
                continue
            plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key)
            nested = next((k for k in known if key.startswith(f"{k}.")), None)
            near = nested or squashed.get(squash(key))
            if not near:
                close = difflib.get_close_matches(squash(key), squashed, n=1, cutoff=0.6)
                near = squashed[close[0]] if close and plain else None
            if not (plain or near):
                continue  # another tool's key, hyphenated like CDK's: nothing of ours
            hint = f"; did you mean '{near}'?" if near else ""
            raise ConfigError(
                f"unknown context key '{key}'{hint} (keys: {', '.join(sorted(known))})"
            )

    @classmethod
    def context_keys(cls) -> dict[str, Any]:
        """Every context key with its default, as cdk.json spells it."""
        defaults = cls()
        out: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(defaults, f.name)
            out[f.metadata["key"]] = (
                list(value)
                if isinstance(value, tuple)
                else (dict(value) if isinstance(value, Mapping) else value)
            )
        return out

    def environment(self) -> dict[str, str]:
        """The GUARDRAIL_* settings that come from context (resource names are added by the stack)."""
        return {
            "GUARDRAIL_MODE": self.guardrail_mode,
            "GUARDRAIL_CONTROL_MODES": ",".join(
                f"{k}={v}" for k, v in sorted(self.control_modes.items())
            ),
            "GUARDRAIL_CONTROLS": ",".join(self.controls),
            "GUARDRAIL_EQUIVALENT_POLICY_ARNS": ",".join(self.equivalent_policy_arns),
            "GUARDRAIL_MODIFY_EXISTING_ROLES": str(self.modify_existing_roles).lower(),
            "GUARDRAIL_ACCEPT_DHMC": str(self.accept_dhmc).lower(),
            "GUARDRAIL_SSH_REQUIRE_SSM_ONLINE": str(self.ssh_require_ssm_online).lower(),
            "GUARDRAIL_PUBLISH": str(self.publish).lower(),
            "GUARDRAIL_FINDING_REFRESH_DAYS": str(self.finding_refresh_days),
            "GUARDRAIL_SESSION_LOG_PREFIX": self.session_log_prefix,
        }
