"""Commands and reads against a real hive: read-your-writes, agents, tasks, projects, history."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hive_client import AsyncClient, Client, InvalidInput, NotFound, models

from .conftest import Hive

NOBODY = "py-nobody"  # a capability no agent has: these tasks stay queued


def test_commands_then_reads_see_their_writes(admin: Client, capability: str) -> None:
    project = admin.create_project("py-client", description="tests", type="test")
    task = admin.create_task(
        "build", priority="high", required_capabilities=[capability], project_id=project.project_id
    )
    assert admin.seen_seq == task.seq > project.seq
    # No Hive-Min-Seq to pass by hand: the read waits for the client's last write.
    seen = admin.get_task(task.task_id)
    assert (seen.title, seen.priority, seen.status) == ("build", 8, "pending")
    assert seen.project_id == project.project_id
    assert admin.get_project(project.project_id).tasks.total == 1
    listed = admin.list_tasks(project_id=project.project_id)
    assert [t.task_id for t in listed.items] == [task.task_id]
    assert admin.get_task(task.task_id, min_seq="head").task_id == task.task_id
    assert admin.get_task(task.task_id, min_seq=task.seq).task_id == task.task_id
    assert admin.get_task(task.task_id, min_seq=None).task_id == task.task_id

    # Labels, time limits and a delay on creation; the list finds tasks by label and title.
    labelled = admin.create_task(
        "deploy the parser",
        labels={"team": "infra", "env": "prod"},
        timeout_secs=60,
        cancel_grace_secs=3,
        not_before="2999-01-01T00:00:00Z",
    )
    # (Its capability keeps it from the other tests' agents.)
    admin.create_task(
        "deploy the lexer", labels={"team": "web"}, required_capabilities=[capability]
    )
    found = admin.list_tasks(labels={"team": "infra", "env": "prod"}, q="PARSER")
    assert [t.task_id for t in found.items] == [labelled.task_id]
    view = found.items[0]
    assert (view.timeout_secs, view.cancel_grace_secs, view.state) == (60, 3, "waiting")
    assert view.waiting_reason is not None

    cancelled = admin.cancel_task(task.task_id, reason="no longer needed")
    assert admin.get_task(task.task_id).status == "cancelled"
    history = admin.history("task", task.task_id)
    assert [e.type for e in history.events] == ["TaskCreated", "TaskCancelled"]
    assert history.last_seq == cancelled.seq


def test_agents_register_heartbeat_drain_deregister(
    hive: Hive, admin: Client, capability: str
) -> None:
    registered = admin.register_agent([capability], max_concurrent_tasks=2, name="py-agent")
    agent = admin.get_agent(registered.agent_id)
    assert (agent.capabilities, agent.max_concurrent_tasks) == ([capability], 2)
    assert [a.agent_id for a in admin.list_agents(capability=capability).items] == [agent.agent_id]
    with hive.client(registered.token) as own:
        assert own.heartbeat(registered.agent_id).agent_id == registered.agent_id
        own.drain_agent(registered.agent_id)
        assert own.get_agent(registered.agent_id, min_seq=own.seen_seq).status == "draining"
        own.deregister_agent(registered.agent_id)
    assert admin.get_agent(registered.agent_id, min_seq="head").status == "deregistered"
    kinds = [e.type for e in admin.history("agent", registered.agent_id).events]
    assert kinds[0] == "AgentRegistered" and kinds[-1] == "AgentDeregistered"


def test_a_failed_task_is_retried(admin: Client, capability: str) -> None:
    task = admin.create_task("flaky", required_capabilities=[capability], max_attempts=1)
    agent = admin.register_agent([capability])
    with Client(admin.url, agent.token) as own:
        own.heartbeat(agent.agent_id)  # an agent is given work once its runtime reports in
        assignment = next(own.assignments(agent.agent_id))
        assert assignment.task_id.root == task.task_id
        for action in ("accept", "start"):
            own.report(assignment, agent.agent_id, action)
        own.report(assignment, agent.agent_id, "fail", error="boom", retryable=False)
        assert own.get_task(task.task_id).status == "failed"
    admin.retry_task(task.task_id)
    assert admin.get_task(task.task_id).state in ("queued", "assigned")
    # The agent held it: the index of its tasks says so, up to the checkpoint the read reflects.
    held = admin.list_agent_tasks(agent.agent_id)
    assert [t.task_id for t in held.items] == [task.task_id]
    assert held.items[0].first_seq == assignment.seq
    assert held.indexed_after == 0 and held.indexed_through >= admin.seen_seq
    admin.deregister_agent(agent.agent_id)


def test_status_health_and_generic_requests(admin: Client) -> None:
    assert admin.health().status == models.Condition.healthy
    status = admin.status()
    assert status.log is not None and status.log.last_seq >= 0
    answer = admin.request("GET", "/api/v1/projections", min_seq=None)
    assert answer.status == 200 and "hive-projection-seq" in answer.headers
    assert models.Projections.model_validate(answer.body).log.last_seq >= 0


def test_dead_letters_are_listed_and_one_that_is_not_there_is_not_retried(admin: Client) -> None:
    page = admin.list_dead_letters(limit=10, order="desc", min_seq="head")
    assert all(letter.reason for letter in page.items)
    # The API asks the leading projector, which answers that it has no such dead letter.
    with pytest.raises(NotFound, match="dead letter"):
        admin.retry_dead_letter(2**62)


def test_bad_arguments_are_refused_before_sending(admin: Client) -> None:
    with pytest.raises(InvalidInput, match="title"):
        admin.create_task("")
    with pytest.raises(InvalidInput, match="max_concurrent_tasks"):
        admin.register_agent(["x"], max_concurrent_tasks=0)
    with pytest.raises(ValueError, match="aggregate"):
        admin.history("tasks", uuid.uuid4())
    with pytest.raises(ValueError, match="http"):
        Client("localhost:8080")
    with pytest.raises(ValueError, match="path"):
        admin.request("GET", "api/v1/tasks")


def test_the_async_client_has_the_same_surface(hive: Hive) -> None:
    async def main() -> None:
        async with AsyncClient(hive.url, hive.admin_token) as client:
            project = await client.create_project("async")
            tasks = await asyncio.gather(
                *(
                    client.create_task(
                        f"a{n}", project_id=project.project_id, required_capabilities=[NOBODY]
                    )
                    for n in range(5)
                )
            )
            assert client.seen_seq == max(t.seq for t in tasks)
            assert (await client.get_project(project.project_id)).tasks.total == 5
            seen = [
                c.seq
                async for c in client.events(project.seq, type="TaskCreated", follow=False)
                if c.aggregate_id in {t.task_id for t in tasks}
            ]
            assert seen == sorted(t.seq for t in tasks)

    asyncio.run(main())
    assert set(dir(AsyncClient)) - set(dir(Client)) <= {"aclose", "__aenter__", "__aexit__"}
