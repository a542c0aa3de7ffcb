#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: creates (or reuses) the slice, installs this
# repository on every worker and starts the same command on all of them.
# jax.distributed.initialize() auto-detects the pod (--distributed).
#
#   launch/tpu_pod.sh --name NAME --zone ZONE --type v4-32 [--version VERSION] \
#       [--dry-run] CONFIG WORKDIR [--config.key=value ...]
#
# WORKDIR should be a gs:// path all workers can write. --dry-run prints the
# gcloud commands instead of running them.
set -euo pipefail
name="" zone="" type="" version="tpu-ubuntu2204-base" dry_run=0
repo_url=${REPO_URL:-$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || echo "REPO_URL")}
while [[ $# -gt 0 ]]; do
  case $1 in
    --name) name=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) break ;;
  esac
done
if [[ -z "$name" || -z "$zone" || -z "$type" || $# -lt 2 ]]; then
  echo "usage: $0 --name NAME --zone ZONE --type TYPE [--version V] [--dry-run] CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
overrides=""
# printf of no arguments would still print one quoted empty word.
if (($#)); then overrides=$(printf ' %q' "$@"); fi

run() {
  if ((dry_run)); then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

if ((dry_run)) || ! gcloud compute tpus tpu-vm describe "$name" --zone "$zone" >/dev/null 2>&1; then
  run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$type" \
    --version "$version"
fi
setup="git clone $repo_url invariant_slots 2>/dev/null || git -C invariant_slots pull; \
cd invariant_slots && pip install -q -e . 'jax[tpu]' \
-f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
train="cd invariant_slots && python -m invariant_slots.main --distributed \
--config=$config --workdir=$workdir$overrides"
run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$setup"
run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$train"
