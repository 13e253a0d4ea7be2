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
* **Length batching.** Packed rows are sorted by length, longest first, and run as many at a time
  as fit `batch_size * batch_row_tokens` padded tokens (at least one row): short rows make large
  batches, a long BoolQ passage does not pad short rows to its length. Scored rows are collected
  across forwards and go through the LM head `lm_head_chunk` (256) at a time.

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
        """[L, L] bool: node q may attend to node k (k is q or an ancestor of q). The reference the device-built
        masks (trie_attention) are tested against; scoring itself builds them on the device."""
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


def trie_attention(positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, L, L] bool: in each packed row (a trie in depth-first preorder, its nodes' depths = `positions`, its
    first `lengths[b]` nodes real), node i may attend to node j exactly when j is i or an ancestor of i, i.e.
    j <= i < end_j with end_j the first later node no deeper than j (else the row's end). All on the device."""
    length = positions.shape[1]
    index = torch.arange(length, device=positions.device)
    real = index[None, :] < lengths[:, None]
    query, key = index[None, :, None], index[None, None, :]
    later = (key > query) & (positions[:, None, :] <= positions[:, :, None]) & real[:, None, :]  # [B, j, k]
    end = torch.where(later.any(-1), later.to(torch.uint8).argmax(-1), lengths[:, None])     # [B, L]
    return (key <= query) & (query < end[:, None, :]) & real[:, :, None] & real[:, None, :]


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
    """lm-eval's HFLM with a prefix-sharing, scored-positions-only `_loglikelihood_tokens`.

    `batch_size` sets the padded tokens per backbone forward, `batch_size * batch_row_tokens`
    (at least one packed row); the LM head runs on `lm_head_chunk` scored rows at a time, collected
    across forwards (a full-vocabulary log-softmax of 256 rows is 256 MiB in float32).
    """

    def __init__(
        self,
        *args: Any,
        max_row_tokens: int = 1024,
        min_shared_fraction: float = 0.25,
        batch_row_tokens: int = 128,
        lm_head_chunk: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_row_tokens = max_row_tokens
        self.min_shared_fraction = min_shared_fraction
        self.batch_row_tokens = batch_row_tokens
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

    def _token_budget(self, override_bs: int | None) -> int:
        batch_size = override_bs or self.batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            batch_size = 8  # batch_size="auto": nothing to probe, memory per token is small without full logits
        return batch_size * self.batch_row_tokens

    @staticmethod
    def _batches(rows: Sequence[PackedRow], budget: int) -> list[list[PackedRow]]:
        """Consecutive rows (sorted longest first) while the padded batch stays within `budget` tokens."""
        batches: list[list[PackedRow]] = []
        current: list[PackedRow] = []
        for row in rows:
            if current and (len(current) + 1) * len(current[0]) > budget:
                batches.append(current)
                current = []
            current.append(row)
        if current:
            batches.append(current)
        return batches

    def _model_input(self, context_enc: list[int], continuation_enc: list[int]) -> list[int]:
        """Stock `_loglikelihood_tokens`' input: context + continuation, left-truncated, last token dropped."""
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

    def _batch_masks(self, rows: Sequence[PackedRow], length: int, dtype: torch.dtype,
                     positions: torch.Tensor | None = None) -> Any:
        """Additive float masks [B, 1, L, L] (0 = attend, dtype min = masked), per layer type if needed, built on
        the device from the rows' position ids (`positions`: [B, L], on the device; built here when None).

        Every packed row is a trie in depth-first preorder (pack_requests appends each input's unshared suffix
        as a branch off its predecessor's path, inputs sorted lexicographically), so node j's subtree is the
        contiguous range [j, end_j), end_j = the first later node no deeper than j: node i may attend to node
        j (j is i or an ancestor of i) exactly when j <= i < end_j. Padding queries see themselves only."""
        config = self.model.config
        window = getattr(config, "sliding_window", None)
        device = self.device
        if positions is None:
            positions = torch.zeros((len(rows), length), dtype=torch.long)
            for b, row in enumerate(rows):
                positions[b, :len(row)] = torch.tensor(row.positions, dtype=torch.long)
            positions = positions.to(device)
        n = torch.tensor([len(row) for row in rows], device=device)
        index = torch.arange(length, device=device)
        real = index[None, :] < n[:, None]                                          # [B, L]
        query, key = index[None, :, None], index[None, None, :]
        padding_diagonal = (query == key) & ~real[:, :, None]  # padding queries see themselves only (never read)
        full = trie_attention(positions, n) | padding_diagonal
        layout = mask_layout(config)
        # the window cannot bind when no position reaches it: the sliding mask is the full one (built once)
        binds = layout == "mapping" and window is not None and max(max(row.positions) for row in rows) >= window
        zero, masked = torch.zeros((), dtype=dtype, device=device), torch.finfo(dtype).min

        def additive(allowed: torch.Tensor) -> torch.Tensor:
            return torch.where(allowed.unsqueeze(1), zero, masked)

        if layout != "mapping":
            return additive(full)
        full_mask = additive(full)
        if not binds:
            return {"full_attention": full_mask, "sliding_attention": full_mask}
        near = (positions[:, :, None] - positions[:, None, :]) < window
        sliding = (full & near) | padding_diagonal
        return {"full_attention": full_mask, "sliding_attention": additive(sliding)}

    def _score_rows(
        self, hidden: torch.Tensor, pair_row: torch.Tensor, pair_target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LM head + log-softmax on the scored hidden rows only, in chunks.

        Returns the log-prob of each (row, target) pair and whether the target is the row's argmax.
        """
        model = self.model
        softcap = getattr(model.config, "final_logit_softcapping", None)
        greedy = torch.empty(len(hidden), dtype=torch.long, device=hidden.device)
        pair_logprob = torch.empty(len(pair_row), dtype=self.softmax_dtype or hidden.dtype, device=hidden.device)
        chunk = max(1, self.lm_head_chunk)
        for start in range(0, len(hidden), chunk):
            stop = min(start + chunk, len(hidden))
            logits = model.lm_head(hidden[start:stop])
            if softcap is not None:  # as Gemma2/3ForCausalLM.forward does
                logits = logits / softcap
                logits = torch.tanh(logits)
                logits = logits * softcap
            logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            greedy[start:stop] = logprobs.argmax(dim=-1)
            in_chunk = ((pair_row >= start) & (pair_row < stop)).nonzero().squeeze(-1)
            pair_logprob[in_chunk] = logprobs[pair_row[in_chunk] - start, pair_target[in_chunk]].to(pair_logprob.dtype)
        return pair_logprob, greedy[pair_row] == pair_target

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
        backbone = self.model.model
        dtype = next(backbone.parameters()).dtype
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        inputs = [self._model_input(context_enc, continuation_enc) for _, context_enc, continuation_enc in requests]
        rows = pack_requests(inputs, max(self.max_row_tokens, 1), self.min_shared_fraction)
        rows.sort(key=lambda row: -len(row))  # batches by length: little padding, largest first
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=(disable_tqdm or (self.rank != 0)),
                    desc="Running loglikelihood requests (fast)")

        # scored hidden rows waiting for the LM head, their (row, target) pairs, and the requests' spans
        pending: dict[str, Any] = {"hidden": [], "rows": 0, "pair_row": [], "pair_target": [], "spans": []}

        def flush() -> None:
            if not pending["spans"]:
                return
            with torch.no_grad(), self._autocast():
                pair_logprob, pair_greedy = self._score_rows(
                    torch.cat(pending["hidden"]),
                    torch.tensor(pending["pair_row"], dtype=torch.long, device=self.device),
                    torch.tensor(pending["pair_target"], dtype=torch.long, device=self.device),
                )
            # one read back per flush (not two host syncs per request); the per-request sums then run on the
            # host copy, in the scoring dtype (on the CPU: exactly the computation as before)
            pair_logprob, pair_greedy = pair_logprob.cpu(), pair_greedy.cpu()
            for index, first, count in pending["spans"]:
                answer = (float(pair_logprob[first:first + count].sum()), bool(pair_greedy[first:first + count].all()))
                results[index] = answer
                request_str = requests[index][0]
                if request_str is not None:
                    self.cache_hook.add_partial("loglikelihood", request_str, answer)
                pbar.update(1)
            pending.update(hidden=[], rows=0, pair_row=[], pair_target=[], spans=[])

        for batch_rows in self._batches(rows, self._token_budget(override_bs)):
            length = len(batch_rows[0])
            input_ids = torch.full((len(batch_rows), length), pad_id, dtype=torch.long)
            position_ids = torch.zeros((len(batch_rows), length), dtype=torch.long)
            for b, row in enumerate(batch_rows):
                input_ids[b, :len(row)] = torch.tensor(row.tokens, dtype=torch.long)
                position_ids[b, :len(row)] = torch.tensor(row.positions, dtype=torch.long)

            # the scored nodes: continuation token j of a request is predicted at its path's node n-c+j
            scored: dict[int, int] = {}  # flat node (b * length + node) -> pending row
            for b, row in enumerate(batch_rows):
                for index, path in row.paths.items():
                    continuation = requests[index][2]
                    first = len(pending["pair_row"])
                    for node, target in zip(path[len(path) - len(continuation):], continuation, strict=True):
                        flat = b * length + node
                        if flat not in scored:
                            scored[flat] = pending["rows"] + len(scored)
                        pending["pair_row"].append(scored[flat])
                        pending["pair_target"].append(target)
                    pending["spans"].append((index, first, len(continuation)))

            device_positions = position_ids.to(self.device)  # also what the masks are built from, on the device
            with torch.no_grad(), self._autocast():
                out = backbone(
                    input_ids=input_ids.to(self.device),
                    attention_mask=self._batch_masks(batch_rows, length, dtype, device_positions),
                    position_ids=device_positions,
                    use_cache=False,
                )
                hidden = out[0].reshape(len(batch_rows) * length, -1)
                pending["hidden"].append(hidden[torch.tensor(list(scored), dtype=torch.long, device=self.device)])
            pending["rows"] += len(scored)
            if pending["rows"] >= self.lm_head_chunk:
                flush()
        flush()
        pbar.close()
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def _autocast(self) -> Any:
        """The same autocast context as stock `_model_call`."""
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        )
