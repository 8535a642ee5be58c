"""Head search over every head and task versus bare forward passes over the same tokens.

The search feeds the model three sets of tokens: each task token alone (MLP0
embeddings), each task token after BOS (own-layer embeddings), and one sequence
per task (contextual attribution). The baseline runs plain forward passes,
logits included, over exactly those tokens. Target: search within 2x.

Usage: python benchmarks/bench_heads.py [--model NAME] [--repeats N]
"""

from __future__ import annotations

import argparse

import torch

from analysis.circuits import bos_prefix
from timing import median_seconds

from analysis.models import DEFAULT_MODEL, load_model
from analysis.successor import ordinal_sequence, search_heads
from probes.ordinal import get_tasks, tokenize_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model = load_model(args.model)
    tasks = [tokenize_task(task, model.tokenizer) for task in get_tasks()]
    token_ids = [token for task in tasks for token in task.token_ids]
    prefix = bos_prefix(model)
    alone = torch.tensor(token_ids).unsqueeze(1)
    after_bos = torch.tensor([prefix + [token] for token in token_ids])
    sequences = [torch.tensor([prefix + ordinal_sequence(task)[0]]) for task in tasks]

    def bare_forward() -> None:
        model(alone, prepend_bos=False)
        model(after_bos, prepend_bos=False)
        for sequence in sequences:
            model(sequence, prepend_bos=False)

    def head_search() -> None:
        search_heads(model, tasks)

    bare = median_seconds(bare_forward, args.repeats)
    search = median_seconds(head_search, args.repeats)
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    print(f"model {args.model}: {n_heads} heads, {len(tasks)} tasks, {len(token_ids)} task tokens, "
          f"{torch.get_num_threads()} threads")
    print(f"bare forward passes over the same tokens: {bare:.3f} s (median of {args.repeats})")
    print(f"head search, 3 methods:                   {search:.3f} s (median of {args.repeats})")
    print(f"ratio search / bare forward: {search / bare:.2f}x (target: <= 2x)")


if __name__ == "__main__":
    main()
