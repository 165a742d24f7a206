"""Train the byte-level BPE tokenizer of the project's small Gutenberg Mamba checkpoint.

Recipe (deterministic): read the Gutenberg training books in file order, clean each one with
`clean_book` (hard line wraps joined, paragraph breaks kept), take a fixed slice of every book
(`--chars-per-book` characters starting at 10% of the book, cut at whitespace), and train a
byte-level BPE (GPT-2/GPT-NeoX style pre-tokenizer, no prefix space) with `<|endoftext|>` as id 0,
used as bos, eos, unk and pad like GPT-NeoX. The result is saved as a `PreTrainedTokenizerFast`, so
`AutoTokenizer.from_pretrained(out_dir)` loads it.

    python examples/train_tokenizer.py --data-dir ../shared/data --out runs/tokenizer

`--data-dir` (or the environment variable MAMBA_QPASS_DATA) is the folder holding `gutenberg/`.
"""

from __future__ import annotations

import argparse
import glob
import json
import lzma
import os
import re
import time
from collections.abc import Iterator

EOT = "<|endoftext|>"
_PARA_SPLIT = re.compile(r"\n[ \t\r\f\v]*\n")


def clean_book(text: str) -> str:
    """Join hard-wrapped lines into paragraphs; keep paragraph breaks as one blank line.

    Project Gutenberg plain text wraps lines at about 70 characters. A model trained on that would
    learn to put newlines in the middle of sentences, unlike every evaluation text (LAMBADA has none).
    Every run of whitespace inside a paragraph becomes one space.
    """
    paragraphs = (" ".join(p.split()) for p in _PARA_SPLIT.split(text.replace("\r", "")))
    return "\n\n".join(p for p in paragraphs if p)


def resolve_data_dir(arg: str | None) -> str:
    data_dir = arg or os.environ.get("MAMBA_QPASS_DATA")
    if not data_dir:
        raise SystemExit("give --data-dir or set MAMBA_QPASS_DATA (the folder holding gutenberg/)")
    return data_dir


def gutenberg_files(data_dir: str, split: str) -> list[str]:
    """Sorted Gutenberg files of a split ('train' -> train-*.jsonl.xz, 'val' -> val.jsonl.xz)."""
    pattern = "train-*.jsonl.xz" if split == "train" else f"{split}.jsonl.xz"
    files = sorted(glob.glob(os.path.join(data_dir, "gutenberg", pattern)))
    if not files:
        raise SystemExit(f"no {pattern} under {os.path.join(data_dir, 'gutenberg')}")
    return files


def iter_books(files: list[str], max_books: int | None = None) -> Iterator[str]:
    """Cleaned book texts, in file order then line order."""
    n = 0
    for path in files:
        with lzma.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                text = clean_book(json.loads(line)["text"])
                if text:
                    yield text
                    n += 1
                    if max_books is not None and n >= max_books:
                        return


def encode_books(files: list[str], tokenizer_json: str, max_books: int | None = None, batch: int = 64):
    """Token ids of the cleaned books of `files`, each book followed by `<|endoftext|>`, as one uint16 array.

    Returns (tokens, n_books, n_chars). Deterministic: file order, then line order.
    """
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_json)
    eot = tok.token_to_id(EOT)
    assert tok.get_vocab_size() <= 65536
    parts, pending, n_books, n_chars = [], [], 0, 0

    def flush():
        for enc in tok.encode_batch(pending, add_special_tokens=False):
            parts.append(np.asarray(enc.ids, dtype=np.uint16))
            parts.append(np.asarray([eot], dtype=np.uint16))
        pending.clear()

    for text in iter_books(files, max_books):
        pending.append(text)
        n_books += 1
        n_chars += len(text)
        if len(pending) >= batch:
            flush()
    flush()
    return np.concatenate(parts), n_books, n_chars


def book_sample(text: str, chars: int) -> str:
    """A fixed slice of a book: `chars` characters from 10% in, cut at whitespace on both ends."""
    if len(text) <= chars:
        return text
    start = len(text) // 10
    piece = text[start : start + chars]
    first, last = piece.find(" "), piece.rfind(" ")
    return piece[first + 1 : last] if 0 <= first < last else piece


def train_tokenizer(samples: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(samples, trainer=trainer, length=len(samples))
    return tok


def wrap_fast(tok):
    """The `tokenizers` object as a transformers fast tokenizer (bos = eos = unk = pad = id 0)."""
    from transformers import PreTrainedTokenizerFast

    assert tok.token_to_id(EOT) == 0
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        add_bos_token=False,
        add_eos_token=False,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder holding gutenberg/ (default: $MAMBA_QPASS_DATA)")
    ap.add_argument("--out", required=True, help="output folder for the tokenizer files")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--chars-per-book", type=int, default=50_000)
    ap.add_argument("--max-books", type=int, default=None, help="only the first N books (smoke tests)")
    args = ap.parse_args(argv)

    files = gutenberg_files(resolve_data_dir(args.data_dir), "train")
    t0 = time.time()
    samples = [book_sample(b, args.chars_per_book) for b in iter_books(files, args.max_books)]
    n_chars = sum(map(len, samples))
    print(f"{len(samples)} books, {n_chars / 1e6:.1f} M characters sampled in {time.time() - t0:.0f} s")
    t0 = time.time()
    tok = train_tokenizer(samples, args.vocab_size)
    print(f"trained vocab {tok.get_vocab_size()} in {time.time() - t0:.0f} s")
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(samples[:50]))
    print(f"{sum(map(len, samples[:50])) / n_tokens:.2f} characters per token on the first 50 samples")
    fast = wrap_fast(tok)
    fast.save_pretrained(args.out)
    print("saved to", args.out, sorted(os.listdir(args.out)))


if __name__ == "__main__":
    main()
