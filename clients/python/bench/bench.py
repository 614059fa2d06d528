"""hive-client's cost beside raw httpx doing the same requests, against a real hive.

    python bench/bench.py [--url URL --token TOKEN] [--smoke]

Without --url (or HIVE_URL) it starts a hive of its own (`hive_client.testing.LocalHive`: HIVE_BIN,
$CARGO_TARGET_DIR/debug/hive or ./target/debug/hive). Scenarios, each raw first, then the client:
- create tasks one after another (`Client.create_task` / `httpx.Client.post`);
- create tasks N at a time (`AsyncClient.create_task` / `httpx.AsyncClient.post`, N workers: 4, 32);
- catch up on the log (`Client.events(follow=False)` / paging `/api/v1/events` with httpx + json).
Latencies: per request; for the catch-up, per 1,000 events (a page). Overhead: the client's time per
operation over raw's. Peak RSS: of this process so far (it only grows), after each row.
`--runs N` runs it all N times on one hive and shows each row's median run. `--smoke` runs tiny
counts (the test suite runs it so the harness never rots).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx

from hive_client import AsyncClient, Client, HiveError
from hive_client.testing import LocalHive


@dataclass(order=True)
class Row:
    seconds: float  # first: rows of one scenario order by time, so the median run is the median
    scenario: str
    who: str
    count: int
    latencies: list[float]
    rss_mib: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def row(scenario: str, who: str, count: int, started: float, latencies: list[float]) -> Row:
    return Row(time.perf_counter() - started, scenario, who, count, latencies, rss_mib())


def task_body(n: int) -> dict[str, object]:
    return {"title": f"bench {n}", "priority": 5, "required_capabilities": ["bench-nobody"]}


def sequential(url: str, token: str, count: int) -> list[Row]:
    auth = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    with httpx.Client(base_url=url, headers=auth) as raw:
        started = time.perf_counter()
        for n in range(count):
            t = time.perf_counter()
            answer = raw.post(
                "/api/v1/tasks", json=task_body(n), headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            answer.raise_for_status()
            json.loads(answer.content)
            latencies.append(time.perf_counter() - t)
        rows = [row("create task, 1 at a time", "raw httpx", count, started, latencies)]
    latencies = []
    with Client(url, token) as client:
        started = time.perf_counter()
        for n in range(count):
            t = time.perf_counter()
            client.create_task(f"bench {n}", priority=5, required_capabilities=["bench-nobody"])
            latencies.append(time.perf_counter() - t)
        rows.append(row("create task, 1 at a time", "hive-client", count, started, latencies))
    return rows


async def _spread(count: int, workers: int, one: Callable[[int], Awaitable[None]]) -> list[float]:
    latencies: list[float] = []
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            t = time.perf_counter()
            await one(n)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies


async def concurrent(url: str, token: str, count: int, workers: int) -> list[Row]:
    scenario = f"create task, {workers} at a time"
    limits = httpx.Limits(max_connections=workers)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits
    ) as raw:

        async def raw_one(n: int) -> None:
            answer = await raw.post(
                "/api/v1/tasks", json=task_body(n), headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            answer.raise_for_status()
            json.loads(answer.content)

        started = time.perf_counter()
        rows = [row(scenario, "raw httpx", count, started, await _spread(count, workers, raw_one))]
    async with AsyncClient(url, token) as client:

        async def client_one(n: int) -> None:
            await client.create_task(
                f"bench {n}", priority=5, required_capabilities=["bench-nobody"]
            )

        started = time.perf_counter()
        latencies = await _spread(count, workers, client_one)
        rows.append(row(scenario, "hive-client", count, started, latencies))
    return rows


def timed_batches(items: Iterator[object], batch: int) -> tuple[int, list[float]]:
    """Consumes `items`, timing each `batch` of them."""
    count, latencies, t = 0, [], time.perf_counter()
    for _ in items:
        count += 1
        if count % batch == 0:
            now = time.perf_counter()
            latencies.append(now - t)
            t = now
    return count, latencies


def catch_up(url: str, token: str, limit: int) -> list[Row]:
    scenario = "events() catch-up"

    def raw_pages() -> Iterator[object]:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as raw:
            after, seen = 0, 0
            while seen < limit:
                page = json.loads(
                    raw.get("/api/v1/events", params={"after_seq": after, "limit": 1000}).content
                )
                for item in page["items"]:
                    seen += 1
                    yield item
                after = page["last_seq"]
                if not page["more"]:
                    return

    started = time.perf_counter()
    count, latencies = timed_batches(raw_pages(), 1000)
    rows = [row(scenario, "raw httpx", count, started, latencies)]
    with Client(url, token) as client:
        events = client.events(0, follow=False)
        started = time.perf_counter()
        count, latencies = timed_batches(
            (e for _, e in zip(range(limit), events, strict=False)), 1000
        )
        events.close()
        rows.append(row(scenario, "hive-client", count, started, latencies))
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | who | n | per s | p50 ms | p99 ms | overhead | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    raw_rate: dict[str, float] = {}
    for r in rows:
        if r.who == "raw httpx":
            raw_rate[r.scenario] = r.rate
            overhead = "1.00x"
        else:
            base = raw_rate.get(r.scenario)
            overhead = f"{base / r.rate:.2f}x" if base and r.rate else "-"
        lines.append(
            f"| {r.scenario} | {r.who} | {r.count} | {r.rate:,.0f} | {r.pct(0.5):.2f} | "
            f"{r.pct(0.99):.2f} | {overhead} | {r.rss_mib:.0f} |"
        )
    return "\n".join(lines)


def run(url: str, token: str, smoke: bool) -> list[Row]:
    sequential_n, concurrent_n, spreads = (20, 40, (4,)) if smoke else (2000, 3000, (4, 32))
    rows = sequential(url, token, sequential_n)
    for workers in spreads:
        rows += asyncio.run(concurrent(url, token, concurrent_n, workers))
    rows += catch_up(url, token, 2000 if smoke else 1_000_000)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("HIVE_URL"))
    parser.add_argument("--token", default=os.environ.get("HIVE_TOKEN"))
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks the harness runs")
    parser.add_argument("--runs", type=int, default=1, help="runs; each row is the median run")
    args = parser.parse_args()
    if args.url and not args.token:
        parser.error("--token (or HIVE_TOKEN) is needed with --url")
    with contextlib.ExitStack() as stack:
        url, token = args.url, args.token
        if not url:
            local = stack.enter_context(LocalHive())
            url, token = local.url, local.admin_token
        try:
            runs = [run(url, token, args.smoke) for _ in range(max(1, args.runs))]
        except (HiveError, httpx.HTTPError) as e:
            print(f"bench: {url}: {e}", file=sys.stderr)
            return 2
    rows = [statistics.median_low(same) for same in zip(*runs, strict=True)]
    print(table(rows))
    if any(r.count == 0 for r in rows):
        print("a scenario ran nothing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
