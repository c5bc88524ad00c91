"""Build the model client for a model key from the settings.

Called once per worker process (never at import), and the provider modules are imported
only here, so that code which never calls a real provider never loads its SDK.
"""

from __future__ import annotations

from fleetline.shared.errors import ConfigError
from fleetline.shared.models.base import ModelClient
from fleetline.shared.settings import FleetlineSettings, ModelSpec


def build_client(model_key: str, settings: FleetlineSettings) -> ModelClient:
    """The client that serves `model_key`.

    Args:
        model_key: a key of `settings.models`.
        settings: the process's settings.

    Raises:
        ConfigError: the model is unknown, or its provider's API key is not set.
    """
    spec = _spec(model_key, settings)
    providers = settings.providers
    if spec.provider == "sim":
        from fleetline.shared.models.sim import SimClient

        answers = {name: a.sim for name, a in settings.fleet.agents.items() if a.sim}
        return SimClient(settings.sim, answers)
    if spec.provider == "openai":
        if providers.openai_api_key is None:
            raise ConfigError(f"FLEETLINE_OPENAI_API_KEY is not set (model {model_key!r})")
        from fleetline.shared.models.openai_client import OpenAIClient

        return OpenAIClient(providers.openai_base_url, providers.openai_api_key.get_secret_value())
    if providers.anthropic_api_key is None:
        raise ConfigError(f"FLEETLINE_ANTHROPIC_API_KEY is not set (model {model_key!r})")
    from fleetline.shared.models.anthropic_client import AnthropicClient

    return AnthropicClient(
        providers.anthropic_base_url, providers.anthropic_api_key.get_secret_value()
    )


def api_model_for(model_key: str, settings: FleetlineSettings) -> str:
    """The provider's id for `model_key`: its `api_model`, or the key itself."""
    return _spec(model_key, settings).api_model or model_key


def _spec(model_key: str, settings: FleetlineSettings) -> ModelSpec:
    try:
        return settings.models[model_key]
    except KeyError:
        raise ConfigError(f"unknown model {model_key!r}; add it to models") from None
