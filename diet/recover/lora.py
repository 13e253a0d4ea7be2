"""LoRA recovery fine-tuning of a pruned model (`recover=lora`), merged into its weights at the end.

peft's LoRA on every `nn.Linear` of the decoder layers (LLM-Pruner's and SliceGPT's target list, q/k/v/o and the
MLP projections, found by type so a pruned or rotated layer is covered as it is), the base weights frozen, the
language-model loss over the full vocabulary on equal-length windows (no padding), AdamW with the linear
warm-up/decay schedule of transformers (`get_linear_schedule_with_warmup`, the references' HF Trainer default),
gradient norm clipped. The batches of an epoch follow a permutation drawn from (seed, epoch); dropout draws from
torch's generator, seeded at the start and saved in every checkpoint, so a run cut off and resumed from its last
checkpoint (diet.recover.state) ends with the same adapter weights as one that never stopped.

After training the adapters are merged (`merge_and_unload`): the model keeps its modules, shapes and
parameter count, and the saved checkpoint stays a plain (or spec-format) model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from diet.models.adapters import adapter_for
from diet.recover.data import recovery_windows
from diet.recover.options import RecoveryPlan
from diet.recover.state import TrainingState, load_state, save_state

log = logging.getLogger(__name__)


def decoder_linears(model: nn.Module) -> list[str]:
    """Full names of every nn.Linear inside the decoder layers (never the embedding or the LM head)."""
    layers = {id(layer) for layer in adapter_for(model).layers()}
    names = []
    for name, module in model.named_modules():
        if id(module) in layers:
            names += [f"{name}.{sub}" for sub, child in module.named_modules() if isinstance(child, nn.Linear)]
    return names


def lora_config(plan: RecoveryPlan, targets: list[str]) -> Any:
    from peft import LoraConfig

    o = plan.options
    return LoraConfig(r=o.rank, lora_alpha=o.alpha, lora_dropout=o.dropout, target_modules=targets, bias="none")


def wrap(model: nn.Module, plan: RecoveryPlan) -> Any:
    """The model with LoRA adapters (peft), every other weight frozen; adapters in float32 on a bf16 model."""
    from peft import get_peft_model

    targets = decoder_linears(model)
    if not targets:
        raise ValueError("recover=lora found no linear projection in the decoder layers to adapt")
    torch.manual_seed(plan.seed)  # LoRA's A matrices are drawn at creation
    return get_peft_model(model, lora_config(plan, targets))


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


@torch.no_grad()
def validation_loss(model: nn.Module, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token loss over every predicted token of the validation windows (dropout off)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        loss = model(input_ids=batch, labels=batch).loss
        count = batch.shape[0] * (batch.shape[1] - 1)
        total += float(loss) * count
        tokens += count
    model.train(was_training)
    return total / tokens


@dataclass
class RecoveryResult:
    """What one recovery did, as the record keeps it (record["recovery"])."""

    plan: dict[str, Any]
    steps: int
    tokens_seen: int
    seconds: float
    trainable_parameters: int
    val_loss_before: float
    val_loss_after: float
    train_curve: list[list[float]] = field(default_factory=list)  # [step, loss, learning rate]
    val_curve: list[list[float]] = field(default_factory=list)    # [step, validation loss]
    resumed_from_step: int = 0
    task: str | None = None                                       # the oracle's task model

    def record(self) -> dict[str, Any]:
        return dict(self.__dict__)


def recover(model: nn.Module, tokenizer: Any, plan: RecoveryPlan, device: str, checkpoint: Path | None,
            fingerprint: str, task: str | None = None) -> RecoveryResult:
    """Fine-tune `model` in place with LoRA and merge the adapters into it. `checkpoint`: the file a cut-off run
    left (resumed when its `fingerprint` — the pruned weights and the plan — matches) and where this run keeps
    its progress; None keeps none."""
    o = plan.options
    train, val = recovery_windows(plan.file, tokenizer, o.windows, o.val_windows, o.window_length, plan.seed,
                                  plan.add_bos_token)
    train_ids = torch.tensor(train.sequences, dtype=torch.long, device=device)
    val_ids = torch.tensor(val.sequences, dtype=torch.long, device=device)
    peft_model = wrap(model, plan)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=1e-8, weight_decay=o.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    schedule = get_linear_schedule_with_warmup(optimizer, round(o.warmup_fraction * o.total_steps), o.total_steps)
    state = load_state(checkpoint, fingerprint) if checkpoint is not None else None
    if state is None:
        state = TrainingState(fingerprint=fingerprint, val_loss_before=validation_loss(peft_model, val_ids, o.batch_size))
        torch.manual_seed(plan.seed)
    else:
        state.restore(peft_model, optimizer, schedule)
        log.info("recover: resumed at step %d of %d from %s", state.step, o.total_steps, checkpoint)
    resumed_from = state.step
    peft_model.train()
    started = time.perf_counter()
    bar = tqdm(total=o.total_steps, initial=state.step, desc="recover: lora", unit="step")
    for step in range(state.step, o.total_steps):
        epoch, index = divmod(step, o.steps_per_epoch)
        rows = batch_order(len(train_ids), plan.seed, epoch)[index * o.batch_size:(index + 1) * o.batch_size]
        batch = train_ids[torch.as_tensor(rows, device=device)]
        loss = peft_model(input_ids=batch, labels=batch).loss
        loss.backward()
        if o.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
        rate = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        state.step = step + 1
        state.tokens_seen += batch.numel()
        state.train_curve.append([state.step, loss.item(), rate])
        if state.step % o.val_every == 0 or state.step == o.total_steps:
            state.val_curve.append([state.step, validation_loss(peft_model, val_ids, o.batch_size)])
        state.seconds += time.perf_counter() - started
        started = time.perf_counter()
        bar.update(1)
        bar.set_postfix(loss=f"{state.train_curve[-1][1]:.3f}", tok_s=f"{state.tokens_seen / max(state.seconds, 1e-9):.0f}")
        if checkpoint is not None and (state.step % o.checkpoint_every == 0 or state.step == o.total_steps):
            save_state(checkpoint, state, peft_model, optimizer, schedule)
    bar.close()
    val_after = state.val_curve[-1][1] if state.val_curve else validation_loss(peft_model, val_ids, o.batch_size)
    trainable = sum(p.numel() for p in params)
    merged = peft_model.merge_and_unload()
    if merged is not model:  # peft swaps the modules of `model` in place; anything else would lose the merge
        raise RuntimeError("peft's merge_and_unload returned another model object than the one adapted")
    model.eval()
    return RecoveryResult(plan={**plan.identity(), "source": o.source, "describe": plan.describe()},
                          steps=state.step, tokens_seen=state.tokens_seen, seconds=round(state.seconds, 3),
                          trainable_parameters=trainable, val_loss_before=state.val_loss_before,
                          val_loss_after=val_after, train_curve=state.train_curve, val_curve=state.val_curve,
                          resumed_from_step=resumed_from, task=task)
