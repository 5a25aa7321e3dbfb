#!/usr/bin/env bash
# One `migrate` command for the GitHub Action (action.yml at the repository's root). Inputs
# arrive as INPUT_* variables; writes exit-code, status and report to $GITHUB_OUTPUT. Exit 3
# (stopped at a gate that waits) counts as success for apply unless INPUT_GATE_IS_SUCCESS is
# false. Runs anywhere with `migrate` on PATH (the test suite runs it against a real server).
set -uo pipefail

command=${INPUT_COMMAND:-apply}
plan=${INPUT_PLAN:?the plan input is required}
report=${INPUT_REPORT:-pgshift-report.json}
output=${GITHUB_OUTPUT:-/dev/null}
migrate=${PGSHIFT_MIGRATE:-migrate}

# secrets as inputs win over the environment; never echoed
if [ -n "${INPUT_DATABASE_URL:-}" ]; then export DATABASE_URL="$INPUT_DATABASE_URL"; fi
if [ -n "${INPUT_DESTINATION_DATABASE_URL:-}" ]; then
  export DESTINATION_DATABASE_URL="$INPUT_DESTINATION_DATABASE_URL"
fi

args=()
case "$command" in
  lint)
    read -r -a paths <<< "$plan"
    format=text
    if [ -n "${GITHUB_ACTIONS:-}" ]; then format=github; fi  # annotations on the diff
    args=(lint --format "$format" "${paths[@]}")
    report=""
    ;;
  plan) args=(plan "$plan"); report="" ;;
  apply)
    args=(apply "$plan" --report "$report")
    if [ -n "${INPUT_UNTIL:-}" ]; then args+=(--until "$INPUT_UNTIL"); fi
    read -r -a gates <<< "${INPUT_APPROVE:-}"
    for gate in "${gates[@]}"; do args+=(--approve "$gate"); done
    ;;
  rollback)
    args=(rollback "$plan" --report "$report")
    if [ -n "${INPUT_TO:-}" ]; then args+=(--to "$INPUT_TO"); fi
    ;;
  verify) args=(verify "$plan"); report="" ;;
  runbook) args=(runbook "$plan" -o pgshift-runbook.md); report="" ;;
  status) args=(status "$plan" --json); ;;
  *)
    echo "error: unknown command '$command'; use lint, plan, apply, verify, rollback, runbook or status" >&2
    exit 2
    ;;
esac

if [ "$command" = status ]; then
  "$migrate" "${args[@]}" > "$report"
else
  "$migrate" "${args[@]}"
fi
code=$?

status=""
if [ -n "$report" ] && [ -s "$report" ]; then
  status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status") or "")' "$report" 2>/dev/null || true)
fi
if [ "$command" = runbook ] && [ "$code" -eq 0 ] && [ "${INPUT_RUNBOOK_SUMMARY:-true}" = true ] \
    && [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  cat pgshift-runbook.md >> "$GITHUB_STEP_SUMMARY"
fi
{
  echo "exit-code=$code"
  echo "status=$status"
  echo "report=$report"
} >> "$output"

if [ "$command" = apply ] && [ "$code" -eq 3 ] && [ "${INPUT_GATE_IS_SUCCESS:-true}" = true ]; then
  echo "stopped at a gate that waits (exit 3): this step succeeds; approve the gate to go on"
  exit 0
fi
exit "$code"
