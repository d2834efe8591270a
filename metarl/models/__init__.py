"""Networks only, independent of RL and of the training loop (usable by few-shot code as well)."""
