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

# A work directory, removed at exit with the processes in $pids stopped.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
