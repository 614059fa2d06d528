"""`events()`: the log's pages, then its stream, across connections cut mid-stream: every event once,
in order, the same as the paged log."""

from __future__ import annotations

import threading
import uuid

from hive_client import Client, typed_event
from hive_client import events as ev

from .conftest import Hive
from .proxy import Proxy


def test_events_survive_cut_connections_without_gap_or_repeat(
    hive: Hive, admin: Client, proxy: Proxy, capability: str
) -> None:
    head = admin.status(min_seq=None).log
    after = head.last_seq if head else 0
    # Tasks no agent can take: the log holds what this test writes (and whatever else happens then).
    mine = [capability]
    before = [admin.create_task(f"backlog {n}", required_capabilities=mine) for n in range(12)]
    later: list[uuid.UUID] = []
    seen: list[int] = []
    cuts = 0
    with Client(proxy.url, hive.admin_token, backoff=0.05) as client:
        # Small pages, so the catch-up takes several; then the stream, which is cut three times, each
        # time once the client has opened it again, while new events keep coming.
        for change in client.events(after, aggregate="task", page_size=5):
            seen.append(change.seq)
            if len(seen) >= len(before) and len(later) < 30:
                later.append(
                    admin.create_task(f"live {len(later)}", required_capabilities=mine).task_id
                )
            if cuts < 3 and len(seen) >= 16 + 6 * cuts and len(proxy.streams()) > cuts:
                assert proxy.cut() >= 1, "a live stream to cut"
                cuts += 1
            if len(later) == 30 and change.aggregate_id == later[-1]:
                break
    resumed = proxy.streams()
    assert len(resumed) >= 4, f"the stream was cut 3 times and resumed each time: {resumed}"
    assert [int(i) for i in resumed] == sorted(int(i) for i in resumed)
    assert seen == sorted(set(seen)), "in order, none twice"
    logged = [
        c.seq for c in admin.events(after, aggregate="task", follow=False) if c.seq <= seen[-1]
    ]
    assert seen == logged, "exactly the log's events: no gap"
    assert {t.task_id for t in before} | set(later) <= {
        c.aggregate_id for c in admin.events(after, follow=False)
    }


def test_filters_map_to_the_stream_and_heartbeats_are_not_events(
    hive: Hive, admin: Client, capability: str
) -> None:
    agent = admin.register_agent([capability])
    after = agent.seq - 1
    with hive.client(agent.token) as own:
        for _ in range(3):
            own.heartbeat(agent.agent_id)
        own.drain_agent(agent.agent_id)
    admin.create_task("someone else's event")

    def first_events(n: int) -> list[str]:
        stream = admin.events(after, aggregate="agent", aggregate_id=agent.agent_id)
        got = [str(next(stream).type) for _ in range(n)]
        stream.close()
        return got

    # Registered, made ready by its first heartbeat, draining: the heartbeats are not events.
    assert first_events(3) == ["AgentRegistered", "AgentReady", "AgentDraining"]
    only = admin.events(after, aggregate_id=agent.agent_id, type="AgentDraining", follow=False)
    assert [c.type for c in only] == ["AgentDraining"]


def test_each_event_reads_as_its_own_type(admin: Client) -> None:
    task = admin.create_task("typed", priority=3, required_capabilities=["py-typed"])
    change = next(admin.events(task.seq - 1, aggregate_id=task.task_id))
    created = typed_event(change)
    assert isinstance(created, ev.TaskCreated)
    assert created.data.priority == 3 and created.data.title == "typed"
    assert change.seq == task.seq and change.state == "queued"


def test_a_follower_sees_new_events_live(hive: Hive, admin: Client, capability: str) -> None:
    after = admin.create_task("marker", required_capabilities=[capability]).seq
    got: list[tuple[uuid.UUID | None, str]] = []

    def follow() -> None:
        with hive.client() as reader:
            for change in reader.events(after, aggregate="task"):
                got.append((change.aggregate_id, str(change.type)))
                if len(live) == 2 and got[-1][0] == live[-1]:
                    return

    live: list[uuid.UUID] = []
    follower = threading.Thread(target=follow)
    follower.start()
    for n in (1, 2):
        live.append(admin.create_task(f"live {n}", required_capabilities=[capability]).task_id)
    follower.join(timeout=20)
    assert not follower.is_alive(), f"the follower saw both new tasks live: {got}"
    assert [(i, t) for i, t in got if i in live] == [
        (live[0], "TaskCreated"),
        (live[1], "TaskCreated"),
    ]
