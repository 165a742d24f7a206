"""Readers for the shared text data: Gutenberg books (jsonl.xz) and LAMBADA (jsonl)."""

import json
import lzma
from collections.abc import Iterator
from pathlib import Path


def gutenberg_texts(path: Path, max_chars: int | None = None) -> Iterator[str]:
    """Book texts of a ``{"title","author","text"}`` jsonl.xz file, in file order; stops after
    ``max_chars`` characters in all (the last text cut short)."""
    remaining = max_chars
    with lzma.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line)["text"]
            if remaining is not None:
                text = text[:remaining]
                remaining -= len(text)
            yield text
            if remaining is not None and remaining <= 0:
                return


def lambada_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line in lines if line.strip()]
