#!/bin/sh
# Posts a starpay-batch run's result to a chat webhook (Slack, Mattermost, Google Chat and
# Rocket.Chat accept {"text": "..."}). Use it as a job's hook:
#
#   [hooks]
#   on_failure = ["/usr/local/lib/starpay-batch/post-to-chat.sh"]
#   on_attention = ["/usr/local/lib/starpay-batch/post-to-chat.sh"]
#
# The webhook URL comes from CHAT_WEBHOOK_URL in the service's environment (starpay-batch
# removes its own STARPAY_* variables before a hook runs, so do not name it STARPAY_*).
# starpay-batch gives the hook: the result JSON on stdin, STARPAY_RESULT_FILE (its path),
# STARPAY_EXIT_CODE, STARPAY_JOB, STARPAY_RUN_ID, STARPAY_HOOK. Needs curl; jq if present.
set -eu

: "${CHAT_WEBHOOK_URL:?set CHAT_WEBHOOK_URL to the chat webhook URL}"

result=$(cat)
if command -v jq >/dev/null 2>&1; then
    summary=$(printf '%s' "$result" | jq -r '
        "\(.job) run \(.run_id) (\(.command)): exit \(.exit_code): \(.exit_meaning)\n"
        + ([.counts[] | select(.rows > 0) | "\(.name) \(.rows) (PHP \(.amount))"] | join(", "))
        + (if (.needs_human | length) > 0
           then "\nneeds a human: " + ([.needs_human[:10][] | "\(.reference) line \(.line) \(.state)"] | join("; "))
                + (if (.needs_human | length) > 10 or .needs_human_omitted > 0 then " …" else "" end)
           else "" end)
        + "\nresult: \(.result_file)"')
else
    summary="${STARPAY_JOB} run ${STARPAY_RUN_ID}: exit ${STARPAY_EXIT_CODE}; result: ${STARPAY_RESULT_FILE:-not written}"
fi

# JSON-escape the text for the payload (backslashes, quotes, newlines).
text=$(printf '%s' "$summary" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | awk 'BEGIN{ORS="\\n"} {print}')

curl --fail --silent --show-error --max-time 20 \
    -H 'Content-Type: application/json' \
    --data "{\"text\":\"${text}\"}" \
    "$CHAT_WEBHOOK_URL" >/dev/null
