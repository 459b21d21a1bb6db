"""The training loop: `train(config)` reads top to bottom, one optimizer step per iteration."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

import ahn
from ahn import dtypes
from ahn.bases import resolve_base
from ahn.train import checkpoint as ckpt
from ahn.train.config import TrainConfig
from ahn.train.data import (
    DataPosition,
    Sample,
    SampleStream,
    Tokenizing,
    collate,
    file_source,
    memory_source,
    rank_micro_batches,
)
from ahn.train.distributed import (
    DistEnv,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    finish,
    init_distributed,
)
from ahn.train.evaluate import hidden_states
from ahn.train.logger import TrainLogger
from ahn.train.loss import distill_sums, loss_positions
from ahn.train.schedule import get_lr
from ahn.train.sharding import full_tensor, gathered, shard
from ahn.train.windows import draw_window


def train(
    config: TrainConfig,
    model: torch.nn.Module | None = None,
    tokenizer=None,
    data: Iterable | None = None,
    callback: Callable[[dict], None] | None = None,
) -> torch.nn.Module:
    """Train the AHN of a frozen base by self-distillation (SPEC §5) and save it at `output`.

    Args:
        config: the run; `config.base` / `config.data` are used when `model` / `data` are None.
        model: an in-memory causal LM, augmented here with `config.ahn_config()` unless it already
            is; its base weights are left untouched.
        tokenizer: for `text` / `messages` data (default: loaded from `config.base` if possible).
        data: in-memory samples instead of `config.data`: token-id lists, records
            (`{"text"|"messages"|"input_ids": ...}`) or `Sample`s; a list is replayed each epoch.
        callback: called with each step's record (the line written to `train_log.jsonl`).
    Returns:
        the augmented model with the trained AHN (also saved with `ahn.save` at `config.output`).
    """
    env = init_distributed(config.device)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model, tokenizer = prepare_model(config, env, model, tokenizer)
    resume_from = ckpt.latest_checkpoint(output) if config.resume else None
    if resume_from is not None:
        ahn.load(model, resume_from)  # before sharding: loads whole tensors
    broadcast_from_main([p for _, p in ahn.trainable_parameters(model)])
    if config.fsdp and env.world > 1:
        shard(model, env.device, env.world)
    named = ahn.trainable_parameters(model)  # sharded parameters under --fsdp
    params = [p for _, p in named]
    optimizer = build_optimizer(named, config)
    stream = build_stream(config, model, tokenizer, data)

    step, position = 0, DataPosition()
    if resume_from is not None:
        step, position = restore(resume_from, optimizer, named, config, env)
    logger = TrainLogger(output, config.steps, step, env.is_main, config.tensorboard)
    global_size = env.world * config.batch_size * config.grad_accum
    batches = stream.global_batches(global_size, position)
    try:
        while step < config.steps:
            batch, position = next(batches)
            record = train_step(model, optimizer, params, batch, step, config, env)
            step += 1
            record = {"step": step, **record}
            logger.log(record)
            if callback is not None:
                callback(record)
            if config.save_every and step % config.save_every == 0:
                save_checkpoint(model, optimizer, named, config, env, step, position)
    finally:
        logger.close()
    with gathered(model):
        if env.is_main:
            ckpt.save_ahn_into(model, output)
    finish(env)
    return model


def prepare_model(config: TrainConfig, env: DistEnv, model, tokenizer):
    """Load (or take) the base, augment it, freeze it, keep AHN weights in float32."""
    base = None if config.base is None else resolve_base(config.base)
    if model is None:
        if base is None:
            raise ValueError("no base model: give --base DIR (or pass `model=`)")
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            base, dtype=dtypes.resolve(config.dtype, env.device.type)
        )
    if tokenizer is None and base is not None:
        tokenizer = _load_tokenizer(base)
    if not ahn.is_augmented(model):
        ahn.augment(model, config.ahn_config())
    if config.init_ahn is not None:
        ahn.load(model, config.init_ahn)  # weights only: the model is augmented already
    model.to(env.device)
    for _, param in ahn.trainable_parameters(model):
        param.data = param.data.float()
    if config.gradient_checkpointing:
        _enable_checkpointing(model)
    if config.compile:
        ahn.compile(model)
    return model, tokenizer


def _enable_checkpointing(model) -> None:
    kwargs = {"use_reentrant": False}  # the frozen base's inputs need no grad
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _load_tokenizer(base: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError):  # pre-tokenized data needs none
        return None


def build_optimizer(named: list[tuple[str, torch.nn.Parameter]], config: TrainConfig):
    """AdamW over the AHN parameters only; matrices decay, vectors (norms, A_log, dt_bias) not."""
    decay = [p for _, p in named if p.dim() >= 2]
    keep = [p for _, p in named if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def build_stream(config: TrainConfig, model, tokenizer, data) -> SampleStream:
    vocab_size = model.get_output_embeddings().weight.shape[0]
    tok = Tokenizing(tokenizer, config.assistant_only, vocab_size)
    if data is not None:
        source = memory_source(data, tok)
    elif config.data:
        source = file_source(config.data, tok, config.seq_len, config.skip_bad_lines)
    else:
        raise ValueError("no training data: give --data FILE (or pass `data=`)")
    return SampleStream(source, config.seq_len, config.min_len, config.seed, config.shuffle_buffer)


def step_window(config: TrainConfig, step: int, batch: list[Sample]) -> tuple[int, int]:
    """`(sinks, window)` of a step: fixed, or drawn from the global batch's longest sample."""
    if config.train_window == "fixed":
        return config.sinks, config.window
    return draw_window(config.seed, step, max(map(len, batch)), config.min_sinks)


