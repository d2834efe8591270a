"""Few-shot models, their loss functions under ``functional_call``, and the metric baselines on hand examples."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from metarl import learners
from metarl.fewshot.metric import (
    episode_logits,
    matching_accuracy,
    matching_log_probs,
    matching_loss,
    prototypes,
    prototypical_accuracy,
    prototypical_logits,
    prototypical_loss,
)
from metarl.fewshot.models import (
    Conv4,
    SinusoidMLP,
    accuracy,
    classification_accuracy,
    classification_loss,
    head_names,
    regression_loss,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def images(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, 1, 28, 28)


# ----------------------------------------------------------------------------------------------------------------------
# Models


def test_sinusoid_mlp():
    model = SinusoidMLP()
    params = dict(model.named_parameters())
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    assert shapes == {
        "body.0.weight": (40, 1),
        "body.0.bias": (40,),
        "body.2.weight": (40, 40),
        "body.2.bias": (40,),
        "head.weight": (1, 40),
        "head.bias": (1,),
    }
    assert head_names(params) == ["head.weight", "head.bias"]
    assert model(torch.zeros(10, 1)).shape == (10, 1)


def test_conv4_shapes_and_names():
    model = Conv4(n_way=5)
    params = dict(model.named_parameters())
    assert head_names(params) == ["head.weight", "head.bias"] and params["head.weight"].shape == (5, 64)
    assert len(params) == 4 * 4 + 2  # conv weight/bias + norm weight/bias per block, and the head
    assert list(model.buffers()) == []  # no running statistics: batch norm always uses the batch
    x = images(7)
    assert model(x).shape == (7, 5) and model.embed(x).shape == (7, 64)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        model(images(2, 7))
    embedder = Conv4(n_way=None)
    assert embedder.embed(x).shape == (7, 64) and not head_names(dict(embedder.named_parameters()))
    with pytest.raises(ValueError, match="no head"):
        embedder(x)


def test_conv4_feature_map_mean_or_flatten():
    """Strided convs end on a 2x2 map: averaged by default (MAML's code), flattened on request (Reptile's code)."""
    x = images(6)
    torch.manual_seed(0)
    mean = Conv4(n_way=5, downsample="stride")
    torch.manual_seed(0)
    flat = Conv4(n_way=5, downsample="stride", feature_map="flatten")
    feature_map = mean.features(x)
    assert feature_map.shape == (6, 64, 2, 2)
    torch.testing.assert_close(mean.embed(x), feature_map.mean(dim=(2, 3)))
    torch.testing.assert_close(flat.embed(x), feature_map.reshape(6, 256))
    assert flat.embed_dim == 256 and dict(flat.named_parameters())["head.weight"].shape == (5, 256)
    assert mean.embed_dim == 64 and Conv4(n_way=5, downsample="stride", feature_map="mean").embed_dim == 64
    # After max-pooling the map is 1x1, so both choices give the same embedding.
    torch.manual_seed(1)
    pooled = Conv4(n_way=None, feature_map="mean")
    torch.testing.assert_close(pooled.embed(x), pooled.features(x).flatten(1))
    with pytest.raises(ValueError, match="feature_map"):
        Conv4(n_way=5, feature_map="max")


def test_conv4_batch_norm_uses_batch_statistics_in_eval_too():
    model = Conv4(n_way=5)
    x = images(6)
    train_out = model(x)
    model.eval()
    torch.testing.assert_close(model(x), train_out)


def test_functional_call_equals_module_call():
    model = Conv4(n_way=5)
    x = images(6)
    params = dict(model.named_parameters())
    torch.testing.assert_close(functional_call(model, params, (x,)), model(x))
    torch.testing.assert_close(functional_call(model, params, (x,), {"embed_only": True}), model.embed(x))
    # Different parameters through functional_call == a module holding those parameters.
    shifted = {name: p + 0.05 * torch.randn_like(p) for name, p in params.items()}
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(shifted[name])
    torch.testing.assert_close(functional_call(model, shifted, (x,)), twin(x))
    assert not torch.allclose(twin(x), model(x))


def test_no_query_to_support_leak():
    """Support predictions and the adapted parameters do not depend on the query set."""
    model = Conv4(n_way=5)
    params = dict(model.named_parameters())
    support_x, support_y = images(5), torch.arange(5)
    query_a, query_b = images(15), images(15)
    loss_fn = classification_loss(model)

    def adapt(p):  # one MAML-style inner step on the support set only
        grads = torch.autograd.grad(loss_fn(p, (support_x, support_y)), list(p.values()), create_graph=True)
        return {name: w - 0.4 * g for (name, w), g in zip(p.items(), grads, strict=True)}

    support_logits = functional_call(model, params, (support_x,))
    _ = functional_call(model, params, (query_a,))
    torch.testing.assert_close(functional_call(model, params, (support_x,)), support_logits)
    adapted = adapt(params)
    _ = loss_fn(adapted, (query_b, torch.arange(15) % 5))
    for name, w in adapt(params).items():
        torch.testing.assert_close(w, adapted[name])
    # The test can see a leak: one joint forward over support + query changes the support outputs.
    joint = functional_call(model, params, (torch.cat([support_x, query_a]),))[:5]
    assert not torch.allclose(joint, support_logits, atol=1e-4)


def test_vmap_over_tasks_keeps_tasks_separate():
    model = Conv4(n_way=3)
    params = dict(model.named_parameters())
    x = images(4, 6)
    out = vmap(lambda xs: functional_call(model, params, (xs,)))(x)
    torch.testing.assert_close(out, torch.stack([model(xs) for xs in x]))
    x2 = x.clone()
    x2[1] = torch.rand_like(x2[1])  # change one task's data: the other tasks' outputs stay the same
    out2 = vmap(lambda xs: functional_call(model, params, (xs,)))(x2)
    torch.testing.assert_close(out2[[0, 2, 3]], out[[0, 2, 3]])
    y = torch.randint(0, 3, (4, 6))
    grads = vmap(grad(classification_loss(model)), in_dims=(None, 0))(params, (x, y))
    assert grads["head.weight"].shape == (4, 3, 64)


# ----------------------------------------------------------------------------------------------------------------------
# Loss functions


def test_regression_loss_and_second_order_gradient():
    model = SinusoidMLP()
    params = dict(model.named_parameters())
    x, y = torch.randn(10, 1), torch.randn(10, 1)
    loss_fn = regression_loss(model)
    torch.testing.assert_close(loss_fn(params, (x, y)), F.mse_loss(model(x), y))
    inner = torch.autograd.grad(loss_fn(params, (x, y)), list(params.values()), create_graph=True)
    adapted = {name: w - 0.01 * g for (name, w), g in zip(params.items(), inner, strict=True)}
    meta = torch.autograd.grad(loss_fn(adapted, (x, y)), list(params.values()))
    assert all(g is not None and torch.isfinite(g).all() for g in meta)


def test_classification_loss_and_accuracy():
    model = Conv4(n_way=4)
    params = dict(model.named_parameters())
    x, y = images(8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    torch.testing.assert_close(classification_loss(model)(params, (x, y)), F.cross_entropy(model(x), y))
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 0.5]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 0])).item() == 0.5
    acc = classification_accuracy(model)(params, (x, y))
    assert acc.item() == (model(x).argmax(-1) == y).float().mean().item() and not acc.requires_grad


# ----------------------------------------------------------------------------------------------------------------------
# Metric baselines


def test_prototypical_logits_hand_example():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(prototypes(support, labels, 2), torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    query = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    # Squared distances: (1,1)->(1,0): 1, (1,1)->(0,3): 1+4=5; (0,3)->(1,0): 1+9=10, (0,3)->(0,3): 0.
    expected = torch.tensor([[-1.0, -5.0], [-10.0, 0.0]])
    torch.testing.assert_close(prototypical_logits(support, labels, query, 2), expected)
    # Label order in the support set does not matter.
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(prototypical_logits(support[perm], labels[perm], query, 2), expected)


def test_matching_log_probs_hand_example():
    support = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # cosine ignores length
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[5.0, 0.0]])
    cos = torch.tensor([1.0, 0.0, 1.0 / math.sqrt(2.0)])  # cosine of the query to each support example
    for scale in (1.0, 10.0):
        attention = torch.softmax(scale * cos, 0)
        expected = torch.log(torch.stack([attention[0], attention[1] + attention[2]]))[None]
        got = matching_log_probs(support, labels, query, 2, scale)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(got.exp().sum(-1), torch.ones(1))


def episode(n_way: int, k_shot: int, k_query: int, tasks: int | None = None):
    lead = () if tasks is None else (tasks,)
    sy = torch.arange(n_way).repeat_interleave(k_shot).expand(*lead, -1)
    qy = torch.arange(n_way).repeat_interleave(k_query).expand(*lead, -1)
    return images(*lead, n_way * k_shot), sy.clone(), images(*lead, n_way * k_query), qy.clone()


@pytest.mark.parametrize("method", ["proto", "matching"])
def test_metric_losses(method):
    model = Conv4(n_way=None)
    params = dict(model.named_parameters())
    n = 3
    loss_fn = prototypical_loss(model, n) if method == "proto" else matching_loss(model, n, scale=10.0)
    acc_fn = prototypical_accuracy(model, n) if method == "proto" else matching_accuracy(model, n, scale=10.0)
    batch = episode(n, 2, 4, tasks=3)
    per_task = torch.stack([loss_fn(params, tuple(t[i] for t in batch)) for i in range(3)])
    torch.testing.assert_close(loss_fn(params, batch), per_task.mean())  # a batch = mean over tasks
    # End to end: a few Adam steps fit one episode (gradients reach every parameter).
    fixed = tuple(t[0] for t in batch)
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    first = loss_fn(params, fixed)
    first.backward()
    assert all(p.grad is not None for p in params.values())
    for _ in range(15):
        opt.step()
        opt.zero_grad()
        loss_fn(params, fixed).backward()
    assert loss_fn(params, fixed).item() < first.item()
    assert 0.0 <= acc_fn(params, fixed).item() <= 1.0


@pytest.mark.parametrize("method", ["proto", "matching"])
def test_metric_support_embedded_without_query(method):
    """The episode's logits are those of support and query embedded in separate calls (no query -> support leak)."""
    model = Conv4(n_way=None)
    params = dict(model.named_parameters())
    sx, sy, qx, qy = episode(3, 2, 4)
    logits, labels = episode_logits(model, params, (sx, sy, qx, qy), 3, method, 5.0)
    s_emb, q_emb = model.embed(sx), model.embed(qx)
    if method == "proto":
        expected = -(torch.cdist(q_emb, prototypes(s_emb, sy, 3)) ** 2)
    else:
        expected = matching_log_probs(s_emb, sy, q_emb, 3, 5.0)
    torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-4)
    assert labels is qy
    # What a leak would look like: support embedded together with the query differs.
    joint = model.embed(torch.cat([sx, qx]))[: len(sx)]
    assert not torch.allclose(joint, s_emb, atol=1e-4)


