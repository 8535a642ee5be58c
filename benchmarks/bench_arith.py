"""Training throughput of the TransformerLens native model versus the same model in plain PyTorch.

Both models have the architecture of ``analysis.arithmetic.model`` (GPT-2 style:
learned positions, pre-LayerNorm, ReLU MLP) and start from the same weights. The
script checks that their logits agree before timing. It times full training
steps (forward, backward, AdamW) on the same batches of 3 x 3-digit problems,
alternating the two models in rounds so that load from other processes affects
both alike, and reports tokens per second from the median step time.

With ``--time-to-accuracy`` it also trains the ``cpu-3x3`` preset until greedy
exact match on the periodic evaluation reaches 99%, fine-tuning for up to 2,000
steps at batch 512 if the preset's schedule ends below it, and prints the wall
time (about an hour on a laptop CPU). ``--from-log RUN`` reads the same number
from the ``metrics.jsonl`` of a run that was trained anyway, such as a shipped one.

Usage: python benchmarks/bench_arith.py [--preset cpu-3x3] [--steps 30] [--rounds 5]
                                        [--threads 1] [--time-to-accuracy] [--from-log RUN]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from analysis.arithmetic.config import get_preset
from analysis.arithmetic.metrics import answer_loss
from analysis.arithmetic.model import build_model
from probes.arithmetic import VOCAB, TrainSampler, make_test_set


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int, d_mlp: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.ln1 = nn.LayerNorm(d_model, eps=1e-5)
        self.q = nn.Linear(d_model, n_heads * d_head)
        self.k = nn.Linear(d_model, n_heads * d_head)
        self.v = nn.Linear(d_model, n_heads * d_head)
        self.o = nn.Linear(n_heads * d_head, d_model)
        self.ln2 = nn.LayerNorm(d_model, eps=1e-5)
        self.mlp_in = nn.Linear(d_model, d_mlp)
        self.mlp_out = nn.Linear(d_mlp, d_model)

    def forward(self, resid: torch.Tensor) -> torch.Tensor:
        batch, length, _ = resid.shape
        x = self.ln1(resid)
        q, k, v = (proj(x).view(batch, length, self.n_heads, self.d_head).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(d_head)
        resid = resid + self.o(z.transpose(1, 2).reshape(batch, length, -1))
        return resid + self.mlp_out(F.relu(self.mlp_in(self.ln2(resid))))


class PlainTransformer(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_head: int, d_mlp: int, n_ctx: int,
                 d_vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(d_vocab, d_model)
        self.pos_embed = nn.Embedding(n_ctx, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_head, d_mlp) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model, eps=1e-5)
        self.unembed = nn.Linear(d_model, d_vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        resid = self.embed(tokens) + self.pos_embed(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))


def plain_copy(bridge: nn.Module, config) -> PlainTransformer:
    """Return a ``PlainTransformer`` holding the bridge's weights (names mapped one to one)."""
    model = config.model
    plain = PlainTransformer(model.n_layers, model.d_model, model.n_heads, model.head_dim, model.d_mlp,
                             config.problem.seq_len, len(VOCAB))
    renamed = {key.replace("mlp.in.", "mlp_in.").replace("mlp.out.", "mlp_out.").replace("attn.", ""): value
               for key, value in bridge.state_dict().items()}
    plain.load_state_dict(renamed)
    return plain