def count_positions(sample: Sample, lossless: int) -> int:
    """Trained positions of one sample (positions `t >= lossless` whose next token is a target)."""
    if sample.targets is None:
        return max(0, len(sample) - lossless - 1)
    return sum(sample.targets[lossless + 1 :])


def train_step(model, optimizer, params, batch, step, config: TrainConfig, env: DistEnv) -> dict:
    """One optimizer step over a global batch; this rank runs its slice.

    Losses are sums divided by the token count of the whole global batch (known on every rank,
    which reads the whole batch), and gradients are summed over ranks: N ranks with batch b
    compute what one rank with batch N*b does.
    """
    start = time.perf_counter()
    sinks, window = step_window(config, step, batch)
    lr = get_lr(step, config.lr, config.warmup_steps, config.steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    n_global = sum(count_positions(s, sinks + window) for s in batch)
    kl_weight = config.loss_weights[0]
    sums = torch.zeros(3, device=env.device)
    for samples in rank_micro_batches(batch, env.rank, env.world, config.grad_accum):
        input_ids, targets = (t.to(env.device) for t in collate(samples))
        positions = loss_positions(targets, sinks, window)
        if not positions.any():
            continue
        with _autocast(model, env), ahn.window(model, window=window, sinks=sinks):
            h_teacher = _teacher_hidden(model, input_ids) if kl_weight else None
            # backward inside the contexts: checkpointed layers recompute in the same setting;
            # transformers checkpoints layers only in train mode
            with _train_mode(model, config.gradient_checkpointing):
                h_student = student_hidden(model, input_ids, sinks + window, config)
                part = distill_sums(
                    model.lm_head, h_student, h_teacher, input_ids, positions, config.logit_chunk
                )
                with ahn.mode(model, "ahn"):
                    (_weighted(part, config) / n_global).backward()
        sums += part.detach()
    grad_norm = _sync_and_step(optimizer, params, sums, config, enabled=n_global > 0)
    seconds = time.perf_counter() - start
    means = sums / n_global if n_global else torch.full_like(sums, float("nan"))
    kl, ce_student, ce_teacher = means.tolist()
    tokens = sum(map(len, batch))
    return {
        "loss": float(_weighted(means, config)),
        "kl": kl,
        "ce_teacher": ce_teacher,
        "ce_student": ce_student,
        "lr": lr,
        "grad_norm": grad_norm,
        "sinks": sinks,
        "window": window,
        "loss_tokens": n_global,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
    }


def _weighted(terms: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The training loss from `[kl, student_ce, teacher_ce]`; an unused (nan) KL is left out."""
    kl_weight, ce_weight = config.loss_weights
    loss = ce_weight * terms[1]
    return loss + kl_weight * terms[0] if kl_weight else loss


def _sync_and_step(
    optimizer, params, sums: torch.Tensor, config: TrainConfig, enabled: bool
) -> float:
    """Sum gradients and metric sums over ranks, clip, step. Returns the gradient norm."""
    grads = []
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    all_reduce_sum([sums] if config.fsdp else [*grads, sums])  # FSDP reduced the gradients
    if not enabled:  # no trained position in the whole batch: nothing to learn from
        optimizer.zero_grad(set_to_none=True)
        return 0.0
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
    grad_norm = float(full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


@contextlib.contextmanager
def _train_mode(model, training: bool):
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


def student_hidden(model, input_ids: torch.Tensor, lossless: int, config: TrainConfig):
    """The student's last hidden states `[B, T, hidden]`, in two calls that continue one cache:
    tokens `[0, lossless)`, where the memory is still empty, then the rest.

    The same numbers as one call (SPEC §3: chunked prefill equals the parallel path), but the
    first call's hidden states do not depend on the AHN, so the backward runs over the second
    call's rows only (the first call's write-gate logits, kept in the cache, still get their
    gradient). Under gradient checkpointing (no cache in training mode) and under `--fsdp` it is
    one call: with FSDP2, two forward calls of the sharded layers before one backward gave other
    AHN gradients than one process (weights off by 1e-2 in the two-process test).
    """
    one_call = config.gradient_checkpointing or config.fsdp
    if one_call or not 0 < lossless < input_ids.shape[1]:
        return hidden_states(model, input_ids, "ahn")
    with ahn.mode(model, "ahn"):
        cache = ahn.new_cache(model)
        parts = [
            model.model(input_ids=ids, cache=cache, use_cache=True).last_hidden_state
            for ids in (input_ids[:, :lossless], input_ids[:, lossless:])
        ]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def _teacher_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    with _train_mode(model, False):  # no dropout in the teacher
        return hidden_states(model, input_ids, "full")


def _autocast(model, env: DistEnv):
    """Run in the base's dtype (the float32 AHN weights included) when it is not float32."""
    dtype = model.get_output_embeddings().weight.dtype
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(env.device.type, dtype=dtype)


def save_checkpoint(
    model, optimizer, named, config: TrainConfig, env: DistEnv, step: int, position: DataPosition
) -> None:
    """Write `checkpoint-STEP/` atomically (every rank adds its RNG state)."""
    tmp = ckpt.staging_dir(config.output, step) if env.is_main else None
    barrier()
    tmp = tmp or Path(f"{ckpt.checkpoint_dir(config.output, step)}.tmp")
    ckpt.save_rng(tmp, env.rank)
    tensors, optimizer_rest = ckpt.optimizer_tensors(optimizer, {p: n for n, p in named})
    with gathered(model):
        if env.is_main:
            ckpt.save_ahn_into(model, tmp)
    if env.is_main:
        ckpt.write_optimizer(tmp, tensors)
        state = {
            "step": step,
            "data_position": dataclasses.asdict(position),
            "optimizer": optimizer_rest,
            "world_size": env.world,
            "config": config.to_dict(),
        }
        ckpt.write_json(tmp / ckpt.STATE_FILE, state)
    barrier()  # every rank's RNG file is written before the directory is renamed
    if env.is_main:
        ckpt.publish(tmp)
    barrier()


def restore(
    path: Path, optimizer, named, config: TrainConfig, env: DistEnv
) -> tuple[int, DataPosition]:
    """Load the optimizer and RNG states of a checkpoint (its AHN weights are loaded before
    sharding); return (step, data position)."""
    state = json.loads((path / ckpt.STATE_FILE).read_text())
    _warn_if_changed(state, config, env)
    ckpt.load_optimizer(path, optimizer, {p: n for n, p in named}, state["optimizer"])
    ckpt.load_rng(path, env.rank)
    return state["step"], DataPosition(**state["data_position"])


# Fields that change what a resumed run computes (so that it no longer matches an uninterrupted one)
RESUME_FIELDS = (
    "data",
    "seed",
    "seq_len",
    "min_len",
    "steps",
    "lr",
    "warmup",
    "loss",
    "train_window",
    "min_sinks",
    "window",
    "sinks",
    "shuffle_buffer",
    "assistant_only",
)


def _warn_if_changed(state: dict, config: TrainConfig, env: DistEnv) -> None:
    saved = state["config"]
    changed = [f for f in RESUME_FIELDS if saved.get(f) != getattr(config, f)]
    saved_batch = state["world_size"] * saved["batch_size"] * saved["grad_accum"]
    if saved_batch != env.world * config.batch_size * config.grad_accum:
        changed.append("global batch (processes x batch_size x grad_accum)")
    if changed and env.is_main:
        warnings.warn(
            f"resuming with other {', '.join(changed)} than the checkpoint's run: "
            "the result will differ from an uninterrupted run",
            stacklevel=3,
        )
