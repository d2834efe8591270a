#!/usr/bin/env bash
# Reproduces docs/results/metaworld/: MAML-TRPO on Meta-World ML1 reach-v3, ML1 push-v3 and ML10, stopped at the
# iterations recorded in docs/results/metaworld.md, evaluated on 40 held-out goals (10 episodes each, fast_lr 0.1 for
# every step) beside the untrained policy with the same inner steps; and RL^2 on reach-v3 and push-v3, evaluated on
# the same 40 goals (3 trials of 10 episodes each) beside the untrained agent. Run from the repository root after
#   pip install torch==2.13.0 && pip install -e ".[dev,metaworld]"
#
#   bash docs/results/metaworld/reproduce.sh [reach|push|ml10|rl2_reach|rl2_push|all]
#
# Two Ray workers (the configs' default). Iterations: reach 16, push 31, ML10 46, RL^2 reach 30, RL^2 push 16
# (docs/results/metaworld.md).
set -euo pipefail
which="${1:-all}"
out=docs/results/metaworld
runs="${RUNS:-runs}"

run() {  # name config iterations
    local run="$runs/metaworld_$1"
    if [[ -d "$run" ]]; then
        metarl train --resume "$run" --set iterations="$3" --no-progress || echo "kept $run as it is"
    else
        metarl train "$2" --run-dir "$run" --set iterations="$3" --no-progress
    fi
    metarl evaluate "$run" --episodes 10 --backend local
    metarl evaluate "$run" --episodes 10 --backend local --baseline random
    for flags in "" "--success" "--training" "--training --success"; do
        name=$( [[ "$flags" == *training* ]] && echo training || echo adaptation )
        [[ "$flags" == *success* ]] && name="${name}_success"
        # shellcheck disable=SC2086
        metarl plot "$run" $flags -o "$out/$1/$name.png"
    done
    mkdir -p "$out/$1/checkpoints"
    cp "$run/config.yaml" "$run/progress.csv" "$run"/evaluation/*.csv "$run"/evaluation/summary.json "$out/$1/"
    cp "$(ls "$run"/checkpoints/iter_*.pt | tail -1)" "$out/$1/checkpoints/"
}

[[ "$which" == reach || "$which" == all ]] && run ml1_reach experiments/maml_trpo_ml1_reach.yaml 16
[[ "$which" == push || "$which" == all ]] && run ml1_push experiments/maml_trpo_ml1_push.yaml "${PUSH_ITERATIONS:-31}"
[[ "$which" == ml10 || "$which" == all ]] && run ml10 experiments/maml_trpo_ml10.yaml "${ML10_ITERATIONS:-46}"

rl2() {  # name config iterations: RL^2 evaluates per episode of a trial, --episodes = trials per goal
    local run="$runs/metaworld_$1"
    if [[ -d "$run" ]]; then
        metarl train --resume "$run" --set iterations="$3" --no-progress || echo "kept $run as it is"
    else
        metarl train "$2" --run-dir "$run" --set iterations="$3" --no-progress
    fi
    metarl evaluate "$run" --episodes 3
    metarl evaluate "$run" --episodes 3 --baseline random
    for flags in "" "--success" "--training" "--training --success"; do
        name=$( [[ "$flags" == *training* ]] && echo training || echo trial )
        [[ "$flags" == *success* ]] && name="${name}_success"
        # shellcheck disable=SC2086
        metarl plot "$run" $flags -o "$out/$1/$name.png"
    done
    mkdir -p "$out/$1/checkpoints"
    cp "$run/config.yaml" "$run/progress.csv" "$run"/evaluation/*.csv "$run"/evaluation/summary.json "$out/$1/"
    cp "$(ls "$run"/checkpoints/iter_*.pt | tail -1)" "$out/$1/checkpoints/"
}

[[ "$which" == rl2_reach || "$which" == all ]] && rl2 rl2_ml1_reach experiments/rl2_ml1_reach.yaml "${RL2_REACH_ITERATIONS:-30}"
[[ "$which" == rl2_push || "$which" == all ]] && rl2 rl2_ml1_push experiments/rl2_ml1_push.yaml "${RL2_PUSH_ITERATIONS:-16}"
true  # the script succeeds when the last stage was not asked for
