"""The benchmark's workload: synthetic prompts of an exact token length, and the sweep's shape.

A latency figure means something only with the shape of the request it came from: so many prompt tokens
in, so many tokens out. The prompts are built with the served model's own tokenizer (its
``tokenizer.json``, read with the ``tokenizers`` package), each one checked by a round trip (the text
encodes back to exactly the wanted count) and each one different from its first words on, so that the
server's prefix cache cannot turn a prefill into a lookup. The output length is made exact by asking for
``max_tokens`` with ``ignore_eos`` (as GuideLLM does), and the server's reported usage is checked against
both counts afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ...errors import InferbookError
from ...words import WORDS


class WorkloadError(InferbookError):
    """A prompt of the wanted length could not be made, or the shape is impossible."""


class Tokenizer(Protocol):
    """What the prompts need of a tokenizer: the token ids of a text, and the text of token ids."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class FileTokenizer:
    """The served model's tokenizer, from its folder's ``tokenizer.json`` (what vLLM tokenizes with).

    ``encode`` adds the special tokens the tokenizer's post-processor adds, as the server does for a
    ``/v1/completions`` prompt, so that a count here is the count the server reports as ``prompt_tokens``.
    """

    path: Path

    def __post_init__(self) -> None:
        from tokenizers import Tokenizer as _Tokenizer  # the package is only needed where prompts are made

        file = self.path / "tokenizer.json" if self.path.is_dir() else self.path
        if not file.is_file():
            raise WorkloadError(f"no tokenizer.json at {self.path}. Fix: point the benchmark at the served model's "
                                f"folder (the serving chapter prepares it), or run the serving chapter first")
        object.__setattr__(self, "_tok", _Tokenizer.from_file(str(file)))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=True).ids  # type: ignore[attr-defined]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)  # type: ignore[attr-defined]


def exact_prompt(tokenizer: Tokenizer, tokens: int, seed: int) -> str:
    """A prompt that the tokenizer encodes to exactly ``tokens`` tokens; ``seed`` makes it (and its start) unique.

    Words are drawn at random after a numbered opening, encoded, cut to the count, decoded and encoded
    again: a cut can merge differently on the way back, so a few shorter cuts are tried until one comes
    back exact.
    """
    if tokens < 2:
        raise WorkloadError(f"a prompt of {tokens} token(s) is too short to be unique. Fix: ask for 2 or more")
    rng = random.Random(seed)
    special = len(tokenizer.encode(""))  # what the post-processor adds (a BOS token, or nothing)
    text = f"{seed}. {rng.choice(WORDS).capitalize()}"
    while len(tokenizer.encode(text)) < tokens + 8:
        text += " " + rng.choice(WORDS)
    ids = tokenizer.encode(text)[special:] if special else tokenizer.encode(text)
    want = tokens - special
    for cut in range(want, max(0, want - 8), -1):
        candidate = tokenizer.decode(ids[:cut])
        if len(tokenizer.encode(candidate)) == tokens:
            return candidate
    raise WorkloadError(f"no prompt of exactly {tokens} tokens came back from the tokenizer (seed {seed}). "
                        f"Fix: try another input length")


@dataclass(frozen=True)
class Shape:
    """One sweep's load shape: the concurrency levels, the request's tokens in and out, the time per level."""

    concurrency: tuple[int, ...]
    input_tokens: int
    output_tokens: int
    duration_s: float

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise WorkloadError(f"concurrency levels {self.concurrency}: give one or more levels of 1 or more, "
                                f"e.g. --concurrency 1,2,4")
        if self.output_tokens < 2:
            raise WorkloadError("an inter-token latency needs 2 or more output tokens. Fix: --output-tokens 2 or more")
        if self.duration_s <= 0:
            raise WorkloadError("a level needs a duration above 0 seconds. Fix: e.g. --duration 30")

    @classmethod
    def from_profile(cls, profile_data: dict[str, Any], **overrides: Any) -> "Shape":
        """The profile's ``benchmarks`` sweep, with any of the fields given here instead."""
        sweep = profile_data["benchmarks"]
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(concurrency=tuple(given.get("concurrency", sweep["concurrency"])),
                   input_tokens=int(given.get("input_tokens", sweep["input_tokens"])),
                   output_tokens=int(given.get("output_tokens", sweep["output_tokens"])),
                   duration_s=float(given.get("duration_s", sweep["duration_seconds"])))

    def as_dict(self) -> dict[str, Any]:
        return {"concurrency": list(self.concurrency), "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "duration_s": self.duration_s}


def parse_levels(text: str) -> tuple[int, ...]:
    """``"1,2,4,8"`` as levels; a helpful error for anything else."""
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise WorkloadError(f"--concurrency {text!r}: give whole numbers separated by commas, e.g. 1,2,4,8") from None
    if not levels:
        raise WorkloadError("--concurrency is empty: give levels such as 1,2,4,8")
    return levels
