"""The command line's client of the pull routes (api/pull_routes.py): RemoteClient, plus a
pull, its cancel, and a model's deletion. Its own module so that `llamaherd --version` does not
load httpx (client/pull.py imports it in its handlers)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from llamaherd.client.remote import RemoteClient
from llamaherd.config.defaults import ENV_API_KEY
from llamaherd.errors import ControlConflictError, LlamaherdError

HEALTH_TIMEOUT_S = 2.0
ANSWER_TIMEOUT_S = 60.0  # a pull answers once the Hub has said what its files are
KEY_CODES = ("missing_api_key", "invalid_api_key", "insufficient_scope")


class PullClient(RemoteClient):
    """RemoteClient, with the pull routes (api/pull_routes.py)."""

    def answers(self) -> bool:
        try:
            self._http.get("/healthz", timeout=HEALTH_TIMEOUT_S)
        except httpx.TransportError:
            return False
        return True

    def start_pull(self, source: str) -> dict[str, Any]:
        return self._json("POST", "/api/models/pull", json={"source": source})

    def cancel_pull(self, pull_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/api/models/pulls/{pull_id}")

    def remove_model(self, model: str) -> dict[str, Any]:
        return self._json("DELETE", f"/api/models/{quote(model, safe='')}")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object of a 2xx answer; an error answer raises with llamaherd's message."""
        with self._reaching():
            answer = self._http.request(method, path, timeout=ANSWER_TIMEOUT_S, **kwargs)
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.is_success and isinstance(body, dict):
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise self._unexpected(answer, f"HTTP {answer.status_code}")
        message = str(error["message"])
        if error.get("code") in KEY_CODES:
            message += f" (the command line sends {ENV_API_KEY}, if set)"
        if answer.status_code == 409:
            raise ControlConflictError(message)
        raise LlamaherdError(message)
