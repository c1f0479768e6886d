#!/usr/bin/env bash
# runrate's benchmarks, each side by side with the floor of what this machine can do, in
# the same run: reads against a do-nothing tonic server, fan-out against smtp-source ->
# smtp-sink, plus the LoadFigures call, memory and start-up. Prints one table.
#
#   tests/bench/run.sh            the full run (about 10 minutes; 20 on a slower host)
#   tests/bench/run.sh --smoke    small counts and short runs, for CI
#   tests/bench/run.sh --reads    the reads alone, as in the full run (about 5 minutes)
#
# Everything talks to 127.0.0.1. Set BENCH_POSTGRES_URL (a server whose user may create
# databases) to time LoadFigures on PostgreSQL too; .ci/run's PostgreSQL is used if up.
set -euo pipefail

mode=full
[ "${1:-}" = "--smoke" ] && mode=smoke
[ "${1:-}" = "--reads" ] && mode=reads
if [ "$mode" = smoke ]; then
  read_seconds=1; read_pairs=3; pairs=3; fanouts=(1000); big=1000; huge=2000; over_latency=200
else
  # Reads: more and shorter pairs than the fan-outs, since each pair is its own ratio.
  read_seconds=4; read_pairs=7; pairs=3; fanouts=(10000 100000); big=100000; huge=1000000; over_latency=5000
fi
# Sign-ups during the big fan-out, whose confirmations must not wait for it.
signups=20
# The round trip the latency proxy adds: 5 ms each way.
one_way_ms=5

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

# --- Tools --------------------------------------------------------------------------------
source "$root/tests/bench/common.sh"
need_commands h2load:nghttp2-client smtp-sink:postfix
build_read_servers

# Fixed ports below Linux's ephemeral range (32768 and up), where no outgoing connection of
# this run or of the tests before it can be holding one.
grpc_port=25051; http_port=25080; floor_port=25061; sink_port=25025; proxy_port=25026
# Two more runrates for the reads, with metrics and traces on (one tenth of the traces
# exported, and all of them), and their collector.
observed_port=25052; observed_http_port=25081; metrics_port=25090; otlp_port=25317
all_traced_port=25053; all_traced_http_port=25082; sample_ratio=0.1
# The longest any one fan-out may take before the run gives up on it.
fan_out_deadline_s=$([ "$mode" = smoke ] && echo 120 || echo 1800)
fact=providers/aws/periods/2026-q1/facts/ai-revenue-run-rate

