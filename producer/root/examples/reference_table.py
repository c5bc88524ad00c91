"""The reference table `document_pipeline`'s enrich stage looks entities up in.

A few organisations, places and people, each with its kind and a one-line summary; a
team's own lookup would query its CRM or a knowledge graph instead. Names match
case-insensitively, and a few entries have aliases.
"""

from __future__ import annotations

from typing import TypedDict


class Reference(TypedDict):
    name: str
    kind: str
    summary: str


_ENTRIES: tuple[Reference, ...] = (
    {
        "name": "Nordwind Energy",
        "kind": "company",
        "summary": "Nordwind Energy builds and runs offshore wind farms in the North Sea.",
    },
    {
        "name": "Helio Grid",
        "kind": "company",
        "summary": "Helio Grid makes battery storage systems for electricity grids.",
    },
    {
        "name": "Baltic Cable Company",
        "kind": "company",
        "summary": "Baltic Cable Company lays subsea power cables between Nordic countries.",
    },
    {
        "name": "Statnett",
        "kind": "agency",
        "summary": "Statnett is the state-owned operator of the Norwegian power grid.",
    },
    {
        "name": "European Investment Bank",
        "kind": "bank",
        "summary": "The European Investment Bank lends to infrastructure projects in Europe.",
    },
    {
        "name": "Oslo",
        "kind": "city",
        "summary": "Oslo is the capital of Norway and the seat of its energy ministry.",
    },
    {
        "name": "Bergen",
        "kind": "city",
        "summary": "Bergen is a port city on the west coast of Norway.",
    },
    {
        "name": "North Sea",
        "kind": "region",
        "summary": "The North Sea holds most of Europe's offshore wind capacity.",
    },
    {
        "name": "Ingrid Solberg",
        "kind": "person",
        "summary": "Ingrid Solberg is the chief executive of Nordwind Energy.",
    },
    {
        "name": "Marta Lind",
        "kind": "person",
        "summary": "Marta Lind is an energy analyst who follows grid investment in Europe.",
    },
)

# Other spellings of listed names.
_ALIASES = {
    "nordwind": "Nordwind Energy",
    "eib": "European Investment Bank",
    "helio": "Helio Grid",
}

_BY_NAME = {entry["name"].casefold(): entry for entry in _ENTRIES}


def lookup(name: str) -> Reference | None:
    """The table's entry for `name` (or one of its aliases), or None."""
    key = name.strip().casefold()
    alias = _ALIASES.get(key)
    return _BY_NAME.get(alias.casefold() if alias else key)


def names() -> list[str]:
    """Every name the table lists."""
    return [entry["name"] for entry in _ENTRIES]
