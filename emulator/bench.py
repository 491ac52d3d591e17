"""`python -m emulator.bench`: API calls and wall time of a report scan and an enforce scan at 500
and 5,000 instances, against an EMULATED account on loopback.

What it shows is the call *shape* (which operations grow with the fleet); the wall times are moto's
on this machine, not AWS's. Security Hub calls are listed apart: the publisher paces them at 10
calls per second, GetFindings at 3 (the service's limits), which sets a floor under the scan time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from botocore.config import Config
from guardrail.clients import CONFIG, AwsClients
from guardrail.engine import Guardrail
from guardrail.publisher import CALLS_PER_SECOND, READS_PER_SECOND, FindingPublisher
from guardrail.settings import Settings

from .calls import CallCounter
from .seed import seed_fleet
from .server import EmulatedAccount

SIZES = (500, 5000)
# moto serializes DescribeInstances at about 5 ms per instance (AWS answers a 1,000-instance page
# in well under a second), so one 5,000-instance page outlasts the product's 30 s read timeout and
# the retries would be moto's, not the guardrail's. Same retries and user agent; longer wait only.
EMULATOR_TIMEOUT = Config(read_timeout=900)


class EmulatorClients(AwsClients):
    """The product's clients (their retry settings included) with a read timeout that fits the
    emulator's speed."""

    def _client(self, service: str, config: Config = CONFIG) -> Any:
        return super()._client(service, config.merge(EMULATOR_TIMEOUT))


class OperationTimer:
    """Seconds spent waiting for each "service:Operation" (first byte sent to answer parsed)."""

    def __init__(self, session: Any) -> None:
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}
        session.events.register("before-send", self._start)
        session.events.register(
            "needs-retry", self._stop
        )  # fires once per attempt, answered or not

    @staticmethod
    def _key(event_name: str) -> str:
        parts = event_name.split(".")
        return f"{parts[1]}:{parts[2]}" if len(parts) >= 3 else event_name

    def _start(self, event_name: str = "", **_: Any) -> None:
        self._started[self._key(event_name)] = time.perf_counter()

    def _stop(self, event_name: str = "", **_: Any) -> None:
        key = self._key(event_name)
        if key in self._started:
            self.seconds[key] = (
                self.seconds.get(key, 0.0) + time.perf_counter() - self._started.pop(key)
            )

    def reset(self) -> None:
        self.seconds.clear()

    def slowest(self, n: int = 3) -> list[tuple[str, float]]:
        return sorted(self.seconds.items(), key=lambda kv: -kv[1])[:n]


@dataclass
class Measure:
    name: str
    seconds: float
    calls: dict[str, int]
    results: int = 0
    fixes: int = 0
    slowest: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def hub(self) -> int:
        return sum(n for op, n in self.calls.items() if op.startswith("securityhub:"))

    @property
    def aws(self) -> int:
        return self.total - self.hub


@dataclass
class SizeRun:
    size: int
    seed: Measure
    report: Measure
    enforce: Measure
    repeat: Measure  # the report scan again, nothing changed: the hourly steady state


def measure_size(account: EmulatedAccount, size: int, *, publish: bool = True) -> SizeRun:
    """Fresh account, `size` instances, then a report scan, the same again (Security Hub
    already holds every finding), and an enforce scan."""
    account.reset()
    session = account.session()
    counter, timer = CallCounter(session), OperationTimer(session)
    started = time.perf_counter()
    seeded = seed_fleet(session, account.region, size)
    seed = Measure(
        "seed", time.perf_counter() - started, counter.by_operation(), slowest=timer.slowest()
    )
    settings = replace(Settings.from_env(seeded.settings_env()), publish=publish)
    clients = EmulatorClients(session=session, region=account.region)
    publisher = FindingPublisher(clients.securityhub) if publish else None
    measures = {}
    for name, mode in (("report", "report"), ("repeat", "report"), ("enforce", "enforce")):
        counter.reset()
        timer.reset()
        started = time.perf_counter()
        report = Guardrail(
            clients, replace(settings, mode=mode), account_id=seeded.account_id, publisher=publisher
        ).run()
        measures[name] = Measure(
            f"{name} scan",
            time.perf_counter() - started,
            counter.by_operation(),
            len(report.evaluations),
            len(report.fixes),
            timer.slowest(),
        )
    return SizeRun(size, seed, **measures)


