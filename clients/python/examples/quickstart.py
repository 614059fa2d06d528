"""Quick start: creates a project and a few tasks, spawns an agent that runs them (a supervised
`hive agent` whose default executor, `cat`, completes each task with the task itself), watches them
finish on the event log, prints one task's audit, and exits 0 when all of it worked.

    HIVE_URL=http://127.0.0.1:8080 HIVE_TOKEN=$(cat .hive/admin.token) python examples/quickstart.py

Spawning an agent needs an admin token.
"""

import sys
import time
import uuid

from hive_client import Client, HiveError

TASKS = 3
DEADLINE_SECS = 60


def main() -> int:
    client = Client()  # HIVE_URL and HIVE_TOKEN from the environment
    capability = f"quickstart-{uuid.uuid4().hex[:8]}"  # only our agent takes our tasks
    head = client.status(min_seq=None).log
    after = head.last_seq if head else 0

    project = client.create_project("quickstart", description="a few tasks run by a spawned agent")
    tasks = {
        str(
            client.create_task(
                f"quickstart task {n}",
                project_id=project.project_id,
                required_capabilities=[capability],
                priority="high",
            ).task_id
        )
        for n in range(TASKS)
    }
    agent = client.spawn_agent([capability], max_concurrent_tasks=2, name="quickstart")
    print(f"project {project.project_id}: {TASKS} tasks; agent {agent.agent_id} spawned")

    done: set[str] = set()
    started = time.monotonic()
    try:
        for event in client.events(after, aggregate="task"):
            if str(event.aggregate_id) in tasks:
                print(f"  #{event.seq:<5} {event.type:<14} {event.aggregate_id}  -> {event.state}")
                if event.type == "TaskCompleted":
                    done.add(str(event.aggregate_id))
                if event.type in ("TaskDeadLettered", "TaskCancelled"):
                    print(f"task {event.aggregate_id} did not complete", file=sys.stderr)
                    return 1
            if done == tasks or time.monotonic() - started > DEADLINE_SECS:
                break
    finally:
        client.deregister_agent(agent.agent_id, reason="quickstart done")

    if done != tasks:
        print(f"only {len(done)} of {TASKS} tasks completed in {DEADLINE_SECS} s", file=sys.stderr)
        return 1
    one = sorted(tasks)[0]
    print(f"\naudit of task {one}:")
    for record in client.history("task", one).events:
        print(
            f"  #{record.seq:<5} {record.occurred_at:%H:%M:%S.%f} {record.type:<14} by {record.actor}"
        )
    project_now = client.get_project(project.project_id)
    print(f"\nproject progress: {project_now.tasks.progress:.0%}")
    return 0 if project_now.tasks.progress == 1 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HiveError as e:
        print(f"hive refused: {e}", file=sys.stderr)
        sys.exit(2)
