#!/usr/bin/env bash
# Reproduces docs/results/rl2/bandit_k5_n10/: RL^2 on Bernoulli bandits (K = 5 arms, N = 10 pulls per trial,
# experiments/rl2_bandit_k5_n10.yaml), held-out evaluation beside an untrained agent, Gittins, UCB1, Thompson
# sampling and the best arm, and the figures. Run from the repository root after the README's install.
#
#   bash docs/results/rl2/reproduce.sh [ITERATIONS]
#
# ITERATIONS: training iterations (default 3895, where the documented run was stopped); the in-process sampler
# (one process, one core) gives the same episodes as Ray workers (tests/test_sampling.py). Re-running continues the
# run folder with --resume.
set -euo pipefail
iterations="${1:-3895}"   # the documented run: stopped by SIGTERM after iteration 3895
run="${RUNS:-runs}/rl2_bandit_k5_n10"
out=docs/results/rl2/bandit_k5_n10
if [[ -d "$run" ]]; then
    metarl train --resume "$run" --set "iterations=$iterations" --no-progress
else
    metarl train experiments/rl2_bandit_k5_n10.yaml --run-dir "$run" --set sampler.backend=local \
        --set "iterations=$iterations" --set logging.checkpoint_every=50 --set rl2.separate_value=false --no-progress
fi
for method in "" random gittins ucb1 thompson best_arm; do
    metarl evaluate "$run" --tasks 1000 --episodes 20 --backend local ${method:+--baseline "$method"}
done
mkdir -p "$out"
metarl plot "$run" -o "$out/trial.png"
metarl plot "$run" --training -o "$out/training.png"
cp "$run/config.yaml" "$run/evaluation/summary.json" "$out/"
gzip -9 -c "$run/progress.csv" > "$out/progress.csv.gz"
for f in "$run"/evaluation/*.csv; do gzip -9 -c "$f" > "$out/$(basename "$f").gz"; done
