#!/usr/bin/env bash
# edgecl experiments. Sets up .venv (scripts/bootstrap.sh), then:
#
#   ./train.sh [EXTRA...]                 default experiment on the embedded synthetic dataset
#                                         (BC-ResNet, replay with noisytune uncertainty, 5 phases)
#   ./train.sh paper TAU-ASC ROOT [EXTRA...]   the published grid on TAU Urban Acoustic Scenes 2019
#   ./train.sh paper ESC-50 ROOT [EXTRA...]    the published grid on ESC-50, every test fold
#
# EXTRA arguments pass through to `edgecl train`. Environment knobs for the grid:
#   WORKSPACE (default ./workspace), SEEDS (default "1 2 3"), MEMORY_SIZES (default "500 300"),
#   FOLDS (ESC-50 test folds, default "1 2 3 4 5").
set -euo pipefail
cd "$(dirname "$0")"
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
    local folds tasks grid_ws
    case "$dataset" in
        TAU-ASC) folds="1"; tasks=(--n-tasks 5 --n-init-cls 2 --n-cls-a-task 2) ;;
        ESC-50) folds="${FOLDS:-1 2 3 4 5}"; tasks=(--n-tasks 5 --n-init-cls 10 --n-cls-a-task 10) ;;
        *) echo "train.sh: dataset must be TAU-ASC or ESC-50, got '$dataset'" >&2; exit 2 ;;
    esac
    grid_ws="$WORKSPACE/paper-$dataset"

    # One line per configuration of the published grid: name, then edgecl train options.
    local configs=()
    for mem in ${MEMORY_SIZES:-500 300}; do
        configs+=("replay-random-m$mem|--mode replay --mem-manage random --memory-size $mem")
        configs+=("replay-reservoir-m$mem|--mode replay --mem-manage reservoir --memory-size $mem")
        configs+=("replay-prototype-m$mem|--mode replay --mem-manage prototype --memory-size $mem")
        for metric in shift noise noisytune; do
            for k in 2 4 6; do
                configs+=("uncertainty-$metric-k$k-m$mem|--mode replay --mem-manage uncertainty --uncert-metric $metric --metric-k $k --memory-size $mem")
            done
        done
    done
    configs=("finetune|--mode finetune" "${configs[@]}")

    local seed fold entry name opts fold_opt
    for seed in ${SEEDS:-1 2 3}; do
        for fold in $folds; do
            for entry in "${configs[@]}"; do
                name="${entry%%|*}"
                fold_opt=""
                [ "$dataset" = "ESC-50" ] && fold_opt="--test-fold $fold"
                opts="${entry#*|}"
                # Each ESC-50 test fold is an independent continual run: fresh model, empty memory.
                # shellcheck disable=SC2086
                edgecl train --dataset "$dataset" --data-root "$root" --model bc-resnet \
                    "${tasks[@]}" $fold_opt --seed "$seed" $opts \
                    --workspace "$grid_ws" --exp-name "$name-fold$fold-seed$seed" --quiet "$@"
            done
        done
    done
    edgecl summarize "$grid_ws"
}

if [ "${1:-}" = "paper" ]; then
    shift
    run_paper "$@"
else
    run_default "$@"
fi
