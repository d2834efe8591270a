#!/usr/bin/env bash
# Reproduces docs/results/maml_trpo/: MAML-TRPO meta-training on Navigation2D and HalfCheetahVel (the MAML paper's
# settings, experiments/maml_trpo_*.yaml), held-out evaluation with the paper's step sizes beside the three
# baselines, and the figures. Run from the repository root after the README's install.
#
#   bash docs/results/maml_trpo/reproduce.sh [nav|cheetah|all] [ITERATIONS]
#
# ITERATIONS caps meta-training (default: the config's 500). The two runs can go side by side on a 2-core machine:
# each uses the in-process sampler (one process, one core; episodes are identical to Ray's, see tests/test_sampling.py).
# Baseline PPO budgets match the meta-training run's env steps (the default of `metarl baseline train`); set
# TIMESTEPS to cap them. PPO steps 64 envs together (--n-envs 64): ~15k HalfCheetah steps/s on one core.
set -euo pipefail
which="${1:-all}"
iterations="${2:-}"
budget=()
[[ -n "${TIMESTEPS:-}" ]] && budget=(--timesteps "$TIMESTEPS")
out=docs/results/maml_trpo
runs="${RUNS:-runs}"

one() {  # name config
    local name="$1" config="$2" run="$runs/$1"
    local extra=(--set sampler.backend=local --no-progress)
    [[ -n "$iterations" ]] && extra+=(--set "iterations=$iterations")
    if [[ -d "$run" ]]; then
        metarl train --resume "$run" "${extra[@]}"
    else
        metarl train "$config" --run-dir "$run" "${extra[@]}"
    fi
    metarl evaluate "$run" --step-sizes paper --backend local --checkpoint best   # the MAML paper's selection rule
    metarl evaluate "$run" --step-sizes paper --backend local --baseline random
    for kind in pretrained oracle; do
        [[ -f "$run/baselines/$kind/policy.pt" ]] || metarl baseline train "$run" --kind "$kind" "${budget[@]}" --n-envs 64 --no-progress
        metarl evaluate "$run" --step-sizes paper --backend local --baseline "$kind"
    done
    mkdir -p "$out/$name"
    metarl plot "$run" -o "$out/$name/adaptation.png" --formats png,svg
    metarl plot "$run" --training -o "$out/$name/training.png" --formats png,svg
    cp "$run/config.yaml" "$run/progress.csv" "$out/$name/" && cp "$run"/evaluation/*.csv "$run"/evaluation/summary.json "$out/$name/"
}

[[ "$which" == nav || "$which" == all ]] && one navigation experiments/maml_trpo_navigation.yaml
[[ "$which" == cheetah || "$which" == all ]] && one halfcheetah_vel experiments/maml_trpo_halfcheetah_vel.yaml
exit 0
