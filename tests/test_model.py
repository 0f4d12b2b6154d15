import math

import pytest
import torch

from emergence_lab.model import Transformer, TransformerConfig


@pytest.mark.parametrize(
    ("width", "depth", "positions", "bias"),
    [
        (8, 1, "rotary", False),
        (32, 2, "learned", False),
        (48, 3, "rotary", True),
        (64, 4, "learned", True),
        (34, 2, "rotary", True),  # 2 heads of 17: partial rotary
        (56, 1, "learned", False),  # 2 heads of 28
    ],
)
def test_non_embedding_count_is_the_sum_of_numel(width, depth, positions, bias):
    cfg = TransformerConfig(
        width=width, depth=depth, vocab_size=13, max_seq_len=20, positions=positions, bias=bias
    )
    model = Transformer(cfg)
    counted = sum(p.numel() for p in model.non_embedding_parameters())
    assert cfg.n_params == counted
    assert cfg.n_params_total == sum(p.numel() for p in model.parameters())
    # embeddings: tied token table (+ learned positions); the output layer adds nothing
    pos = 20 * width if positions == "learned" else 0
    assert cfg.n_params_total - cfg.n_params == 13 * width + pos


@pytest.mark.parametrize(("width", "depth"), [(16, 1), (64, 2), (256, 4), (34, 2), (67, 1)])
def test_kaplan_12_l_d2_is_the_leading_term(width, depth):
    cfg = TransformerConfig(width=width, depth=depth)
    # the remainder is the LayerNorm gains: 2 per block plus the final one, width each
    assert cfg.n_params - 12 * depth * width**2 == (2 * depth + 1) * width
    assert abs(cfg.n_params / (12 * depth * width**2) - 1) < 3 / width


def test_flops_per_token_by_hand():
    cfg = TransformerConfig(width=32, depth=2, vocab_size=12, max_seq_len=12)
    n = 12 * 2 * 32 * 32 + 5 * 32  # 24736
    assert cfg.n_params == n
    assert cfg.flops_per_token(11) == 6 * n + 12 * 2 * 11 * 32 == 156_864
    assert cfg.flops_per_token() == 6 * n + 12 * 2 * 12 * 32


def test_head_rule_and_mlp():
    assert TransformerConfig(width=8, head_dim=16).n_heads == 1
    assert TransformerConfig(width=64, head_dim=16).n_heads == 4
    assert TransformerConfig(width=24, head_dim=16).n_heads == 1  # one head of 24
    assert TransformerConfig(width=64, mlp_ratio=4).d_ff == 256
    assert TransformerConfig(width=56, head_dim=16).n_heads == 2  # 3 heads cannot share 56: 2 of 28
    assert TransformerConfig(width=75, head_dim=16).n_heads == 3  # 4 cannot share 75: 3 of 25
    assert TransformerConfig(width=67, head_dim=16).n_heads == 1  # prime: one head of 67
    with pytest.raises(ValueError, match="width and depth"):
        TransformerConfig(width=0)
    with pytest.raises(ValueError, match="head_dim"):
        TransformerConfig(head_dim=0)


