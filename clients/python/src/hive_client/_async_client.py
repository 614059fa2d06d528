"""`AsyncClient`: the asynchronous client of Hive's API, its methods per resource over the transport
(`_async_base.py`) and the log's readers (`_async_log.py`). scripts/generate writes the sync module
from the async one (scripts/unasync.py): edit the async one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._async_base import Id
from ._async_log import _AsyncLog
from ._core import AUTO, MinSeq, model
from .models import (
    AgentCommitted,
    AgentStatusView,
    AgentView,
    Assignment,
    CreateProject,
    CreateTask,
    Health,
    HeldTasks,
    Issued,
    ListAgentView,
    ListDeadLetterView,
    ListTaskView,
    ProjectCommitted,
    ProjectView,
    Refolded,
    Register,
    Registered,
    Report,
    SpawnBody,
    Spawned,
    Status,
    TaskCommitted,
    TaskView,
)


def _time(value: datetime | str | None) -> str | None:
    """A time for a query string: RFC 3339."""
    return value.isoformat() if isinstance(value, datetime) else value


class AsyncClient(_AsyncLog):
    """A client of one hive's HTTP API.

    `url` and `token` default to `HIVE_URL` and `HIVE_TOKEN`. Commands send an `Idempotency-Key`
    (a new one unless given) and are tried again, with the same key, on 503/429 (after `Retry-After`)
    and on a lost connection, at most `max_attempts` times in all. Reads wait (`Hive-Min-Seq`) for the
    highest sequence this client's commands were answered with, unless told otherwise (`min_seq`).
    Refusals raise `hive_client.errors.HiveError` subclasses.
    """

    # The hive.

    async def health(self) -> Health:
        """`GET /health` (an unhealthy hive answers 503: `Unavailable`)."""
        return await self._get(Health, "/health", min_seq=None)

    async def status(self, *, min_seq: MinSeq = AUTO) -> Status:
        """`GET /api/v1/system/status`: agents and tasks by status, the log's head, the projection."""
        return await self._get(Status, "/api/v1/system/status", min_seq=min_seq)

    async def issue_token(
        self, role: str, name: str, *, idempotency_key: str | None = None
    ) -> Issued:
        """`POST /api/v1/tokens` (admin): a new token of `role` (admin, operator or viewer)."""
        body = {"role": role, "name": name}
        return await self._post(Issued, "/api/v1/tokens", body, idempotency_key)

    # Agents.

    async def register_agent(
        self,
        capabilities: list[str] | None = None,
        *,
        agent_type: str = "worker",
        max_concurrent_tasks: int = 1,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Registered:
        """`POST /api/v1/agents`: a new agent, with its own token."""
        body = model(
            Register,
            {
                "agent_type": agent_type,
                "capabilities": capabilities,
                "max_concurrent_tasks": max_concurrent_tasks,
                "name": name,
            },
        )
        return await self._post(Registered, "/api/v1/agents", body, idempotency_key)

    async def spawn_agent(
        self,
        capabilities: list[str] | None = None,
        *,
        agent_type: str | None = None,
        max_concurrent_tasks: int | None = None,
        name: str | None = None,
        agent_id: Id | None = None,
        exec: str | None = None,
        idempotency_key: str | None = None,
    ) -> Spawned:
        """`POST /api/v1/agents/spawn` (admin): an agent run by a supervised `hive agent` process."""
        body = model(
            SpawnBody,
            {
                "capabilities": capabilities,
                "agent_type": agent_type,
                "max_concurrent_tasks": max_concurrent_tasks,
                "name": name,
                "agent_id": agent_id,
                "exec": exec,
            },
        )
        return await self._post(Spawned, "/api/v1/agents/spawn", body, idempotency_key)

    async def get_agent(self, agent_id: Id, *, min_seq: MinSeq = AUTO) -> AgentView:
        """`GET /api/v1/agents/{id}`."""
        return await self._get(AgentView, f"/api/v1/agents/{agent_id}", min_seq=min_seq)

    async def list_agents(
        self,
        *,
        status: str | None = None,
        capability: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        min_seq: MinSeq = AUTO,
    ) -> ListAgentView:
        """`GET /api/v1/agents`: a page of agents (`next_cursor` for the next)."""
        params = {
            "status": status,
            "capability": capability,
            "limit": limit,
            "cursor": cursor,
            "order": order,
        }
        return await self._get(ListAgentView, "/api/v1/agents", params, min_seq)

    async def list_agent_tasks(
        self,
        agent_id: Id,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        min_seq: MinSeq = AUTO,
    ) -> HeldTasks:
        """`GET /api/v1/agents/{id}/tasks`: a page of the tasks the agent was ever assigned, in the
        order it was first assigned each (`next_cursor` for the next), and the stretch of the log the
        index they come from covers: the log's task events after `indexed_through` (and up to
        `indexed_after`, when it is not 0) may name more."""
        params = {"limit": limit, "cursor": cursor, "order": order}
        path = f"/api/v1/agents/{agent_id}/tasks"
        return await self._get(HeldTasks, path, params, min_seq)

    async def heartbeat(self, agent_id: Id) -> AgentStatusView:
        """`POST /api/v1/agents/{id}/heartbeat`."""
        path = f"/api/v1/agents/{agent_id}/heartbeat"
        return await self._post(AgentStatusView, path, {}, None)

    async def drain_agent(
        self, agent_id: Id, *, idempotency_key: str | None = None
    ) -> AgentCommitted:
        """`POST /api/v1/agents/{id}/drain`: it takes no new task."""
        path = f"/api/v1/agents/{agent_id}/drain"
        return await self._post(AgentCommitted, path, {}, idempotency_key)

    async def deregister_agent(
        self, agent_id: Id, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> AgentCommitted:
        """`POST /api/v1/agents/{id}/deregister` (its tokens are revoked)."""
        path = f"/api/v1/agents/{agent_id}/deregister"
        body = {"reason": reason} if reason else {}
        return await self._post(AgentCommitted, path, body, idempotency_key)

    # Tasks.

    async def create_task(
        self,
        title: str,
        *,
        description: str | None = None,
        task_type: str | None = None,
        priority: int | str | None = None,
        required_capabilities: list[str] | None = None,
        depends_on: list[Id] | None = None,
        project_id: Id | None = None,
        max_attempts: int | None = None,
        pinned_agent: Id | None = None,
        labels: Mapping[str, str] | None = None,
        not_before: datetime | str | None = None,
        timeout_secs: int | None = None,
        heartbeat_timeout_secs: int | None = None,
        cancel_grace_secs: int | None = None,
        idempotency_key: str | None = None,
        correlation_id: Id | None = None,
    ) -> TaskCommitted:
        """`POST /api/v1/tasks`. `priority`: 1..10 or low, normal, medium, high, critical;
        `not_before`: not queued before then; `timeout_secs`, `heartbeat_timeout_secs`: past them a
        run fails `timed_out`; `cancel_grace_secs`: SIGTERM to SIGKILL when its executor is stopped."""
        body = model(
            CreateTask,
            {
                "title": title,
                "description": description,
                "task_type": task_type,
                "priority": priority,
                "required_capabilities": required_capabilities,
                "depends_on": depends_on,
                "project_id": project_id,
                "max_attempts": max_attempts,
                "pinned_agent": pinned_agent,
                "labels": labels,
                "not_before": not_before,
                "timeout_secs": timeout_secs,
                "heartbeat_timeout_secs": heartbeat_timeout_secs,
                "cancel_grace_secs": cancel_grace_secs,
            },
        )
        return await self._post(
            TaskCommitted, "/api/v1/tasks", body, idempotency_key, correlation_id=correlation_id
        )

    async def get_task(self, task_id: Id, *, min_seq: MinSeq = AUTO) -> TaskView:
        """`GET /api/v1/tasks/{id}`."""
        return await self._get(TaskView, f"/api/v1/tasks/{task_id}", min_seq=min_seq)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        agent_id: Id | None = None,
        project_id: Id | None = None,
        labels: Mapping[str, str] | None = None,
        task_type: str | None = None,
        capability: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        q: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        min_seq: MinSeq = AUTO,
    ) -> ListTaskView:
        """`GET /api/v1/tasks`: a page of tasks (`next_cursor` for the next), found by every filter
        given: `labels` (each pair must match), type, a required capability, a creation window, text
        in the title (`q`)."""
        params = {
            "status": status,
            "agent_id": agent_id,
            "project_id": project_id,
            "label": labels,
            "task_type": task_type,
            "capability": capability,
            "created_after": _time(created_after),
            "created_before": _time(created_before),
            "q": q,
            "limit": limit,
            "cursor": cursor,
            "order": order,
        }
        return await self._get(ListTaskView, "/api/v1/tasks", params, min_seq)

    async def task_action(
        self,
        task_id: Id,
        action: str,
        report: Report | Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        correlation_id: Id | None = None,
        causation_id: Id | None = None,
    ) -> TaskCommitted:
        """`POST /api/v1/tasks/{id}/{action}`: accept, start, progress, complete, fail, release
        (the assigned agent's reports), requeue, cancel, retry (an operator's)."""
        return await self._post(
            TaskCommitted,
            f"/api/v1/tasks/{task_id}/{action}",
            report or {},
            idempotency_key,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    async def cancel_task(self, task_id: Id, *, reason: str | None = None) -> TaskCommitted:
        """Cancels a task that has not finished."""
        return await self.task_action(task_id, "cancel", Report(reason=reason))

    async def retry_task(self, task_id: Id) -> TaskCommitted:
        """Gives a failed or dead-lettered task a new round of attempts."""
        return await self.task_action(task_id, "retry")

    async def report(
        self, assignment: Assignment, agent_id: Id, action: str, **fields: Any
    ) -> TaskCommitted:
        """An agent's report on its assignment (`accept`, `start`, `progress`, `complete`, `fail`,
        `release`) in the assignment's flow; `fields` are `Report`'s (percent, message, result, ...)."""
        report = model(Report, {"agent_id": str(agent_id), **fields})
        return await self.task_action(
            assignment.task_id.root,
            action,
            report,
            correlation_id=assignment.correlation_id,
            causation_id=assignment.causation_id,
        )

    # Projects.

    async def create_project(
        self,
        name: str,
        *,
        description: str | None = None,
        type: str | None = None,
        idempotency_key: str | None = None,
    ) -> ProjectCommitted:
        """`POST /api/v1/projects`."""
        body = model(CreateProject, {"name": name, "description": description, "type": type})
        return await self._post(ProjectCommitted, "/api/v1/projects", body, idempotency_key)

    async def get_project(self, project_id: Id, *, min_seq: MinSeq = AUTO) -> ProjectView:
        """`GET /api/v1/projects/{id}`: with its task counts and progress."""
        return await self._get(ProjectView, f"/api/v1/projects/{project_id}", min_seq=min_seq)

    async def list_dead_letters(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        min_seq: MinSeq = AUTO,
    ) -> ListDeadLetterView:
        """`GET /api/v1/dead-letters`: a page of the events the projector could not fold, each with
        why (`next_cursor` for the next)."""
        params = {"limit": limit, "cursor": cursor, "order": order}
        return await self._get(ListDeadLetterView, "/api/v1/dead-letters", params, min_seq)

    async def retry_dead_letter(
        self, dead_letter_id: int, *, idempotency_key: str | None = None
    ) -> Refolded:
        """`POST /api/v1/dead-letters/{id}/retry` (an operator's): the leading projector folds the
        dead letter's aggregate again, and `Refolded` says what changed when its event folds now.
        Raises `Conflict` (code `corrupt_history`, whose message says why) when it still cannot be
        folded, and `NotFound` when there is no such dead letter (or it was resolved already)."""
        path = f"/api/v1/dead-letters/{dead_letter_id}/retry"
        return await self._post(Refolded, path, {}, idempotency_key)
