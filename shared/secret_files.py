"""Secret settings read from files, as container platforms mount secrets.

`FLEETLINE_OPENAI_API_KEY_FILE=/run/secrets/openai` stands for `FLEETLINE_OPENAI_API_KEY`
set to the file's text (one trailing newline dropped). Only the settings listed here have
a `_FILE` form: a few others end in `_FILE` by name (`FLEETLINE_SIM_OUTAGE_FILE`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from fleetline.shared.errors import ConfigError

SECRET_SETTINGS = (
    "FLEETLINE_REDIS_URL",
    "FLEETLINE_REDIS_PASSWORD",
    "FLEETLINE_REDIS_SENTINEL_PASSWORD",
    "FLEETLINE_OPENAI_API_KEY",
    "FLEETLINE_ANTHROPIC_API_KEY",
    "FLEETLINE_SENTRY_DSN",
    # JSON, tenant -> secret: what job callbacks are signed with.
    "FLEETLINE_API_WEBHOOK_SECRETS",
)


def read_secret_files(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Set each secret setting given as `<NAME>_FILE` from its file; the names set.

    Raises ConfigError naming the variable when both forms are set, or the file cannot be
    read. The value goes into the environment, so every part of the process (and the
    worker processes it starts) reads it as if it had been set directly.
    """
    done = []
    for name in SECRET_SETTINGS:
        path = environ.get(f"{name}_FILE")
        if not path:
            continue
        if environ.get(name) and environ.get(f"_{name}_FROM_FILE") != path:
            raise ConfigError(f"{name} and {name}_FILE are both set: keep one")
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}_FILE: cannot read {path}: {exc}") from exc
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            raise ConfigError(f"{name}_FILE: {path} is empty")
        environ[name] = value
        # Marks the value as the file's, so a child process reading its inherited
        # environment again does not take it for a second setting.
        environ[f"_{name}_FROM_FILE"] = path
        done.append(name)
    return done
