"""The GGUF control-vector export, applied by llama.cpp itself to the default model's GGUF file."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from analysis.models import default_gguf_path, load_model
from analysis.steering.export import export_vector
from analysis.steering.icv import build_icv
from analysis.steering.steer import steering
from probes.demos import load_demos, shipped_demos

pytestmark = pytest.mark.integration
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36 "
                        "(builds from source in about 5 minutes)")

POSITIVE = [" good", " great", " delicious", " wonderful", " excellent", " amazing"]
NEGATIVE = [" bad", " terrible", " awful", " horrible", " disgusting", " poor"]
PROMPTS = ["The food at that restaurant was", "Honestly, the new phone is", "The weather this weekend will be"]


@pytest.fixture(scope="module")
def model():
    return load_model("gemma-3-270m")


@pytest.fixture(scope="module")
def llama():
    from analysis.steering.llama_cpp_check import LlamaCppModel

    return LlamaCppModel(default_gguf_path())


@pytest.fixture(scope="module")
def vector(model):
    pairs = [(pair.x, pair.y) for pair in load_demos(shipped_demos()["sentiment"]).pairs[:16]]
    return build_icv(model, pairs, show_progress=False)


def token_ids(model, words):
    return [model.tokenizer.encode(word, add_special_tokens=False)[0] for word in words]


def workbench_log_probs(model, prompt_ids, vector=None, strength=0.0):
    tokens = torch.tensor([prompt_ids])
    with torch.no_grad():
        if vector is None:
            return model(tokens, prepend_bos=False)[0, -1].log_softmax(-1).numpy()
        with steering(model, vector, strength, preserve_norm=False):
            return model(tokens, prepend_bos=False)[0, -1].log_softmax(-1).numpy()


def test_llama_cpp_reads_the_layer_numbering(model, llama, vector, tmp_path):
    # A large random push at one block: llama.cpp and the workbench must change the
    # next-token distribution the same way, which fails if the layer is off by one.
    prompt_ids = [model.tokenizer.bos_token_id] + model.tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    directions = torch.zeros_like(vector.directions)
    directions[6] = 300 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    push = replace(vector, directions=directions, scale=1.0)
    path = export_vector(push, "gguf", tmp_path / "push.gguf", strength=1.0)

    base_llama = llama.next_token_log_probs(prompt_ids)
    llama.set_control_vector(path)
    try:
        steered_llama = llama.next_token_log_probs(prompt_ids)
    finally:
        llama.set_control_vector(None)
    base_ours = workbench_log_probs(model, prompt_ids)
    steered_ours = workbench_log_probs(model, prompt_ids, push, 1.0)

    top = np.argsort(-base_ours)[:2000]
    change_llama, change_ours = (steered_llama - base_llama)[top], (steered_ours - base_ours)[top]
    assert np.corrcoef(change_llama, change_ours)[0, 1] > 0.95
    assert np.abs(change_llama).mean() == pytest.approx(np.abs(change_ours).mean(), rel=0.2)


def test_llama_cpp_moves_sentiment_like_workbench(model, llama, vector, tmp_path):
    strength = 4.0
    path = export_vector(vector, "gguf", tmp_path / "sentiment.gguf", strength=strength)
    positive, negative = token_ids(model, POSITIVE), token_ids(model, NEGATIVE)

    def measure(log_probs):
        return float(np.mean(log_probs[positive]) - np.mean(log_probs[negative]))

    for prompt in PROMPTS:
        prompt_ids = [model.tokenizer.bos_token_id] + model.tokenizer.encode(prompt, add_special_tokens=False)
        base_llama = measure(llama.next_token_log_probs(prompt_ids))
        llama.set_control_vector(path)
        try:
            steered_llama = measure(llama.next_token_log_probs(prompt_ids))
        finally:
            llama.set_control_vector(None)
        ours = measure(workbench_log_probs(model, prompt_ids, vector, strength)) - measure(
            workbench_log_probs(model, prompt_ids))
        theirs = steered_llama - base_llama
        assert abs(ours) > 0.05, f"workbench steering barely moves the measure on {prompt!r}"
        assert np.sign(theirs) == np.sign(ours), f"{prompt!r}: llama.cpp {theirs:+.3f}, workbench {ours:+.3f}"
