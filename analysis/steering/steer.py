"""Steering generation with a ``SteeringVector``.

At every layer, ``strength * vector.scale * directions[L]`` is added to the
vector's hook point (``resid_post`` or ``mlp_out``) at every steered position,
prompt and generated tokens alike, and then each position's state is rescaled
to the norm it had before (the in-context-vectors paper's norm-preserving step;
``preserve_norm=False`` turns it off, which is what llama.cpp control vectors do).

Positions are absolute: ``start_position`` is an index into prompt + generated
tokens, BOS included. Generation here is greedy and tracks the absolute offset
of each forward pass, so steering touches the same positions with and without
the KV cache.

``steering(...)`` is a context manager whose hooks are removed on exit, also
after an exception or KeyboardInterrupt. ``attach_steering`` adds a lasting
hook that stays until ``handle.remove()``; TransformerLens leaves such hooks in
place when ``run_with_cache`` or ``hooks()`` remove their own.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from analysis.activations import pad_batch
from analysis.circuits import bos_prefix, capture
from analysis.models import model_info
from analysis.steering.vector import SteeringVector, VectorError

logger = logging.getLogger(__name__)


@dataclass
class SteeringState:
    """Offset of the current forward pass and the positions steered so far (for checks)."""

    start_position: int = 0
    offset: int = 0  # absolute position of the first token in the current forward pass
    steered_positions: set[int] = field(default_factory=set)


def _check_model(model: TransformerBridge, vector: SteeringVector) -> None:
    info = model_info(model)
    if vector.fingerprint != info.fingerprint:
        raise VectorError(
            f"The vector was built on {vector.model_id!r} (weights {vector.fingerprint[:12]}), "
            f"not on the loaded {info.name!r} (weights {info.fingerprint[:12]}); build it on this model."
        )
    if vector.n_layers != model.cfg.n_layers or vector.directions.shape[1] != model.cfg.d_model:
        raise VectorError(f"Vector shape {tuple(vector.directions.shape)} does not fit a model with "
                          f"{model.cfg.n_layers} layers of width {model.cfg.d_model}.")


def steering_hooks(
    vector: SteeringVector,
    strength: float,
    state: SteeringState,
    layers: Sequence[int] | None = None,
    preserve_norm: bool = True,
) -> list[tuple[str, object]]:
    """Forward hooks (name, function) that add the vector at the steered positions."""
    hooks = []
    for layer in layers if layers is not None else range(vector.n_layers):
        delta = strength * vector.scale * vector.directions[layer]

        def add_vector(activation: Tensor, hook, delta: Tensor = delta) -> Tensor:
            positions = state.offset + torch.arange(activation.shape[1])
            steered = positions >= state.start_position
            if not steered.any():
                return activation
            state.steered_positions.update(positions[steered].tolist())

            before = activation[:, steered]
            after = before + delta.to(activation.dtype)
            if preserve_norm:
                after = after * before.norm(dim=-1, keepdim=True) / after.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            activation = activation.clone()
            activation[:, steered] = after
            return activation

        hooks.append((vector.hook_name(layer), add_vector))
    return hooks


@contextmanager
def steering(
    model: TransformerBridge,
    vector: SteeringVector,
    strength: float,
    start_position: int = 0,
    layers: Sequence[int] | None = None,
    preserve_norm: bool = True,
) -> Iterator[SteeringState]:
    """Steer every forward pass inside the ``with`` block; the hooks go when it exits."""
    _check_model(model, vector)
    state = SteeringState(start_position=start_position)
    with model.hooks(fwd_hooks=steering_hooks(vector, strength, state, layers, preserve_norm)):
        yield state


@dataclass
class SteeringHandle:
    """A lasting steering hook; ``remove()`` takes it off."""

    state: SteeringState
    handles: list

    def remove(self) -> None:
        for handle in self.handles:
            handle.hook.remove()
        self.handles.clear()


def attach_steering(
    model: TransformerBridge, vector: SteeringVector, strength: float, start_position: int = 0,
    preserve_norm: bool = True,
) -> SteeringHandle:
    """Add steering hooks that stay until ``handle.remove()`` (they survive ``run_with_cache``)."""
    _check_model(model, vector)
    state = SteeringState(start_position=start_position)
    handles = [model.hook_dict[name].add_hook(function)
               for name, function in steering_hooks(vector, strength, state, None, preserve_norm)]
    return SteeringHandle(state, handles)


@dataclass(frozen=True)
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    text: str  # the generated continuation only


@torch.no_grad()
def generate(
    model: TransformerBridge,
    prompt: str | Sequence[int],
    max_new_tokens: int = 30,
    vector: SteeringVector | None = None,
    strength: float = 0.0,
    start_position: int = 0,
    use_kv_cache: bool = True,
    preserve_norm: bool = True,
    state: SteeringState | None = None,
) -> Generation:
    """Greedy generation, optionally steered; returns the prompt ids and the new tokens.

    ``prompt`` is text (one BOS is added where the model uses one) or token ids used as given.
    Pass ``state`` to read which positions were steered.
    """
    if isinstance(prompt, str):
        prompt_ids = bos_prefix(model) + model.tokenizer.encode(prompt, add_special_tokens=False)
    else:
        prompt_ids = [int(token) for token in prompt]
    if not prompt_ids:
        raise VectorError("The prompt is empty; give at least one token.")
    if max_new_tokens < 1:
        raise VectorError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")

    state = state or SteeringState()
    state.start_position = start_position
    hooks = []
    if vector is not None and strength != 0.0:
        _check_model(model, vector)
        hooks = steering_hooks(vector, strength, state, None, preserve_norm)

    eos = getattr(model.tokenizer, "eos_token_id", None) if model.tokenizer is not None else None
    device = model.cfg.device
    ids = list(prompt_ids)
    use_kv_cache = use_kv_cache and _kv_cache_works(model)
    with model.hooks(fwd_hooks=hooks):
        past = None
        for _ in range(max_new_tokens):
            if use_kv_cache:
                fresh = ids if past is None else ids[-1:]
                state.offset = len(ids) - len(fresh)
                logits, past = model(torch.tensor([fresh], device=device), prepend_bos=False,
                                     past_key_values=past, return_type="logits_and_cache")
            else:
                state.offset = 0
                logits = last_token_logits(model, torch.tensor([ids], device=device))[:, None]
            next_id = int(logits[0, -1].argmax())
            ids.append(next_id)
            if next_id == eos:
                break

    new_ids = ids[len(prompt_ids):]
    text = model.tokenizer.decode(new_ids, skip_special_tokens=True) if model.tokenizer is not None else ""
    return Generation(prompt_ids, new_ids, text)


@torch.no_grad()
def last_token_logits(model: TransformerBridge, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """Logits at each row's last position, unembedding only that position.

    Rows must be left padded (or unpadded), so the last column is every row's last
    real token. Unembedding one position instead of all saves most of the time of a
    forward pass for a large vocabulary (Gemma 3: 262k tokens). Softcapping of the
    final logits, where a model has it, is monotonic and left out: only greedy
    choices and log-probabilities of rescaled logits would differ, and callers
    needing exact log-probabilities use ``model(...)`` directly.
    """
    final_name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    last = capture(model, tokens, [final_name], attention_mask=mask)[final_name][:, -1]
    final = model.ln_final(last) if hasattr(model, "ln_final") else last
    logits = final @ model.W_U
    bias = getattr(model.unembed, "b_U", None) if hasattr(model, "unembed") else None
    return logits + bias if isinstance(bias, Tensor) else logits


@torch.no_grad()
def generate_batch(
    model: TransformerBridge,
    prompts: Sequence[str],
    max_new_tokens: int = 30,
    vector: SteeringVector | None = None,
    strength: float = 0.0,
    preserve_norm: bool = True,
) -> list[Generation]:
    """Greedy generation for several prompts at once (left padded), steering every position.

    No KV cache: each step reruns the padded batch, which on a CPU is still much
    faster than one prompt at a time for short continuations.
    """
    if not prompts:
        raise VectorError("The prompt list is empty.")
    state = SteeringState()
    hooks = []
    if vector is not None and strength != 0.0:
        _check_model(model, vector)
        hooks = steering_hooks(vector, strength, state, None, preserve_norm)

    prompt_ids = [bos_prefix(model) + model.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    sequences = [list(ids) for ids in prompt_ids]
    finished = [False] * len(prompts)
    eos = model.tokenizer.eos_token_id
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    with model.hooks(fwd_hooks=hooks):
        for _ in range(max_new_tokens):
            tokens, mask = pad_batch(sequences, pad, side="left")
            next_ids = last_token_logits(model, tokens.to(model.cfg.device), mask.to(model.cfg.device)).argmax(-1)
            for row, token in enumerate(next_ids.tolist()):
                if not finished[row]:
                    sequences[row].append(token)
                    finished[row] = token == eos
            if all(finished):
                break

    results = []
    for ids, prompt in zip(sequences, prompt_ids):
        new_ids = ids[len(prompt):]
        results.append(Generation(prompt, new_ids, model.tokenizer.decode(new_ids, skip_special_tokens=True)))
    return results


@torch.no_grad()
def _kv_cache_works(model: TransformerBridge) -> bool:
    """Check once per model that a cached decoding step matches a full forward pass.

    NOTE: in TransformerLens 4.3.0 the bridge's cached step is wrong for Hugging
    Face models with rotary attention (Gemma 3, Llama: logits off by ~17 on
    gemma-3-270m), and TL-native models return no cache. Where the check fails,
    generation recomputes the whole sequence at each step instead.
    """
    verdict = getattr(model, "_workbench_kv_cache_ok", None)
    if verdict is not None:
        return verdict

    tokens = torch.tensor([[1, 2, 3, 4]], device=model.cfg.device) % model.cfg.d_vocab
    full = model(tokens, prepend_bos=False)[0, -1]
    with warnings.catch_warnings():
        # transformers 5.25 warns that `past_key_values` will be renamed; the bridge passes it on.
        warnings.simplefilter("ignore", FutureWarning)
        _, past = model(tokens[:, :-1], prepend_bos=False, return_type="logits_and_cache")
        if past is None:  # TL-native models return no cache at all
            model._workbench_kv_cache_ok = False
            return False
        step, _ = model(tokens[:, -1:], prepend_bos=False, past_key_values=past, return_type="logits_and_cache")
    verdict = bool(torch.allclose(step[0, -1], full, atol=1e-3, rtol=1e-3))
    if not verdict:
        logger.warning("the KV cache of this TransformerLens bridge gives wrong logits for %s; "
                       "generating without it", model_info(model).name)
    model._workbench_kv_cache_ok = verdict
    return verdict
