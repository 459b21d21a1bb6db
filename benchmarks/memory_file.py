"""Read once, ask many times: what a memory file saves against re-reading the document.

For each document length: the time to read the document into a memory (`ahn.read`), the
memory file's size, and the time to the first answer token (a) from the saved memory (load the
file + the question + one token) against (b) re-reading the document with the question in one
prompt (a fresh cache + one token), both measured in this run; the ratio is b / a.

Models: `demo` (the shipped 0.55M toy base, random AHN weights, random token ids: the
timings and sizes, not answers) and `smollm2` (SmolLM2-135M-Instruct with the shipped AHN, on
held-out standard-library text; only when `ahn fetch-base smollm2-135m-instruct` has cached it).

    python benchmarks/memory_file.py                               # demo 4k/16k/64k, smollm2 4k/16k
    python benchmarks/memory_file.py --models smollm2 --lengths 4096,16384,65536
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ASSET = Path(__file__).resolve().parents[1] / "src" / "ahn" / "assets"


def demo_model(window: int, sinks: int):
    import torch

    import ahn
    from ahn.demo.base import load_base

    model, _ = load_base()
    ahn.augment(model, ahn.AHNConfig(window=window, sinks=sinks))
    with torch.no_grad():
        for _, p in ahn.trainable_parameters(model):
            p.normal_(0.0, 0.02)
    vocab = model.config.vocab_size

    def document(n: int):
        return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(n))

    question = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(1))
    return model, document, question


def smollm2_model(window: int, sinks: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ahn
    from ahn import corpus
    from ahn.bases import base_dir

    path = base_dir("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ahn.load(model, ASSET / "smollm2-135m-instruct-gdn")
    text = "\n\n".join(d.text for d in corpus.documents("heldout"))
    stream = tokenizer(text, return_tensors="pt").input_ids

    def document(n: int):
        if n > stream.shape[1]:
            raise ValueError(f"--lengths {n}: the held-out text has {stream.shape[1]} tokens")
        return stream[:, :n]

    question = tokenizer("\n\nWhat does this module do?", return_tensors="pt").input_ids
    return model, document, question


def first_token_seconds(model, ids, cache) -> float:
    import torch

    start = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=1,
                   do_sample=False)  # fmt: skip
    return time.perf_counter() - start


def measure(model, document, question, n: int) -> dict:
    import torch

    import ahn

    doc = document(n)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        memory = ahn.read(model, doc)
        read_s = time.perf_counter() - start
        path = ahn.save_memory(memory, Path(tmp) / "doc.ahnmem", model=model)
        size = path.stat().st_size
        start = time.perf_counter()
        loaded = ahn.load_memory(model, path)
        load_s = time.perf_counter() - start
        from_memory_s = load_s + first_token_seconds(model, question, loaded)
    reread_s = first_token_seconds(model, torch.cat([doc, question], dim=1), None)
    return {"tokens": n, "read_s": read_s, "file_mib": size / 2**20, "load_s": load_s,
            "first_token_from_memory_s": from_memory_s, "first_token_rereading_s": reread_s,
            "ratio": reread_s / from_memory_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo,smollm2")
    parser.add_argument("--lengths", help="default: demo 4096,16384,65536; smollm2 4096,16384")
    parser.add_argument("--window", type=int, default=480)
    parser.add_argument("--sinks", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    import torch

    import ahn
    from ahn.bases import is_cached

    torch.set_num_threads(args.threads)
    defaults = {"demo": "4096,16384,65536", "smollm2": "4096,16384"}
    builders = {"demo": demo_model, "smollm2": smollm2_model}
    rows = []
    print("| model | tokens | read s | file MiB | load s | first token: memory s | "
          "re-reading s | ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for name in args.models.split(","):
        if name not in builders:
            raise SystemExit(f"--models: {name!r} is not one of {sorted(builders)}")
        if name == "smollm2" and not is_cached("smollm2-135m-instruct"):
            print(f"| {name} | (not cached: `ahn fetch-base smollm2-135m-instruct`) |")
            continue
        model, document, question = builders[name](args.window, args.sinks)
        for n in map(int, (args.lengths or defaults[name]).split(",")):
            with ahn.window(model, args.window, args.sinks):
                row = {"model": name, **measure(model, document, question, n)}
            rows.append(row)
            print(f"| {name} | {n} | {row['read_s']:.2f} | {row['file_mib']:.2f} | "
                  f"{row['load_s']:.3f} | {row['first_token_from_memory_s']:.3f} | "
                  f"{row['first_token_rereading_s']:.2f} | {row['ratio']:.1f}x |",
                  flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
