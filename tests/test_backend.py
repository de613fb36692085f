"""ftkit.backend: which backend the environment selects, and the client it builds -- for Azure,
the v1 API by default and the dated AzureOpenAI route when OPENAI_API_VERSION asks for it.

The requests are checked at the transport: the real openai SDK builds and sends them, and an
httpx transport records them instead of going to the network (no Azure resource is reachable
from a test)."""

from __future__ import annotations

import httpx
import openai
import pytest

import ftkit
from ftkit.backend import azure_v1_base_url, backend_info, backend_of

VARIABLES = ["FTKIT_BACKEND", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT",
             "OPENAI_API_VERSION"]
PLACEHOLDER = "test-placeholder-not-a-key"
ENDPOINT = "https://example-resource.openai.azure.com"


@pytest.fixture()
def env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_


def _recording_client(seen: list[httpx.Request]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": []})

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("endpoint", [ENDPOINT, ENDPOINT + "/", ENDPOINT + "/openai", ENDPOINT + "/openai/v1/"])
def test_v1_base_url_from_any_form_of_the_endpoint(endpoint):
    assert azure_v1_base_url(endpoint) == "https://example-resource.openai.azure.com/openai/v1/"


def test_v1_base_url_refuses_a_non_url():
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        azure_v1_base_url("example-resource")


def test_azure_settings_select_the_v1_api(env):
    env(AZURE_OPENAI_API_KEY=PLACEHOLDER, AZURE_OPENAI_ENDPOINT=ENDPOINT)
    info = backend_info()
    assert (info.name, info.base_url, info.api_version) == ("azure", ENDPOINT + "/openai/v1/", None)
    assert "v1 API" in info.reason and info.paid


def test_v1_client_is_the_plain_openai_client_on_the_v1_path(env):
    env(AZURE_OPENAI_API_KEY=PLACEHOLDER, AZURE_OPENAI_ENDPOINT=ENDPOINT)
    seen: list[httpx.Request] = []
    client = ftkit.client(verbose=False, http_client=_recording_client(seen))
    assert type(client) is openai.OpenAI  # not AzureOpenAI
    client.fine_tuning.jobs.list(limit=1)
    request = seen[0]
    assert str(request.url) == f"{ENDPOINT}/openai/v1/fine_tuning/jobs?limit=1"  # no api-version
    assert request.headers["authorization"] == f"Bearer {PLACEHOLDER}"
    assert backend_of(client).name == "azure"


def test_a_dated_api_version_keeps_the_azure_openai_route(env):
    env(AZURE_OPENAI_API_KEY=PLACEHOLDER, AZURE_OPENAI_ENDPOINT=ENDPOINT, OPENAI_API_VERSION="2025-04-01-preview")
    info = backend_info()
    assert (info.name, info.base_url, info.api_version) == ("azure", ENDPOINT, "2025-04-01-preview")
    seen: list[httpx.Request] = []
    client = ftkit.client(verbose=False, http_client=_recording_client(seen))
    assert isinstance(client, openai.AzureOpenAI)
    client.fine_tuning.jobs.list(limit=1)
    url = seen[0].url
    assert url.path == "/openai/fine_tuning/jobs"
    assert url.params["api-version"] == "2025-04-01-preview"
    assert seen[0].headers["api-key"] == PLACEHOLDER


def test_openai_version_v1_means_the_v1_api(env):
    env(AZURE_OPENAI_API_KEY=PLACEHOLDER, AZURE_OPENAI_ENDPOINT=ENDPOINT, OPENAI_API_VERSION="v1")
    assert backend_info().api_version is None


def test_the_sdks_own_variables_pointing_at_azure_are_azure(env):
    # Microsoft's v1 docs also allow OPENAI_BASE_URL + OPENAI_API_KEY with a bare OpenAI() client.
    env(OPENAI_API_KEY=PLACEHOLDER, OPENAI_BASE_URL=ENDPOINT + "/openai/v1/")
    info = backend_info()
    assert (info.name, info.base_url) == ("azure", ENDPOINT + "/openai/v1/")
    seen: list[httpx.Request] = []
    ftkit.client(verbose=False, http_client=_recording_client(seen)).models.list()
    assert str(seen[0].url) == f"{ENDPOINT}/openai/v1/models"


def test_backend_of_recognises_clients_made_elsewhere():
    assert backend_of(openai.OpenAI(api_key=PLACEHOLDER, base_url=ENDPOINT + "/openai/v1/")).name == "azure"
    services = "https://example.services.ai.azure.com/openai/v1/"
    assert backend_of(openai.OpenAI(api_key=PLACEHOLDER, base_url=services)).name == "azure"
    assert backend_of(openai.OpenAI(api_key=PLACEHOLDER)).name == "openai"
    assert backend_of(openai.OpenAI(api_key=PLACEHOLDER, base_url="http://127.0.0.1:8000/v1")).name == "local"


def test_choice_order_and_errors(env):
    assert backend_info().name == "local"
    env(OPENAI_API_KEY=PLACEHOLDER, AZURE_OPENAI_API_KEY=PLACEHOLDER, AZURE_OPENAI_ENDPOINT=ENDPOINT)
    assert backend_info().name == "openai"  # OPENAI_API_KEY wins unless FTKIT_BACKEND says otherwise
    env(FTKIT_BACKEND="azure")
    assert backend_info().name == "azure"
    env(FTKIT_BACKEND="local")
    assert backend_info().name == "local"
    env(FTKIT_BACKEND="gcp")
    with pytest.raises(ValueError, match="FTKIT_BACKEND"):
        backend_info()
