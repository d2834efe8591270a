#!/usr/bin/env bash
# Reproduces docs/results/reptile/: Reptile (experiments/reptile_*.yaml) and first-order MAML-TRPO
# (experiments/fomaml_trpo_navigation.yaml) trained to the env-step budget of the committed MAML-TRPO runs, evaluated
# with the same protocol (40 held-out tasks, 20 episodes, the paper's step sizes 0.1 then 0.05, --checkpoint best),
# and drawn beside MAML-TRPO and its baselines. Run from the repository root after the README's install.
#
#   bash docs/results/reptile/reproduce.sh [nav|cheetah|all]
#
# Each run uses the in-process sampler (one core; the episodes are identical to Ray's, tests/test_sampling.py).
set -euo pipefail
which="${1:-all}"
out=docs/results/reptile
runs="${RUNS:-runs}"
maml=docs/results/maml_trpo

train() {  # run config
    if [[ -d "$1" ]]; then  # continue a stopped run; a finished one says "nothing to run" and is kept
        metarl train --resume "$1" --set sampler.backend=local --no-progress || echo "kept $1 as it is"
    else
        metarl train "$2" --run-dir "$1" --set sampler.backend=local --no-progress
    fi
}

collect() {  # run folder-under-out
    local run="$1" dest="$out/$2"
    mkdir -p "$dest/checkpoints"
    cp "$run/config.yaml" "$run/progress.csv" "$run"/evaluation/*.csv "$run"/evaluation/summary.json "$dest/"
    best=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['methods']['maml']['checkpoint'])" \
        "$run/evaluation/summary.json")
    cp "$run/$best" "$(ls "$run"/checkpoints/iter_*.pt | tail -1)" "$dest/checkpoints/"
}

# MAML-TRPO's committed folder as a run folder that `metarl plot` reads (its evaluation lives beside its config).
maml_run() {  # committed-folder name
    local run="$runs/maml_trpo_$1"
    mkdir -p "$run/evaluation"
    cp "$maml/$1/config.yaml" "$maml/$1/progress.csv" "$run/"
    cp "$maml/$1/summary.json" "$maml/$1"/adaptation*.csv "$run/evaluation/"
    echo "$run"
}

if [[ "$which" == nav || "$which" == all ]]; then
    train "$runs/reptile_navigation" experiments/reptile_navigation.yaml
    train "$runs/fomaml_trpo_navigation" experiments/fomaml_trpo_navigation.yaml
    for run in "$runs/reptile_navigation" "$runs/fomaml_trpo_navigation"; do
        metarl evaluate "$run" --step-sizes paper --backend local --checkpoint best
    done
    collect "$runs/reptile_navigation" navigation
    collect "$runs/fomaml_trpo_navigation" navigation_fomaml
    m=$(maml_run navigation)
    metarl plot "$m" "$runs/fomaml_trpo_navigation" "$runs/reptile_navigation" --methods maml,pretrained,oracle \
        -o "$out/navigation/adaptation.png" --formats png,svg
    metarl plot "$m" "$runs/fomaml_trpo_navigation" "$runs/reptile_navigation" --training \
        -o "$out/navigation/training.png" --formats png,svg
fi
if [[ "$which" == cheetah || "$which" == all ]]; then
    train "$runs/reptile_halfcheetah_vel" experiments/reptile_halfcheetah_vel.yaml
    metarl evaluate "$runs/reptile_halfcheetah_vel" --step-sizes paper --backend local --checkpoint best
    collect "$runs/reptile_halfcheetah_vel" halfcheetah_vel
    m=$(maml_run halfcheetah_vel)
    metarl plot "$m" "$runs/reptile_halfcheetah_vel" --methods maml,pretrained,oracle \
        -o "$out/halfcheetah_vel/adaptation.png" --formats png,svg
    metarl plot "$m" "$runs/reptile_halfcheetah_vel" --training -o "$out/halfcheetah_vel/training.png" --formats png,svg
fi
