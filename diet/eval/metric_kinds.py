"""What kind of number a metric is, by its lm-eval name, so that tables average only numbers of one kind.

Kept apart from lm-eval (the analysis reads records, not tasks): `accuracy` is a fraction of documents right
(higher is better, 0/1 per document, averaged across tasks), `perplexity` a rolling-loglikelihood perplexity
(lower is better, never averaged), `other` anything else (F1, BLEU, MCC...: shown, never averaged).
"""

from __future__ import annotations

ACCURACY = "accuracy"
PERPLEXITY = "perplexity"
OTHER = "other"

ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")
PERPLEXITY_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity")


def metric_kind(metric: str) -> str:
    if metric in ACCURACY_METRICS:
        return ACCURACY
    return PERPLEXITY if metric in PERPLEXITY_METRICS else OTHER
