"""Shared pieces of the multiplication tests: a tiny run configuration and a one-thread fixture."""

from __future__ import annotations

import pytest
import torch

from analysis.arithmetic.config import ModelConfig, RunConfig, TrainConfig
from probes.arithmetic import ProblemSpec, get_format


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one intra-op thread: the tiny models gain nothing from more, and on a
    busy machine thread synchronisation made a 300-step loop about 15 times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(fmt: str = "padded-reversed", **train_fields) -> RunConfig:
    """Return a 2 x 2-digit run with a one-layer model that trains in a second or two."""
    fields = dict(steps=20, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=10, eval_size=50,
                  checkpoint_every=10, test_size=100)
    fields.update(train_fields)
    return RunConfig(ProblemSpec(2, 2, get_format(fmt)),
                     ModelConfig(n_layers=1, n_heads=2, d_model=32, d_mlp=64), TrainConfig(**fields), "test")
