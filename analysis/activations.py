"""Run prompts through a model in batches and keep chosen activations in the store.

``cached_activations`` is the one entry point: it decides the token ids
(exactly one BOS where the model expects one, never a literal "<bos>" in the
text), looks the entry up in the ``ActivationStore``, and only runs the model
on a miss.

Batches are padded on ``padding_side`` with an attention mask, and the bridge
derives position ids from the mask, so every real token's activations equal
those of its prompt run alone. Stored tensors are always laid out as if right
padded: ``[prompt, pos, ...]`` for positions "all" (with ``entry.mask()``),
``[prompt, ...]`` for "last" (the last real token), ``[prompt, k, ...]`` for a
list of k positions. Attention patterns (``hook_pattern``, ``hook_attn_scores``:
``[head, query, key]`` per prompt) are realigned on both position axes.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from typing import Sequence

import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from analysis.circuits import bos_prefix, capture
from analysis.models import model_info
from analysis.store import ActivationStore, StoreEntry, StoreError, StoreKey

logger = logging.getLogger(__name__)

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def encode_prompts(model: TransformerBridge, prompts: Sequence[str]) -> list[list[int]]:
    """Tokenize prompts with exactly one BOS (where the model uses one) and check their length."""
    if not prompts:
        raise StoreError("The prompt list is empty; pass at least one prompt.")
    if model.tokenizer is None:
        raise StoreError("This model has no tokenizer; pass token_ids instead of prompts.")
    prefix = bos_prefix(model)
    encoded = []
    for index, prompt in enumerate(prompts):
        ids = model.tokenizer.encode(prompt, add_special_tokens=False)
        if not ids:
            raise StoreError(f"Prompt {index} ({prompt!r}) is empty after tokenization; remove it.")
        encoded.append(prefix + ids)
    return encoded


def resolve_hooks(model: TransformerBridge, patterns: Sequence[str]) -> list[str]:
    """Expand glob patterns (``blocks.*.hook_resid_pre``) and check every hook name exists."""
    names = list(model.hook_dict)
    resolved: list[str] = []
    for pattern in patterns:
        if any(char in pattern for char in "*?["):
            matches = fnmatch.filter(names, pattern)
        else:
            matches = [pattern] if pattern in names else []
        if not matches:
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.6)
            hint = f" Close matches: {', '.join(close)}." if close else " See model.hook_dict for all names."
            raise StoreError(f"Hook {pattern!r} does not exist in this model.{hint}")
        resolved.extend(match for match in matches if match not in resolved)
    if not resolved:
        raise StoreError("No hooks were requested; pass at least one hook name or pattern.")
    return resolved


def _positions_label(positions: str | Sequence[int]) -> str:
    if isinstance(positions, str):
        if positions not in ("all", "last"):
            raise StoreError(f"positions must be 'all', 'last' or a list of integers, not {positions!r}.")
        return positions
    return ",".join(str(int(position)) for position in positions)


def _is_pattern_hook(hook: str) -> bool:
    return hook.endswith(("hook_pattern", "hook_attn_scores"))


def _take(activation: torch.Tensor, hook: str, real: torch.Tensor, positions: str | list[int], width: int):
    """Pick one prompt's stored positions out of its padded activation ([pos, ...] or [head, q, k])."""
    if _is_pattern_hook(hook):
        aligned = activation[:, real][:, :, real]  # [head, q, k] on real tokens only
        if positions == "all":
            padded = activation.new_zeros(activation.shape[0], width, width)
            padded[:, : len(real), : len(real)] = aligned
            return padded
        if positions == "last":
            row = activation.new_zeros(activation.shape[0], width)
            row[:, : len(real)] = aligned[:, -1]
            return row
        rows = activation.new_zeros(activation.shape[0], len(positions), width)
        rows[:, :, : len(real)] = aligned[:, positions]
        return rows

    aligned = activation[real]
    if positions == "all":
        padded = activation.new_zeros((width,) + activation.shape[1:])
        padded[: len(real)] = aligned
        return padded
    if positions == "last":
        return aligned[-1]
    return aligned[positions]


