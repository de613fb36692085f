"""Which fine-tuning backend to talk to, and an ``openai.OpenAI`` client for it.

* ``FTKIT_BACKEND=local|openai|azure`` chooses explicitly.
* Otherwise ``OPENAI_API_KEY`` selects the hosted OpenAI API, and the Azure OpenAI variables
  (``AZURE_OPENAI_API_KEY`` and ``AZURE_OPENAI_ENDPOINT``) select Azure.
* Otherwise ftkit's local, OpenAI-compatible server: started in the background (or reused) and
  reached through the same SDK -- only ``base_url`` differs.

Keys are never printed, logged or stored by ftkit (the local server's own key excepted, which
lives in its home directory with mode 0600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Backend", "backend_info", "backend_of", "client", "default_base_model"]

#: The base model each backend fine-tunes by default in the course. On the hosted platform this
#: is gpt-4.1-mini: gpt-4.1-nano shut down on 2026-10-23 (see ftkit.catalog.availability).
DEFAULT_BASE_MODELS = {
    "local": "SmolLM2-135M-Instruct",
    "openai": "gpt-4.1-mini-2025-04-14",
    "azure": "gpt-4.1-mini-2025-04-14",
}


@dataclass(frozen=True)
class Backend:
    name: str  # "local", "openai" or "azure"
    reason: str
    base_url: str | None = None

    @property
    def paid(self) -> bool:
        """True for backends that bill (the hosted platforms)."""
        return self.name != "local"

    @property
    def base_model(self) -> str:
        return DEFAULT_BASE_MODELS[self.name]

    def describe(self) -> str:
        where = f" at {self.base_url}" if self.base_url else ""
        return f"ftkit: using the {self.name} backend{where} ({self.reason})"


def backend_info() -> Backend:
    """Which backend :func:`client` would use, and why (does not start anything)."""
    chosen = os.environ.get("FTKIT_BACKEND", "").strip().lower()
    has_openai = bool(os.environ.get("OPENAI_API_KEY"))
    has_azure = bool(os.environ.get("AZURE_OPENAI_API_KEY") and os.environ.get("AZURE_OPENAI_ENDPOINT"))
    if chosen and chosen not in ("local", "openai", "azure"):
        raise ValueError(f"FTKIT_BACKEND must be local, openai or azure, not {chosen!r}")
    if chosen == "local":
        return Backend("local", "FTKIT_BACKEND=local")
    if chosen == "openai" or (not chosen and has_openai):
        if not has_openai:
            raise RuntimeError("FTKIT_BACKEND=openai but OPENAI_API_KEY is not set")
        why = "FTKIT_BACKEND=openai" if chosen else "OPENAI_API_KEY is set"
        return Backend("openai", why, os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
    if chosen == "azure" or (not chosen and has_azure):
        if not has_azure:
            raise RuntimeError("FTKIT_BACKEND=azure needs AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT")
        why = "FTKIT_BACKEND=azure" if chosen else "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT are set"
        return Backend("azure", why, os.environ["AZURE_OPENAI_ENDPOINT"])
    return Backend("local", "no OPENAI_API_KEY or Azure OpenAI settings; set one to use a hosted platform")


def default_base_model(backend: Backend | None = None) -> str:
    """The base model the course fine-tunes on this backend."""
    return (backend or backend_info()).base_model


def client(*, verbose: bool = True, home=None, **kwargs):
    """An ``openai.OpenAI`` client for the active backend (see the module docstring).

    For the local backend this starts the server in the background if it is not running (the
    first start also prepares the model's weights, ~20 s once). Extra keyword arguments go to the
    client's constructor (``timeout``, ``max_retries`` ...).

    Taught in notebooks/00_setup.ipynb.
    """
    import openai

    info = backend_info()
    if info.name == "openai":
        c = openai.OpenAI(**kwargs)
    elif info.name == "azure":
        version = os.environ.get("OPENAI_API_VERSION", "2025-04-01-preview")
        c = openai.AzureOpenAI(api_version=version, **kwargs)
    else:
        from .local.control import api_key, ensure_server, home_dir

        server = ensure_server(home_dir(home))
        info = Backend("local", info.reason, server.base_url)
        c = openai.OpenAI(base_url=server.base_url, api_key=api_key(server.home), **kwargs)
    if verbose:
        print(info.describe())
    c.ftkit_backend = info  # lets ftkit helpers know the backend without guessing from the URL
    return c


def backend_of(c) -> Backend:
    """The backend an ``openai`` client talks to (from :func:`client`, or guessed from its URL)."""
    known = getattr(c, "ftkit_backend", None)
    if known is not None:
        return known
    import openai

    url = str(getattr(c, "base_url", ""))
    if isinstance(c, openai.AzureOpenAI):
        return Backend("azure", "an AzureOpenAI client", url)
    if "api.openai.com" in url:
        return Backend("openai", "the client points at api.openai.com", url)
    return Backend("local", "the client points at a non-OpenAI URL", url)
