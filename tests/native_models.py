"""Small models built in the tests: native TransformerLens models and local Hugging Face folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformer_lens.config import TransformerBridgeConfig

from analysis.circuits import block_component, mlp0_embeddings
from analysis.models import load_native


def native_config(**overrides) -> TransformerBridgeConfig:
    """A Llama-style native config: RMSNorm, rotary, gated SiLU MLP."""
    fields = dict(
        d_model=64, d_head=16, n_heads=4, n_layers=2, n_ctx=32, d_vocab=64, d_mlp=128,
        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        gated_mlp=True, seed=0,
    )
    fields.update(overrides)
    return TransformerBridgeConfig(**fields)


@torch.no_grad()
def plant_successor_head(model, layer: int, head: int, token_ids: list[int]) -> None:
    """Set one head's W_V and W_O so its OV circuit maps token i's MLP0 embedding to token i+1.

    The value matrix reads each item's normalized effective embedding into its own
    coordinate (least squares), and the output matrix writes the unembedding
    direction of the next item, made orthonormal over the task's tokens so the
    argmax is exact.
    """
    d_head = model.cfg.d_head
    n_items = len(token_ids)
    if n_items > d_head:
        raise ValueError("the planted head needs d_head >= number of items")

    state = model.state_dict()
    ids = torch.tensor(token_ids)
    # Orthonormal unembedding columns for the task tokens.
    basis, _ = torch.linalg.qr(torch.randn(model.cfg.d_model, n_items, generator=torch.Generator().manual_seed(1)))
    unembed = state["unembed.weight"].clone()  # [d_vocab, d_model]
    unembed[ids] = basis.T
    model.load_state_dict({"unembed.weight": unembed}, strict=False)

    ln1 = block_component(model, layer, "ln1")
    normed = ln1(mlp0_embeddings(model, token_ids))  # [n_items, d_model]
    w_v = torch.zeros(model.cfg.d_model, d_head)
    w_v[:, :n_items] = torch.linalg.pinv(normed)  # normed @ w_v = identity on the items
    w_o = torch.zeros(d_head, model.cfg.d_model)
    for i in range(n_items - 1):
        w_o[i] = basis[:, i + 1]

    v_weight = state[f"blocks.{layer}.attn.v.weight"].clone()  # [n_kv * d_head, d_model]
    o_weight = state[f"blocks.{layer}.attn.o.weight"].clone()  # [d_model, n_heads * d_head]
    group = model.cfg.n_heads // (model.cfg.n_key_value_heads or model.cfg.n_heads)
    kv = head // group
    v_weight[kv * d_head : (kv + 1) * d_head] = w_v.T
    o_weight[:, head * d_head : (head + 1) * d_head] = w_o.T
    model.load_state_dict(
        {f"blocks.{layer}.attn.v.weight": v_weight, f"blocks.{layer}.attn.o.weight": o_weight}, strict=False
    )


def write_word_tokenizer(folder: Path, words: list[str]) -> None:
    """Save a byte-level BPE tokenizer whose vocabulary has every word with and without a leading space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<bos>", "<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(words), "".join(words), *words, *(" " + w for w in words)] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
    fast.save_pretrained(folder)


def write_tiny_llama_folder(folder: Path, words: list[str], drop_architectures: bool = False) -> Path:
    """Write a tiny random Llama (4 query heads, 2 key/value heads) and a tokenizer to ``folder``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    write_word_tokenizer(folder, words)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    if drop_architectures:
        config_path = folder / "config.json"
        data = json.loads(config_path.read_text())
        data.pop("architectures", None)
        config_path.write_text(json.dumps(data))
    return folder


def native_model(**overrides):
    return load_native(native_config(**overrides))
