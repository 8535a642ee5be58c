"""Per-head weights under grouped-query attention, and hook hygiene."""

import pytest
import torch

from analysis.circuits import kv_head_index, per_head_value_weights
from analysis.models import load_model
from native_models import native_model, write_tiny_llama_folder

WORDS = [str(i) for i in range(10)] + ["Monday", "Tuesday", "Wednesday"]


@pytest.fixture(scope="module")
def gqa_native():
    return native_model(n_heads=4, n_key_value_heads=2)


@pytest.fixture(scope="module")
def gqa_llama(tmp_path_factory):
    folder = write_tiny_llama_folder(tmp_path_factory.mktemp("llama"), WORDS)
    return load_model(str(folder))


def test_kv_head_index_groups_query_heads():
    assert kv_head_index(4, 2).tolist() == [0, 0, 1, 1]
    assert kv_head_index(8, 1).tolist() == [0] * 8
    with pytest.raises(ValueError, match="multiple"):
        kv_head_index(4, 3)


@pytest.mark.parametrize("model_fixture", ["gqa_native", "gqa_llama"])
def test_head_reads_its_kv_head(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    w_v, _ = per_head_value_weights(model)
    grouped = model.W_V  # [layer, n_kv, d_model, d_head]
    assert grouped.shape[1] == 2
    for head in range(4):
        assert torch.equal(w_v[:, head], grouped[:, head // 2])


@pytest.mark.parametrize("model_fixture", ["gqa_native", "gqa_llama"])
def test_per_head_outputs_sum_to_attention_output(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    tokens = torch.tensor([[1, 5, 7, 3, 2, 9]])
    _, cache = model.run_with_cache(tokens, prepend_bos=False)
    _, w_o = per_head_value_weights(model)
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]  # [batch, pos, head, d_head]
        per_head = torch.einsum("bphd,hdm->bphm", z, w_o[layer])
        bias = model.blocks[layer].attn.o.bias
        total = per_head.sum(2) + (bias if bias is not None else 0)
        torch.testing.assert_close(total, cache[f"blocks.{layer}.attn.hook_out"], atol=1e-5, rtol=0)


def test_value_weights_match_value_activations(gqa_native):
    model = gqa_native
    tokens = torch.tensor([[3, 1, 4, 1, 5]])
    _, cache = model.run_with_cache(tokens, prepend_bos=False)
    normed = cache["blocks.0.ln1.hook_out"]
    expected = torch.einsum("bpm,kmd->bpkd", normed, model.W_V[0]) + model.b_V[0]
    torch.testing.assert_close(expected, cache["blocks.0.attn.hook_v"], atol=1e-5, rtol=0)


def test_raising_hook_leaves_no_hook(gqa_native):
    model = gqa_native
    tokens = torch.tensor([[2, 4, 6, 8]])
    baseline = model(tokens, prepend_bos=False)

    def explode(activation, hook):
        raise RuntimeError("hook failed on purpose")

    with pytest.raises(RuntimeError, match="on purpose"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", explode)], prepend_bos=False)

    leftover = [name for name, point in model.hook_dict.items() if point._forward_hooks]
    assert leftover == []
    assert torch.equal(model(tokens, prepend_bos=False), baseline)
