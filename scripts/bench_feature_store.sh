#!/usr/bin/env bash
# The feature store's benchmark (docs/results/published-scale.md): one run without the store,
# one filling it (cold), one reading it (warm), each the same edgecl train on an ESC-50-layout
# set, with wall time, CPU time and peak RSS from /usr/bin/time -v, then the warm run's speedup
# over the other two.
#
#   scripts/bench_feature_store.sh ESC_ROOT OUT [EPOCHS]
#
# ESC_ROOT: an ESC-50-layout folder (edgecl data generate-esc50 ESC_ROOT makes a full-size one).
# OUT: a new folder for the workspaces and logs. EPOCHS: per phase (default 1).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 ESC_ROOT OUT [EPOCHS]" >&2
    exit 2
fi
root="$(cd "$1" && pwd)"
out="$2"
epochs="${3:-1}"
[ -x /usr/bin/time ] || { echo "$0: /usr/bin/time is needed (apt-get install time)" >&2; exit 2; }
[ ! -e "$out" ] || { echo "$0: $out already exists; give a new folder" >&2; exit 2; }
mkdir -p "$out/logs"
common=(--dataset ESC-50 --data-root "$root" --test-fold 1 --model bc-resnet --n-tasks 5
        --n-init-cls 10 --n-cls-a-task 10 --memory-size 500 --epochs "$epochs" --no-export
        --threads 1 --seed 1 --quiet)
run() {
    local name=$1; shift
    /usr/bin/time -v edgecl train "${common[@]}" "$@" > "$out/logs/$name.out" 2> "$out/logs/$name.err"
    awk -v name="$name" -F': ' '
        /User time/ {u=$2} /System time/ {s=$2} /Maximum resident/ {r=$2}
        /Elapsed/ {n=split($2, t, ":"); w=0; for (i=1; i<=n; i++) w=w*60+t[i]}
        END {printf "%s %.1f %.1f %.0f\n", name, w, u+s, r/1024}' "$out/logs/$name.err"
}
{
    run nostore --no-feature-store --workspace "$out/ws-nostore"
    run cold --workspace "$out/ws-store" --exp-name cold
    run warm --workspace "$out/ws-store" --exp-name warm
} > "$out/times.txt"
awk 'BEGIN {print "run       wall_s    cpu_s  peak_rss_MB"}
     {printf "%-8s %7.1f %8.1f %12.0f\n", $1, $2, $3, $4; w[$1]=$2; c[$1]=$3}
     END {printf "warm speedup: %.2fx wall, %.2fx CPU over no store; %.2fx wall over cold\n",
          w["nostore"]/w["warm"], c["nostore"]/c["warm"], w["cold"]/w["warm"]}' "$out/times.txt"
