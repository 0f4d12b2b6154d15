from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from emergence_lab.model import Transformer, TransformerConfig
from emergence_lab.run.module import EmergenceModule
from emergence_lab.run.optim import OptimConfig
from emergence_lab.tasks import Addition
from emergence_lab.tasks.base import TaskBatch


def build(width=64, depth=2, max_steps=1000, **optim):
    task = Addition(digits=2, test_size=32)
    model = Transformer(
        TransformerConfig(width=width, depth=depth, vocab_size=12, max_seq_len=task.max_seq_len)
    )
    return EmergenceModule(model, task, OptimConfig(**optim), seed=0, max_steps=max_steps)


def test_param_groups_decay_matrices_only_and_scale_hidden_lr():
    module = build(width=64, lr=4e-3, base_width=32, weight_decay=0.1)
    opt = module.configure_optimizers()["optimizer"]
    hidden, emb, vectors = opt.param_groups
    assert hidden["initial_lr"] == pytest.approx(2e-3) and hidden["weight_decay"] == 0.1
    assert all(p.ndim == 2 for p in hidden["params"])
    assert emb["initial_lr"] == pytest.approx(4e-3) and emb["params"] == [module.model.tok_emb.weight]
    assert vectors["weight_decay"] == 0.0 and all(p.ndim == 1 for p in vectors["params"])
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == module.model.cfg.n_params_total


def test_warmup_then_cosine_to_the_floor():
    module = build(max_steps=1000, warmup_steps=100, min_lr_ratio=0.1)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factor = sched.lr_lambdas[0]
    assert factor(0) == pytest.approx(0.01)
    assert factor(99) == pytest.approx(1.0)
    assert factor(550) == pytest.approx(0.55)
    assert factor(1000) == pytest.approx(0.1)


def test_token_and_flop_accounting():
    module = build(width=32, depth=2, batch_size=16)
    seq = 3 * 2 + 3 - 1
    assert module.tokens_per_step == 16 * seq
    assert module.flops_per_step == (6 * module.model.cfg.n_params + 12 * 2 * seq * 32) * 16 * seq


def test_checkpoint_carries_rng_state():
    module = build()
    torch.manual_seed(123)
    ckpt: dict = {}
    module.on_save_checkpoint(ckpt)
    expected = torch.rand(3)
    torch.manual_seed(999)
    module.on_load_checkpoint(ckpt)
    assert torch.equal(torch.rand(3), expected)


def test_training_loss_is_on_answer_tokens_only(monkeypatch):
    """The real training_step with logits that ignore the input, so only the targets can move the loss."""
    module = build(width=16, depth=1, batch_size=4)
    module._trainer = SimpleNamespace(world_size=1, global_rank=0, global_step=0, log_every_n_steps=10**9)
    batch = module.task.train_batch(4, seed=0, step=0, device="cpu")
    answer_pos = batch.answer_pos.tolist()
    outside = [p for p in range(1, batch.tokens.shape[1]) if p not in answer_pos]  # 0 is never a target
    assert outside and answer_pos
    torch.manual_seed(0)
    logits = torch.randn(4, batch.tokens.shape[1] - 1, 12)
    monkeypatch.setattr(module.model, "forward", lambda tokens: logits)  # what training_step calls

    def loss_with(tokens: torch.Tensor) -> torch.Tensor:
        monkeypatch.setattr(module.task, "train_batch", lambda *_: TaskBatch(tokens, batch.answer_pos))
        return module.training_step(0, 0)

    reference = loss_with(batch.tokens)
    by_hand = F.cross_entropy(logits[:, batch.answer_pos - 1].flatten(0, 1), batch.answers.flatten())
    assert reference.item() == pytest.approx(by_hand.item(), rel=1e-6)
    changed = batch.tokens.clone()
    changed[:, outside] = (changed[:, outside] + 1) % 12
    assert torch.equal(loss_with(changed), reference)
    one_answer = batch.tokens.clone()
    one_answer[0, answer_pos[0]] = (one_answer[0, answer_pos[0]] + 1) % 12
    assert loss_with(one_answer).item() != pytest.approx(reference.item(), rel=1e-4)
