#!/usr/bin/env bash
# Reproduces docs/results/snail/bandit_k5_n10/: SNAIL on Bernoulli bandits (K = 5 arms, N = 10 pulls per trial,
# experiments/snail_bandit_k5_n10.yaml), held-out evaluation beside an untrained agent, Gittins, UCB1, Thompson sampling
# and the best arm, and the figures. Run from the repository root after the README's install.
#
#   bash docs/results/snail/reproduce.sh ITERATIONS
#
# ITERATIONS: training iterations to reach (the documented run was stopped by SIGTERM; its iteration count is in
# docs/results/snail.md); the in-process sampler (one process, one core) gives the same episodes as Ray workers.
# Re-running continues the run folder with --resume.
set -euo pipefail
iterations="${1:?the iteration count to reach (docs/results/snail.md)}"
run="${RUNS:-runs}/snail_bandit_k5_n10"
out=docs/results/snail/bandit_k5_n10
if [[ -d "$run" ]]; then
    metarl train --resume "$run" --set "iterations=$iterations" --no-progress
else
    metarl train experiments/snail_bandit_k5_n10.yaml --run-dir "$run" --set sampler.backend=local \
        --set "iterations=$iterations" --set logging.checkpoint_every=50 --no-progress
fi
for method in "" random gittins ucb1 thompson best_arm; do
    metarl evaluate "$run" --tasks 1000 --episodes 20 --backend local ${method:+--baseline "$method"}
done
mkdir -p "$out/run/checkpoints"
metarl plot "$run" -o "$out/trial.png"
metarl plot "$run" --training -o "$out/training.png"
cp "$run/config.yaml" "$run/evaluation/summary.json" "$out/"
cp "$run/config.yaml" "$out/run/"
cp "$(ls "$run"/checkpoints/iter_*.pt | sort | tail -1)" "$out/run/checkpoints/"
gzip -9 -c "$run/progress.csv" > "$out/progress.csv.gz"
for f in "$run"/evaluation/*.csv; do gzip -9 -c "$f" > "$out/$(basename "$f").gz"; done
