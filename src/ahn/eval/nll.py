"""Per-token negative log-likelihood over long documents, by position bucket and method."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


@torch.no_grad()
def token_nll(model, input_ids: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """NLL of every next token under `model` in its current mode.

    Args:
        model: a transformers causal LM (`model.model` gives hidden states, `model.lm_head`
            the vocabulary projection, applied `chunk` positions at a time to bound memory).
        input_ids: `[B, T]` token ids.
    Returns:
        `[B, T - 1]` float32: entry `t` is `-log p(x_{t+1} | x_{<=t})`.
    """
    hidden = model.model(input_ids=input_ids).last_hidden_state  # [B, T, hidden]
    targets = input_ids[:, 1:]
    out = []
    for start in range(0, targets.shape[1], chunk):
        logits = model.lm_head(hidden[:, start : start + chunk]).float()  # [B, c, V]
        logits = logits[:, : targets.shape[1] - start]
        out.append(
            F.cross_entropy(
                logits.transpose(1, 2), targets[:, start : start + chunk], reduction="none"
            )
        )
    return torch.cat(out, dim=1)


def bucket_sums(nll: torch.Tensor, bucket: int) -> tuple[list[float], list[int]]:
    """Sum and count of `nll` `[T]` per bucket of `bucket` consecutive target positions."""
    sums, counts = [], []
    for start in range(0, nll.shape[0], bucket):
        part = nll[start : start + bucket].double()
        sums.append(float(part.sum()))
        counts.append(int(part.numel()))
    return sums, counts


def read_documents(path: str | Path, text_key: str = "text") -> list[str]:
    """Documents from a `.jsonl` file (field `text_key` of each line) or a `.txt` file (the
    whole file as one document) or a directory of such files (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".txt"))
        return [doc for file in files for doc in read_documents(file, text_key)]
    if not path.is_file():
        raise FileNotFoundError(f"no documents at {path}")
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if path.suffix == ".jsonl":
        docs = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                if text_key not in record:
                    raise ValueError(f"{path}:{number} has no field {text_key!r}")
                docs.append(record[text_key])
        return docs
    raise ValueError(f"{path}: documents must be .jsonl or .txt, not {path.suffix!r}")


def pieces(token_ids: list[list[int]], length: int, separator: int | None, limit: int | None):
    """At most `limit` (None: all) pieces of exactly `length` tokens: the documents joined
    (with `separator` between them when given) into one stream, cut in order."""
    stream: list[int] = []
    for ids in token_ids:
        stream.extend(ids)
        if separator is not None:
            stream.append(separator)
        if limit is not None and len(stream) >= length * limit:
            break
    return [stream[i : i + length] for i in range(0, len(stream) - length + 1, length)][:limit]
