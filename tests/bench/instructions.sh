#!/usr/bin/env bash
# Instructions per GetFact, counted by callgrind: the floor (tests/bench/floor.rs),
# runrate, and runrate with metrics on and traces at 0.1, as in the read benchmark.
#
#   tests/bench/instructions.sh            20,000 calls each, under a minute
#   CALLS=2000 tests/bench/instructions.sh a quicker look
#
# Requests/s drift with the machine by several percent within minutes; a count of
# instructions does not, so this shows what a change to the read path costs to a fraction
# of a percent. What it leaves out: the kernel (about 40 % of a server's CPU here, the same
# TCP work for all three), and contention between threads, since callgrind runs a
# process's threads one at a time. Requests/s (tests/bench/run.sh) remain the measure of
# the goals; this is the one to read when a change's effect is smaller than their drift.
set -euo pipefail

calls=${CALLS:-20000}
warm_up_calls=2000

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

source "$root/tests/bench/common.sh"
need_commands valgrind:valgrind h2load:nghttp2-client
build_read_servers

# Ports apart from run.sh's, so that the two scripts never meet on one.
source_port=26051; source_http_port=26080; measured_port=26061; measured_http_port=26081
metrics_port=26090
otlp_port=26317
fact=providers/aws/periods/2026-q1/facts/ai-revenue-run-rate
python3 - "$fact" "$work/get-fact.bin" <<'PY'
import sys, struct
text = sys.argv[1].encode()
message = b"\x0a" + bytes([len(text)]) + text
open(sys.argv[2], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
PY

get_facts() {  # count -> fails unless every call succeeded
  local out
  out=$(h2load -c10 -m10 -n "$1" -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$work/get-fact.bin" "http://127.0.0.1:$measured_port/runrate.v1.MetricsService/GetFact")
  grep -qE "requests: .* $1 succeeded, 0 failed, 0 errored" <<<"$out" || {
    echo "error: not every call succeeded:" >&2; echo "$out" >&2; return 1
  }
}
callgrind() {
  echo valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$work/$1.out"
}
# Counts the instructions of the server process $2 (named $1) over $calls GetFacts, once
# it has answered a warm-up's worth uncounted, and stops it; sets `counted` to the count
# per call.
count() {
  local name=$1 pid=$2
  # valgrind is slow to start.
  wait_for_port "$measured_port" "$pid" "$name" 120
  get_facts "$warm_up_calls"
  callgrind_control -i on "$pid" >/dev/null
  get_facts "$calls"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"
  # The next server takes the same port: wait until this one has let it go.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  local total
  total=$(grep -h '^summary:' "$work/$name.out".* | awk '{ sum += $2 } END { print sum }')
  counted=$(( total / calls ))
}

"$otlp_sink" "127.0.0.1:$otlp_port" >/dev/null &
pids+=($!)
wait_for_port "$otlp_port" $! bench-otlp-sink

# The floor copies its answers from a runrate at start.
mkdir -p "$work/source"
(cd "$work/source" && exec env RUNRATE__GRPC__LISTEN=127.0.0.1:$source_port \
  RUNRATE__HTTP__LISTEN=127.0.0.1:$source_http_port RUNRATE__LOG__FILTER=warn \
  "$runrate" serve >serve.log 2>&1) &
pids+=($!)
wait_for_port "$source_port" $! runrate
$(callgrind floor) "$floor" "127.0.0.1:$measured_port" "http://127.0.0.1:$source_port" "$fact" \
  >"$work/floor.log" 2>&1 &
pids+=($!)
count floor $!
floor_count=$counted

# Starts runrate under callgrind on the measured port with extra environment, and counts.
count_runrate() {
  local name=$1; shift
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec env RUNRATE__GRPC__LISTEN=127.0.0.1:$measured_port \
    RUNRATE__HTTP__LISTEN=127.0.0.1:$measured_http_port RUNRATE__LOG__FILTER=warn "$@" \
    $(callgrind "$name") "$runrate" serve >serve.log 2>&1) &
  pids+=($!)
  count "$name" $!
}
count_runrate runrate
runrate_count=$counted
count_runrate observed RUNRATE__METRICS__LISTEN=127.0.0.1:$metrics_port \
  RUNRATE__TRACING__OTLP_ENDPOINT=http://127.0.0.1:$otlp_port RUNRATE__TRACING__SAMPLE_RATIO=0.1
observed_count=$counted

echo
echo "instructions per GetFact (callgrind, user space, $calls calls after $warm_up_calls uncounted; h2load -c10 -m10)"
echo
printf '| %-40s | %12s | %8s |\n' server instructions "vs floor"
printf '| %-40s | %12s | %8s |\n' "$(printf -- '-%.0s' {1..40})" "------------" "--------"
for row in "floor:$floor_count" "runrate:$runrate_count" "runrate, metrics on, traces at 0.1:$observed_count"; do
  name=${row%%:*}; n=${row##*:}
  printf '| %-40s | %12s | %8s |\n' "$name" "$n" "$(python3 -c "print(f'{$n / $floor_count:.3f}')")"
done
