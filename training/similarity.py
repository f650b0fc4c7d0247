"""Text similarity metrics of OpenAI's `text_similarity` grader, each 0..1.

`fuzzy_match` is rapidfuzz's normalized Indel similarity (as the built-in evaluation grades);
the others compare whitespace tokens, case kept: BLEU as sacrebleu's sentence BLEU (up to
4-grams, `exp` smoothing, effective order), GLEU as nltk's sentence GLEU (Google BLEU), and
ROUGE-N / ROUGE-L as rouge-score's F-measure. OpenAI does not publish its normalizations, so
scores are close to its own, not bit-identical."""

import math
from collections import Counter
from collections.abc import Callable

from rapidfuzz import fuzz
from rapidfuzz.distance import LCSseq

MAX_ORDER = 4


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f1(matches: int, graded: int, reference: int) -> float:
    if not matches:
        return 0.0
    precision, recall = matches / graded, matches / reference
    return 2 * precision * recall / (precision + recall)


def bleu(graded: list[str], reference: list[str]) -> float:
    if not graded or not reference:
        return 0.0
    logs, smoothing = [], 1
    for n in range(1, MAX_ORDER + 1):
        total = len(graded) - n + 1
        if total <= 0:  # a short answer is scored on the orders it has
            break
        matches = sum((_ngrams(graded, n) & _ngrams(reference, n)).values())
        if not matches and n == 1:  # smoothing is for missing long n-grams, not no overlap
            return 0.0
        if not matches:
            # A missing order would zero the whole score of a short sentence.
            smoothing *= 2
            logs.append(math.log(1 / (smoothing * total)))
        else:
            logs.append(math.log(matches / total))
    brevity = 1.0 if len(graded) >= len(reference) else math.exp(1 - len(reference) / len(graded))
    return brevity * math.exp(sum(logs) / len(logs))


def gleu(graded: list[str], reference: list[str]) -> float:
    ours = sum((_ngrams(graded, n) for n in range(1, MAX_ORDER + 1)), Counter())
    theirs = sum((_ngrams(reference, n) for n in range(1, MAX_ORDER + 1)), Counter())
    longest = max(ours.total(), theirs.total())
    return (ours & theirs).total() / longest if longest else 0.0


def rouge_n(n: int) -> Callable[[list[str], list[str]], float]:
    def rouge(graded: list[str], reference: list[str]) -> float:
        ours, theirs = _ngrams(graded, n), _ngrams(reference, n)
        return _f1((ours & theirs).total(), ours.total(), theirs.total())

    return rouge


def rouge_l(graded: list[str], reference: list[str]) -> float:
    # rapidfuzz's bit-parallel LCS: long samples stay cheap, unlike the quadratic table.
    return _f1(LCSseq.similarity(graded, reference), len(graded), len(reference))


_TOKEN_METRICS: dict[str, Callable[[list[str], list[str]], float]] = {
    "bleu": bleu, "gleu": gleu, "rouge_l": rouge_l,
    **{f"rouge_{n}": rouge_n(n) for n in range(1, 6)},
}
METRICS = ("fuzzy_match", *_TOKEN_METRICS)


def similarity(metric: str, graded: str, reference: str) -> float:
    """`graded` compared with `reference` by one of `METRICS`."""
    if metric == "fuzzy_match":
        return fuzz.ratio(graded.strip(), reference.strip()) / 100
    return _TOKEN_METRICS[metric](graded.split(), reference.split())
