"""Succession scores on models whose right answer is known."""

import pytest
import torch

from analysis.successor import METHODS, ov_succession_scores, ov_top_tokens, search_heads, succession_from_logits
from native_models import native_model, plant_successor_head
from probes.ordinal import task_from_token_ids

PLANTED_LAYER, PLANTED_HEAD = 1, 2
TASK_IDS = [5, 9, 13, 17, 21, 25, 29, 33, 37, 41]


@pytest.fixture(scope="module")
def planted():
    model = native_model()
    plant_successor_head(model, PLANTED_LAYER, PLANTED_HEAD, TASK_IDS)
    return model, task_from_token_ids("planted", TASK_IDS)


def test_planted_head_scores_one(planted):
    model, task = planted
    grid = torch.tensor(ov_succession_scores(model, [task], "ov_mlp0")["planted"])
    assert grid[PLANTED_LAYER, PLANTED_HEAD].item() == 1.0


def test_planted_head_ranks_first(planted):
    model, task = planted
    scores = search_heads(model, [task], methods=("ov_mlp0",))
    best = scores.ranking("ov_mlp0", top=1)[0]
    assert (best.layer, best.head) == (PLANTED_LAYER, PLANTED_HEAD)
    assert best.mean_score == 1.0


def test_untouched_heads_near_chance(planted):
    model, task = planted
    grid = torch.tensor(ov_succession_scores(model, [task], "ov_mlp0")["planted"])
    mask = torch.ones_like(grid, dtype=torch.bool)
    mask[PLANTED_LAYER, PLANTED_HEAD] = False
    # Chance is 1/10; a random head's mean over 7 other heads stays well below a real successor head.
    assert grid[mask].mean().item() < 0.3
    assert grid[mask].max().item() < 0.7


def test_top_tokens_of_planted_head(planted):
    model, task = planted
    rows = ov_top_tokens(model, PLANTED_LAYER, PLANTED_HEAD, task, k=3, scope="task")
    for row in rows[:-1]:
        assert row["top_tokens"][0] == row["expected"]


def test_top_tokens_rejects_missing_head(planted):
    model, task = planted
    with pytest.raises(ValueError, match="L7H0 does not exist"):
        ov_top_tokens(model, 7, 0, task)


def test_search_runs_every_method(planted):
    model, task = planted
    scores = search_heads(model, [task])
    assert set(scores.scores) == set(METHODS)
    for method in METHODS:
        grid = scores.grid(method, "planted")
        assert grid.shape == (model.cfg.n_layers, model.cfg.n_heads)
        assert torch.isfinite(grid).all()


def test_succession_counts_cyclic_wrap():
    task = task_from_token_ids("cycle", [1, 2, 3], cyclic=True)
    # Each row predicts the next item, and the last row predicts the first.
    logits = torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert succession_from_logits(logits, task).item() == 1.0
    assert len(task.successor_pairs()) == 3


def test_search_rejects_unknown_method(planted):
    model, task = planted
    with pytest.raises(ValueError, match="Unknown method"):
        search_heads(model, [task], methods=("nonsense",))
