"""N copies of the project's `Transformer` trained as one: every parameter stacked on a leading model axis.

The forward is `torch.func.vmap` over `torch.func.functional_call` of one template model, so the matmuls run
batched over the models and attention folds the model axis into its batch on a GPU; on CPU torch has no
batching rule for its flash-attention kernel and loops over the models inside attention (the CPU gains
measured in pack_rule.py include that loop; its warning is silenced below). Each seed's starting weights are
exactly those of its unpacked run (built under its own seed, as `train.py` does, then stacked), and one AdamW
steps all of them: AdamW is elementwise, so a slice of the stacked update is that seed's unpacked update.

Plain torch (no Lightning): `emergence bench gpu` and `emergence bench pack` use it as it is.

Dropout runs under vmap with independent masks per model, but its random stream differs from the unpacked
run's; only dropout 0 (the default) reproduces unpacked training.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from emergence_lab.model import Transformer, TransformerConfig
from emergence_lab.run.optim import OptimConfig, adamw_groups, adamw_implementation

# Known and measured (module docstring); otherwise every packed CPU job prints it.
warnings.filterwarnings(
    "ignore", message="There is a performance drop because we have not yet implemented the batching rule"
)


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


def build_seed_model(cfg: TransformerConfig, seed: int) -> Transformer:
    """The model an unpacked run of `seed` starts from (train.py seeds every RNG with `seed`, then builds)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return Transformer(cfg)


class PackedTransformer(nn.Module):
    """`models` stacked: parameters [N, ...] named as the Transformer's with `.` written `__`."""

    def __init__(self, models: Sequence[Transformer]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a pack needs at least one model")
        self.cfg = models[0].cfg
        self.n_models = len(models)
        self.names = [name for name, _ in models[0].named_parameters()]
        self.params = nn.ParameterDict(
            {
                _key(name): nn.Parameter(
                    torch.stack([dict(m.named_parameters())[name].detach() for m in models])
                )
                for name in self.names
            }
        )
        # a plain model to evaluate one slice at a time; kept out of the module tree (and checkpoints)
        object.__setattr__(self, "_eval_model", copy.deepcopy(models[0]))
        # the template of the functional forward: its parameters become non-persistent buffers, so it moves
        # with `.to()` but adds nothing to the state dict (functional_call replaces them by name)
        self.template = copy.deepcopy(models[0])
        for module in self.template.modules():
            for name, p in list(module._parameters.items()):
                if p is None:  # a Linear without bias keeps its None
                    continue
                del module._parameters[name]
                module.register_buffer(name, p.detach(), persistent=False)

    @classmethod
    def from_seeds(cls, cfg: TransformerConfig, seeds: Sequence[int]) -> PackedTransformer:
        return cls([build_seed_model(cfg, s) for s in seeds])

    def stacked(self) -> dict[str, torch.Tensor]:
        """Transformer parameter name -> stacked tensor [N, ...]."""
        return {name: self.params[_key(name)] for name in self.names}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, B, T] -> logits [N, B, T, vocab]: model i reads tokens[i]."""
        template = self.template

        def one(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, params, (x,))

        return torch.func.vmap(one, randomness="different")(self.stacked(), tokens)

    def state_dict_of(self, i: int) -> dict[str, torch.Tensor]:
        """Model i's weights under the Transformer's own names (a copy)."""
        return {name: p[i].detach().clone() for name, p in self.stacked().items()}

    @torch.no_grad()
    def model_of(self, i: int) -> Transformer:
        """A plain Transformer holding model i's current weights (one reused instance: for evaluation)."""
        model: Transformer = self._eval_model.to(next(iter(self.params.values())).device)
        own = dict(model.named_parameters())
        for name, p in self.stacked().items():
            own[name].copy_(p[i])
        return model

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip each model's gradient by its own total norm, as `torch.nn.utils.clip_grad_norm_` clips one
        model (coefficient max_norm / (norm + 1e-6), at most 1). Returns the N norms before clipping."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        n = self.n_models
        if not grads:
            return torch.zeros(n)
        per_param = torch.stack([torch.linalg.vector_norm(g.reshape(n, -1), dim=1) for g in grads])
        norms = torch.linalg.vector_norm(per_param, dim=0)  # [N]
        coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.ndim - 1))).to(g.dtype))
        return norms

    @torch.no_grad()
    def zero_grads_of(self, mask: torch.Tensor) -> None:
        """Zero the gradients of the models where `mask` [N] is True (failed models)."""
        keep = (~mask).view(-1)
        for p in self.params.values():
            if p.grad is not None:
                p.grad.mul_(keep.view(-1, *([1] * (p.grad.ndim - 1))).to(p.grad.dtype))


def param_groups(packed: PackedTransformer, optim: OptimConfig) -> list[dict]:
    """The groups of `run.optim.build_optimizer`, in its order (hidden, embeddings, gains and biases), over
    the stacked parameters, so a per-seed slice of the optimizer state is that seed's unpacked state."""
    embeddings = {"tok_emb.weight", "pos_emb.weight"}
    stacked = packed.stacked().items()
    return adamw_groups(((p, name in embeddings, p.ndim - 1) for name, p in stacked), optim, packed.cfg.width)


def build_packed_optimizer(
    packed: PackedTransformer, optim: OptimConfig, device_type: str
) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(packed, optim), betas=(optim.beta1, optim.beta2), **adamw_implementation(device_type)
    )


# ---- optimizer state: one packed state <-> N unpacked states ----------------------------------------
def split_optimizer_state(state: dict, n: int) -> list[dict]:
    """The packed optimizer's `state_dict()` as N unpacked ones: stacked tensors sliced, the rest shared."""
    out = []
    for i in range(n):
        per = {
            idx: {k: (v[i].clone() if torch.is_tensor(v) and v.ndim > 0 else v) for k, v in s.items()}
            for idx, s in state["state"].items()
        }
        out.append({"state": per, "param_groups": copy.deepcopy(state["param_groups"])})
    return out


def stack_optimizer_states(states: Sequence[dict]) -> dict:
    """N unpacked optimizer `state_dict()`s of the same step as one packed state."""
    first = states[0]
    stacked = {}
    for idx, s in first["state"].items():
        stacked[idx] = {
            k: (
                torch.stack([st["state"][idx][k] for st in states])
                if torch.is_tensor(v) and v.ndim > 0
                else v
            )
            for k, v in s.items()
        }
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}
