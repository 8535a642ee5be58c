"""Per-head OV circuits, effective embeddings and norm handling on a TransformerBridge.

Conventions: hook names are TransformerLens's familiar aliases
(``blocks.{L}.hook_resid_pre``, ``blocks.{L}.attn.hook_z``, ...). Norms are applied
by calling the bridge's own norm components (``blocks.{L}.ln1``, ``ln1_post`` where
the architecture has one, ``ln_final``), so Gemma's ``(1 + w)`` RMSNorm and its
post-attention norm are applied exactly as the model applies them. The bridge
stays in its default mode; nothing here folds weights.

Grouped-query attention: query head ``h`` reads key/value head
``h // (n_heads // n_kv_heads)``, the same grouping as ``repeat_interleave`` in
Hugging Face Llama's ``repeat_kv``.
"""

from __future__ import annotations

import re

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

if TYPE_CHECKING:
    from analysis.store import ActivationStore


def n_kv_heads(model: TransformerBridge) -> int:
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def kv_head_index(n_heads: int, n_kv: int) -> Int[Tensor, "n_heads"]:
    """Return, for each query head, the index of the key/value head it reads."""
    if n_heads % n_kv != 0:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_key_value_heads ({n_kv}).")
    return torch.arange(n_heads) // (n_heads // n_kv)


def per_head_value_weights(
    model: TransformerBridge,
) -> tuple[Float[Tensor, "layer head d_model d_head"], Float[Tensor, "layer head d_head d_model"]]:
    """Return W_V expanded to one matrix per query head, and W_O."""
    w_v = model.W_V  # [layer, n_kv_heads, d_model, d_head]
    w_o = model.W_O  # [layer, n_heads, d_head, d_model]
    index = kv_head_index(model.cfg.n_heads, w_v.shape[1]).to(w_v.device)
    return w_v.index_select(1, index), w_o


def block_component(model: TransformerBridge, layer: int, name: str) -> torch.nn.Module | None:
    """Return ``blocks[layer].<name>`` (``ln1``, ``ln1_post``, ...) or None if the architecture lacks it."""
    block = model.blocks[layer]
    try:
        return block.get_submodule(name) if name in dict(block.named_children()) else None
    except AttributeError:
        return None


def ov_head_outputs(
    model: TransformerBridge,
    layer: int,
    resid: Float[Tensor, "n d_model"],
    w_v: Float[Tensor, "head d_model d_head"],
    w_o: Float[Tensor, "head d_head d_model"],
) -> Float[Tensor, "head n d_model"]:
    """Pass residual vectors through ``ln1`` and each head's OV circuit, then ``ln1_post`` if present.

    Value and output biases are left out: the OV circuit is the bilinear map
    W_V W_O, as in the successor-heads paper.
    """
    ln1 = block_component(model, layer, "ln1")
    normed = ln1(resid) if ln1 is not None else resid
    values = torch.einsum("nm,hmd->hnd", normed, w_v)
    out = torch.einsum("hnd,hdm->hnm", values, w_o)
    ln1_post = block_component(model, layer, "ln1_post")
    if ln1_post is not None:
        out = ln1_post(out)
    return out


def unembed_columns(
    model: TransformerBridge, resid: Float[Tensor, "... d_model"], token_ids: Tensor | None
) -> Float[Tensor, "... n_tokens"]:
    """Apply ``ln_final`` and the unembedding, restricted to ``token_ids`` (all tokens when None)."""
    final = model.ln_final(resid) if hasattr(model, "ln_final") else resid
    w_u = model.W_U if token_ids is None else model.W_U[:, token_ids]
    return final @ w_u


