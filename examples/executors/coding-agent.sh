#!/bin/sh
# A Hive executor that hands each task to a coding-agent CLI:
#     hive agent --capabilities code --exec examples/executors/coding-agent.sh
#
# It uses the first of these it finds on PATH: `claude` (Claude Code, `claude -p`), `codex`
# (`codex exec`), `aider` (`aider --message`). The prompt is the task's title and description; the work
# happens in $HIVE_WORKDIR (default: a fresh temporary directory per task). With none of them installed
# it fails the task for good (exit 65), so give the `code` capability only to agents that have one.
# See shell.sh for the contract every executor follows.
set -eu

task=$(cat)
prompt=$(printf '%s' "$task" | python3 -c '
import json, sys
task = json.load(sys.stdin)
print("\n\n".join(p for p in (task.get("title"), task.get("description")) if p))')
workdir=${HIVE_WORKDIR:-$(mktemp -d)}
cd "$workdir"

if command -v claude >/dev/null 2>&1; then
    echo "5% claude is working in $workdir"
    answer=$(claude -p "$prompt" --output-format json)
elif command -v codex >/dev/null 2>&1; then
    echo "5% codex is working in $workdir"
    answer=$(codex exec "$prompt")
elif command -v aider >/dev/null 2>&1; then
    echo "5% aider is working in $workdir"
    answer=$(aider --yes --message "$prompt")
else
    echo "no coding-agent CLI (claude, codex or aider) is installed on this agent" >&2
    exit 65
fi

printf '%s' "$answer" | python3 -c '
import json, sys
text = sys.stdin.read()
try:
    result = json.loads(text)
    if not isinstance(result, dict):
        result = {"answer": result}
except ValueError:
    result = {"answer": text[-8192:]}
result["workdir"] = sys.argv[1]
print(json.dumps(result))' "$workdir"
