"""Text helpers for writing an agent's own answer for the offline `sim` provider.

    def my_answer(instruction: str, document: str) -> dict[str, Any]:
        return {"names": sim.names(document), "gist": (sim.sentences(document) or [""])[0]}

    fleet.agent("people", tier="cheap", output=People, prompt="...", sim=my_answer)

Without an answer of its own, the sim fills the agent's output schema from the text.
"""

from fleetline.shared.models.sim_text import (
    content_words,
    figures,
    names,
    numbers,
    plain_text,
    sentences,
    words,
)

__all__ = ["content_words", "figures", "names", "numbers", "plain_text", "sentences", "words"]
