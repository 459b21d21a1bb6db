"""Building blocks of the synthetic tasks: word lists, needles, haystacks fitted to a length."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

# RULER's "noise" haystack and the classic passkey filler.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

# Offline stand-ins for RULER's `wonderwords` keys ("adjective-noun").
ADJECTIVES = (
    "able acid angry black bold brave bright broad calm cheap clean clever cold cool crisp "
    "curly damp dark deep dry dull eager early empty even fair fancy fast fierce flat fresh "
    "gentle giant glad grand green happy hard heavy hollow huge humble icy jolly keen kind "
    "large late lazy light little loud lucky mad mellow mild modern narrow neat nervous new "
    "noisy odd old pale plain polite proud quick quiet rapid rare raw rich rough round sad "
    "salty sharp shiny short shy silent silly slim slow small smooth soft sour spicy steep "
    "sticky stiff strange strong sweet swift tall tame tender thick thin tidy tiny tough "
    "vast warm weak wet white wide wild wise young"
).split()
NOUNS = (
    "acorn anchor apple arrow badge bakery banjo barrel basket beacon bean bell bicycle "
    "blanket boat bonnet bottle bridge bucket button cabin camera candle canyon carpet castle "
    "cat cellar chair cherry cloud comet compass cookie copper cradle crayon crystal curtain "
    "desert diamond dolphin donkey dragon drum eagle engine falcon feather fiddle flute forest "
    "fountain galaxy garden giraffe glacier goblet guitar hammer harbor helmet hippo island "
    "jacket jungle kettle kitten ladder lantern lemon lizard magnet maple meadow mirror monkey "
    "mountain napkin needle ocean orchard otter paddle palace panda parrot pebble pencil "
    "pepper piano pillow planet pocket pony puzzle quilt rabbit radio raven ribbon river "
    "robot rocket saddle salmon shovel spider sponge squirrel statue tiger tomato tractor "
    "trumpet tulip turtle umbrella valley violin wagon walnut whistle window zebra"
).split()


def rng_for(*parts: object) -> random.Random:
    """A `random.Random` seeded from `parts` (stable across runs, unlike `hash`)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def word_key(rng: random.Random) -> str:
    """An "adjective-noun" key, as RULER's `words` needles."""
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def number_value(rng: random.Random) -> str:
    """A 7-digit number, as RULER's `numbers` needles."""
    return str(rng.randint(1_000_000, 9_999_999))


def uuid_value(rng: random.Random) -> str:
    """A random UUID4 string, as RULER's `uuids` needles."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


KINDS: dict[str, Callable[[random.Random], str]] = {
    "words": word_key,
    "numbers": number_value,
    "uuids": uuid_value,
}


def distinct(kind: str, rng: random.Random, n: int, exclude: set[str] = frozenset()) -> list[str]:
    """`n` different random strings of a `KINDS` kind, none in `exclude`."""
    out: list[str] = []
    while len(out) < n:
        item = KINDS[kind](rng)
        if item not in out and item not in exclude:
            out.append(item)
    return out


def insert_at_depths(sentences: list[str], needles: list[str], depths: list[float]) -> list[str]:
    """Insert each needle before sentence `round(depth * len(sentences))` (0 = start, 1 = end);
    needles falling at the same place keep their given order."""
    places = [round(d * len(sentences)) for d in depths]
    out, done = [], 0
    for i in sorted(range(len(needles)), key=lambda i: (places[i], i)):
        out += sentences[done : places[i]]
        out.append(needles[i])
        done = places[i]
    return out + sentences[done:]


@dataclass(frozen=True)
class Haystack:
    """Filler text: `units(n)` gives its first `n` units (sentences, needles), joined by `sep`
    (RULER joins noise and needle haystacks with newlines, essays with spaces)."""

    units: Callable[[int], list[str]]
    sep: str

    def text(self, n: int, needles: list[str], depths: list[float]) -> str:
        """`n` units with the needles inserted at their depths, joined."""
        return self.sep.join(insert_at_depths(self.units(n), needles, depths))


def fit_to_length(
    build: Callable[[int], str], count_tokens: Callable[[str], int], target: int
) -> tuple[str, int]:
    """The largest `n` such that `build(n)` has at most `target` tokens, and its text.

    `build(n)` must grow with `n` (n haystack units). The search is bracketed around a linear
    estimate, so a long prompt is tokenized about ten times.

    Raises:
        ValueError: when even `build(0)` (instructions and needles) exceeds `target`.
    """
    base = count_tokens(build(0))
    if base > target:
        raise ValueError(f"length {target} is too short: the prompt alone has {base} tokens")
    probe = max(1, (target - base) // 64)
    per_unit = max((count_tokens(build(probe)) - base) / probe, 1e-3)
    estimate = int((target - base) / per_unit)
    lo, hi = 0, max(2, int(estimate * 1.05) + 2)
    while count_tokens(build(hi)) <= target:
        lo, hi = hi, 2 * hi
    if count_tokens(build(int(estimate * 0.95))) <= target:
        lo = max(lo, int(estimate * 0.95))
    while hi - lo > 1:  # build(lo) fits, build(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count_tokens(build(mid)) <= target else (lo, mid)
    return build(lo), lo