def test_metric_unknown_method():
    model = Conv4(n_way=None)
    with pytest.raises(ValueError, match="unknown metric method"):
        episode_logits(model, dict(model.named_parameters()), episode(2, 1, 1), 2, "euclid")


# ----------------------------------------------------------------------------------------------------------------------
# With the shared learner (metarl.learners): the loss functions plug in as they are


def test_losses_with_the_shared_learner():
    # ANIL on Conv4: only the head is adapted; looping over tasks and vmap agree.
    model = Conv4(n_way=3)
    params = dict(model.named_parameters())
    support = (images(2, 6), torch.arange(3).repeat(2).expand(2, 6).clone())
    query = (images(2, 9), torch.arange(3).repeat(3).expand(2, 9).clone())
    loss_fn = classification_loss(model)
    losses = []
    for vectorize in (False, True):
        anil = learners.GradientLearner(inner_lr=0.4, num_steps=2, adapt_keys=("head",), vectorize=vectorize)
        adapted = anil.adapt_many(params, loss_fn, support)
        assert [n for n in params if not torch.equal(adapted[1][n], params[n])] == ["head.weight", "head.bias"]
        losses.append(anil.meta_loss(params, loss_fn, loss_fn, support, query))
    torch.testing.assert_close(losses[0], losses[1])
    # MAML (second order) on sinusoid tasks: the meta-gradient reaches every parameter.
    from metarl.fewshot.sinusoid import SinusoidTasks

    mlp = SinusoidMLP()
    mlp_params = dict(mlp.named_parameters())
    batch = SinusoidTasks().sample(4, 10, 10, 0)
    maml = learners.GradientLearner(inner_lr=0.01, num_steps=1)
    meta = maml.meta_loss(mlp_params, regression_loss(mlp), regression_loss(mlp), batch.support(), batch.query())
    grads = torch.autograd.grad(meta, list(mlp_params.values()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
