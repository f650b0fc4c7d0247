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
# Bounds on the work of one comparison, checked before it starts: about a second of a core
# and some tens of MiB at most. fuzzy_match and rouge_l compare each character (token) of
# one text with each of the other, 64 at a time, so the product of the texts' lengths is
# bounded (100,000 characters each, or 30,000 tokens each, pass); the n-gram metrics are
# linear, but count every n-gram of each text: every metric takes texts of at most
# `MAX_TOKENS` whitespace-separated tokens.
MAX_CHAR_PAIRS = 10**10
MAX_TOKEN_PAIRS = 10**9
MAX_TOKENS = 100_000


class TextsTooLong(ValueError):
    """The texts are too long for the metric's comparison to stay cheap."""


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    # The i-th shifted copy is the shortest last: zip stops with it.
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


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
    # Order by order (n-grams of different orders never match), so that one order's counts
    # are in memory at a time.
    matches = sum((_ngrams(graded, n) & _ngrams(reference, n)).total()
                  for n in range(1, MAX_ORDER + 1))
    longest = max(_count(len(graded)), _count(len(reference)))
    return matches / longest if longest else 0.0


def _count(tokens: int) -> int:
    """How many n-grams of orders 1 to MAX_ORDER a text of `tokens` tokens has."""
    return sum(max(tokens - n + 1, 0) for n in range(1, MAX_ORDER + 1))


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
        graded, reference = graded.strip(), reference.strip()
        _bounded(metric, len(graded), len(reference), MAX_CHAR_PAIRS, "characters")
        return fuzz.ratio(graded, reference) / 100
    # Split no further than the bound: a longer text's last part is the rest of it.
    ours, theirs = graded.split(None, MAX_TOKENS), reference.split(None, MAX_TOKENS)
    if max(len(ours), len(theirs)) > MAX_TOKENS:
        raise TextsTooLong(f"{metric} compares texts of at most {MAX_TOKENS:,} tokens each")
    if metric == "rouge_l":
        _bounded(metric, len(ours), len(theirs), MAX_TOKEN_PAIRS, "tokens")
    return _TOKEN_METRICS[metric](ours, theirs)


def _bounded(metric: str, graded: int, reference: int, pairs: int, unit: str) -> None:
    if graded * reference > pairs:
        raise TextsTooLong(f"{metric} compares texts whose lengths in {unit} multiply to at "
                           f"most {pairs:,} ({graded:,} times {reference:,} here)")
