"""Successor-head search: score every attention head on every ordinal task.

Method (Gould, Ong, Ogden, Conmy, "Successor Heads", ICLR 2024): take an
effective embedding of each task token, pass it through one head's OV circuit
and the unembedding, and restrict the logits to the task's tokens. The
succession score of the head on the task is the share of items whose top-1
task token is the next item (Monday -> Tuesday). A head that picks a random
task token scores ``1 / n_items`` (the chance level reported beside each score).

Three methods, all computed for every head at once:

* ``ov_mlp0``: effective embeddings from the first MLP (the paper's choice,
  checked there on GPT-2, Pythia and Llama-2).
* ``ov_own_layer``: the residual stream entering the head's own layer, for the
  token run alone after BOS. Deeper models with other norms (Gemma) may build
  token identity later than MLP0, so the two can disagree.
* ``contextual_dla``: behaviour on real sequences ("Monday Tuesday ..."): each
  head's direct logit attribution, at item i, to the token of item i + 1, with
  ``ln1_post`` (if any) and ``ln_final`` linearized at the cached divisors.
  Units are logits, not shares.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from analysis.circuits import (
    block_component,
    bos_prefix,
    linearized_norm,
    mlp0_embeddings,
    ov_head_outputs,
    per_head_value_weights,
    resid_pre_alone,
    unembed_columns,
)
from analysis.activations import cached_activations
from analysis.store import ActivationStore
from probes.ordinal import TokenizedTask

logger = logging.getLogger(__name__)

OV_METHODS = ("ov_mlp0", "ov_own_layer")
METHODS = OV_METHODS + ("contextual_dla",)
METHOD_UNITS = {"ov_mlp0": "share of items", "ov_own_layer": "share of items", "contextual_dla": "logits"}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class HeadRank:
    """One head's place in a method's ranking (mean score over tasks)."""

    method: str
    layer: int
    head: int
    mean_score: float
    per_task: dict[str, float]

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass
class HeadScores:
    """Scores of every head on every task, for each method: ``scores[method][task][layer][head]``."""

    n_layers: int
    n_heads: int
    tasks: list[TokenizedTask]
    scores: dict[str, dict[str, list[list[float]]]]

    def grid(self, method: str, task: str) -> Tensor:
        return torch.tensor(self.scores[method][task])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HeadScores":
        """Rebuild scores from ``to_dict()`` output or a result file."""
        return cls(
            n_layers=int(data["n_layers"]),
            n_heads=int(data["n_heads"]),
            tasks=[TokenizedTask.from_dict(task) for task in data["tasks"]],
            scores={method: data["scores"][method] for method in data["scores"]},
        )

    def ranking(self, method: str, top: int | None = None, task: str | None = None) -> list[HeadRank]:
        """Rank heads by their mean score over the tasks that have a successor pair, or by one ``task``."""
        usable = [t.name for t in self.tasks if t.successor_pairs() and (task is None or t.name == task)]
        if not usable:
            return []
        stacked = torch.stack([self.grid(method, name) for name in usable])  # [task, layer, head]
        mean = stacked.mean(0)
        # Stable sort: ties (common, scores are multiples of 1/n_pairs) keep layer-then-head order.
        order = torch.sort(mean.flatten(), descending=True, stable=True).indices.tolist()
        ranks = []
        for flat in order[: top or len(order)]:
            layer, head = divmod(flat, self.n_heads)
            per_task = {name: float(stacked[i, layer, head]) for i, name in enumerate(usable)}
            ranks.append(HeadRank(method, layer, head, float(mean[layer, head]), per_task))
        return ranks

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "methods": {name: {"units": METHOD_UNITS[name]} for name in self.scores},
            "tasks": [task.to_dict() for task in self.tasks],
            "scores": self.scores,
            "ranking": {method: [asdict(rank) | {"label": rank.label} for rank in self.ranking(method, top)]
                        for method in self.scores},
        }


# -- OV-circuit succession scores ---------------------------------------------


def succession_from_logits(
    logits: Float[Tensor, "... n_items n_items"], task: TokenizedTask
) -> Float[Tensor, "..."]:
    """Share of successor pairs (i, j) where item i's top-1 task token is item j."""
    pairs = task.successor_pairs()
    if not pairs:
        return torch.zeros(logits.shape[:-2])
    sources = torch.tensor([i for i, _ in pairs])
    targets = torch.tensor([j for _, j in pairs])
    predicted = logits[..., sources, :].argmax(-1)  # [..., n_pairs]
    return (predicted == targets).float().mean(-1)


