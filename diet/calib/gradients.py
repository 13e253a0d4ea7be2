"""Gradients of the language-model loss on calibration sequences, for gradient-based importance (LLM-Pruner's
first-order Taylor score, diet.methods.llm_pruner).

The loss is the mean next-token cross-entropy over every predicted token of all sequences together, as
`model(batch, labels=batch).loss` on one batch of equal-length windows in the reference (horseee/LLM-Pruner,
hf_prune.py / llama3.py); sequences of other lengths are right-padded and their padding ignored, and the batch is
split into micro-batches whose summed losses are scaled by the total token count, so the gradient equals that
of one batch whatever `batch_size` is (up to float summation order). `per_sample_squares` accumulates the
reference's `acc_grad` for its second-order variants: the sum over sequences of (d loss_j / dW)^2 / n, each loss_j
the mean over sequence j's predicted tokens.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from diet.calib.profiler import length_sorted_batches, pad_batch


def _predicted_tokens(sequences: Sequence[Sequence[int]]) -> int:
    return sum(max(len(s) - 1, 0) for s in sequences)


def _batch_loss_sum(model: nn.Module, batch: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """The summed next-token cross-entropy (float32) of a right-padded batch, padding ignored."""
    device = next(model.parameters()).device
    ids, mask, _ = pad_batch(batch, pad_id, side="right")
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


def _batches(sequences: Sequence[Sequence[int]], batch_size: int, desc: str) -> Iterator[list[Sequence[int]]]:
    for indices in tqdm(list(length_sorted_batches(sequences, batch_size)), desc=desc, leave=False):
        yield [sequences[i] for i in indices]


def loss_gradients(model: nn.Module, params: Sequence[nn.Parameter], sequences: Sequence[Sequence[int]],
                   batch_size: int = 8, pad_id: int = 0) -> tuple[list[torch.Tensor], float]:
    """(d mean loss / d param for each of `params`, the mean loss); only `params` require grad meanwhile."""
    total = _predicted_tokens(sequences)
    if total == 0:
        raise ValueError("no predicted token: every calibration sequence has fewer than 2 tokens")
    with _only_these_require_grad(model, params):
        loss = 0.0
        for batch in _batches(sequences, batch_size, "taylor gradients"):
            part = _batch_loss_sum(model, batch, pad_id) / total
            part.backward()
            loss += float(part.detach())
        grads = [p.grad.detach().clone() for p in params]
        for p in params:
            p.grad = None
    return grads, loss


def per_sample_squares(model: nn.Module, params: Sequence[nn.Parameter], sequences: Sequence[Sequence[int]],
                       pad_id: int = 0) -> list[torch.Tensor]:
    """For each of `params`: sum_j (d loss_j / d param)^2 / n over the n sequences (the reference's acc_grad)."""
    n = len(sequences)
    acc = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    with _only_these_require_grad(model, params):
        for sequence in tqdm(list(sequences), desc="taylor second order", leave=False):
            (_batch_loss_sum(model, [sequence], pad_id) / _predicted_tokens([sequence])).backward()
            for total, p in zip(acc, params):
                total += p.grad.double().square() / n
                p.grad = None
    return acc


class _only_these_require_grad:
    """Within the block, exactly `params` require grad (no gradient of the embedding or of unscored layers is
    kept: memory); every parameter's flag and grad are restored on exit."""

    def __init__(self, model: nn.Module, params: Sequence[nn.Parameter]) -> None:
        self.model, self.params = model, list(params)

    def __enter__(self) -> None:
        self.saved = [(p, p.requires_grad, p.grad) for p in self.model.parameters()]
        chosen = {id(p) for p in self.params}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in chosen)
            p.grad = None

    def __exit__(self, *exc: object) -> None:
        for p, flag, grad in self.saved:
            p.requires_grad_(flag)
            p.grad = grad
