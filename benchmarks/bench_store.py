"""Activation store: building an entry versus bare forward passes, and reading versus torch.load.

1. Build: a few hundred prompts through ``cached_activations`` (forward passes,
   hooks, position gathering, writing and hashing the entry) versus bare forward
   passes over the same padded batches. Target: within 10%.
2. Read: every tensor of the entry through the store (memory-mapped, hash checked
   once per process) versus ``torch.load`` of the same tensors saved with
   ``torch.save``, and versus reading the shard files' raw bytes. Target: at least
   5x faster than ``torch.load``. Both reads run with the files in the OS page
   cache (each is warmed once), so the comparison is of the formats, not the disk.

Usage: python benchmarks/bench_store.py [--model NAME] [--prompts N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from analysis.activations import cached_activations, encode_prompts, pad_batch
from analysis.models import DEFAULT_MODEL, load_model
from analysis.store import ActivationStore

SUBJECTS = ["The cat", "My neighbour", "A researcher", "The old train", "Our team", "The river", "Her brother",
            "This small model", "The committee", "A quiet student"]
VERBS = ["walked to", "looked at", "wrote about", "thought of", "ran past", "painted", "argued with",
         "listened to", "found", "remembered"]
OBJECTS = ["the station on Monday", "a long letter", "the red door", "three small boats", "the market in March",
           "an empty room", "the first chapter", "a distant hill", "the winter garden", "the last page of the book"]


def make_prompts(count: int) -> list[str]:
    prompts = []
    for index in range(count):
        subject, verb = SUBJECTS[index % 10], VERBS[(index // 10) % 10]
        obj = OBJECTS[(index // 100 + index) % 10]
        prompts.append(f"{subject} {verb} {obj}.")
    return prompts


def seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model = load_model(args.model)
    prompts = make_prompts(args.prompts)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    token_ids = encode_prompts(model, prompts)

    def bare_forward() -> None:
        for start in range(0, len(token_ids), args.batch_size):
            tokens, mask = pad_batch(token_ids[start : start + args.batch_size])
            model(tokens, attention_mask=mask, prepend_bos=False)

    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = ActivationStore(Path(folder) / "store")
        bare_forward()  # warm-up
        bare = statistics.median(seconds(bare_forward) for _ in range(2))
        entry = None

        def build() -> None:
            nonlocal entry
            entry = cached_activations(model, prompts, hooks, store=store, batch_size=args.batch_size,
                                       show_progress=False)

        build_time = seconds(build)

        tensors = {hook: entry.tensor(hook).clone() for hook in hooks}
        pickle_path = Path(folder) / "activations.pt"
        torch.save(tensors, pickle_path)
        shard_paths = [entry.path / info["file"] for info in entry.manifest["tensors"].values()]
        total_bytes = sum(path.stat().st_size for path in shard_paths)

        key = entry.key()
        middle = hooks[len(hooks) // 2]

        def store_one() -> None:
            # What the dashboard does: open the entry, read one prompt of one hook.
            ActivationStore(store.root).get(key).tensor(middle)[0].sum()

        def torch_one() -> None:
            torch.load(pickle_path, weights_only=True)[middle][0].sum()

        def store_all() -> None:
            opened = ActivationStore(store.root).get(key)
            for hook in hooks:
                opened.tensor(hook).sum()

        def torch_all() -> None:
            loaded = torch.load(pickle_path, weights_only=True)
            for hook in hooks:
                loaded[hook].sum()

        def raw_all() -> None:
            for path in shard_paths:
                path.read_bytes()

        timings = {}
        for function in (store_one, torch_one, store_all, torch_all, raw_all):
            function()  # page-cache warm-up; the store also verifies content hashes here, once
            timings[function.__name__] = statistics.median(seconds(function) for _ in range(5))

    print(f"model {args.model}: {len(prompts)} prompts, {len(hooks)} hooks, entry {total_bytes / 1e6:.0f} MB")
    print(f"bare forward passes:     {bare:.2f} s")
    print(f"build entry (miss):      {build_time:.2f} s")
    print(f"ratio build / bare: {build_time / bare:.2f}x (target: <= 1.10x)")
    ms = {name: value * 1000 for name, value in timings.items()}
    print(f"open + read one prompt of one hook: store {ms['store_one']:.1f} ms, torch.load {ms['torch_one']:.1f} ms"
          f" -> {timings['torch_one'] / timings['store_one']:.1f}x (target: >= 5x)")
    print(f"read every tensor (summed):         store {ms['store_all']:.1f} ms, torch.load {ms['torch_all']:.1f} ms"
          f" -> {timings['torch_all'] / timings['store_all']:.1f}x")
    print(f"raw read of the shard files:        {ms['raw_all']:.1f} ms"
          f" -> store full read is {timings['store_all'] / timings['raw_all']:.1f}x the raw read time")




if __name__ == "__main__":
    main()
