"""``TEXT-1``'s data and per-record work: raw lines, a BPE tokenizer, fixed rows.

The corpus is generated (nothing is downloaded): lines of 8 to 160 words drawn
with Zipf-like frequencies from a made-up vocabulary of 5,000 words, so lines
differ in length as real text does. A byte-level BPE tokenizer (HF
``tokenizers``, vocabulary 8,000) is trained on the corpus once per machine and
saved beside it. Each record is one line, tokenized, cut or padded (with 0) to
``LENGTH`` ids, with its true length.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from datarax.sources import HostRecordSource

LENGTH = 128
VOCABULARY = 8_000
WORDS = 5_000


def corpus_folder(count: int) -> Path:
    """The folder holding ``lines.txt`` (``count`` lines) and ``tokenizer.json``.

    Made once per machine under the system's temporary folder; a marker written
    last says it is whole, and each file is written under a name of this
    process's first and then renamed.
    """
    root = Path(tempfile.gettempdir()) / f"datarax-bench-text-{count}"
    if (root / ".done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    lines = _lines(count)
    _write(root / "lines.txt", "\n".join(lines) + "\n")
    _write(root / "tokenizer.json", _trained(lines).to_str())
    (root / ".done").touch()
    return root


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def _lines(count: int) -> list[str]:
    rng = np.random.default_rng(count)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    sizes = rng.integers(2, 11, WORDS)
    words = ["".join(rng.choice(letters, size)) for size in sizes]
    weights = 1.0 / np.arange(1, WORDS + 1)  # Zipf: a few words are most of the text
    weights /= weights.sum()
    out = []
    for length in rng.integers(8, 161, count):
        chosen = rng.choice(WORDS, length, p=weights)
        out.append(" ".join(words[i] for i in chosen))
    return out


def _trained(lines: list[str]) -> Any:
    _tokenizers()  # installed, or a clear error
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCABULARY,
        special_tokens=["[PAD]", "[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


@functools.cache
def read_corpus(count: int) -> tuple[list[str], str]:
    """The lines and the tokenizer's JSON (made first when missing)."""
    root = corpus_folder(count)
    lines = (root / "lines.txt").read_text().splitlines()
    return lines, (root / "tokenizer.json").read_text()


def _tokenizers() -> Any:
    """HF ``tokenizers``, or an error naming the extra that installs it."""
    try:
        import tokenizers
    except ImportError as error:
        raise ImportError(
            "TEXT-1 tokenizes with HF tokenizers, which is not installed: "
            'pip install "datarax-bench[encoded]" (or [peers]), or leave '
            "TEXT-1 out with --scenarios"
        ) from error
    return tokenizers


class Tokenize:
    """``line -> (ids padded to LENGTH, length)``; picklable (rebuilt from JSON).

    One instance per worker process; threads share one (``tokenizers`` encodes
    with the GIL released, in Rust).
    """

    def __init__(self, tokenizer_json: str):
        self.tokenizer_json = tokenizer_json
        self._tokenizer: Any = None

    def __getstate__(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json, "_tokenizer": None}

    def _get(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = _tokenizers().Tokenizer.from_str(self.tokenizer_json)
        return self._tokenizer

    def one(self, line: str) -> dict[str, np.ndarray]:
        """One line's ids, cut or padded to ``LENGTH``, and its token count."""
        return _row(self._get().encode(line).ids)

    def batch(self, lines: list[str]) -> dict[str, np.ndarray]:
        """Several lines at once (``encode_batch``: Rust threads), stacked."""
        rows = [_row(e.ids) for e in self._get().encode_batch(lines)]
        return {
            "tokens": np.stack([r["tokens"] for r in rows]),
            "length": np.asarray([r["length"] for r in rows], np.int32),
        }


def _row(ids: list[int]) -> dict[str, np.ndarray]:
    tokens = np.zeros(LENGTH, np.int32)
    kept = ids[:LENGTH]
    tokens[: len(kept)] = kept
    return {"tokens": tokens, "length": np.int32(len(kept))}


class Lines(HostRecordSource):
    """The corpus lines as host records ``{"text": str}``."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    def record(self, index: int) -> dict[str, Any]:
        """``{"text": line index}``."""
        return {"text": self.lines[index]}


class TextLoop:
    """``TEXT-1``'s Floor: each batch's lines tokenized by ``encode_batch``.

    What one writes with no data library: the lines of the next ``batch_size``
    positions (a fresh NumPy permutation per epoch) handed to the tokenizer's
    own batch call, which encodes them on its Rust threads; nothing runs ahead.
    """

    def __init__(self, count: int, batch_size: int, seed: int = 0):
        self.lines, tokenizer_json = read_corpus(count)
        self.tokenize = Tokenize(tokenizer_json)
        self.order = EpochOrder(len(self.lines), seed)
        self.batch_size, self.position = batch_size, 0

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch on the host: ids and lengths."""
        positions = range(self.position, self.position + self.batch_size)
        self.position += self.batch_size
        return self.tokenize.batch([self.lines[self.order(p)] for p in positions])

    def close(self) -> None:
        """Nothing to release."""


class EpochOrder:
    """Record index at a stream position: a NumPy permutation per epoch."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed = length, seed
        self._epoch, self._order = -1, np.arange(0)

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(position, self.length)
        if epoch != self._epoch:
            rng = np.random.default_rng((self.seed, epoch))
            self._epoch, self._order = epoch, rng.permutation(self.length)
        return int(self._order[offset])
