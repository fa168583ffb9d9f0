#!/usr/bin/env bash
# edgecl experiments. Sets up .venv (scripts/bootstrap.sh), then:
#
#   ./train.sh [EXTRA...]                 default experiment on the embedded synthetic dataset
#                                         (BC-ResNet, replay with noisytune uncertainty, 5 phases)
#   ./train.sh paper TAU-ASC ROOT [EXTRA...]   the published grid on TAU Urban Acoustic Scenes 2019
#   ./train.sh paper ESC-50 ROOT [EXTRA...]    the published grid on ESC-50, every test fold
#
# EXTRA arguments pass through to every `edgecl train` of the grid. The paper path runs
# `edgecl grid` with the built-in spec (tau-asc or esc-50) on a local Ray instance, then
# `edgecl report`. Environment knobs:
#   WORKSPACE (default ./workspace; runs go to WORKSPACE/paper-DATASET), SEEDS (default "1 2 3"),
#   MEMORY_SIZES (default "500 300"), FOLDS (ESC-50 test folds, default "1 2 3 4 5"),
#   WORKERS (trials at once, default: CPU count), GRID_ADDRESS (an existing Ray cluster),
#   GPUS_PER_TRIAL (default: 1 where there are GPUs, else 0), DRY_RUN=1 (list the trials and their commands only).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    cat <<'TEXT'
Usage:
  ./train.sh [EDGECL_TRAIN_OPTIONS...]
      The default experiment: BC-ResNet-40 on the embedded synthetic dataset (10 classes, 16 kHz,
      1 s), 5 phases of 2 classes, replay memory of 500 refilled by the noisytune uncertainty
      sampler (k = 6), a device bundle per phase. Results go to ./workspace/<run>/ and a summary
      table is printed. Options pass through to `edgecl train` (e.g. --seed 2, --threads 1).
  ./train.sh paper TAU-ASC ROOT [EDGECL_TRAIN_OPTIONS...]
  ./train.sh paper ESC-50 ROOT [EDGECL_TRAIN_OPTIONS...]
      The published grid (finetune; random, reservoir, prototype; uncertainty with shift, noise
      and noisytune at k = 2, 4, 6; memory 500 and 300; seeds 1-3; ESC-50 over its 5 test folds)
      through `edgecl grid` on a local Ray instance, then `edgecl report`.

Environment knobs for the grid:
  WORKSPACE     runs go to WORKSPACE/paper-DATASET           (default ./workspace)
  SEEDS         e.g. "1 2 3"                                  (default "1 2 3")
  MEMORY_SIZES  e.g. "500 300"                                (default "500 300")
  FOLDS         ESC-50 test folds                             (default "1 2 3 4 5")
  WORKERS       trials at once                                (default: CPU count)
  GRID_ADDRESS  an existing Ray cluster to run on
  GPUS_PER_TRIAL  GPUs per trial, e.g. 0.5                    (default: 1 with GPUs, else 0)
  DRY_RUN=1     list the trials and their commands only

The first run creates .venv and installs the pinned dependencies (a few minutes). See
docs/GUIDE.md for data layouts, what a run folder holds and what to expect.
TEXT
}

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    usage
    exit 0
fi
source scripts/bootstrap.sh

WORKSPACE="${WORKSPACE:-./workspace}"

run_default() {
    edgecl train --dataset synthetic --model bc-resnet --mode replay \
        --mem-manage uncertainty --uncert-metric noisytune --metric-k 6 \
        --workspace "$WORKSPACE" "$@"
    edgecl summarize "$WORKSPACE"
}

run_paper() {
    if [ $# -lt 2 ]; then
        echo "usage: ./train.sh paper {TAU-ASC|ESC-50} ROOT [EXTRA...]" >&2
        exit 2
    fi
    local dataset="$1" root="$2"
    shift 2
    if [ ! -d "$root" ]; then
        echo "train.sh: data root '$root' is not a folder" >&2
        exit 2
    fi
    local spec
    case "$dataset" in
        TAU-ASC) spec=tau-asc ;;
        ESC-50) spec=esc-50 ;;
        *) echo "train.sh: dataset must be TAU-ASC or ESC-50, got '$dataset'" >&2; exit 2 ;;
    esac
    local grid_ws="$WORKSPACE/paper-$dataset"

    # The published grid is the built-in spec edgecl/grid/specs/<spec>.toml, run as Ray tasks
    # (one trial per core, one torch thread each). Complete runs are skipped on a rerun.
    local opts=(--data-root "$root" --workspace "$grid_ws")
    [ -n "${SEEDS:-}" ] && opts+=(--seeds "$SEEDS")
    [ -n "${MEMORY_SIZES:-}" ] && opts+=(--memory-sizes "$MEMORY_SIZES")
    [ -n "${FOLDS:-}" ] && [ "$dataset" = "ESC-50" ] && opts+=(--folds "$FOLDS")
    [ -n "${WORKERS:-}" ] && opts+=(--workers "$WORKERS")
    [ -n "${GRID_ADDRESS:-}" ] && opts+=(--address "$GRID_ADDRESS")
    [ -n "${GPUS_PER_TRIAL:-}" ] && opts+=(--gpus-per-trial "$GPUS_PER_TRIAL")
    if [ -n "${DRY_RUN:-}" ]; then
        edgecl grid "$spec" "${opts[@]}" --dry-run -- "$@"
        return
    fi
    local status=0
    edgecl grid "$spec" "${opts[@]}" -- "$@" || status=$?
    if [ "$status" -ne 130 ]; then
        edgecl report "$grid_ws" || true
    fi
    return "$status"
}

if [ "${1:-}" = "paper" ]; then
    shift
    run_paper "$@"
else
    run_default "$@"
fi
