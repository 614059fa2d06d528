#!/bin/sh
# A Hive executor in plain sh:   hive agent --exec examples/executors/shell.sh
#
# The contract every executor follows:
#   - the task's JSON arrives on stdin; $HIVE_TASK_ID, $HIVE_AGENT_ID, $HIVE_API_URL and $HIVE_ATTEMPT
#     are set;
#   - each line on stdout is progress (a line starting "NN%" also sets the percentage), except a line
#     that is a JSON object: that is a result;
#   - exit 0 completes the task, and the last stdout line, when it is a JSON object, is its result;
#   - any other exit fails it (retried while attempts last); exit 65 fails it for good. The end of stderr
#     is the error message.
#
# This one runs the task's description as a shell command when its task_type is "shell" (only give it
# to agents whose operators trust whoever creates tasks), and acknowledges any other task.
set -eu

task=$(cat)
field() {
    printf '%s' "$task" | python3 -c '
import json, sys
value = json.load(sys.stdin).get(sys.argv[1])
print("" if value is None else value)' "$1"
}

task_type=$(field task_type)
echo "10% task $HIVE_TASK_ID (attempt $HIVE_ATTEMPT), type ${task_type:-none}"
if [ "$task_type" != "shell" ]; then
    echo '{"acknowledged": true}'
    exit 0
fi

command=$(field description)
if [ -z "$command" ]; then
    echo "a shell task needs its command in the description" >&2
    exit 65
fi
output=$(mktemp)
trap 'rm -f "$output"' EXIT
status=0
sh -c "$command" >"$output" 2>&1 || status=$?
tail -n 20 "$output"
if [ "$status" -ne 0 ]; then
    echo "the command exited with status $status" >&2
    exit 1
fi
python3 -c '
import json, sys
print(json.dumps({"exit_status": 0, "output": open(sys.argv[1]).read()[-4096:]}))' "$output"