def print_size(run: SizeRun, out: TextIO) -> None:
    report, repeat, enforce = run.report, run.repeat, run.enforce
    print(
        f"\n{run.size:,} instances — seeded in {run.seed.seconds:.1f}s "
        f"({run.seed.calls.get('ec2:RunInstances', 0)} RunInstances, {run.seed.total} calls in all)",
        file=out,
    )
    for m in (run.seed, report, repeat, enforce):
        if m is not run.seed:
            reads = m.calls.get("securityhub:GetFindings", 0)
            floor = reads / READS_PER_SECOND + (m.hub - reads) / CALLS_PER_SECOND
            print(
                f"  {m.name:<13} {m.seconds:6.1f}s  {m.total:>5} calls ({m.aws} AWS + {m.hub} Security "
                f"Hub; pacing floor {floor:.1f}s)  {m.results:,} results, {m.fixes:,} fix records",
                file=out,
            )
        print(
            f"  {'':<13} waiting on: "
            + ", ".join(f"{op} {sec:.1f}s" for op, sec in m.slowest)
            + (" (seeding)" if m is run.seed else ""),
            file=out,
        )
    ops = sorted(
        set(report.calls) | set(repeat.calls) | set(enforce.calls),
        key=lambda op: (
            op.startswith("securityhub:"),
            -(report.calls.get(op, 0) + enforce.calls.get(op, 0)),
            op,
        ),
    )
    print(f"  {'calls by operation':<46}{'report':>8}{'repeat':>8}{'enforce':>9}", file=out)
    hub_header = False
    for op in ops:
        if op.startswith("securityhub:") and not hub_header:
            print("  Security Hub:", file=out)
            hub_header = True
        counts = [m.calls.get(op, 0) for m in (report, repeat, enforce)]
        print(f"    {op:<44}{counts[0]:>8}{counts[1]:>8}{counts[2]:>9}", file=out)
    print(f"    {'total':<44}{report.total:>8}{repeat.total:>8}{enforce.total:>9}", file=out)


def comparison(small: SizeRun, large: SizeRun) -> str:
    factor = large.size / small.size

    def ratio(a: int, b: int) -> str:
        return f"x{b / a:.1f}" if a else "n/a"

    r0, r1, e0, e1 = small.report, large.report, small.enforce, large.enforce
    return (
        f"{small.size:,} → {large.size:,} instances (x{factor:g}): report scan {r0.total} → {r1.total} calls "
        f"({ratio(r0.total, r1.total)}; AWS reads {r0.aws} → {r1.aws}, {ratio(r0.aws, r1.aws)}; "
        f"Security Hub {r0.hub} → {r1.hub}), repeat report scan {small.repeat.total} → "
        f"{large.repeat.total}, enforce scan {e0.total} → {e1.total} "
        f"({ratio(e0.total, e1.total)}); wall {r0.seconds:.1f}s → {r1.seconds:.1f}s report, "
        f"{e0.seconds:.1f}s → {e1.seconds:.1f}s enforce"
    )


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m emulator.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in SIZES),
        help="comma-separated fleet sizes (default 500,5000)",
    )
    parser.add_argument("--no-publish", action="store_true", help="skip Security Hub")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(
        "ssm-guardrail benchmark — EMULATED account (moto + emulation extension on 127.0.0.1; "
        f"{os.cpu_count()} CPU(s)). Wall times are the emulator's, not AWS's.",
        file=out,
    )
    runs = []
    with EmulatedAccount(args.region) as account:
        for size in sizes:
            print(f"seeding and scanning {size:,} instances...", file=sys.stderr, flush=True)
            runs.append(measure_size(account, size, publish=not args.no_publish))
            print_size(runs[-1], out)
            out.flush()
    if len(runs) >= 2:
        print("\n" + comparison(runs[0], runs[-1]), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
