"""Strings for the sim's schema filler: drawn by field name, shaped by format, length, pattern."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fleetline.shared.models.sim_pattern import example
from fleetline.shared.models.sim_source import FIGURES, KEYWORDS, NAMES, SENTENCES, Source
from fleetline.shared.models.sim_text import field_words, word_set

# What a string is when the text has none to give.
FALLBACK = "unknown"

# Words of field names that ask for a name, a word, a figure, an id or a sentence; a field
# with none of them gets a sentence, the sim's usual answer to "gist", "reason", "answer".
_HINTS = {
    "name": word_set(
        "name entity person people company organization organisation org author who "
        "speaker owner country city place location vendor customer party brand product team"
    ),
    "word": word_set("label tag keyword topic category term word kind genre theme sector"),
    "figure": word_set("figure amount metric number quantity price value statistic stat"),
    "id": word_set("id key slug code handle identifier"),
    "sentence": word_set(
        "point finding reason summary gist brief description explanation sentence text "
        "quote claim fact note evidence answer rationale statement conclusion insight"
    ),
}
_POOLS_BY_KIND = {
    "name": (NAMES, KEYWORDS, SENTENCES),
    "word": (KEYWORDS, NAMES, SENTENCES),
    "figure": (FIGURES, SENTENCES),
    "id": (NAMES, KEYWORDS),
    "sentence": (SENTENCES, NAMES, KEYWORDS),
}
# The filler's own value maker (schema, field name), so a JSON-string field can hold a value.
Filler = Callable[[Mapping[str, Any], str], Any]


def string_value(schema: Mapping[str, Any], src: Source, hint: str, fill: Filler) -> str:
    """A string for schema (a "string" JSON schema), drawn from src as the field name hints."""
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    kind = hint_kind(hint)
    made = _formatted(schema, src, fill)
    if made is None:
        made = src.take(*_POOLS_BY_KIND[kind]) or FALLBACK
        made = (slug(made) or FALLBACK) if kind == "id" else made
    pattern = schema.get("pattern")
    if pattern is None:
        return fit(made, low, high, src)
    return _matching(str(pattern), made, low, high, src)


def hint_kind(hint: str) -> str:
    """Which kind of string a field name asks for: name, word, figure, id or sentence."""
    # The last telling word decides: "company_name" is a name, "key_points" sentences.
    for part in reversed(field_words(hint)):
        for kind, hints in _HINTS.items():
            if part in hints:
                return kind
    return "sentence"


def slug(text: str, sep: str = "-") -> str:
    """text as lower-case ASCII words joined by sep ("Acme Corp" is "acme-corp")."""
    return sep.join(re.findall(r"[a-z0-9]+", text.lower()))


def fit(text: str, low: int, high: int | None, src: Source) -> str:
    """text made at least low and at most high characters long.

    Short text is padded with the text's next sentences (then FALLBACK); long text is cut,
    at a word's end when that still leaves enough.
    """
    out = text
    if len(out) < low:
        for piece in itertools.cycle([*src.peek(SENTENCES), FALLBACK]):
            out = f"{out} {piece}" if out else piece
            if len(out) >= low:
                break
    if high is not None and len(out) > high:
        cut = out[:high]
        if out[high] != " " and " " in cut:
            cut = cut[: cut.rfind(" ")]
        cut = cut.rstrip(" ,;:")
        out = cut if len(cut) >= max(low, 1) else out[:high]
    return out


def _matching(pattern: str, made: str, low: int, high: int | None, src: Source) -> str:
    """A string matching pattern (searched, as pydantic does), preferring the text's own.

    Tries made and the text's parts as they are and in simple spellings (lower, upper,
    slug, digits only), then an example written from the pattern itself; if nothing
    matches, the pattern is beyond this sim and made is returned, which will not validate.
    """
    pieces = [made] + [item for pool in (NAMES, KEYWORDS, FIGURES) for item in src.peek(pool)[:20]]
    for piece in pieces:
        for spelling in _spellings(piece):
            candidate = fit(spelling, low, high, src)
            if re.search(pattern, candidate):
                return candidate
    # The pattern's characters are taken from the text's names and figures where they fit.
    hint = " ".join([made, *src.peek(NAMES)[:5], *src.peek(FIGURES)[:5]])
    for extra in (0, 1, 3, 8, max(low, 16)):
        written = example(pattern, hint, src.rng, extra)
        if written is None:
            break
        fits = low <= len(written) and (high is None or len(written) <= high)
        if fits and re.search(pattern, written):
            return written
    return fit(made, low, high, src)


def _spellings(text: str) -> list[str]:
    digits = re.sub(r"\D", "", text)
    forms = [text, text.lower(), text.upper(), slug(text), slug(text, "_"), slug(text, "")]
    return list(dict.fromkeys([*forms, digits] if digits else forms))


_FORMAT_ALIASES = {
    "uri-reference": "uri",
    "iri": "uri",
    "iri-reference": "uri",
    "url": "uri",
    "multi-host-uri": "uri",
    "idn-email": "email",
    "name-email": "email",
    "ipvanyaddress": "ipv4",
    "ipvanynetwork": "ipv4network",
    "ipvanyinterface": "ipv4interface",
    "idn-hostname": "hostname",
}


def _formatted(schema: Mapping[str, Any], src: Source, fill: Filler) -> str | None:
    """A valid example of the schema's format (or JSON content), or None for plain text."""
    if "contentSchema" in schema:
        # pydantic's Json[X]: a string holding X as JSON.
        return json.dumps(fill(schema["contentSchema"], "content"))
    fmt = str(schema.get("format", ""))
    make = _EXAMPLES.get(_FORMAT_ALIASES.get(fmt, fmt))
    return make(src) if make else None


def _date(src: Source) -> str:
    # A year the text mentions, so that dates read as the document's own.
    rng = src.rng
    year = next((int(v) for v in src.values if v.is_integer() and 1900 <= v <= 2100), None)
    year = 2000 + rng.randrange(26) if year is None else year
    return f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(src: Source) -> str:
    rng = src.rng
    return f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"


def _word(src: Source) -> str:
    return slug(next(iter(src.peek(NAMES) + src.peek(KEYWORDS)), FALLBACK)) or FALLBACK


def _host(src: Source) -> int:
    return src.rng.randint(1, 254)


_EXAMPLES: dict[str, Callable[[Source], str]] = {
    "date": _date,
    "date-time": lambda src: f"{_date(src)}T{_time(src)}Z",
    "time": _time,
    "duration": lambda src: f"PT{src.rng.randint(1, 90)}M",
    "email": lambda src: f"{slug(_word(src), '.')}@example.com",
    "uri": lambda src: f"https://example.com/{_word(src)}",
    "uuid": lambda src: str(uuid.UUID(int=src.rng.getrandbits(128), version=4)),
    "ipv4": lambda src: f"192.0.2.{_host(src)}",
    "ipv6": lambda src: f"2001:db8::{_host(src):x}",
    "ipv4network": lambda src: "192.0.2.0/24",
    "ipv6network": lambda src: "2001:db8::/32",
    "ipv4interface": lambda src: f"192.0.2.{_host(src)}/24",
    "ipv6interface": lambda src: f"2001:db8::{_host(src):x}/64",
    "hostname": lambda src: f"{_word(src)}.example.com",
    "path": lambda src: f"docs/{_word(src)}.txt",
    "regex": lambda src: re.escape(_word(src)),
}
