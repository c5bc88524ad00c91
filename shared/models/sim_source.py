"""What the sim's schema filler draws on: pools of the text's parts and a seeded generator."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetline.shared.models.sim_text import (
    STOPWORDS,
    content_words,
    field_words,
    figures,
    keywords,
    names,
    numbers,
    plain_text,
    sentences,
    singular,
    words,
)

# The pools a string can be drawn from.
SENTENCES = "sentences"
NAMES = "names"
KEYWORDS = "keywords"
FIGURES = "figures"


def seeded_rng(seed: int, text: str) -> random.Random:
    """A generator seeded by (seed, text) alike in every process.

    hashlib, not hash(): str hashes are salted per process, and workers are many processes.
    """
    digest = hashlib.sha256(f"{seed}\x1f{text}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass
class Source:
    """The text read once into pools, with a cursor per pool so that draws move on.

    Each pool keeps the text's order, so the first draw of sentences is the first sentence
    (the usual gist) and the first draw of names the first name mentioned.
    """

    rng: random.Random
    pools: dict[str, list[str]]
    values: list[float]
    counts: Counter[str]
    # Each sentence's (singular) content words and figure values, to find a field's figure.
    facts: list[tuple[set[str], list[float]]]
    cursors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, text: str, seed: int) -> Source:
        """The pools of text (read as prose if it is a JSON document), seeded by seed."""
        prose = plain_text(text)
        return cls(
            rng=seeded_rng(seed, text),
            pools={
                SENTENCES: sentences(prose),
                NAMES: names(prose),
                KEYWORDS: keywords(prose),
                FIGURES: figures(prose),
            },
            values=numbers(prose),
            counts=Counter(words(prose)),
            facts=[({singular(w) for w in content_words(s)}, numbers(s)) for s in sentences(prose)],
        )

    def take(self, *pools: str) -> str | None:
        """The next item of the first non-empty pool named (wrapping round), or None."""
        for pool in pools:
            items = self.pools[pool]
            if items:
                at = self.cursors.get(pool, 0)
                self.cursors[pool] = at + 1
                return items[at % len(items)]
        return None

    def peek(self, pool: str) -> list[str]:
        """The items of pool, from the one the next draw would give, once round."""
        items = self.pools[pool]
        at = self.cursors.get(pool, 0) % len(items) if items else 0
        return items[at:] + items[:at]

    def number(self, fits: Callable[[float], bool], hint: str = "") -> float | None:
        """A figure value that fits the field hint names, or one to clamp; None if none.

        First the figures of sentences that use the field's words ("revenue" finds "revenue
        of $4.2 million"), then the next figure that fits, else simply the next figure.
        """
        wanted = {w for w in field_words(hint) if len(w) > 2 and w not in STOPWORDS}
        for said, values in self.facts if wanted else []:
            if wanted & said:
                value = next((v for v in values if fits(v)), None)
                if value is not None:
                    return value
        if not self.values:
            return None
        at = self.cursors.get("values", 0)
        for offset in range(len(self.values)):
            value = self.values[(at + offset) % len(self.values)]
            if fits(value):
                self.cursors["values"] = at + offset + 1
                return value
        self.cursors["values"] = at + 1
        return self.values[at % len(self.values)]
