"""Which fine-tuning backend to talk to, and an ``openai.OpenAI`` client for it.

* ``FTKIT_BACKEND=local|openai|azure`` chooses explicitly.
* Otherwise ``OPENAI_API_KEY`` selects the hosted OpenAI API, and the Azure OpenAI variables
  (``AZURE_OPENAI_API_KEY`` and ``AZURE_OPENAI_ENDPOINT``) select Azure.
* Otherwise ftkit's local, OpenAI-compatible server: started in the background (or reused) and
  reached through the same SDK -- only ``base_url`` differs.

Azure OpenAI is reached through its **v1 API** by default: the plain ``openai.OpenAI`` client
with ``base_url=https://<resource>.openai.azure.com/openai/v1/`` and the Azure key as
``api_key`` (Microsoft Learn, "Azure OpenAI API version lifecycle": opt-in since August 2025, no
dated ``api-version``). Setting ``OPENAI_API_VERSION`` (e.g. ``2025-04-01-preview``) keeps the
older route: ``openai.AzureOpenAI`` with that dated version.

Keys are never printed, logged or stored by ftkit (the local server's own key excepted, which
lives in its home directory with mode 0600).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Backend", "azure_v1_base_url", "backend_info", "backend_of", "client", "default_base_model"]

#: The base model each backend fine-tunes by default in the course. On the hosted platform this
#: is gpt-4.1-mini: gpt-4.1-nano shut down on 2026-10-23 (see ftkit.catalog.availability).
DEFAULT_BASE_MODELS = {
    "local": "SmolLM2-135M-Instruct",
    "openai": "gpt-4.1-mini-2025-04-14",
    "azure": "gpt-4.1-mini-2025-04-14",
}


#: Hosts of Azure OpenAI endpoints (a resource's own name goes in front).
AZURE_HOSTS = (".openai.azure.com", ".services.ai.azure.com", ".cognitiveservices.azure.com")


def azure_v1_base_url(endpoint: str) -> str:
    """The v1 API address of an Azure OpenAI resource: ``https://<resource>.openai.azure.com``
    becomes ``https://<resource>.openai.azure.com/openai/v1/`` (an endpoint given with
    ``/openai`` or ``/openai/v1`` already is completed, not doubled).

    Taught in notebooks/00_setup.ipynb.
    """
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"AZURE_OPENAI_ENDPOINT must be a URL such as https://<resource>.openai.azure.com, got {endpoint!r}")
    for tail in ("/openai/v1", "/openai"):
        if url.endswith(tail):
            url = url[: -len(tail)]
            break
    return f"{url}/openai/v1/"


def _is_azure(url: str) -> bool:
    return (urlsplit(url).hostname or "").endswith(AZURE_HOSTS)


def _azure_api_version() -> str | None:
    """The dated ``api-version`` to use with ``AzureOpenAI``, or None for the v1 API."""
    version = os.environ.get("OPENAI_API_VERSION", "").strip()
    return None if version.lower() in ("", "v1") else version


@dataclass(frozen=True)
class Backend:
    name: str  # "local", "openai" or "azure"
    reason: str
    base_url: str | None = None
    api_version: str | None = None  # Azure's dated api-version when that route is used; None = v1 API

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
        url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        if _is_azure(url):  # Azure's v1 API also works through the SDK's own variables
            return Backend("azure", f"{why} and OPENAI_BASE_URL is an Azure OpenAI endpoint; v1 API", url)
        return Backend("openai", why, url)
    if chosen == "azure" or (not chosen and has_azure):
        if not has_azure:
            raise RuntimeError("FTKIT_BACKEND=azure needs AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT")
        why = "FTKIT_BACKEND=azure" if chosen else "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT are set"
        version = _azure_api_version()
        if version:
            return Backend("azure", f"{why}; dated API version {version} (OPENAI_API_VERSION)",
                           os.environ["AZURE_OPENAI_ENDPOINT"], api_version=version)
        return Backend("azure", f"{why}; v1 API", azure_v1_base_url(os.environ["AZURE_OPENAI_ENDPOINT"]))
    return Backend("local", "no OPENAI_API_KEY or Azure OpenAI settings; set one to use a hosted platform")


def default_base_model(backend: Backend | None = None) -> str:
    """The base model the course fine-tunes on this backend."""
    return (backend or backend_info()).base_model


def client(*, verbose: bool = True, home=None, **kwargs):
    """An ``openai.OpenAI`` client for the active backend (see the module docstring).

    For the local backend this starts the server in the background if it is not running (the
    first start also prepares the model's weights, ~20 s once). For Azure it is a plain
    ``openai.OpenAI`` client on the resource's v1 API, or an ``openai.AzureOpenAI`` client when
    ``OPENAI_API_VERSION`` names a dated version. Extra keyword arguments go to the client's
    constructor (``timeout``, ``max_retries`` ...).

    Taught in notebooks/00_setup.ipynb.
    """
    import openai

    info = backend_info()
    if info.name == "openai":
        c = openai.OpenAI(**kwargs)
    elif info.name == "azure":
        if info.api_version:  # the older route, for code and deployments that still use a dated version
            c = openai.AzureOpenAI(api_version=info.api_version, **kwargs)
        else:  # the v1 API: the plain client, only base_url and the key differ
            kwargs.setdefault("base_url", info.base_url)
            kwargs.setdefault("api_key", os.environ.get("AZURE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY"))
            c = openai.OpenAI(**kwargs)
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
    if _is_azure(url):
        return Backend("azure", "the client points at an Azure OpenAI endpoint", url)
    if "api.openai.com" in url:
        return Backend("openai", "the client points at api.openai.com", url)
    return Backend("local", "the client points at a non-OpenAI URL", url)
