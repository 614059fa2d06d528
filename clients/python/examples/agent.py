"""A Hive agent in Python: runs the tasks that need a capability (argument 1, default `python`),
answering each with its title reversed. HIVE_URL and HIVE_TOKEN (an operator's, to register) come from
the environment; SIGTERM or Ctrl-C drains it and deregisters it."""

import logging
import sys

from hive_client.agent import Task, run


def handle(task: Task) -> dict[str, str]:
    task.progress(50, "reversing the title")
    return {"reversed": task.assignment.title[::-1]}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    capability = sys.argv[1] if len(sys.argv) > 1 else "python"
    run(handle, capabilities=[capability], max_concurrent_tasks=2, heartbeat_interval=2.0)
