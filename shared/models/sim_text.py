"""Text reading for the offline `sim` provider: sentences, names, figures and words.

Pure functions of the text, with no randomness, so that every answer built on them is a
function of the document alone. They read the text as given; `plain_text` first turns an
upstream JSON result into prose.
"""

from __future__ import annotations

import json
import re

# Sentence ends, except after abbreviations such as "U.S." and "Corp.".
_SENTENCE_SPLIT = re.compile(
    r"(?<=[.!?])(?<![A-Z]\.[A-Z]\.)(?<!Mr\.)(?<!Ms\.)(?<!Dr\.)(?<!St\.)(?<!Co\.)"
    r"(?<!Inc\.)(?<!Ltd\.)(?<!Corp\.)\s+|\n+"
)
_WORD = re.compile(r"[a-z][a-z0-9'-]*")
_NAME_WORD = r"(?:[A-Z][a-z][A-Za-z0-9]*(?:[&'-][A-Za-z0-9]+)*|[A-Z]{2,}[a-z]?|[A-Z]\.(?:[A-Z]\.)+)"
_NAME = re.compile(rf"\b{_NAME_WORD}(?:[ \t]+(?:(?:of|de|&)[ \t]+)?{_NAME_WORD})*")
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_SCALE = r"(?:\s?(?:million|billion|trillion|thousand|bn|m|k)\b)?"
_FIGURE = re.compile(
    rf"[$€£¥]\s?{_NUM}{_SCALE}"
    rf"|\b{_NUM}\s?(?:%|percent\b|per cent\b)"
    rf"|\b{_NUM}(?:\s?(?:million|billion|trillion|thousand)\b)?"
)
_FIELD_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_FIGURE_PARTS = re.compile(rf"({_NUM})\s?(million|billion|trillion|thousand|bn|m|k)?\b")
_SCALES = {
    "thousand": 1e3,
    "k": 1e3,
    "million": 1e6,
    "m": 1e6,
    "billion": 1e9,
    "bn": 1e9,
    "trillion": 1e12,
}


def word_set(words: str) -> frozenset[str]:
    """The whitespace-separated words of a word list, as a set."""
    return frozenset(words.split())


# Capitalised only because they open a sentence; never names on their own.
LEADING_WORDS = word_set(
    "A An The This That These Those In On At For From By With As It Its Our Their We "
    "They He She But And Or If When While After Before Since During Meanwhile However"
)
STOPWORDS = word_set(
    "a an the and or but if of to in on at by for with from as is are was were be been "
    "being it its this that these those what which who whom how why when where do does "
    "did has have had not no so than then there their they them we our you your he she "
    "his her i me my about into over under up down out more most less can could would "
    "should will shall may might must also only any all each other such same own very "
    "answer question json object schema output documents document given using use "
    "following based findings finding brief key points"
)


def plain_text(document: str) -> str:
    """Documents may be upstream JSON results: read their strings as lines of prose."""
    try:
        data = json.loads(document)
    except ValueError:
        return document
    strings: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return "\n".join(strings) if strings else document


def sentences(text: str) -> list[str]:
    """The distinct sentences of text (case-insensitively), whitespace collapsed, in order."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in _SENTENCE_SPLIT.split(text):
        sentence = " ".join(raw.split())
        if sentence and sentence.lower() not in seen:
            seen.add(sentence.lower())
            out.append(sentence)
    return out


def words(text: str) -> list[str]:
    """Every word of text, lower-cased, in order (repeats kept, for counting)."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    """The words of text that carry meaning: no stopwords, none shorter than three letters."""
    return {w for w in words(text) if w not in STOPWORDS and len(w) > 2}


def keywords(text: str) -> list[str]:
    """The content words of text, each once, in order of first use (stable, unlike a set)."""
    kept = content_words(text)
    return [w for w in dict.fromkeys(words(text)) if w in kept]


def opens_sentence(text: str, pos: int) -> bool:
    """Whether pos in text is the start of a sentence (or of the text)."""
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?\n:;\"'"


def names(text: str) -> list[str]:
    """The distinct capitalised names in text ("Acme Corp", "Bank of America"), in order."""
    found: list[str] = []
    for match in _NAME.finditer(text):
        parts = match.group().split()
        at_start = opens_sentence(text, match.start())
        while parts and parts[0] in LEADING_WORDS:
            parts, at_start = parts[1:], False
        # A lone capitalised word opening a sentence is usually just a word.
        if not parts or (len(parts) == 1 and at_start and not parts[0].isupper()):
            continue
        name = " ".join(parts)
        if name not in found:
            found.append(name)
    return found


def figures(text: str) -> list[str]:
    """The distinct figures in text as written ("$4.2 million", "12%", "2023"), in order."""
    return list(dict.fromkeys(m.group().strip() for m in _FIGURE.finditer(text)))


def numbers(text: str) -> list[float]:
    """The values of the figures in text, scale words applied ("$4.2 million" is 4200000.0).

    A percentage keeps its written value ("12%" is 12.0).
    """
    values: list[float] = []
    for figure in figures(text):
        match = _FIGURE_PARTS.search(figure)
        if match is None:
            continue
        value = float(match.group(1).replace(",", "")) * _SCALES.get(match.group(2) or "", 1.0)
        if value not in values:
            values.append(value)
    return values


def singular(word: str) -> str:
    """A crude singular of an English word ("entities" is "entity", "class" stays)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def field_words(field: str) -> list[str]:
    """The words of a field name, lower-case and singular ("keyPoints" is key, point)."""
    return [singular(w.lower()) for w in _FIELD_WORD.findall(field)]
