# What the read and fan-out benchmarks share; sourced by run.sh and instructions.sh, with
# $root set to the repository.

# Installs, where a command is missing, the Debian package that provides it; each
# argument is COMMAND:PACKAGE.
need_commands() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair##*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  fi
}

# Builds runrate, the floor and the OTLP sink in release mode, and sets their paths.
build_read_servers() {
  cargo build --release --quiet --bin runrate --example bench-floor --example bench-otlp-sink
  local target_dir=${CARGO_TARGET_DIR:-$root/target}
  runrate="$target_dir/release/runrate"
  floor="$target_dir/release/examples/bench-floor"
  otlp_sink="$target_dir/release/examples/bench-otlp-sink"
}

# Waits until something listens on 127.0.0.1:$1, started as process $2 (named $3), for
# up to $4 seconds (5 unless given).
wait_for_port() {
  local port=$1 pid=$2 name=$3 seconds=${4:-5}
  for _ in $(seq 1 $((seconds * 100))); do
    kill -0 "$pid" 2>/dev/null || { echo "error: $name exited before listening on $port" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "error: $name is not listening on $port after $seconds s" >&2; return 1
}

# A work directory, removed at exit with the processes in $pids stopped.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
