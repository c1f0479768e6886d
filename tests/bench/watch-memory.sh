#!/usr/bin/env bash
# The memory cost of WatchLoads streams whose clients stop reading: resident memory per
# idle watcher, and its growth while every watcher stalls on one large load event, beside
# the same load with no watcher at all (what the load itself costs). Prints one table.
#
#   tests/bench/watch-memory.sh           2,000 watchers on 14 connections, 9,000 facts
#   tests/bench/watch-memory.sh --smoke   200 watchers on 2 connections, 900 facts (CI)
set -euo pipefail

watchers=2000; facts=9000; connections=14
if [ "${1:-}" = "--smoke" ]; then
  watchers=200; facts=900; connections=2
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet --bin runrate --example bench-watch-memory
target_dir=${CARGO_TARGET_DIR:-$root/target}
runrate="$target_dir/release/runrate"
measure="$target_dir/release/examples/bench-watch-memory"

value() { awk -F'\t' -v key="$1" '$1 == key { print $2 }' <<<"$2"; }

with=$("$measure" "$runrate" "$watchers" "$facts" "$connections")
# One watcher on one connection: the load's own cost, with (almost) nobody to share it.
alone=$("$measure" "$runrate" 1 "$facts" 1)

printf '%-58s %12s %10s\n' measurement value goal
printf '%-58s %12s %10s\n' "idle memory per watcher, bytes ($(value watchers "$with") watchers)" \
  "$(value idle_bytes_per_watcher "$with")" "<= 8192"
printf '%-58s %12s %10s\n' "growth while all stall on a $facts-fact load, MB" \
  "$(( $(value growth_while_stalled_kib "$with") / 1024 ))" "<= 64"
printf '%-58s %12s %10s\n' "growth for the same load with one watcher, MB" \
  "$(( $(value growth_while_stalled_kib "$alone") / 1024 ))" ""

idle=$(value idle_bytes_per_watcher "$with")
growth=$(value growth_while_stalled_kib "$with")
if [ "$idle" -gt 8192 ] || [ "$growth" -gt $((64 * 1024)) ]; then
  echo "error: over a goal" >&2
  exit 1
fi
