#!/usr/bin/env bash
# Starts N training processes on this machine, forming one multi-process JAX job
# (coordinator on 127.0.0.1). Process 0 writes metrics; all write checkpoints.
#
#   launch/local.sh N CONFIG WORKDIR [--config.key=value ...]
#
# Set DEVICES_PER_PROCESS to force that many CPU devices in each process.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
num_processes=$1 config=$2 workdir=$3
shift 3
port=${COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}
if [[ -n "${DEVICES_PER_PROCESS:-}" ]]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS} ${XLA_FLAGS:-}"
fi
mkdir -p "$workdir"
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < num_processes; i++)); do
  python -m invariant_slots.main --config="$config" --workdir="$workdir" \
    --coordinator_address="127.0.0.1:${port}" --num_processes="$num_processes" \
    --process_id="$i" "$@" > >(sed "s/^/[process $i] /") 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