def bos_prefix(model: TransformerBridge) -> list[int]:
    """Return ``[bos_id]`` when the model expects a BOS token at the start, else ``[]``."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or tokenizer.bos_token_id is None:
        return []
    if not getattr(model.cfg, "default_prepend_bos", True):
        return []
    return [int(tokenizer.bos_token_id)]


@torch.no_grad()
def mlp0_embeddings(model: TransformerBridge, token_ids: list[int]) -> Float[Tensor, "n d_model"]:
    """Return the first MLP's output for each token run alone, with attention layer 0 removed.

    This is the successor-heads paper's effective token embedding: MLP0 applied
    to the token embedding (positional embeddings and attention layer 0 zeroed,
    so only token identity enters). The output includes any post-MLP norm
    (Gemma's ``post_feedforward_layernorm``), because that is what reaches the
    residual stream.
    """
    tokens = torch.tensor(token_ids, device=model.cfg.device).unsqueeze(1)
    captured: dict[str, Tensor] = {}

    def zero(activation: Tensor, hook) -> Tensor:
        return torch.zeros_like(activation)

    def keep(activation: Tensor, hook) -> None:
        captured["mlp_out"] = activation.detach()

    hooks = [("blocks.0.hook_attn_out", zero), ("blocks.0.hook_mlp_out", keep)]
    if "hook_pos_embed" in model.hook_dict:
        hooks.append(("hook_pos_embed", zero))
    model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=1, prepend_bos=False)
    return captured["mlp_out"][:, 0, :]


def resid_pre_alone(
    model: TransformerBridge, token_ids: list[int], store: "ActivationStore | None" = None
) -> Float[Tensor, "layer n d_model"]:
    """Return ``blocks.{L}.hook_resid_pre`` at each token run alone after BOS, for every layer.

    The activations come from the activation store (computed on a miss).
    """
    from analysis.activations import cached_activations

    prefix = bos_prefix(model)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    entry = cached_activations(
        model, token_ids=[prefix + [t] for t in token_ids], hooks=names, positions="last",
        store=store, show_progress=False,
    )
    return torch.stack([entry.tensor(name) for name in names]).to(model.cfg.device)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the activations it needs are captured."""


@torch.no_grad()
def capture(
    model: TransformerBridge,
    tokens: Tensor,
    hooks: list[str],
    attention_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """Run ``tokens`` and return the activations at ``hooks``, stopping after the last block needed.

    When every hook lies in blocks 0..L, the pass ends at ``blocks.{L}.hook_resid_post``
    (the last hook point of block L), which skips later blocks and the unembedding,
    the costliest matmul for a large vocabulary (Gemma 3: 262k tokens).
    ``stop_at_layer`` cannot do this for the last block, because it stops before a block.
    """
    captured: dict[str, Tensor] = {}

    def keeper(name: str):
        # Keyed by the requested name: hook.name may be the canonical alias (hook_out for hook_resid_post).
        def keep(activation: Tensor, hook) -> None:
            captured[name] = activation.detach()
        return keep

    def stop(activation: Tensor, hook) -> None:
        raise _StopForward

    fwd_hooks = [(name, keeper(name)) for name in hooks]
    last_layer = last_block_needed(hooks)
    if last_layer is not None:
        fwd_hooks.append((f"blocks.{last_layer}.hook_resid_post", stop))
    try:
        with model.hooks(fwd_hooks=fwd_hooks):
            model(tokens, prepend_bos=False, attention_mask=attention_mask)
    except _StopForward:
        pass
    return captured


def last_block_needed(hooks: list[str]) -> int | None:
    """Return the highest block index among ``hooks``, or None if one lies outside the blocks."""
    layers = []
    for hook in hooks:
        match = re.match(r"^blocks\.(\d+)\.", hook)
        if match is not None:
            layers.append(int(match.group(1)))
        elif not (hook in ("hook_embed", "hook_pos_embed") or hook.startswith(("embed.", "pos_embed."))):
            return None
    return max(layers) if layers else 0


def norm_denominator(model: TransformerBridge, x: Tensor, module: torch.nn.Module) -> Tensor:
    """Return the norm's divisor for ``x`` (RMS, or standard deviation for LayerNorm)."""
    original = getattr(module, "_original_component", module)
    eps = getattr(original, "eps", None) or getattr(original, "variance_epsilon", None)
    if eps is None:
        eps = getattr(model.cfg, "eps", 1e-5)
    if str(model.cfg.normalization_type).upper().startswith("RMS"):
        return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return (x.var(-1, keepdim=True, unbiased=False) + eps).sqrt()


def linearized_norm(
    model: TransformerBridge, module: torch.nn.Module, component: Tensor, total: Tensor
) -> Tensor:
    """Apply ``module`` to ``component`` with the divisor frozen at its value for ``total``.

    This is how direct logit attribution treats a norm: the divisor is computed
    once on the full residual stream, so the contributions of all components
    add up to the norm's output (less its bias). ``f(c) - f(0)`` removes the
    bias, and multiplying by ``s(c) / s(total)`` swaps the component's own divisor
    for the frozen one.
    """
    bias = module(torch.zeros(component.shape[-1], device=component.device, dtype=component.dtype))
    scaled = module(component) - bias
    return scaled * norm_denominator(model, component, module) / norm_denominator(model, total, module)
