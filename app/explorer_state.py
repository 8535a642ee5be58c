"""Cached reads for the Activation explorer page.

Every function is keyed by the model name string and the prompt text, never by
a model or store object. The activations themselves live in the activation
store under ``$INTERP_WORKBENCH_HOME``, so a prompt seen before, also by an
earlier server process, is read from disk without a forward pass. The caches
here hold only what the page draws (tokens, patterns, lens cells, attribution
grids), never a ``StoreEntry``: an entry that the store evicts would go stale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import streamlit as st
from transformer_lens.model_bridge import TransformerBridge

import state
from analysis.explorer import LensCell, attention_pattern, head_attribution, logit_lens, prompt_entry, prompt_tokens
from analysis.store import StoreEntry

logger = logging.getLogger(__name__)

MAX_PROMPT_TOKENS = 64  # per-token heatmaps stop being readable beyond this many positions
MAX_CACHED_PROMPTS = 32  # prompts kept per cached function, a few MB each at most


@dataclass(frozen=True)
class PromptView:
    """Tokens and attention patterns of one prompt: the part of the page that needs no choice of layer or target."""

    entry_id: str  # the activation-store entry name (sha256 of its key)
    token_ids: list[int]  # BOS included
    tokens: list[str]  # each token decoded alone, BOS included
    patterns: list[list[list[list[float]]]]  # [layer][head][query][key]


def prompt_token_count(model: TransformerBridge, prompt: str) -> int:
    """Return the number of tokens of ``prompt`` without BOS, as the store will encode it."""
    return len(model.tokenizer.encode(prompt, add_special_tokens=False))


def _entry(model_name: str, prompt: str) -> StoreEntry:
    model = state.get_model(model_name)
    # A store miss runs the model with hooks, which must not overlap another session's hooked run.
    with state._model_lock(model_name):
        return prompt_entry(model, prompt)


@st.cache_data(show_spinner="Reading the prompt's activations (one forward pass unless the store has them)…",
               max_entries=MAX_CACHED_PROMPTS)
def prompt_view(model_name: str, prompt: str) -> PromptView:
    """Return the tokens and every layer's attention patterns of ``prompt``."""
    model = state.get_model(model_name)
    entry = _entry(model_name, prompt)
    patterns = [attention_pattern(entry, layer).tolist() for layer in range(model.cfg.n_layers)]
    logger.info("explorer prompt %r read from store entry %s", prompt, entry.id[:12])
    return PromptView(entry.id, list(entry.token_ids[0]), prompt_tokens(model, entry), patterns)


@st.cache_data(show_spinner="Reading every layer through the unembedding (logit lens)…",
               max_entries=MAX_CACHED_PROMPTS)
def lens_table(model_name: str, prompt: str, k: int) -> list[list[list[LensCell]]]:
    """Return ``analysis.explorer.logit_lens``: ``[layer][position][rank]`` of the top ``k`` tokens."""
    return logit_lens(state.get_model(model_name), _entry(model_name, prompt), k)


@st.cache_data(show_spinner="Computing each head's direct logit attribution…", max_entries=4 * MAX_CACHED_PROMPTS)
def attribution_grid(model_name: str, prompt: str, token_id: int, position: int) -> list[list[float]]:
    """Return each head's direct logit attribution to ``token_id`` at ``position``, as ``[layer][head]`` logits."""
    grid = head_attribution(state.get_model(model_name), _entry(model_name, prompt), token_id, position)
    return grid.tolist()