@torch.no_grad()
def ov_task_logits(
    model: TransformerBridge, embeddings: Float[Tensor, "layer n d_model"] | Float[Tensor, "n d_model"],
    token_ids: list[int],
) -> Float[Tensor, "layer head n n_tokens"]:
    """OV-circuit logits of every head for each embedding, restricted to ``token_ids``.

    ``embeddings`` of shape [n, d_model] are used at every layer (MLP0 variant);
    of shape [layer, n, d_model], layer L reads slice L (own-layer variant).
    """
    w_v, w_o = per_head_value_weights(model)
    ids = torch.tensor(token_ids, device=w_o.device)
    per_layer = []
    for layer in range(model.cfg.n_layers):
        resid = embeddings if embeddings.ndim == 2 else embeddings[layer]
        head_out = ov_head_outputs(model, layer, resid, w_v[layer], w_o[layer])
        per_layer.append(unembed_columns(model, head_out, ids))
    return torch.stack(per_layer)


def _split_by_task(logits: Tensor, tasks: list[TokenizedTask], offsets: list[int]) -> dict[str, Tensor]:
    """Cut [layer, head, n_all, n_all] logits into each task's own [layer, head, n, n] block."""
    blocks = {}
    for task, start in zip(tasks, offsets):
        stop = start + len(task.token_ids)
        blocks[task.name] = logits[:, :, start:stop, start:stop]
    return blocks


@torch.no_grad()
def ov_succession_scores(
    model: TransformerBridge, tasks: list[TokenizedTask], method: str, store: ActivationStore | None = None
) -> dict[str, list[list[float]]]:
    """Succession score grid [layer][head] per task for ``method`` in ``OV_METHODS``."""
    all_ids, offsets = [], []
    for task in tasks:
        offsets.append(len(all_ids))
        all_ids.extend(task.token_ids)
    if not all_ids:
        return {task.name: _zeros(model) for task in tasks}

    if method == "ov_mlp0":
        embeddings = mlp0_embeddings(model, all_ids)
    elif method == "ov_own_layer":
        embeddings = resid_pre_alone(model, all_ids, store=store)
    else:
        raise ValueError(f"Unknown OV method {method!r}; use one of {', '.join(OV_METHODS)}.")

    logits = ov_task_logits(model, embeddings, all_ids)
    return {
        name: succession_from_logits(block, task).tolist()
        for (name, block), task in zip(_split_by_task(logits, tasks, offsets).items(), tasks)
    }


def _zeros(model: TransformerBridge) -> list[list[float]]:
    return [[0.0] * model.cfg.n_heads for _ in range(model.cfg.n_layers)]


# -- contextual direct logit attribution --------------------------------------


def ordinal_sequence(task: TokenizedTask) -> tuple[list[int], list[tuple[int, int]]]:
    """Return the task's kept tokens in order, and (position, next_token) targets.

    Positions index the returned list (no BOS). Cyclic tasks repeat the first
    item at the end so the wrap (December -> January) is scored too.
    """
    tokens = list(task.token_ids)
    pairs = task.successor_pairs()
    targets = [(i, task.token_ids[j]) for i, j in pairs if j == i + 1]
    if task.cyclic and pairs and pairs[-1][1] == 0 and pairs[-1][0] == len(tokens) - 1:
        tokens.append(task.token_ids[0])
        targets.append((len(tokens) - 2, task.token_ids[0]))
    return tokens, targets