@pytest.mark.parametrize("width", [8, 12, 16, 24, 32, 48, 64, 128])
def test_head_count_unchanged_where_the_old_rule_worked(width):
    assert TransformerConfig(width=width).n_heads == max(1, width // 16)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_every_width_builds_and_runs(positions):
    for width in range(1, 131):
        cfg = TransformerConfig(width=width, depth=1, vocab_size=7, max_seq_len=6, positions=positions)
        heads = cfg.n_heads
        assert width % heads == 0
        assert heads <= max(1, width // 16)
        assert all(width % n for n in range(heads + 1, max(1, width // 16) + 1))  # the largest such divisor
        model = Transformer(cfg)
        assert sum(p.numel() for p in model.non_embedding_parameters()) == cfg.n_params
        logits = model(torch.randint(0, 7, (2, 6)))
        assert logits.shape == (2, 6, 7)
        assert torch.isfinite(logits).all()


def test_partial_rotary_rotates_the_even_part_and_passes_the_odd_dimension():
    from emergence_lab.model import RotaryEmbedding

    odd, even = RotaryEmbedding(5, 8, 10_000.0), RotaryEmbedding(4, 8, 10_000.0)
    assert odd.rot_dim == 4 and odd.cos.shape == (8, 2)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 5)
    y = odd(x)
    assert torch.equal(y[..., 4], x[..., 4])  # the fifth dimension is not rotated
    assert torch.allclose(y[..., :4], even(x[..., :4]))  # the first four rotate like a head of four
    assert torch.allclose(y[:, :, 0], x[:, :, 0])  # position 0: angle 0
    assert not torch.allclose(y[:, :, 1:], x[:, :, 1:])
    # a rotation keeps each pair's norm
    assert torch.allclose(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1), atol=1e-5)
    one = torch.randn(1, 1, 8, 1)
    assert torch.equal(RotaryEmbedding(1, 8, 10_000.0)(one), one)


def test_odd_width_with_rotary_still_sees_order():
    """Causal attention without positions cannot tell two earlier tokens apart by order; rotary can."""
    torch.manual_seed(0)
    x, swapped = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[2, 1, 3, 4]])
    odd = Transformer(TransformerConfig(width=35, depth=1, vocab_size=6, max_seq_len=4))  # 1 head of 35
    size_one = Transformer(TransformerConfig(width=1, depth=1, vocab_size=6, max_seq_len=4))  # not rotated
    with torch.no_grad():
        assert not torch.allclose(odd(x)[0, 3], odd(swapped)[0, 3], atol=1e-4)
        assert torch.allclose(size_one(x)[0, 3], size_one(swapped)[0, 3], atol=1e-6)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
@pytest.mark.parametrize("width", [32, 34, 35])  # 35: one head of 35, partial rotary
def test_causal_mask_later_tokens_do_not_change_earlier_logits(positions, width):
    torch.manual_seed(0)
    model = Transformer(
        TransformerConfig(width=width, depth=2, vocab_size=10, max_seq_len=16, positions=positions)
    )
    model.eval()
    x = torch.randint(0, 10, (3, 16))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % 10
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_init_rule_fan_in_and_residual_scaling():
    torch.manual_seed(0)
    depth, width = 4, 256
    model = Transformer(TransformerConfig(width=width, depth=depth, vocab_size=10))
    fc = model.blocks[0].fc.weight
    proj = model.blocks[0].proj.weight
    assert fc.std().item() == pytest.approx(1 / math.sqrt(width), rel=0.05)
    assert proj.std().item() == pytest.approx(1 / math.sqrt(4 * width) / math.sqrt(2 * depth), rel=0.05)
    gpt2 = Transformer(TransformerConfig(width=width, depth=depth, vocab_size=10, init="gpt2"))
    assert gpt2.blocks[0].fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_tied_embeddings_and_sequence_limit():
    model = Transformer(TransformerConfig(width=16, depth=1, vocab_size=10, max_seq_len=8))
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 10)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_learning_rate_rules():
    from emergence_lab.run.optim import OptimConfig

    capped = OptimConfig(lr=4e-3, base_width=32)
    assert [capped.hidden_lr(w) for w in (8, 32, 64, 128)] == [4e-3, 4e-3, 2e-3, 1e-3]
    mup = OptimConfig(lr=4e-3, base_width=32, lr_rule="inverse_width")
    assert [mup.hidden_lr(w) for w in (16, 64)] == [8e-3, 2e-3]
    assert OptimConfig(lr=4e-3, lr_rule="constant").hidden_lr(512) == 4e-3
    with pytest.raises(ValueError, match="lr_rule"):
        OptimConfig(lr_rule="sqrt")
