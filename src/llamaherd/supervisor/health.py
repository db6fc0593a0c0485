"""Asking a llama-server how it is, over HTTP, with a deadline on every question.

Probes use their own HTTP client and connection pool, never the inference path: a server busy
generating on every slot still answers /health from its HTTP threads, so a busy server is never
mistaken for a hung one, and a queue of inference requests never delays a probe.
"""

from __future__ import annotations

import enum
from typing import Any

import httpx


class Health(enum.Enum):
    READY = "ready"  # 200 {"status": "ok"}
    LOADING = "loading"  # 503 while the model loads
    REFUSED = "refused"  # nothing listens on the port (yet)
    TIMEOUT = "timeout"  # something accepted the connection but did not answer in time
    NOT_LLAMA = "not_llama"  # something answers, but not like llama-server


class HealthProbe:
    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url
        # trust_env=False: a proxy from the environment must never see loopback probes.
        # verify=False: llama-server is spoken to in plain HTTP, so no TLS context is needed,
        # and building httpx's default one (loading the CA bundle) costs about 40 ms, which
        # every start and every recovery would wait for.
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            trust_env=False,
            verify=False,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=0),
        )
        self.last_detail = ""

    async def check(self) -> Health:
        try:
            response = await self._client.get("/health")
        except httpx.ConnectError as exc:
            self.last_detail = f"connection refused ({exc})"
            return Health.REFUSED
        except httpx.TimeoutException:
            self.last_detail = "no answer within the health timeout"
            return Health.TIMEOUT
        except httpx.HTTPError as exc:
            self.last_detail = f"{type(exc).__name__}: {exc}"
            return Health.NOT_LLAMA
        self.last_detail = f"HTTP {response.status_code} {response.text[:200]!r}"
        return _classify(response)

    async def models(self) -> list[dict[str, Any]]:
        """The `data` list of GET /v1/models; llama-server has no /api/models."""
        response = await self._client.get("/v1/models")
        response.raise_for_status()
        payload = response.json()
        data = payload.get("data") if isinstance(payload, dict) else None
        return [item for item in data or [] if isinstance(item, dict)]

    async def aclose(self) -> None:
        await self._client.aclose()


def _classify(response: httpx.Response) -> Health:
    try:
        body = response.json()
    except ValueError:
        return Health.NOT_LLAMA
    if not isinstance(body, dict):
        return Health.NOT_LLAMA
    if response.status_code == 200 and body.get("status") == "ok":
        return Health.READY
    error = body.get("error")
    if response.status_code == 503 and isinstance(error, dict):
        return Health.LOADING
    return Health.NOT_LLAMA
