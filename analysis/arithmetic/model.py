"""The native TransformerLens model of a multiplication run."""

from __future__ import annotations

import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from analysis.arithmetic.config import ModelConfig, RunConfig
from analysis.models import load_native
from probes.arithmetic import VOCAB, ProblemSpec


def bridge_config(model: ModelConfig, problem: ProblemSpec, seed: int) -> TransformerBridgeConfig:
    """Return the ``TransformerBridgeConfig``: GPT-2 style, LayerNorm, learned positions."""
    return TransformerBridgeConfig(
        d_model=model.d_model, d_head=model.head_dim, n_heads=model.n_heads, n_layers=model.n_layers,
        n_ctx=problem.seq_len, d_vocab=len(VOCAB), d_mlp=model.d_mlp, act_fn=model.act_fn,
        normalization_type="LN", positional_embedding_type="standard", attention_dir="causal",
        seed=seed, model_name="arith",
    )


def build_model(config: RunConfig, state_dict: dict[str, torch.Tensor] | None = None) -> TransformerBridge:
    """Build the run's model, freshly initialised from its seed or with ``state_dict``."""
    torch.manual_seed(config.train.seed)
    name = f"arith-{config.problem.n_a}x{config.problem.n_b}-{config.preset}"
    return load_native(bridge_config(config.model, config.problem, config.train.seed),
                       state_dict=state_dict, name=name)
