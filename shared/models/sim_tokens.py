"""The sim provider's own tokenizer: how many tokens it bills for a text.

Not Fleetline's estimator (`prices.estimate_tokens`, about four characters a token): the
sim counts like a byte-level provider tokenizer would, roughly. A run of Latin-script
text (ASCII, the Latin letter blocks, general punctuation, whitespace) costs one token per
started four characters; every other character (CJK, Cyrillic, Arabic, emoji, combining
marks, control characters, ...) costs one token of its own. Each message adds a few tokens
of framing (role markers).

No text costs more tokens than it has characters, and so no more than its UTF-8 bytes,
and the framing is below `prices.MESSAGE_OVERHEAD_TOKENS`: the sim never bills more input
than a reservation's `input_token_bound` holds.
"""

from __future__ import annotations

import re

# Tokens the sim adds per message around its text (fewer than the reservations' bound).
SIM_MESSAGE_OVERHEAD_TOKENS = 4
# Latin characters that share a token.
CHARS_PER_LATIN_TOKEN = 4

# Latin script: ASCII letters, digits, punctuation and whitespace; Latin-1 Supplement and
# Latin Extended-A/B; Latin Extended Additional; General Punctuation (dashes, quotes, spaces).
_LATIN = "\t\n\v\f\r\x1c-\x1f\x20-\x7e\u0085\u00a0-\u024f\u1e00-\u1eff\u2000-\u206f"
_LATIN_RUN = re.compile(f"[{_LATIN}]+")
_LATIN_CHAR = re.compile(f"[{_LATIN}]")


def is_latin(char: str) -> bool:
    """Whether `char` is Latin-script text (it shares tokens with its neighbours)."""
    return _LATIN_CHAR.fullmatch(char) is not None


def count_tokens(text: str) -> int:
    """The sim's tokens of `text` (0 for an empty text)."""
    tokens = len(text)
    for run in _LATIN_RUN.finditer(text):
        length = run.end() - run.start()
        # The run's characters were counted one each; they cost one per started four.
        tokens -= length - -(-length // CHARS_PER_LATIN_TOKEN)
    return tokens


def message_tokens(*messages: str) -> int:
    """The input tokens the sim bills for a call sent these messages."""
    return sum(count_tokens(m) + SIM_MESSAGE_OVERHEAD_TOKENS for m in messages)


def fit_prefix(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` within `max_tokens` (a model cut off mid-answer)."""
    if count_tokens(text) <= max_tokens:
        return text
    tokens = run = 0
    for i, char in enumerate(text):
        if is_latin(char):
            run += 1
            # A run's first character, and every fourth after it, starts a new token.
            cost = 1 if (run - 1) % CHARS_PER_LATIN_TOKEN == 0 else 0
        else:
            run = 0
            cost = 1
        if tokens + cost > max_tokens:
            return text[:i]
        tokens += cost
    return text  # pragma: no cover  (count_tokens said it does not fit)
