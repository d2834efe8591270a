"""SNAIL's network: causality (an output never depends on later inputs), shapes of the paper's block stacks."""

import pytest
import torch

from metarl.models.snail import PRESETS, SNAIL, AttentionBlock, DenseBlock, TCBlock


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_changing_a_later_step_never_changes_an_earlier_output(preset):
    torch.manual_seed(0)
    steps = 13
    model = SNAIL(6, steps, preset, 4)
    x = torch.randn(3, steps, 6)
    y = model(x)
    assert y.shape == (3, steps, 4)
    for t in (0, 5, steps - 1):
        changed = x.clone()
        changed[:, t:] = torch.randn_like(changed[:, t:]) * 10
        z = model(changed)
        torch.testing.assert_close(z[:, :t], y[:, :t], rtol=0, atol=0)
        assert (z[:, t] - y[:, t]).abs().amax() > 1e-4  # and step t itself does see its input


def test_gradient_of_an_output_is_zero_for_every_later_input():
    torch.manual_seed(1)
    model = SNAIL(3, 9, [("tc", 4), ("attention", 5, 6), ("tc", 4)], 2)
    x = torch.randn(1, 9, 3, requires_grad=True)
    for t in range(9):
        (grad,) = torch.autograd.grad(model(x)[0, t].sum(), x)
        assert torch.count_nonzero(grad[0, t + 1 :]) == 0
        assert grad[0, : t + 1].abs().amax() > 0


def test_tc_block_dilations_are_the_papers():
    """Dilations 2, 4, 8, 16 for T = 16 (the paper's ``2^i`` for i = 1..ceil(log2 T)). Kernel 2 with those dilations
    reaches back by sums of distinct dilations only, i.e. even offsets up to 30: the last step sees steps 15, 13, ...,
    1 and none of 14, 12, ..., 0 (the attention blocks of a SNAIL see everything before)."""
    torch.manual_seed(2)
    block = TCBlock(2, 16, 3)
    assert [layer.dilation for layer in block.layers] == [2, 4, 8, 16] and block.out_channels == 2 + 4 * 3
    x = torch.randn(1, 16, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(block(x)[0, -1].sum(), x)
    seen = grad[0].abs().sum(-1) > 0
    assert seen.tolist() == [step % 2 == 1 for step in range(16)]


def test_blocks_concatenate_their_outputs():
    x = torch.randn(2, 7, 5)
    assert DenseBlock(5, 2, 3)(x).shape == (2, 7, 8)
    out = AttentionBlock(5, 4, 6)(x)
    assert out.shape == (2, 7, 11) and torch.equal(out[..., :5], x)
    # The first step can only attend to itself: its read is exactly its own value.
    block = AttentionBlock(5, 4, 6)
    torch.testing.assert_close(block(x)[:, 0, 5:], block.value(x[:, 0]))


def test_omniglot_preset_has_the_papers_widths():
    """5-way 1-shot: T = 6; input 64 features + 5 label channels."""
    model = SNAIL(69, 6, "omniglot", 5)
    tc = 3 * 128  # ceil(log2 6) = 3 dense blocks of 128 filters
    assert model.feature_size == 69 + 32 + tc + 128 + tc + 256
