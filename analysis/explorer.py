"""Activation explorer: what one prompt looks like inside the model, read from the store.

Every function takes a ``StoreEntry`` built by ``prompt_entry`` plus the model's
weights; none runs a forward pass, so a prompt seen before (even by another
process) is shown from disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from analysis.activations import cached_activations
from analysis.circuits import block_component, linearized_norm, per_head_value_weights, unembed_columns
from analysis.store import ActivationStore, StoreEntry


def explorer_hooks(model: TransformerBridge) -> list[str]:
    """Hooks the explorer needs: patterns, head outputs, attention totals and every residual stream."""
    hooks = []
    for layer in range(model.cfg.n_layers):
        hooks += [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_z",
                  f"blocks.{layer}.hook_resid_post"]
        if block_component(model, layer, "ln1_post") is not None:
            hooks.append(f"blocks.{layer}.ln1_post.hook_in")
    return hooks


def prompt_entry(model: TransformerBridge, prompt: str, store: ActivationStore | None = None) -> StoreEntry:
    """Return the store entry holding everything the explorer shows for ``prompt``."""
    return cached_activations(model, [prompt], explorer_hooks(model), positions="all", store=store,
                              show_progress=False)


def prompt_tokens(model: TransformerBridge, entry: StoreEntry) -> list[str]:
    """Return the prompt's tokens as the model reads them (BOS included), one string per token."""
    return [model.tokenizer.decode([token]) for token in entry.token_ids[0]]


def attention_pattern(entry: StoreEntry, layer: int) -> Float[Tensor, "head query key"]:
    n = len(entry.token_ids[0])
    return entry.tensor(f"blocks.{layer}.attn.hook_pattern")[0, :, :n, :n]


@dataclass(frozen=True)
class LensCell:
    token: str
    probability: float


@torch.no_grad()
def logit_lens(
    model: TransformerBridge, entry: StoreEntry, k: int = 5
) -> list[list[list[LensCell]]]:
    """Top-k next tokens read off each layer's ``hook_resid_post`` with ``ln_final`` and ``W_U``.

    Returns ``[layer][position][rank]``. The last layer's row equals the model's own prediction.
    """
    n = len(entry.token_ids[0])
    table = []
    for layer in range(model.cfg.n_layers):
        resid = entry.tensor(f"blocks.{layer}.hook_resid_post")[0, :n].to(model.W_U.device)
        probabilities = unembed_columns(model, resid, None).softmax(-1)
        top = probabilities.topk(k, dim=-1)
        table.append([
            [LensCell(model.tokenizer.decode([token]), round(float(p), 4))
             for token, p in zip(top.indices[position].tolist(), top.values[position].tolist())]
            for position in range(n)
        ])
    return table


@torch.no_grad()
def head_attribution(
    model: TransformerBridge, entry: StoreEntry, token_id: int, position: int = -1
) -> Float[Tensor, "layer head"]:
    """Direct logit attribution of every head, at ``position``, to the logit of ``token_id``.

    Norms after the head (Gemma's post-attention norm, ``ln_final``) are linearized
    at the divisors of the cached forward pass.
    """
    n = len(entry.token_ids[0])
    position = position % n
    _, w_o = per_head_value_weights(model)
    final = entry.tensor(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")[0, position].to(w_o.device)
    direction = model.W_U[:, token_id]

    rows = []
    for layer in range(model.cfg.n_layers):
        z = entry.tensor(f"blocks.{layer}.attn.hook_z")[0, position].to(w_o.device)  # [head, d_head]
        head_out = torch.einsum("hd,hdm->hm", z, w_o[layer])
        ln1_post = block_component(model, layer, "ln1_post")
        if ln1_post is not None:
            total = entry.tensor(f"blocks.{layer}.ln1_post.hook_in")[0, position].to(w_o.device)
            head_out = linearized_norm(model, ln1_post, head_out, total)
        if hasattr(model, "ln_final"):
            head_out = linearized_norm(model, model.ln_final, head_out, final)
        rows.append(head_out @ direction)
    return torch.stack(rows)