now_ms() { date +%s%3N; }
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.6g}")' "$@"; }
m() { median ${1}; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
row() { printf '| %-50s | %12s | %12s | %6s | %-10s |\n' "$@"; }

# Starts runrate in $1 with extra environment (KEY=VALUE ...), waits for SERVING.
start_runrate() { start_runrate_on "$grpc_port" "$@"; }
# The same, serving gRPC on port $1.
start_runrate_on() {
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  (cd "$dir" && exec env RUNRATE__GRPC__LISTEN=127.0.0.1:$port RUNRATE__HTTP__LISTEN=127.0.0.1:$http_port \
      RUNRATE__LOG__FILTER=warn "$@" "$runrate" serve >"$dir/serve.log" 2>&1) &
  runrate_pid=$!
  pids+=("$runrate_pid")
  for _ in $(seq 1 500); do
    "$runrate" health --server "http://127.0.0.1:$port" >/dev/null 2>&1 && return 0
    sleep 0.01
  done
  echo "runrate did not start; its log:" >&2; cat "$dir/serve.log" >&2; return 1
}
stop_runrate() {
  kill "$runrate_pid" 2>/dev/null || true
  wait "$runrate_pid" 2>/dev/null || true
}

# --- 5. Start-up: launch on an empty data directory until health says SERVING ------------
startups=()
for i in 1 2 3; do
  dir="$work/startup-$i"; mkdir -p "$dir"
  start=$(now_ms)
  start_runrate "$dir"
  startups+=($(( $(now_ms) - start )))
  stop_runrate
done
startup_ms=$(median "${startups[@]}")

# --- 1. Reads: h2load against runrate and the floor, interleaved -------------------------
grpc_body() {  # a gRPC frame holding a message whose field 1 is the string $1
  python3 - "$1" "$2" <<'PY'
import sys, struct
text = sys.argv[1].encode()
message = b"\x0a" + bytes([len(text)]) + text
open(sys.argv[2], "wb").write(b"\x00" + struct.pack(">I", len(message)) + message)
PY
}
grpc_body "$fact" "$work/get-fact.bin"
grpc_body "periods/2026-q1" "$work/compare.bin"

"$otlp_sink" "127.0.0.1:$otlp_port" >"$work/otlp-sink.out" &
otlp_sink_pid=$!
pids+=("$otlp_sink_pid")
wait_for_port "$otlp_port" "$otlp_sink_pid" bench-otlp-sink
# As an operator would run it: Prometheus metrics on, a tenth of the traces begun here
# exported over OTLP (and every trace a caller sampled); and with every trace exported.
start_runrate_on "$observed_port" "$work/reads-observed" RUNRATE__HTTP__LISTEN=127.0.0.1:$observed_http_port \
  RUNRATE__METRICS__LISTEN=127.0.0.1:$metrics_port RUNRATE__TRACING__OTLP_ENDPOINT=http://127.0.0.1:$otlp_port \
  RUNRATE__TRACING__SAMPLE_RATIO=$sample_ratio
observed_pid=$runrate_pid
start_runrate_on "$all_traced_port" "$work/reads-all-traced" RUNRATE__HTTP__LISTEN=127.0.0.1:$all_traced_http_port \
  RUNRATE__TRACING__OTLP_ENDPOINT=http://127.0.0.1:$otlp_port
all_traced_pid=$runrate_pid
start_runrate "$work/reads"
"$floor" "127.0.0.1:$floor_port" "http://127.0.0.1:$grpc_port" "$fact" &
pids+=($!)
wait_for_port "$floor_port" $! bench-floor

# Every request of a run is the same bytes against an unchanging snapshot: check the
# answer's gRPC status once per server and method, with a client that shows trailers.
for port in $grpc_port $floor_port; do
  for call in GetFact:get-fact CompareProviders:compare; do
    method=${call%%:*}; body=${call##*:}
    # Read to the end before searching: `grep -q` stopping early would break the pipe
    # under the client and fail the check (pipefail) although the answer was right.
    answer=$(nghttp -v -H ':method: POST' -H 'content-type: application/grpc' -H 'te: trailers' \
      -d "$work/$body.bin" "http://127.0.0.1:$port/runrate.v1.MetricsService/$method" 2>&1 | tr -d '\0')
    if ! grep -q 'grpc-status: 0' <<<"$answer"; then
      echo "error: $method on port $port did not answer grpc-status 0" >&2; exit 1
    fi
  done
done

h2load_run() {  # port method body -> "req/s p50_ms p99_ms"
  local port=$1 method=$2 body=$3 log="$work/h2load.log"
  rm -f "$log"
  local out
  out=$(h2load -c50 -m10 -D "$read_seconds" --warm-up-time=1 \
    -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/$body.bin" \
    --log-file="$log" "http://127.0.0.1:$port/runrate.v1.MetricsService/$method")
  if ! grep -qE 'requests: .* 0 failed, 0 errored' <<<"$out"; then
    echo "error: h2load saw failed requests:" >&2; echo "$out" >&2; exit 1
  fi
  local rps
  rps=$(grep -oE 'finished in [0-9.]+m?s, [0-9.]+ req/s' <<<"$out" | grep -oE '[0-9.]+ req/s' | cut -d' ' -f1)
  python3 - "$log" "$rps" <<'PY'
import sys
durations = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] / 1000
print(sys.argv[2], f"{pick(0.5):.3f}", f"{pick(0.99):.3f}")
PY
}

declare -A reads
declare -A port_of=([floor]=$floor_port [runrate]=$grpc_port [observed]=$observed_port
  [all_traced]=$all_traced_port)
for call in GetFact:get-fact CompareProviders:compare; do
  method=${call%%:*}; body=${call##*:}
  servers=(floor runrate)
  [ "$method" = GetFact ] && servers+=(observed all_traced)
  for pair in $(seq 1 "$read_pairs"); do
    # Each pair starts one server further on, so that none always runs in one position.
    declare -A this_pair=()
    for i in "${!servers[@]}"; do
      server=${servers[$(( (i + pair - 1) % ${#servers[@]} ))]}
      read -r r p50 p99 < <(h2load_run "${port_of[$server]}" "$method" "$body")
      reads[$method,$server,rps]+="$r "; reads[$method,$server,p50]+="$p50 "; reads[$method,$server,p99]+="$p99 "
      this_pair[$server,rps]=$r; this_pair[$server,p50]=$p50; this_pair[$server,p99]=$p99
    done
    # The machine's speed drifts within minutes: a server is compared with the floor of
    # its own pair, seconds apart, and the table gives the median of those ratios.
    for server in "${servers[@]}"; do
      for what in rps p50 p99; do
        reads[$method,$server,$what/floor]+="$(ratio "${this_pair[$server,$what]}" "${this_pair[floor,$what]}") "
      done
    done
    unset this_pair
  done
done
stop_runrate
kill "${pids[-1]}" 2>/dev/null || true
# The observed runrate counted every call, and its collector received spans.
observed_calls=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
  awk '/^grpc_server_handled_total\{.*grpc_method="GetFact".*grpc_code="OK"/ { print $2 }')
for pid in $observed_pid $all_traced_pid; do
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
kill "$otlp_sink_pid" 2>/dev/null || true
wait "$otlp_sink_pid" 2>/dev/null || true
exports_taken=$(awk '/exports taken/ { print $3 }' "$work/otlp-sink.out")
if [ -z "$observed_calls" ] || [ "${exports_taken:-0}" -eq 0 ]; then
  echo "error: the observed runrate counted ${observed_calls:-no} GetFact calls; the collector took ${exports_taken:-no} exports" >&2
  exit 1
fi

print_header() {
  echo
  echo "runrate benchmarks ($mode run, $(nproc) cores, $(date -u +%Y-%m-%d))"
  echo "reads: medians of $read_pairs interleaved pairs, each ratio the median of the pairs' own;"
  echo "fan-outs: medians of $pairs pairs (runrate, then the ceiling), the ratio likewise"
  echo
  row "measurement" "runrate" "floor" "ratio" "goal"
  row "--------------------------------------------------" "------------" "------------" "------" "----------"
}
# One read row: label, method, server, measurement (rps, p50, p99), goal.
read_row() {
  local label=$1 method=$2 server=$3 what=$4 goal=$5
  row "$label" "$(m "${reads[$method,$server,$what]}")" "$(m "${reads[$method,floor,$what]}")" \
    "$(m "${reads[$method,$server,$what/floor]}")" "$goal"
}
print_reads() {
  read_row "GetFact requests/s (h2load -c50 -m10)" GetFact runrate rps ">= 0.9"
  read_row "GetFact p50 latency, ms" GetFact runrate p50 ""
  read_row "GetFact p99 latency, ms" GetFact runrate p99 "<= 1.2"
  read_row "CompareProviders requests/s (h2load -c50 -m10)" CompareProviders runrate rps ">= 0.75"
  read_row "CompareProviders p50 latency, ms" CompareProviders runrate p50 ""
  read_row "CompareProviders p99 latency, ms" CompareProviders runrate p99 ""
  read_row "GetFact requests/s, metrics on, traces at $sample_ratio" GetFact observed rps ">= 0.9"
  read_row "GetFact p99, metrics on, traces at $sample_ratio, ms" GetFact observed p99 "<= 1.2"
  read_row "GetFact requests/s, every trace exported" GetFact all_traced rps ""
  read_row "GetFact p99, every trace exported, ms" GetFact all_traced p99 ""
  row "  (calls counted at $sample_ratio / exports taken)" "$observed_calls / $exports_taken" "" "" ""
}
if [ "$mode" = reads ]; then
  print_header
  print_reads
  exit 0
fi

# --- 2-4. Fan-out, LoadFigures and memory, against smtp-sink ------------------------------
# -c: a running count of the messages it accepted ("sess=… quit=… mesg=N", each ended by
# a carriage return), which tells when a fan-out's last email arrived without asking
# runrate (a poller would take CPU from the fan-out that the ceiling does not pay).
sink_count="$work/smtp-sink.count"
smtp-sink -c -u "$(id -un)" "127.0.0.1:$sink_port" 1024 >"$sink_count" &
pids+=($!)
wait_for_port "$sink_port" $! smtp-sink

# Messages smtp-sink has accepted so far. With $1 and $2, first waits until it has
# accepted $1 in all, checking every 5 ms from one process, and fails after $2 ms (an
# epoch time).
sink_messages() {
  python3 - "$sink_count" "${1:-0}" "${2:-0}" <<'PY'
import os, re, sys, time
path, wanted, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000
with open(path, "rb") as counter:
    while True:
        counter.seek(max(0, os.fstat(counter.fileno()).st_size - 256))
        counts = re.findall(rb"mesg=(\d+)", counter.read())
        accepted = int(counts[-1]) if counts else 0
        if accepted >= wanted:
            break
        if time.time() > deadline:
            sys.exit(f"smtp-sink accepted {accepted} of {wanted} messages in time")
        time.sleep(0.005)
print(accepted)
PY
}

seed_sqlite() {  # data_dir count
  python3 - "$1/runrate.db" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
  INSERT INTO subscribers (email, state, language, follows_all, created_at_us, updated_at_us)
  SELECT 'reader' || i || '@example.com', 'confirmed', 'en', 1, 0, 0 FROM n""", (int(sys.argv[2]),))
db.commit()
PY
}

connections=16
smtp_environment=(RUNRATE__MAIL__TRANSPORT=smtp RUNRATE__MAIL__SMTP__PORT=$sink_port
  RUNRATE__DELIVERY__CONCURRENCY=$connections RUNRATE__MAIL__SMTP__POOL_SIZE=$connections)

# Sign-ups spread over the first second of a fan-out, through the web form.
sign_up_during() {
  sleep 0.3
  for i in $(seq 1 "$signups"); do
    curl -s -o /dev/null --data "email=signup$i@example.com" "http://127.0.0.1:$http_port/subscribe"
    sleep 0.05
  done
}

# How long each confirmation took from its sign-up to the mail server's acceptance,
# read from the outbox (sent_at is recorded when the server answers 250): "p50 p99 count".
confirmation_latency() {
  python3 - "$1/runrate.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
rows = db.execute("SELECT (sent_at_us - created_at_us) / 1000.0 FROM deliveries "
                  "WHERE kind = 'confirmation' AND sent_at_us IS NOT NULL ORDER BY 1").fetchall()
waits = [row[0] for row in rows] or [float("nan")]
pick = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]
print(f"{pick(0.5):.0f} {pick(0.99):.0f} {len(rows)}")
PY
}

# One fan-out: seed, load, wait for the last message; prints "ms load_ms peak_kb idle_kb
# confirmation_p50_ms confirmation_p99_ms confirmations". Extra arguments are more
# environment for runrate; with SIGNUPS=1 in the environment, readers sign up meanwhile.
fan_out() {
  local count=$1 dir="$work/fanout-$1-$RANDOM"; shift
  start_runrate "$dir" "${smtp_environment[@]}" "$@"
  seed_sqlite "$dir/runrate-data" "$count"
  local pid=$runrate_pid signing=""
  local accepted_before; accepted_before=$(sink_messages)
  local start; start=$(now_ms)
  (cd "$dir" && "$runrate" load --server "http://127.0.0.1:$grpc_port" "$root/tests/figures/2026-q2-example.toml" >/dev/null)
  local loaded; loaded=$(now_ms)
  if [ "${SIGNUPS:-0}" = 1 ]; then sign_up_during & signing=$!; fi
  local deadline=$(( start + fan_out_deadline_s * 1000 ))
  # Sign-ups' confirmations count too, but go first: when as many messages as updates
  # have arrived, at most that many updates (a few ms of sending) are still to come.
  if ! sink_messages $(( accepted_before + count )) "$deadline" >/dev/null; then
    echo "error: the fan-out to $count did not finish in ${fan_out_deadline_s} s" >&2
    stop_runrate; return 1
  fi
  local done_ms; done_ms=$(now_ms)
  [ -n "$signing" ] && wait "$signing"
  # Every update recorded sent, none failed: the sink's count was runrate's fan-out.
  local report
  for _ in $(seq 1 500); do
    report=$(cd "$dir" && "$runrate" deliveries --server "http://127.0.0.1:$grpc_port" 2>&1) || true
    [[ $report == *"sent $count, pending 0"* ]] && break
    sleep 0.02
  done
  if [[ $report != *"sent $count, pending 0"* ]]; then
    echo "error: smtp-sink took the fan-out's messages, but runrate reports: $report" >&2
    stop_runrate; return 1
  fi
  local peak; peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  sleep 2
  local idle; idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  local confirmations; confirmations=$(confirmation_latency "$dir/runrate-data")
  stop_runrate
  echo "$(( done_ms - start )) $(( loaded - start )) $peak $idle $confirmations"
}

# The size of runrate's update email for the example load, measured with the file
# transport, so that the ceiling sends messages as large.
size_dir="$work/message-size"
start_runrate "$size_dir"
seed_sqlite "$size_dir/runrate-data" 1
(cd "$size_dir" && "$runrate" load --server "http://127.0.0.1:$grpc_port" "$root/tests/figures/2026-q2-example.toml" >/dev/null)
for _ in $(seq 1 200); do
  ls "$size_dir"/runrate-data/mail/*.eml >/dev/null 2>&1 && break
  sleep 0.05
done
message_size=$(stat -c %s "$size_dir"/runrate-data/mail/*.eml | head -1)
stop_runrate

# The ceiling: smtp-source sending as many messages, as large, over as many connections,
# each kept open for the next message (-d) as runrate keeps its own.
ceiling() {  # count -> messages/s
  local count=$1 start end
  start=$(now_ms)
  smtp-source -d -s "$connections" -m "$count" -l "$message_size" -f bench@example.com -t sink@example.com "127.0.0.1:$sink_port"
  end=$(now_ms)
  python3 -c "print(f'{$count / (($end - $start) / 1000):.0f}')"
}

declare -A fan
for count in "${fanouts[@]}"; do
  for pair in $(seq 1 "$pairs"); do
    signing=0; [ "$count" = "$big" ] && [ "$pair" = 1 ] && signing=1
    read -r ms load_ms peak idle c50 c99 confirmed < <(SIGNUPS=$signing fan_out "$count")
    rate=$(python3 -c "print(f'{$count / ($ms / 1000):.0f}')"); ceil=$(ceiling "$count")
    fan[$count,rate]+="$rate "; fan[$count,ceiling]+="$ceil "
    # As for reads: each fan-out against the ceiling measured right after it.
    fan[$count,rate/ceiling]+="$(ratio "$rate" "$ceil") "
    fan[$count,seconds]+="$(python3 -c "print($ms / 1000)") "
    fan[$count,load]+="$load_ms "; fan[$count,peak]+="$peak "; fan[$count,idle]+="$idle "
    if [ "$signing" = 1 ]; then
      confirmation_p50=$c50; confirmation_p99=$c99; confirmations=$confirmed
    fi
  done
done

# Over a network with round trips: the same fan-out through a proxy adding 2 x 5 ms.
python3 "$root/tests/bench/delay_proxy.py" "$proxy_port" "$sink_port" "$one_way_ms" &
pids+=($!)
wait_for_port "$proxy_port" $! delay_proxy.py
read -r ms _ < <(fan_out "$over_latency" RUNRATE__MAIL__SMTP__PORT=$proxy_port)
latency_rate=$(python3 -c "print(f'{$over_latency / ($ms / 1000):.0f}')")
latency_bound=$(python3 -c "print(f'{$connections / (2 * 2 * $one_way_ms / 1000):.0f}')")

# Memory of a fan-out to $huge subscribers.
read -r huge_ms _ huge_peak _ < <(fan_out "$huge")

# LoadFigures with $big subscribers on PostgreSQL, if a server is at hand.
postgres_url=${BENCH_POSTGRES_URL:-${RUNRATE_TEST_DATABASE_URL:-}}
if [ -z "$postgres_url" ] && pg_isready -q -h 127.0.0.1 2>/dev/null; then
  postgres_url=postgres://postgres:postgres@127.0.0.1:5432/postgres
fi
pg_load="n/a"
if [ -n "$postgres_url" ] && command -v psql >/dev/null; then
  database="runrate_bench_$$"
  psql -q "$postgres_url" -c "CREATE DATABASE $database"
  url="${postgres_url%/*}/$database"
  loads=()
  for pair in $(seq 1 "$pairs"); do
    psql -q "$url" -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public" 2>/dev/null || true
    dir="$work/pg-$pair"
    start_runrate "$dir" "${smtp_environment[@]}" RUNRATE__DATABASE__URL="$url"
    psql -q "$url" -c "INSERT INTO subscribers (email, state, language, follows_all, created_at_us, updated_at_us)
      SELECT 'reader' || i || '@example.com', 'confirmed', 'en', TRUE, 0, 0 FROM generate_series(1, $big) AS i"
    start=$(now_ms)
    (cd "$dir" && "$runrate" load --server "http://127.0.0.1:$grpc_port" "$root/tests/figures/2026-q2-example.toml" >/dev/null)
    loads+=($(( $(now_ms) - start )))
    stop_runrate
  done
  psql -q "$postgres_url" -c "DROP DATABASE $database WITH (FORCE)"
  pg_load=$(median "${loads[@]}")
fi

# --- The table ------------------------------------------------------------------------------
print_header
print_reads
for count in "${fanouts[@]}"; do
  rate=$(m "${fan[$count,rate]}"); ceil=$(m "${fan[$count,ceiling]}")
  goal=""; [ "$count" = 100000 ] && goal=">= 1.0"
  row "fan-out of $count: emails/s (smtp-source -d, ${message_size} B)" "$rate" "$ceil" "$(m "${fan[$count,rate/ceiling]}")" "$goal"
  goal=""; [ "$count" = 100000 ] && goal="<= 10 s"
  row "fan-out of $count: LoadFigures to last email, s" "$(m "${fan[$count,seconds]}")" "" "" "$goal"
done
row "confirmation during the $big fan-out: p50 / p99, ms" "$confirmation_p50 / $confirmation_p99" "" "" "p99 <= 2000"
row "  (confirmations sent during it, of $signups sign-ups)" "$confirmations" "" "" ""
row "fan-out of $over_latency over 10 ms RTT: emails/s" "$latency_rate" "$latency_bound" "$(ratio "$latency_rate" "$latency_bound")" ">= 0.9"
row "peak memory during a fan-out to $huge, MB" "$(python3 -c "print(round($huge_peak / 1024, 1))")" "" "" "<= 64 MB"
row "  (its time, LoadFigures to last email, s)" "$(python3 -c "print($huge_ms / 1000)")" "" "" ""
goal=""; [ "$big" = 100000 ] && goal="<= 1000 ms"
row "LoadFigures with $big subscribers, SQLite, ms" "$(m "${fan[$big,load]}")" "" "" "$goal"
row "LoadFigures with $big subscribers, PostgreSQL, ms" "$pg_load" "" "" ""
row "peak memory during the $big fan-out, MB" "$(python3 -c "print(round($(m "${fan[$big,peak]}") / 1024, 1))")" "" "" "<= 64 MB"
row "idle memory after it, MB" "$(python3 -c "print(round($(m "${fan[$big,idle]}") / 1024, 1))")" "" "" "<= 32 MB"
row "start-up to SERVING, empty data directory, ms" "$startup_ms" "" "" "<= 300 ms"