def step_times(model: nn.Module, batches: list, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for batch in batches[:steps]:
        started = time.perf_counter()
        loss = answer_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def throughput(preset: str, steps: int, rounds: int) -> None:
    config = get_preset(preset)
    bridge = build_model(config)
    plain = plain_copy(bridge, config)
    test_set = make_test_set(config.problem, config.train.test_size, config.train.test_seed)
    sampler = TrainSampler(config.problem, test_set, seed=0)
    batches = [sampler.sample(config.train.batch_size) for _ in range(steps)]

    with torch.no_grad():
        tokens = batches[0].tokens
        gap = (bridge(tokens) - plain(tokens)).abs().max().item()
    if gap > 1e-4:
        raise SystemExit(f"the plain model differs from the bridge (max logit gap {gap:.2e}); fix plain_copy")

    step_times(bridge, batches, 3)  # warm-up
    step_times(plain, batches, 3)
    bridge_times, plain_times = [], []
    for _ in range(rounds):
        bridge_times += step_times(bridge, batches, steps)
        plain_times += step_times(plain, batches, steps)
    tokens_per_step = config.train.batch_size * (config.problem.seq_len - 1)
    bridge_rate = tokens_per_step / statistics.median(bridge_times)
    plain_rate = tokens_per_step / statistics.median(plain_times)
    print(f"preset {preset}: {config.model.n_layers} layers, d_model {config.model.d_model}, "
          f"batch {config.train.batch_size} x {config.problem.seq_len - 1} tokens, "
          f"{torch.get_num_threads()} thread(s), {rounds} x {steps} steps each, max logit gap {gap:.1e}")
    print(f"TransformerLens native (TransformerBridge): {bridge_rate:,.0f} tokens/s")
    print(f"plain PyTorch modules:                      {plain_rate:,.0f} tokens/s")
    print(f"ratio plain / TransformerLens: {plain_rate / bridge_rate:.2f}x")


def time_to_accuracy(preset: str, target: float) -> None:
    """Train ``preset`` until ``target`` greedy exact match. If its schedule ends below the target,
    fine-tune as the shipped model was: batch 512, lr 3e-4 decaying to 0, uniform problems."""
    from analysis.arithmetic.training import train

    config = get_preset(preset)
    with tempfile.TemporaryDirectory(prefix="bench-arith-") as folder:
        started = time.perf_counter()
        result = train(config, Path(folder) / "base", stop_at_exact_match=target)
        base_wall = time.perf_counter() - started
        phases = f"{base_wall:.0f} s for {result.steps} steps of the preset"
        if not result.stopped_early:
            tune = config.updated(steps=2000, batch_size=512, lr=3e-4, warmup_steps=100, min_lr_ratio=0.0,
                                  simple_share=0.0, init_from=str(Path(folder) / "base"))
            result = train(tune, Path(folder) / "tuned", stop_at_exact_match=target)
            phases += f", then {time.perf_counter() - started - base_wall:.0f} s for {result.steps} fine-tuning steps"
        wall = time.perf_counter() - started
    reached = "reached" if result.stopped_early else "did not reach"
    print(f"preset {preset}: {reached} {target:.0%} greedy exact match (periodic evaluation on "
          f"{config.train.eval_size} test problems); wall time {wall:.0f} s ({phases}); "
          f"full test set {result.final.exact_match_greedy:.2%}")


def _source_time(run_dir: Path) -> tuple[float, list[str]]:
    """Return the training time of the runs that ``run_dir`` was fine-tuned from, and their names."""
    from analysis.arithmetic.checkpoint import read_config, read_eval

    seconds, names = 0.0, []
    source = read_config(run_dir).train.init_from
    while source:
        source_dir = Path(source)
        final = read_eval(source_dir)
        if final is None:
            raise SystemExit(f"{source_dir} (the run that {run_dir} was fine-tuned from) has no eval.json; "
                             "its training time is unknown.")
        seconds += final["train_time_s"]
        names.append(source_dir.name)
        source = read_config(source_dir).train.init_from
    return seconds, names


def time_from_log(run_dir: str, target: float) -> None:
    """Print the first logged step and training time whose greedy exact match reaches ``target``,
    counting the training time of the runs it was fine-tuned from."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist; pass a run folder written by `workbench arith train`.")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    reached = next((row for row in rows if row["exact_match_greedy"] >= target), None)
    if reached is None:
        best = max(rows, key=lambda row: row["exact_match_greedy"])
        print(f"{run_dir}: never reached {target:.0%} greedy exact match in {rows[-1]['step']} steps "
              f"(best {best['exact_match_greedy']:.2%} at step {best['step']})")
        return
    before, sources = _source_time(Path(run_dir))
    chain = f" after {before:.0f} s of training {' <- '.join(sources)}" if sources else ""
    print(f"{run_dir}: reached {target:.0%} greedy exact match (periodic evaluation) at step {reached['step']}, "
          f"{reached['time_s']:.0f} s of training{chain}; total {before + reached['time_s']:.0f} s "
          f"({(before + reached['time_s']) / 60:.0f} min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-3x3")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round and model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="also train until 99%% greedy exact match and print the wall time (slow)")
    parser.add_argument("--from-log", metavar="RUN",
                        help="read the time to 99%% from the training log of this run folder "
                        "instead of measuring throughput")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.from_log:
        time_from_log(args.from_log, 0.99)
        return

    throughput(args.preset, args.steps, args.rounds)
    if args.time_to_accuracy:
        time_to_accuracy(args.preset, 0.99)


if __name__ == "__main__":
    main()
