"""Activation explorer on the store: tokens, patterns, logit lens, head attribution."""

import gc

import psutil
import pytest
import torch

from analysis.explorer import attention_pattern, head_attribution, logit_lens, prompt_entry, prompt_tokens
from analysis.models import load_model
from analysis.store import ActivationStore
from analysis.successor import search_heads
from probes.ordinal import get_tasks, tokenize_task

pytestmark = pytest.mark.integration

PROMPT = "Monday Tuesday Wednesday Thursday"


@pytest.fixture(scope="module")
def model():
    return load_model("gemma-3-270m")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return ActivationStore(tmp_path_factory.mktemp("store"))


def test_tokens_have_one_bos(model, store):
    entry = prompt_entry(model, PROMPT, store)
    tokens = prompt_tokens(model, entry)
    assert tokens[0] == "<bos>"
    assert tokens.count("<bos>") == 1
    assert entry.token_ids[0].count(model.tokenizer.bos_token_id) == 1
    assert entry.manifest["prompts"] == [PROMPT]


def test_patterns_are_causal_distributions(model, store):
    pattern = attention_pattern(prompt_entry(model, PROMPT, store), layer=3)
    assert pattern.shape == (4, 5, 5)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(4, 5), atol=1e-5, rtol=0)
    assert torch.all(pattern.triu(1) == 0)


def test_logit_lens_last_layer_matches_model(model, store):
    entry = prompt_entry(model, PROMPT, store)
    lens = logit_lens(model, entry, k=1)
    logits = model(torch.tensor(entry.token_ids), prepend_bos=False)
    expected = model.tokenizer.decode([logits[0, -1].argmax().item()])
    assert lens[-1][-1][0].token == expected == " Friday"


def test_head_attribution_finds_context_head(model, store):
    entry = prompt_entry(model, PROMPT, store)
    friday = model.tokenizer.encode(" Friday", add_special_tokens=False)[0]
    attribution = head_attribution(model, entry, friday)
    assert attribution.shape == (18, 4)
    best = divmod(attribution.flatten().argmax().item(), 4)
    assert best == (11, 2)  # the strongest contextual successor head on the default model


def test_reopened_prompt_needs_no_forward(model, store, monkeypatch):
    prompt_entry(model, PROMPT, store)

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran although the entry is in the store")

    monkeypatch.setattr(model, "run_with_cache", forbidden)
    fresh_store = ActivationStore(store.root)  # as after a server restart
    entry = prompt_entry(model, PROMPT, fresh_store)
    assert prompt_tokens(model, entry)[1] == "Monday"


def test_memory_flat_over_cached_runs(model, store):
    tasks = [tokenize_task(task, model.tokenizer) for task in get_tasks()]
    process = psutil.Process()
    for run in range(20):
        search_heads(model, tasks, methods=("ov_own_layer", "contextual_dla"), store=store)
        gc.collect()
        if run == 1:
            after_second = process.memory_info().rss
    assert process.memory_info().rss <= after_second * 1.05
