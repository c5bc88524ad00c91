"""The research agents' answers on the offline `sim` provider: real, if simple, work on
the document, so that briefs made offline mean something.

Each takes the call's instruction and document and returns the agent's output.
"""

from __future__ import annotations

from typing import Any

from fleetline import sim


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Keywords of each topic label ("other" has none).
_TOPICS: dict[str, frozenset[str]] = {
    "finance": _words(
        "revenue revenues profit profits earnings market markets stock stocks shares "
        "investor investors bank banks interest inflation dividend quarter quarterly "
        "fiscal price prices debt bond bonds funding valuation acquisition ipo margin "
        "sales"
    ),
    "technology": _words(
        "software ai algorithm algorithms cloud computing computer chip chips "
        "semiconductor internet app apps platform network digital startup robot robots "
        "code cyber encryption processor"
    ),
    "health": _words(
        "patient patients hospital hospitals disease diseases clinical drug drugs "
        "vaccine vaccines medical health doctor doctors treatment virus therapy cancer "
        "diagnosis symptoms"
    ),
    "policy": _words(
        "government law laws regulation regulations regulator policy congress senate "
        "parliament election minister tax taxes legislation court ruling agency bill "
        "vote sanctions"
    ),
    "science": _words(
        "research researchers study scientists experiment physics chemistry biology "
        "climate species telescope laboratory theory molecule molecules gene genes "
        "universe hypothesis"
    ),
}


def extraction(instruction: str, document: str) -> dict[str, Any]:
    """Names and figures as written, and the first sentence as the gist."""
    text = sim.plain_text(document)
    first = next(iter(sim.sentences(text)), "")
    return {
        "entities": sim.names(text)[:50],
        "figures": sim.figures(text)[:50],
        "gist": first[:240] or "(empty document)",
    }


def classification(instruction: str, document: str) -> dict[str, Any]:
    """The topic whose keywords the document uses most."""
    words = sim.words(sim.plain_text(document))
    hits = {label: [w for w in words if w in kws] for label, kws in _TOPICS.items()}
    total = sum(len(h) for h in hits.values())
    if not total:
        # No evidence either way: "other", held with middling confidence.
        return {"label": "other", "confidence": 0.5, "keywords": []}
    label = max(_TOPICS, key=lambda lbl: len(hits[lbl]))
    return {
        "label": label,
        "confidence": round(len(hits[label]) / total, 3),
        "keywords": list(dict.fromkeys(hits[label]))[:20],
    }


def analysis(instruction: str, document: str) -> dict[str, Any]:
    """The three sentences that share most words with the question."""
    scored, question = _ranked(instruction, document)
    top = [s for _, _, s in scored[:3]]
    if not top:
        return {"findings": ["The documents contain no text."], "relevance": 0.0}
    covered = set().union(*(sim.content_words(s) for s in top)) & question
    relevance = len(covered) / len(question) if question else 0.0
    return {"findings": [s[:400] for s in top], "relevance": round(relevance, 3)}


def synthesis(instruction: str, document: str) -> dict[str, Any]:
    """The best findings in document order as the brief, the strongest as key points."""
    scored, _ = _ranked(instruction, document)
    best = scored[:8]
    if not best:
        return {"brief": "No usable findings were available.", "key_points": []}
    brief = " ".join(s for _, _, s in sorted(best, key=lambda item: item[1]))
    return {"brief": brief[:4000], "key_points": [s[:200] for _, _, s in best[:5]]}


def _ranked(instruction: str, document: str) -> tuple[list[tuple[float, int, str]], set[str]]:
    """Sentences scored by the share of the question's words they contain, best first."""
    question = sim.content_words(_question(instruction))
    scored = []
    for i, sentence in enumerate(sim.sentences(sim.plain_text(document))):
        overlap = len(question & sim.content_words(sentence)) / len(question) if question else 0.0
        scored.append((overlap, i, sentence))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return scored, question


def _question(instruction: str) -> str:
    # The instruction is "Task: ... Question: <goal>\n<what to do>\nSchema: ...": only the
    # question says what the documents are searched for.
    head, _, rest = instruction.partition("Question:")
    return rest.split("\n", 1)[0] if rest else head