def contextual_hooks(model: TransformerBridge) -> list[str]:
    """Hooks that contextual attribution reads: every head's z, the attention totals, the final residual."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    names += [f"blocks.{layer}.ln1_post.hook_in" for layer in range(model.cfg.n_layers)
              if block_component(model, layer, "ln1_post") is not None]
    names.append(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")  # what ln_final reads
    return names


@torch.no_grad()
def contextual_dla(
    model: TransformerBridge, tasks: list[TokenizedTask], store: ActivationStore | None = None
) -> dict[str, list[list[float]]]:
    """Mean direct logit attribution of each head to the next item, per task: ``{task: [layer][head]}``.

    All tasks' sequences run as one padded batch through the activation store.
    """
    sequences = {task.name: ordinal_sequence(task) for task in tasks}
    usable = [task for task in tasks if sequences[task.name][1]]
    grids = {task.name: _zeros(model) for task in tasks}
    if not usable:
        return grids

    prefix = bos_prefix(model)
    hooks = contextual_hooks(model)
    entry = cached_activations(
        model, token_ids=[prefix + sequences[task.name][0] for task in usable], hooks=hooks,
        positions="all", store=store, show_progress=False,
    )
    _, w_o = per_head_value_weights(model)
    device = w_o.device

    # Flatten every (sequence, position, target) of every task so each layer is one batched step.
    rows, positions, target_ids, owner = [], [], [], []
    for row, task in enumerate(usable):
        for position, token in sequences[task.name][1]:
            rows.append(row)
            positions.append(len(prefix) + position)
            target_ids.append(token)
            owner.append(row)
    rows_t, positions_t = torch.tensor(rows), torch.tensor(positions)
    owner_t = torch.tensor(owner, device=device)
    unembed = model.W_U[:, torch.tensor(target_ids, device=device)]  # [d_model, n_targets]
    final_total = entry.tensor(hooks[-1])[rows_t, positions_t].to(device)  # [n_targets, d_model]

    per_layer = []
    for layer in range(model.cfg.n_layers):
        z = entry.tensor(f"blocks.{layer}.attn.hook_z")[rows_t, positions_t].to(device)  # [t, head, d_head]
        head_out = torch.einsum("thd,hdm->htm", z, w_o[layer])  # [head, n_targets, d_model]

        ln1_post = block_component(model, layer, "ln1_post")
        if ln1_post is not None:
            attn_total = entry.tensor(f"blocks.{layer}.ln1_post.hook_in")[rows_t, positions_t].to(device)
            head_out = linearized_norm(model, ln1_post, head_out, attn_total)
        if hasattr(model, "ln_final"):
            head_out = linearized_norm(model, model.ln_final, head_out, final_total)

        # Logit of each target token from the head's output at the same position.
        per_layer.append(torch.einsum("htm,mt->ht", head_out, unembed))
    dla = torch.stack(per_layer)  # [layer, head, n_targets]

    for row, task in enumerate(usable):
        grids[task.name] = dla[:, :, owner_t == row].mean(-1).tolist()
    return grids


# -- the whole search ---------------------------------------------------------


def search_heads(
    model: TransformerBridge,
    tasks: list[TokenizedTask],
    methods: tuple[str, ...] = METHODS,
    progress: Progress | None = None,
    store: ActivationStore | None = None,
) -> HeadScores:
    """Score every head of ``model`` on every task with each method."""
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {', '.join(unknown)}; use {', '.join(METHODS)}.")

    scores: dict[str, dict[str, list[list[float]]]] = {}
    for method in methods:
        if progress:
            progress(method)
        logger.info("scoring %d tasks with %s", len(tasks), method)
        if method in OV_METHODS:
            scores[method] = ov_succession_scores(model, tasks, method, store=store)
        else:
            scores[method] = contextual_dla(model, tasks, store=store)
    return HeadScores(model.cfg.n_layers, model.cfg.n_heads, tasks, scores)


@torch.no_grad()
def ov_top_tokens(
    model: TransformerBridge,
    layer: int,
    head: int,
    task: TokenizedTask,
    method: str = "ov_mlp0",
    k: int = 5,
    scope: str = "vocab",
) -> list[dict[str, Any]]:
    """Top-k tokens that one head's OV circuit predicts for each task item.

    ``scope="vocab"`` ranks the whole vocabulary; ``scope="task"`` only the task's tokens.
    """
    if not 0 <= layer < model.cfg.n_layers or not 0 <= head < model.cfg.n_heads:
        raise ValueError(
            f"Head L{layer}H{head} does not exist; the model has {model.cfg.n_layers} layers "
            f"of {model.cfg.n_heads} heads."
        )
    ids = list(task.token_ids)
    if method == "ov_mlp0":
        resid = mlp0_embeddings(model, ids)
    elif method == "ov_own_layer":
        resid = resid_pre_alone(model, ids)[layer]
    else:
        raise ValueError(f"Unknown OV method {method!r}; use one of {', '.join(OV_METHODS)}.")

    w_v, w_o = per_head_value_weights(model)
    head_out = ov_head_outputs(model, layer, resid, w_v[layer, head : head + 1], w_o[layer, head : head + 1])[0]
    columns = torch.tensor(ids) if scope == "task" else None
    logits = unembed_columns(model, head_out, columns)  # [n_items, n_tokens]
    top = logits.topk(min(k, logits.shape[-1]), dim=-1)

    successor = dict(task.successor_pairs())
    rows = []
    for i, item in enumerate(task.items):
        top_ids = [ids[j] for j in top.indices[i].tolist()] if scope == "task" else top.indices[i].tolist()
        rows.append({
            "item": item,
            "expected": task.items[successor[i]] if i in successor else None,
            "top_tokens": [_token_text(model, token_id) for token_id in top_ids],
            "top_logits": [round(value, 3) for value in top.values[i].tolist()],
        })
    return rows


def _token_text(model: TransformerBridge, token_id: int) -> str:
    tokenizer = getattr(model, "tokenizer", None)
    return tokenizer.decode([token_id]) if tokenizer is not None else str(token_id)
