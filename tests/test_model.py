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


def _reference_rotary(x: torch.Tensor, head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """The rotary of the first release, pairs (2i, 2i+1), sliced and stacked: the numbers to keep."""
    rot_dim = head_dim - head_dim % 2
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / max(1, rot_dim)))
    angles = torch.outer(torch.arange(x.shape[-2], dtype=torch.float32), inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :rot_dim:2], x[..., 1:rot_dim:2]
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return torch.cat((rotated, x[..., rot_dim:]), dim=-1)


@pytest.mark.parametrize("head_dim", [1, 2, 5, 8, 16, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rotary_matches_the_reference_formula(head_dim, dtype):
    from emergence_lab.model import RotaryEmbedding

    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim, 12, 10_000.0)
    x = torch.randn(3, 2, 12, head_dim).to(dtype)
    tables = rope.tables(12, dtype)
    # the complex path serves float32/float64 with an even head; everything else takes the real path
    assert (tables.cis is not None) == (dtype != torch.bfloat16 and head_dim % 2 == 0)
    y = rope(x)
    assert y.dtype == dtype
    tol = {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 1e-6, "rtol": 1e-6}
    torch.testing.assert_close(y, _reference_rotary(x, head_dim), **tol)
    # the real path on its own agrees too
    real = rope.rotate(x, tables._replace(cis=None))
    torch.testing.assert_close(real, _reference_rotary(x, head_dim), **tol)


@pytest.mark.parametrize("width", [16, 32, 34, 35, 64])  # 34: 2 heads of 17; 35: one head of 35
def test_attention_matches_the_per_head_reference(width):
    """q and k rotated together on the [b, t, 2, H, hd] view give what rotating each [b, H, t, hd] did."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    cfg = TransformerConfig(width=width, depth=1, vocab_size=10, max_seq_len=9)
    model = Transformer(cfg)
    attn = model.blocks[0].attn
    x = torch.randn(4, 9, width)
    tables = model.rotary.tables(9, torch.float32)
    got = attn(x, model.rotary, tables)
    h, hd = cfg.n_heads, width // cfg.n_heads
    q, k, v = attn.qkv(x).view(4, 9, 3, h, hd).permute(2, 0, 3, 1, 4)
    q, k = _reference_rotary(q, hd), _reference_rotary(k, hd)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    want = attn.out(y.transpose(1, 2).reshape(4, 9, width))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_bf16_autocast_forward_and_backward_run_in_the_compute_dtype():
    from emergence_lab.model import compute_dtype

    model = Transformer(TransformerConfig(width=32, depth=2, vocab_size=10, max_seq_len=8))
    tokens = torch.randint(0, 10, (2, 8))
    assert compute_dtype(tokens.device, torch.float32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(tokens.device, torch.float32) == torch.bfloat16
        logits = model(tokens)
    assert logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_checkpoint_keys_hold_no_rotary_tables():
    model = Transformer(TransformerConfig(width=16, depth=1, vocab_size=10, max_seq_len=8))
    assert sorted(model.state_dict()) == sorted(
        [
            "tok_emb.weight",
            "blocks.0.norm1.weight",
            "blocks.0.attn.qkv.weight",
            "blocks.0.attn.out.weight",
            "blocks.0.norm2.weight",
            "blocks.0.fc.weight",
            "blocks.0.proj.weight",
            "norm.weight",
        ]
    )


def test_fused_qkv_inits_q_k_and_v_each_by_fan_in():
    torch.manual_seed(0)
    width, depth = 256, 4
    model = Transformer(TransformerConfig(width=width, depth=depth, vocab_size=10))
    q, k, v = model.blocks[1].attn.qkv.weight.detach().chunk(3, dim=0)
    for part in (q, k, v):
        assert part.shape == (width, width)
        assert part.mean().item() == pytest.approx(0.0, abs=3 / width)
        assert part.std().item() == pytest.approx(1 / math.sqrt(width), rel=0.02)
    out = model.blocks[1].attn.out.weight
    assert out.std().item() == pytest.approx(1 / math.sqrt(width) / math.sqrt(2 * depth), rel=0.02)


def test_build_optimizer_groups_and_implementation():
    from emergence_lab.run.optim import OptimConfig, adamw_implementation, build_optimizer

    model = Transformer(TransformerConfig(width=64, depth=2, vocab_size=10, positions="learned"))
    o = OptimConfig(lr=4e-3, base_width=32, weight_decay=0.1, beta1=0.8, beta2=0.95)
    opt = build_optimizer(model, o, "cpu")
    hidden, emb, vectors = opt.param_groups
    assert (hidden["lr"], hidden["weight_decay"]) == (2e-3, 0.1)  # 4e-3 * 32 / 64
    assert (emb["lr"], emb["weight_decay"]) == (4e-3, 0.1)
    assert (vectors["lr"], vectors["weight_decay"]) == (4e-3, 0.0)
    assert {id(p) for p in emb["params"]} == {id(model.tok_emb.weight), id(model.pos_emb.weight)}
    assert all(p.ndim == 2 for p in hidden["params"]) and all(p.ndim == 1 for p in vectors["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())
    assert hidden["betas"] == (0.8, 0.95)
    fused_cpu = hasattr(torch, "get_autocast_dtype")  # torch >= 2.4
    assert adamw_implementation("cpu") == ({"fused": True} if fused_cpu else {"foreach": True})
    assert adamw_implementation("cuda") == {"fused": True}
    assert bool(hidden["fused"]) == fused_cpu


def test_fused_adamw_takes_the_same_step_as_the_loop():
    from emergence_lab.run.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    models = [Transformer(TransformerConfig(width=16, depth=1, vocab_size=10, max_seq_len=8)) for _ in "ab"]
    models[1].load_state_dict(models[0].state_dict())
    fast = build_optimizer(models[0], OptimConfig(), "cpu")
    loop = build_optimizer(models[1], OptimConfig(), "cpu")
    for g in loop.param_groups:
        g["fused"], g["foreach"] = False, False
    tokens = torch.randint(0, 10, (4, 8))
    for _ in range(5):
        for model, opt in ((models[0], fast), (models[1], loop)):
            opt.zero_grad()
            model(tokens).logsumexp(-1).mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_compile_decision_rule():
    from emergence_lab.model import CPU_COMPILE_COST_S, compile_decision

    assert compile_decision(True, 64, 2, 10, "cpu") == (True, "compile: on (set)")
    assert compile_decision("off", 16, 2, 10**6, "cpu") == (False, "compile: off (set)")
    # CPU: the demo's 1500 steps never repay the compile; a long run at width 16 does; width 64 never
    assert compile_decision("auto", 16, 2, 1500, "cpu")[0] is False
    on, why = compile_decision("auto", 16, 2, 50_000, "cpu")
    assert on and why.startswith("compile: auto -> on")
    assert compile_decision("auto", 64, 2, 10**7, "cpu")[0] is False
    # the threshold is where steps * saving reaches the compile cost, and deeper models save more per step
    from emergence_lab.model import _cpu_saving_per_step

    need = math.ceil(CPU_COMPILE_COST_S / _cpu_saving_per_step(16, 2))
    assert compile_decision("auto", 16, 2, need, "cpu")[0] is True
    assert compile_decision("auto", 16, 2, need - 1, "cpu")[0] is False
    assert _cpu_saving_per_step(16, 4) == pytest.approx(2 * _cpu_saving_per_step(16, 2))
    assert _cpu_saving_per_step(8, 2) == _cpu_saving_per_step(16, 2)  # not extrapolated below the data
    assert compile_decision("auto", 32, 2, 10**7, "cpu")[0] is False
    assert compile_decision("auto", 16, 2, 999, "cuda")[0] is False
    assert compile_decision("auto", 16, 2, 1000, "cuda")[0] is True
    with pytest.raises(ValueError, match="on, off or auto"):
        compile_decision("sometimes", 16, 2, 10, "cpu")


def test_compile_or_eager_falls_back_and_leaves_grads_and_rng_alone(monkeypatch):
    from emergence_lab.model import compile_or_eager

    model = Transformer(TransformerConfig(width=16, depth=1, vocab_size=10, max_seq_len=8, dropout=0.1))
    example = torch.randint(0, 10, (2, 8))

    def failing(m):
        def run(*_):
            raise RuntimeError("InvalidCxxCompiler")

        return run

    monkeypatch.setattr(torch, "compile", failing)
    rng = torch.get_rng_state()
    forward, why = compile_or_eager(model, example)
    assert forward is model
    assert why == "eager: compiling failed (RuntimeError: InvalidCxxCompiler)"
    assert torch.equal(torch.get_rng_state(), rng)

    monkeypatch.setattr(torch, "compile", lambda m: m)  # a "compiler" that works: the probe step runs
    forward, why = compile_or_eager(model, example)
    assert why == "compiled (inductor)"
    assert all(p.grad is None for p in model.parameters())  # the probe's gradients are not kept
    assert torch.equal(torch.get_rng_state(), rng)  # nor does its dropout move the training RNG stream