def pad_batch(
    token_ids: Sequence[Sequence[int]], pad_id: int = 0, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows of token ids to one length on ``side``; return tokens and the attention mask."""
    length = max(len(ids) for ids in token_ids)
    tokens = torch.full((len(token_ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), length), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        span = slice(0, len(ids)) if side == "right" else slice(length - len(ids), length)
        tokens[row, span] = torch.tensor(list(ids))
        mask[row, span] = 1
    return tokens, mask


@torch.no_grad()
def run_and_collect(
    model: TransformerBridge,
    token_ids: list[list[int]],
    hooks: list[str],
    positions: str | list[int] = "all",
    batch_size: int = 16,
    padding_side: str = "right",
    dtype: str = "float32",
    show_progress: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run the model over ``token_ids`` in padded batches; return stacked activations and the mask."""
    if padding_side not in ("left", "right"):
        raise StoreError(f"padding_side must be 'left' or 'right', not {padding_side!r}.")
    n_ctx = model.cfg.n_ctx
    for index, ids in enumerate(token_ids):
        if len(ids) > n_ctx:
            raise StoreError(f"Prompt {index} has {len(ids)} tokens, more than the context window "
                             f"({n_ctx}); shorten it or split it.")
    if not isinstance(positions, str):
        shortest = min(len(ids) for ids in token_ids)
        bad = [p for p in positions if not -shortest <= p < shortest]
        if bad:
            raise StoreError(f"Positions {bad} do not exist in the shortest prompt ({shortest} tokens).")

    width = max(len(ids) for ids in token_ids)
    pad_id = getattr(model.tokenizer, "pad_token_id", None) if model.tokenizer is not None else None
    pad_id = 0 if pad_id is None else pad_id
    collected: dict[str, list[torch.Tensor]] = {hook: [] for hook in hooks}
    cast = _TORCH_DTYPES[dtype]

    batches = range(0, len(token_ids), batch_size)
    for start in tqdm(batches, desc="forward passes", disable=not show_progress, leave=False):
        batch = token_ids[start : start + batch_size]
        tokens, mask = pad_batch(batch, pad_id, padding_side)

        cache = capture(model, tokens.to(model.cfg.device), hooks, attention_mask=mask.to(model.cfg.device))
        for row in range(len(batch)):
            real = mask[row].nonzero().squeeze(-1)
            for hook in hooks:
                picked = _take(cache[hook][row].detach().cpu(), hook, real, positions, width)
                collected[hook].append(picked.to(cast))

    stacked = {hook: torch.stack(rows) for hook, rows in collected.items()}
    full_mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        full_mask[row, : len(ids)] = 1
    if positions == "last":
        full_mask = torch.ones((len(token_ids), 1), dtype=torch.long)
    elif not isinstance(positions, str):
        full_mask = torch.ones((len(token_ids), len(positions)), dtype=torch.long)
    return stacked, full_mask


def cached_activations(
    model: TransformerBridge,
    prompts: Sequence[str] | None = None,
    hooks: Sequence[str] = ("blocks.*.hook_resid_post",),
    *,
    token_ids: Sequence[Sequence[int]] | None = None,
    positions: str | Sequence[int] = "all",
    store: ActivationStore | None = None,
    batch_size: int = 16,
    padding_side: str = "right",
    dtype: str = "float32",
    show_progress: bool = True,
) -> StoreEntry:
    """Return the store entry for these prompts and hooks, computing it on a miss.

    Pass either ``prompts`` (text; BOS is added here) or ``token_ids`` (used as given).
    """
    if (prompts is None) == (token_ids is None):
        raise StoreError("Pass exactly one of prompts or token_ids.")
    if dtype not in _TORCH_DTYPES:
        raise StoreError(f"dtype must be one of {', '.join(_TORCH_DTYPES)}, not {dtype!r}.")
    if token_ids is not None:
        ids = [list(map(int, row)) for row in token_ids]
        if not ids or any(not row for row in ids):
            raise StoreError("token_ids is empty or has an empty row; pass at least one token per prompt.")
        texts = None
    else:
        ids = encode_prompts(model, list(prompts))
        texts = list(prompts)

    hook_names = resolve_hooks(model, hooks)
    label = _positions_label(positions)
    info = model_info(model)
    key = StoreKey(info.name, info.fingerprint, tuple(tuple(row) for row in ids), tuple(hook_names), label, dtype)

    store = store or ActivationStore()
    entry = store.get(key)
    if entry is not None:
        logger.info("activation store hit %s", entry.id[:12])
        return entry

    logger.info("activation store miss: %d prompts x %d hooks", len(ids), len(hook_names))
    picked = positions if isinstance(positions, str) else [int(p) for p in positions]
    tensors, mask = run_and_collect(model, ids, hook_names, picked, batch_size, padding_side, dtype, show_progress)
    return store.put(key, tensors, mask, prompts=texts)
