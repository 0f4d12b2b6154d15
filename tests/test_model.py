import math

import pytest
import torch

from emergence_lab.model import Transformer, TransformerConfig


@pytest.mark.parametrize(
    ("width", "depth", "positions", "bias"),
    [(8, 1, "rotary", False), (32, 2, "learned", False), (48, 3, "rotary", True), (64, 4, "learned", True)],
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


@pytest.mark.parametrize(("width", "depth"), [(16, 1), (64, 2), (256, 4)])
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
    with pytest.raises(ValueError, match="does not split"):
        TransformerConfig(width=56, head_dim=16)  # 3 heads cannot share 56
    with pytest.raises(ValueError, match="width and depth"):
        TransformerConfig(width=0)


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_causal_mask_later_tokens_do_not_change_earlier_logits(positions):
    torch.manual_seed(0)
    model = Transformer(
        TransformerConfig(width=32, depth=2, vocab_size=10, max_seq_len=16, positions=positions)
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
    from emergence_lab.optim import OptimConfig

    capped = OptimConfig(lr=4e-3, base_width=32)
    assert [capped.hidden_lr(w) for w in (8, 32, 64, 128)] == [4e-3, 4e-3, 2e-3, 1e-3]
    mup = OptimConfig(lr=4e-3, base_width=32, lr_rule="inverse_width")
    assert [mup.hidden_lr(w) for w in (16, 64)] == [8e-3, 2e-3]
    assert OptimConfig(lr=4e-3, lr_rule="constant").hidden_lr(512) == 4e-3
    with pytest.raises(ValueError, match="lr_rule"):
        OptimConfig(lr_rule="sqrt")
