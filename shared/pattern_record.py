"""What a pipeline or a debate keeps on its job record, and how a result shows it.

A pipeline's record holds its stage table (`stages`, kept by the stage scripts as each
stage closes) and the runs before the current one (`pattern`); a debate's holds its rounds
so far (`pattern`: rounds, history, agreement, consensus). A job's result carries them as
they are now, at any point of its life: a job the watchdog ended shows them too.
"""

from __future__ import annotations

import json
from typing import Any


def with_pattern(result: dict[str, Any] | None, fields: dict[str, str]) -> dict[str, Any] | None:
    """`result` with the record's pattern fields in it (None stays None for a fan-out)."""
    extra: dict[str, Any] = json.loads(fields["pattern"]) if fields.get("pattern") else {}
    if fields.get("stages"):
        extra["stages"] = json.loads(fields["stages"])
    if not extra:
        return result
    return {**(result or {}), **extra}
