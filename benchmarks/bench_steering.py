"""Steering costs, measured in one run on the default model.

1. Steered versus unsteered greedy generation of the same prompt (target: within 5%).
2. The in-context vector on a zero-shot prompt versus the same demonstrations in the
   prompt (in-context learning): prompt length and generation latency.
3. Building a vector versus the bare forward passes it needs (each x and y alone).

Usage: python benchmarks/bench_steering.py [--model NAME] [--pairs K] [--tokens N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from timing import median_seconds

from analysis.activations import encode_prompts, pad_batch
from analysis.models import DEFAULT_MODEL, load_model
from analysis.steering.evaluate import few_shot_prompt, zero_shot_prompt
from analysis.steering.icv import build_icv
from analysis.steering.steer import generate
from analysis.store import ActivationStore
from probes.demos import load_demos, load_inputs, shipped_demos, shipped_heldout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model = load_model(args.model)
    pairs = [(p.x, p.y) for p in load_demos(shipped_demos()["sentiment"]).pairs[: args.pairs]]
    query = load_inputs(shipped_heldout("sentiment"))[0]

    with tempfile.TemporaryDirectory(prefix="bench-steer-") as folder:
        store = ActivationStore(Path(folder) / "store")
        build = median_seconds(lambda: build_icv(model, pairs, store=ActivationStore(Path(folder) / f"s{time.time_ns()}"),
                                              show_progress=False), 1, warmup=False)
        vector = build_icv(model, pairs, store=store, show_progress=False)

    token_ids = encode_prompts(model, [x for x, _ in pairs] + [y for _, y in pairs])

    def bare_forwards() -> None:
        for start in range(0, len(token_ids), 16):
            tokens, mask = pad_batch(token_ids[start : start + 16])
            model(tokens, attention_mask=mask, prepend_bos=False)

    bare = median_seconds(bare_forwards, args.repeats, warmup=False)

    zero_shot = zero_shot_prompt(query)
    in_context = few_shot_prompt(query, pairs)
    unsteered = median_seconds(lambda: generate(model, zero_shot, args.tokens), args.repeats, warmup=False)
    steered = median_seconds(lambda: generate(model, zero_shot, args.tokens, vector=vector, strength=1.0), args.repeats, warmup=False)
    icl = median_seconds(lambda: generate(model, in_context, args.tokens), args.repeats, warmup=False)
    zero_len = len(encode_prompts(model, [zero_shot])[0])
    icl_len = len(encode_prompts(model, [in_context])[0])

    print(f"model {args.model}, {len(pairs)} pairs, {args.tokens} generated tokens, "
          f"median of {args.repeats}, {torch.get_num_threads()} threads")
    print(f"unsteered generation: {unsteered:.2f} s; steered: {steered:.2f} s "
          f"-> ratio {steered / unsteered:.3f} (target: <= 1.05)")
    print(f"prompt length: zero-shot {zero_len} tokens, with demonstrations {icl_len} "
          f"-> ratio {icl_len / zero_len:.1f}")
    print(f"in-context generation: {icl:.2f} s; vector on zero-shot prompt: {steered:.2f} s "
          f"-> ICL is {icl / steered:.1f}x slower")
    print(f"build vector: {build:.2f} s; bare forward passes over the {len(token_ids)} prompts: {bare:.2f} s "
          f"-> ratio {build / bare:.2f}")


if __name__ == "__main__":
    main()
