"""SB3 baselines: task wrappers, SB3 -> suite weight conversion, PPO training into a loadable baseline folder."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.baseline_envs import TaskObservationWrapper, TaskSamplingWrapper, task_columns, task_vector
from metarl.cli import main
from metarl.config import config_from_dict, dump_config
from metarl.sb3_baselines import (
    load_baseline,
    make_ppo,
    ppo_settings,
    suite_params_from_sb3,
    suite_policy_for,
    train_baseline,
)


def tiny_config(env_id="metarl/Navigation2D-v0", kwargs=None, activation="tanh", hidden=(16, 8), action_scale=1.0):
    policy = {"hidden_sizes": list(hidden), "activation": activation, "init_std": 0.5, "action_scale": action_scale}
    return config_from_dict(
        {
            "env": {"id": env_id, "kwargs": kwargs if kwargs is not None else {"horizon": 10}},
            "policy": policy,
            "iterations": 1,
            "maml": {"meta_batch_size": 2, "episodes_per_task": 2},
        }
    )


def perturbed_ppo(config, kind):
    """An SB3 PPO whose actor weights are all random (orthogonal init leaves action_net near zero)."""
    model = make_ppo(config, kind, timesteps=64, seed=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.policy.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


@pytest.mark.parametrize("action_scale", [1.0, 0.1])
@pytest.mark.parametrize("kind", ["pretrained", "oracle"])
def test_conversion_gives_the_same_gaussian(kind, action_scale):
    config = tiny_config(activation="tanh", action_scale=action_scale)
    model = perturbed_ppo(config, kind)
    policy = suite_policy_for(config, kind)
    policy.load_state_dict(suite_params_from_sb3(model.policy, policy))
    obs = torch.randn(64, policy.obs_dim)
    assert policy.obs_dim == (4 if kind == "oracle" else 2)  # the oracle also sees goal_x, goal_y
    mean, log_std = policy(obs)
    reference = model.policy.get_distribution(obs).distribution
    torch.testing.assert_close(mean, reference.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(log_std.exp(), reference.stddev, rtol=0, atol=1e-6)
    torch.testing.assert_close(log_std[0], model.policy.log_std)
    # SB3's initial std (env units) is the suite policy's: init_std in units of the action scale.
    fresh = make_ppo(config, kind, timesteps=64, seed=3).policy.log_std.exp()
    torch.testing.assert_close(fresh, torch.full_like(fresh, 0.5 * action_scale))


def test_conversion_gives_the_same_categorical():
    config = tiny_config("metarl/TabularMDP-v0", {}, activation="relu", hidden=(12,))
    model = perturbed_ppo(config, "pretrained")
    policy = suite_policy_for(config, "pretrained")
    policy.load_state_dict(suite_params_from_sb3(model.policy, policy))
    obs = torch.randn(64, policy.obs_dim)
    (logits,) = policy(obs)
    raw = model.policy.action_net(model.policy.mlp_extractor.forward_actor(obs))
    torch.testing.assert_close(logits, raw, rtol=0, atol=1e-6)
    reference = model.policy.get_distribution(obs).distribution.logits  # normalised log-probabilities
    torch.testing.assert_close(torch.log_softmax(logits, -1), reference, rtol=1e-6, atol=1e-6)
    assert float(reference.detach().std()) > 0.1  # not a degenerate (uniform) case


def test_conversion_refuses_a_different_architecture():
    model = make_ppo(tiny_config(hidden=(16, 8)), "pretrained", 64, 0)
    other = suite_policy_for(tiny_config(hidden=(16, 16)), "pretrained")
    with pytest.raises(ValueError, match="layer mean.2"):
        suite_params_from_sb3(model.policy, other)


def test_ppo_settings_fit_small_budgets():
    assert ppo_settings(10_000_000, 0.99) == {"n_steps": 2048, "batch_size": 64, "gamma": 0.99}
    small = ppo_settings(100, 0.9)
    assert small["n_steps"] == 100 and small["n_steps"] % small["batch_size"] == 0


def test_ppo_settings_scale_the_minibatch_with_the_envs():
    # Each env keeps SB3's 2048-step rollout; the minibatch grows so an epoch is still 32 gradient steps.
    assert ppo_settings(10_000_000, 0.99, n_envs=64) == {"n_steps": 2048, "batch_size": 4096, "gamma": 0.99}
    small = ppo_settings(100, 0.9, n_envs=4)
    assert small["n_steps"] == 25 and (small["n_steps"] * 4) % small["batch_size"] == 0


def test_vectorised_ppo_steps_envs_with_their_own_task_streams():
    model = make_ppo(tiny_config(), "oracle", timesteps=64, seed=3, n_envs=4)
    env = model.get_env()
    assert env.num_envs == 4
    obs = env.reset()
    goals = obs[:, 2:]  # the oracle's observation ends with the goal
    assert len({tuple(g) for g in goals.tolist()}) == 4  # env i draws from seed 3 + i
    again = make_ppo(tiny_config(), "oracle", timesteps=64, seed=3, n_envs=4).get_env().reset()
    np.testing.assert_array_equal(again, obs)
    assert model.n_steps * 4 % model.batch_size == 0


def test_task_wrappers():
    env = TaskSamplingWrapper(gym.make("metarl/Navigation2D-v0", horizon=5), seed=7)
    goals = []
    for _ in range(3):
        env.reset()
        goals.append(env.unwrapped.get_task()["goal"])
    assert len({tuple(g) for g in goals}) == 3  # a new task each episode
    again = TaskSamplingWrapper(gym.make("metarl/Navigation2D-v0", horizon=5), seed=7)
    again.reset()
    assert again.unwrapped.get_task()["goal"] == goals[0]  # seeded stream
    oracle = TaskObservationWrapper(env)
    obs, _ = oracle.reset(options={"task": {"goal": [0.25, -0.5]}})
    np.testing.assert_array_equal(obs, np.array([0.0, 0.0, 0.25, -0.5], dtype=np.float32))
    obs, *_ = oracle.step(np.array([0.1, 0.0], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, 0.0, 0.25, -0.5])
    assert oracle.observation_space.contains(obs)
    assert task_columns({"goal": [0.1, 0.2]}) == {"goal_x": 0.1, "goal_y": 0.2}
    assert task_columns({"velocity": 1.5}) == {"velocity": 1.5}
    assert list(task_columns({"means": [0.1] * 5})) == [f"means_{i}" for i in range(5)]
    assert task_columns({"transitions": [[[1.0]]], "reward_means": [[0.5]]}) == {}
    assert task_vector({"a": 1.0, "b": [[2.0, 3.0]]}).tolist() == [1.0, 2.0, 3.0]


def test_ppo_training_writes_a_loadable_baseline(tmp_path, monkeypatch):
    import tempfile

    from stable_baselines3 import PPO

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # SB3's default logger would make SB3-<time> here
    config = tiny_config()
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(dump_config(config))
    folder = train_baseline(str(config_file), "pretrained", timesteps=64, run_dir=str(tmp_path / "b"), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["baseline.json", "config.yaml", "model.zip", "policy.pt"]
    assert json.loads((folder / "baseline.json").read_text())["timesteps"] == 64
    model = PPO.load(folder / "model.zip", device="cpu")
    assert model.num_timesteps >= 64
    policy = load_baseline(folder, "pretrained", config)
    obs = torch.randn(8, 2)
    torch.testing.assert_close(policy(obs)[0], model.policy.get_distribution(obs).distribution.mean)
    assert not list(tmp_path.glob(".b.*"))  # no staging folder left
    assert not list(scratch.glob("SB3-*"))  # and no SB3 log folder in the temp dir


def test_baseline_cli_oracle_and_errors(tmp_path, capsys):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text("env: {id: metarl/Navigation2D-v0, kwargs: {horizon: 5}}\npolicy: {hidden_sizes: [8]}\n")
    target = tmp_path / "oracle"
    argv = ["baseline", "train", str(config_file), "--kind", "oracle", "--timesteps", "32", "--run-dir", str(target)]
    assert main([*argv, "--no-progress", "--n-envs", "2"]) == 0
    assert (target / "model.zip").stat().st_size > 0
    assert json.loads((target / "baseline.json").read_text())["ppo"]["n_envs"] == 2
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 2  # the folder holds a baseline already
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert main(["baseline", "train", str(tmp_path / "nowhere"), "--kind", "oracle"]) == 2
    assert "neither a config file nor a run folder" in capsys.readouterr().err
    assert main([*argv[:-2], "--run-dir", str(tmp_path / "other"), "--n-envs", "0"]) == 2
    assert "--n-envs must be positive" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
