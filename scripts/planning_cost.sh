#!/usr/bin/env bash
# The planning-cost benchmark: each case of scalenet-calculus/examples/planning_cost.rs in its own
# process, under a time limit (seconds, $1, default 60) and a memory limit ($2 in GiB, default 4),
# so a case that runs for minutes or allocates without bound is reported instead of ending the run.
#
#   bash scripts/planning_cost.sh [seconds] [GiB]
set -uo pipefail
cd "$(dirname "$0")/.."
limit_s=${1:-60}
limit_gib=${2:-4}
cargo build --quiet --release -p scalenet-calculus --example planning_cost || exit 1
bin=target/release/examples/planning_cost
for case in $("$bin" --list); do
  log=$(mktemp)
  (ulimit -v $((limit_gib * 1024 * 1024)); exec timeout "$limit_s" "$bin" "$case") >"$log" 2>&1
  status=$?
  out=$(grep -F "$case" "$log" | tail -1)
  rm -f "$log"
  if [ -n "$out" ]; then
    echo "$out"
  elif [ "$status" -eq 124 ]; then
    printf '%-36s over %s s\n' "$case" "$limit_s"
  else
    printf '%-36s aborted (exit %s; over %s GiB?)\n' "$case" "$status" "$limit_gib"
  fi
done
