"""A faster lm-eval backend: HFLM with the same requests, tokenisation and metrics, scored with less work.

Stock `HFLM._loglikelihood_tokens` runs every (context, continuation) request as its own sequence and
computes LM-head logits plus a log-softmax over the whole vocabulary (262k for Gemma-3) at every
position, although only the continuation positions are scored. `FastHFLM` keeps everything lm-eval
does up to and after that method (tasks, `_encode_pair`, BOS handling, metrics, caching hooks) and
replaces only the scoring:

* **Prefix-tree packing.** Each request's model input is built exactly as stock does it,
  `(context_enc + continuation_enc)[-(max_length + 1):][:-1]` (so left truncation is identical).
  Inputs are sorted lexicographically; neighbours sharing a long enough common prefix (the context
  shared by the 4 HellaSwag / ARC endings, the sentence before Winogrande's blank, a BoolQ passage
  asked about twice) go into one packed row: a token trie in which each shared prefix appears once.
  A custom attention mask lets every token attend exactly to its ancestors in the trie (its own
  sequence's earlier tokens) and each token keeps its position id within its own sequence, so every
  token sees exactly the keys, values and rotary positions it sees in the stock run. Gemma's
  sliding-window layers get their own mask (ancestors at distance < `sliding_window`), passed as the
  `{"full_attention": ..., "sliding_attention": ...}` mapping the Gemma-2/3 decoders accept.
* **Scored rows only.** The decoder backbone (`model.model`) gives hidden states; only the rows whose
  next token is scored are gathered (each once, even when 4 continuations are scored from the same
  last context token), passed through `model.lm_head` (plus Gemma's final logit soft-capping when
  the config sets it) and log-softmaxed, in chunks.
* **Length batching.** Packed rows are sorted by length, longest first, and run up to `batch_size`
  rows at a time, fewer when the padded batch would exceed `batch_size * batch_row_tokens` tokens
  (a long BoolQ passage does not pad 7 short rows to its length).

The result per request is the same `(sum of continuation log-probs, is_greedy)` as stock, in the
original order, up to float rounding (different matmul shapes): see tests/test_fast_eval.py.
Models this path cannot handle (seq2seq, flash/flex attention, attention layer types other than full
and sliding, bidirectional attention) fall back to the stock implementation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

log = logging.getLogger(__name__)

Request = tuple[Any, list[int], list[int]]  # ((context, continuation) or None, context_enc, continuation_enc)


@dataclass
class PackedRow:
    """One packed sequence: a token trie over the inputs of some requests."""

    tokens: list[int] = field(default_factory=list)     # token of each node
    positions: list[int] = field(default_factory=list)  # position id of each node (its depth)
    parents: list[int] = field(default_factory=list)    # parent node, -1 for a root
    paths: dict[int, list[int]] = field(default_factory=dict)  # request index -> its nodes, in order

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestors(self) -> np.ndarray:
        """[L, L] bool: node q may attend to node k (k is q or an ancestor of q)."""
        size = len(self.tokens)
        allowed = np.zeros((size, size), dtype=bool)
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                allowed[node] = allowed[parent]
            allowed[node, node] = True
        return allowed


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pack_requests(
    inputs: Sequence[Sequence[int]], max_row_tokens: int = 1024, min_shared_fraction: float = 0.25
) -> list[PackedRow]:
    """Group the inputs into prefix-sharing packed rows (every input index appears in exactly one row).

    Sorted lexicographically, the longest prefix an input shares with any earlier input of its row is the
    one it shares with its predecessor, so each input adds exactly its unshared suffix to the trie. An input
    joins the current row when it shares at least `min_shared_fraction` of its length (and more than one
    token: everything shares the BOS) and the row stays within `max_row_tokens` trie nodes.
    """
    order = sorted(range(len(inputs)), key=lambda i: tuple(inputs[i]))
    rows: list[PackedRow] = []
    row: PackedRow | None = None
    prev: Sequence[int] = ()
    prev_path: list[int] = []
    for index in order:
        seq = inputs[index]
        shared = common_prefix_length(prev, seq) if row is not None else 0
        joins = (
            row is not None
            and shared > 1
            and shared >= min_shared_fraction * len(seq)
            and len(row) + len(seq) - shared <= max_row_tokens
        )
        if not joins:
            row, shared = PackedRow(), 0
            rows.append(row)
        path = prev_path[:shared]
        for position in range(shared, len(seq)):
            row.tokens.append(int(seq[position]))
            row.positions.append(position)
            row.parents.append(path[-1] if path else -1)
            path.append(len(row.tokens) - 1)
        row.paths[index] = path
        prev, prev_path = seq, path
    return rows


def mask_layout(config: Any) -> str | None:
    """How the backbone takes a custom mask: 'mapping' (per layer type), 'tensor' (one 4D mask) or None."""
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "use_bidirectional_attention", False):
        return None
    if getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return None
    layer_types = set(getattr(config, "layer_types", None) or ())
    if layer_types - {"full_attention", "sliding_attention"}:
        return None
    if "sliding_attention" in layer_types:
        return "mapping"
    if not layer_types and getattr(config, "sliding_window", None) is not None:
        return None  # every layer sliding (Mistral-style): not needed here, use stock
    return "tensor"


class FastHFLM(HFLM):
    """lm-eval's HFLM with a prefix-sharing, scored-positions-only `_loglikelihood_tokens`."""

    def __init__(
        self,
        *args: Any,
        max_row_tokens: int = 1024,
        min_shared_fraction: float = 0.25,
        lm_head_chunk: int = 256,
        batch_row_tokens: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_row_tokens = max_row_tokens
        self.batch_row_tokens = batch_row_tokens
        self.min_shared_fraction = min_shared_fraction
        self.lm_head_chunk = lm_head_chunk

    # -- helpers ------------------------------------------------------------------------------------

    def _fast_supported(self) -> bool:
        model = self.model
        return (
            self.backend == "causal"
            and mask_layout(model.config) is not None
            and isinstance(getattr(model, "model", None), torch.nn.Module)
            and isinstance(getattr(model, "lm_head", None), torch.nn.Module)
        )

    def _rows_per_batch(self, override_bs: int | None) -> int:
        if override_bs:
            return int(override_bs)
        if isinstance(self.batch_size, int) and self.batch_size > 0:
            return self.batch_size
        return 8  # batch_size="auto": no probing needed, memory per row is small without full logits

    def _batches(self, rows: Sequence[PackedRow], rows_per_batch: int) -> list[list[PackedRow]]:
        """Consecutive rows (sorted longest first) up to `rows_per_batch` and the padded-token budget."""
        budget = rows_per_batch * self.batch_row_tokens
        batches: list[list[PackedRow]] = []
        current: list[PackedRow] = []
        for row in rows:
            if current and (len(current) >= rows_per_batch or (len(current) + 1) * len(current[0]) > budget):
                batches.append(current)
                current = []
            current.append(row)
        if current:
            batches.append(current)
        return batches

    def _model_input(self, context_enc: list[int], continuation_enc: list[int]) -> list[int]:
        assert len(context_enc) > 0
        assert len(continuation_enc) > 0
        assert len(continuation_enc) <= self.max_length
        total_length = len(context_enc) + len(continuation_enc)
        if total_length > self.max_length + 1:
            log.warning(
                "Combined length of context (%d) and continuation (%d) exceeds model's maximum length (%d). "
                "Truncating %d tokens from the left.",
                len(context_enc), len(continuation_enc), self.max_length, total_length - self.max_length + 1,
            )
        return (context_enc + continuation_enc)[-(self.max_length + 1):][:-1]

    def _batch_masks(self, rows: Sequence[PackedRow], length: int, dtype: torch.dtype) -> Any:
        config = self.model.config
        window = getattr(config, "sliding_window", None)
        batch = len(rows)
        full = np.zeros((batch, length, length), dtype=bool)
        sliding = np.zeros_like(full) if mask_layout(config) == "mapping" else None
        for b, row in enumerate(rows):
            n = len(row)
            allowed = row.ancestors()
            full[b, :n, :n] = allowed
            if sliding is not None:
                pos = np.asarray(row.positions)
                sliding[b, :n, :n] = allowed & ((pos[:, None] - pos[None, :]) < window)
        pad = np.arange(length)
        for b, row in enumerate(rows):  # padding queries attend to themselves only (never read)
            full[b, pad[len(row):], pad[len(row):]] = True
            if sliding is not None:
                sliding[b, pad[len(row):], pad[len(row):]] = True

        def additive(allowed: np.ndarray) -> torch.Tensor:
            allowed_t = torch.from_numpy(allowed).to(self.device).unsqueeze(1)
            zero = torch.zeros((), dtype=dtype, device=self.device)
            return torch.where(allowed_t, zero, torch.finfo(dtype).min)

        if sliding is None:
            return additive(full)
        return {"full_attention": additive(full), "sliding_attention": additive(sliding)}

    def _scored_logprobs(
        self, hidden: torch.Tensor, nodes: torch.Tensor, pair_node: torch.Tensor, pair_target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob of each (node, target) pair and the greedy token of each node, from the LM head."""
        model = self.model
        softcap = getattr(model.config, "final_logit_softcapping", None)
        greedy = torch.empty(len(nodes), dtype=torch.long, device=hidden.device)
        pair_logprob = torch.empty(len(pair_node), dtype=self.softmax_dtype or hidden.dtype, device=hidden.device)
        chunk = max(1, self.lm_head_chunk)
        for start in range(0, len(nodes), chunk):
            stop = min(start + chunk, len(nodes))
            logits = model.lm_head(hidden[nodes[start:stop]])
            if softcap is not None:
                logits = logits / softcap
                logits = torch.tanh(logits)
                logits = logits * softcap
            logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            greedy[start:stop] = logprobs.argmax(dim=-1)
            in_chunk = ((pair_node >= start) & (pair_node < stop)).nonzero().squeeze(-1)
            pair_logprob[in_chunk] = logprobs[pair_node[in_chunk] - start, pair_target[in_chunk]].to(pair_logprob.dtype)
        return pair_logprob, greedy

    # -- the override -------------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self,
        requests: list[Request],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if not self._fast_supported():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        if not requests:
            return []
        model = self.model
        backbone = model.model
        dtype = next(backbone.parameters()).dtype
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        inputs = [self._model_input(context_enc, continuation_enc) for _, context_enc, continuation_enc in requests]
        rows = pack_requests(inputs, max(self.max_row_tokens, 1), self.min_shared_fraction)
        rows.sort(key=lambda row: -len(row))  # batches by length: little padding, largest first
        rows_per_batch = self._rows_per_batch(override_bs)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or (self.rank != 0)),
                    desc="Running loglikelihood requests (fast)")
        for batch_rows in self._batches(rows, rows_per_batch):
            length = len(batch_rows[0])
            input_ids = torch.full((len(batch_rows), length), pad_id, dtype=torch.long)
            position_ids = torch.zeros((len(batch_rows), length), dtype=torch.long)
            for b, row in enumerate(batch_rows):
                input_ids[b, :len(row)] = torch.tensor(row.tokens, dtype=torch.long)
                position_ids[b, :len(row)] = torch.tensor(row.positions, dtype=torch.long)

            # scored (row, node) pairs, each node once; (node, target) pairs per request
            node_index: dict[tuple[int, int], int] = {}
            pair_node: list[int] = []
            pair_target: list[int] = []
            spans: list[tuple[int, int, int, list[int]]] = []  # (request, first pair, n pairs, targets)
            for b, row in enumerate(batch_rows):
                for index, path in row.paths.items():
                    continuation = requests[index][2]
                    scored = path[len(path) - len(continuation):]
                    first = len(pair_node)
                    for node, target in zip(scored, continuation, strict=True):
                        key = (b, node)
                        if key not in node_index:
                            node_index[key] = len(node_index)
                        pair_node.append(node_index[key])
                        pair_target.append(target)
                    spans.append((index, first, len(continuation), continuation))
            flat_nodes = torch.tensor([b * length + node for b, node in node_index], dtype=torch.long)

            with (
                torch.no_grad(),
                torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                               enabled=self.mixed_precision_dtype is not None),
            ):
                mask = self._batch_masks(batch_rows, length, dtype)
                out = backbone(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask,
                    position_ids=position_ids.to(self.device),
                    use_cache=False,
                )
                hidden = out[0].reshape(len(batch_rows) * length, -1)
                pair_logprob, greedy = self._scored_logprobs(
                    hidden,
                    flat_nodes.to(self.device),
                    torch.tensor(pair_node, dtype=torch.long, device=self.device),
                    torch.tensor(pair_target, dtype=torch.long, device=self.device),
                )
            pair_node_t = torch.tensor(pair_node, dtype=torch.long, device=self.device)
            targets_t = torch.tensor(pair_target, dtype=torch.long, device=self.device)
            matches = greedy[pair_node_t] == targets_t
            for index, first, count, _ in spans:
                answer = (float(pair_logprob[first:first + count].sum()), bool(matches[first:first + count].all()))
                results[index] = answer
                request_str = requests[index][0]
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
                pbar.update(1)
        pbar.close()
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]
