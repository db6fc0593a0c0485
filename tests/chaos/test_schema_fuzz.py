"""Schema fuzzing: schemathesis sends what the OpenAPI schema allows, and what it does not, to
every operation of a running llamaherd (`llamaherd serve`, the real llama-server behind it).

The rule checked is issue 10's: llamaherd itself never answers a 500, and any 5xx it gives is
a documented 502, 503 or 504 with an OpenAI-style JSON body. A 5xx on a path relayed to
llama-server (the inference paths, `/upstream/...`) is sent again, unchanged, straight to that
llama-server: if it gives the same answer, status and body, the answer was llama-server's own,
relayed (counted apart, e.g. 501 for embeddings from a server started without `--embeddings`),
not llamaherd's.

The schema is the one llamaherd serves at /openapi.json, with the gateway's routes added
(api/openapi.py) where the app does not list them yet. Control routes (stop, restart, unload)
are fuzzed like the rest: a request after them loads the model again, and teardown must still
be clean. Runs are bounded (EXAMPLES per operation and generation mode) and derandomized, so
CI sees the same requests every time.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok

from llamaherd.api.openapi import add_gateway_paths
from llamaherd.gateway.route import INFERENCE_PATHS, UPSTREAM_PREFIX
from tests.chaos.conftest import Figures
from tests.conftest import free_port
from tests.gateway.conftest import FAST_POLICY
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(300)]

MODEL = "demo"
EXAMPLES = 15  # per operation and generation mode
UNKEYED_EXAMPLES = 3  # per operation, when only the refusal is expected
REQUEST_TIMEOUT_S = 30.0
# An endless event stream with no parameters: nothing to fuzz, and no answer ever ends.
SKIPPED = frozenset({"GET /api/events"})
SERVER_ERRORS_OF_OURS = frozenset({502, 503, 504})  # documented; never a 500
ADMIN_KEY = "admin-key-for-the-fuzzer-0123456789"
APP_KEY = "app-key-for-the-fuzzer-0123456789"
# Open to everyone even when keys are configured (api/access.py's OPEN_PATHS).
OPEN = frozenset({"GET /healthz", "GET /docs", "GET /openapi.json"})
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=list(hypothesis.HealthCheck),
    print_blob=False,
)


AnyCase = Case[Any]
# (operation label, status) -> what is wrong with that status there, or None.
Expectation = Callable[[str, int], str | None]


@dataclass
class Tally:
    """Every request the fuzzer sent and how it was answered."""

    served: ServedLlamaherd
    operations: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    llama_server_5xx: Counter[str] = field(default_factory=Counter)
    undocumented: Counter[str] = field(default_factory=Counter)  # "GET /x 405": not in schema
    problems: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def send(self, case: AnyCase, headers: dict[str, str], expect: Expectation | None) -> None:
        """Send `case`; record its status and whatever is wrong with the answer."""
        label = case.operation.label
        self.operations.add(label)
        try:
            response = case.call(
                base_url=self.served.url, headers=headers, timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as exc:
            self.problems.append(f"{label}: no answer ({exc!r})\n  {_curl(case, headers)}")
            return
        status = response.status_code
        self.statuses[status] += 1
        documented = case.operation.definition.raw.get("responses", {})
        if str(status) not in documented and "default" not in documented:
            self.undocumented[f"{label} {status}"] += 1
        unexpected = expect(label, status) if expect is not None else None
        if unexpected is not None:
            self.problems.append(
                f"{label}: {status}, {unexpected}: {response.content[:300]!r}\n"
                f"  {_curl(case, headers)}"
            )
        if status < 500:
            return
        if _relayed(label) and self._upstream_says_the_same(response):
            self.llama_server_5xx[f"{label} {status}"] += 1
            return
        problem = _our_5xx_problem(status, response.content)
        if problem is not None:
            self.problems.append(
                f"{label}: {status} from llamaherd: {problem}: {response.content[:300]!r}\n"
                f"  {_curl(case, headers)}"
            )

    def _upstream_says_the_same(self, response: schemathesis.Response) -> bool:
        """Send what llamaherd relayed straight to the model's llama-server: does it give the
        same answer (status and body)? Then the answer was llama-server's, relayed."""
        request = response.request
        parts = urlsplit(request.url or "")
        path = parts.path
        if path.startswith(UPSTREAM_PREFIX):
            path = "/" + path[len(UPSTREAM_PREFIX) :].partition("/")[2]
        url = self.served.model_url(MODEL) + path + (f"?{parts.query}" if parts.query else "")
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("host", "content-length", "authorization", "x-api-key")
        }
        body = request.body.encode() if isinstance(request.body, str) else request.body
        try:
            direct = requests.request(
                request.method or "GET",
                url,
                headers=headers,
                data=body,
                timeout=REQUEST_TIMEOUT_S,
            )
        except requests.RequestException:
            return False  # its server is not running (stopped by a fuzzed control route)
        return direct.status_code == response.status_code and direct.content == response.content


def _relayed(label: str) -> bool:
    path = label.partition(" ")[2]
    return path in INFERENCE_PATHS or path.startswith(UPSTREAM_PREFIX)


def _our_5xx_problem(status: int, content: bytes) -> str | None:
    """What is wrong with a 5xx that llamaherd itself gave, or None for a proper one."""
    if status not in SERVER_ERRORS_OF_OURS:
        return "not a documented 502, 503 or 504"
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        return "the body is not a JSON object"
    if not (isinstance(error, dict) and isinstance(error.get("message"), str)):
        return "the body is not an OpenAI-style error"
    return None


def _curl(case: AnyCase, headers: dict[str, str]) -> str:
    try:
        return case.as_curl_command(headers=headers)
    except Exception as exc:  # the report must not fail for the sake of a curl line
        return f"(no curl command: {exc!r})"


def fuzz(
    tally: Tally,
    schema: dict[str, Any],
    *,
    headers: dict[str, str],
    modes: tuple[GenerationMode, ...],
    examples: int = EXAMPLES,
    expect: Expectation | None = None,
) -> None:
    """Every operation of `schema` (but SKIPPED), `examples` cases per generation mode; the
    operations that take a model are also fuzzed with MODEL as that model, so they reach a
    real llama-server rather than a 404. `expect(label, status)` says what is wrong with a
    status, if anything (beyond the 5xx rule, which holds for every answer)."""
    loaded = schemathesis.openapi.from_dict(schema)
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        if operation.label in SKIPPED:
            continue
        takes_model = any(p.name == "model" for p in operation.path_parameters)
        fixed: list[dict[str, Any]] = [{}] + ([{"model": MODEL}] if takes_model else [])
        for mode in modes:
            for path_parameters in fixed:
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters or None
                )

                @hypothesis.settings(SETTINGS, max_examples=examples)
                @hypothesis.given(case=strategy)
                def run(case: AnyCase) -> None:
                    tally.send(case, headers, expect)

                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    # Nothing in it can be wrong (no parameters, no body): no negative case.
                    if mode is not GenerationMode.NEGATIVE:
                        raise


# ---- llamaherd ------------------------------------------------------------------------------


def config(binary: Path, model: Path, **more: Any) -> dict[str, Any]:
    return {
        "llama_server_binary": str(binary),
        "app_port": free_port(),
        **FAST_POLICY,
        # A small context: a fuzzed request without max_tokens ends when the context is full,
        # which takes this tiny model a fraction of a second.
        "models": {MODEL: {"path": str(model), "args": ["-c", "256"], "port": free_port()}},
        **more,
    }


@pytest.fixture
async def served(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> AsyncIterator[ServedLlamaherd]:
    async with ServedLlamaherd(write_config(tmp_path, config(real_binary, demo_model))) as serve:
        yield serve


async def schema_of(
    served: ServedLlamaherd, headers: dict[str, str]
) -> tuple[dict[str, Any], bool]:
    """The schema llamaherd serves once its model is loaded, with the gateway's routes added,
    and whether the app listed them itself."""
    await served.wait_ready(MODEL, headers=headers)
    async with served.http(headers) as http:
        answer = await http.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    schema: dict[str, Any] = answer.json()
    listed = "/v1/chat/completions" in schema.get("paths", {})
    return add_gateway_paths(schema), listed


def by_status(counts: Counter[str]) -> str:
    """{"POST /x 501": 3, "POST /y 501": 2} -> "501 x5 on 2 operations"."""
    answers: Counter[str] = Counter()
    operations: Counter[str] = Counter()
    for key, count in counts.items():
        status = key.rsplit(" ", 1)[1]
        answers[status] += count
        operations[status] += 1
    return (
        ", ".join(f"{s} x{answers[s]} on {operations[s]} operations" for s in sorted(answers))
        or "none"
    )


async def still_serves(served: ServedLlamaherd, headers: dict[str, str]) -> None:
    """After whatever the fuzzer stopped, restarted or unloaded: a completion still works."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    async with httpx.AsyncClient(base_url=served.url, timeout=60, headers=headers) as http:
        answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] == 4


def report(figures: Figures, tally: Tally, listed: bool, served: ServedLlamaherd) -> None:
    figures.update(
        {
            "operations": len(tally.operations),
            "requests": tally.sent,
            "statuses": ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())),
            "llama_server_own_5xx": by_status(tally.llama_server_5xx),
            "problems": len(tally.problems),
            "undocumented_statuses": by_status(tally.undocumented),
            "gateway_routes_listed_by_app": listed,
        }
    )
    served.remember_servers()
    assert not tally.problems, (
        f"{len(tally.problems)} answers broke the rules; the first ones:\n"
        + "\n".join(tally.problems[:8])
        + f"\n--- llamaherd's log ---\n{served.tail(6000)}"
    )
    # Every status llamaherd answered is one its schema promises (401/403 included).
    assert not tally.undocumented, by_status(tally.undocumented)


async def test_fuzz_every_operation_without_keys(served: ServedLlamaherd, figures: Figures) -> None:
    schema, listed = await schema_of(served, {})
    tally = Tally(served)
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    await asyncio.to_thread(fuzz, tally, schema, headers={}, modes=modes)
    report(figures, tally, listed, served)
    await still_serves(served, {})


def _inference(label: str) -> bool:
    path = label.partition(" ")[2]
    return path in INFERENCE_PATHS or path in ("/v1/models", "/models")


def only_open_routes(label: str, status: int) -> str | None:
    """No key: every route but the open ones is refused with a 401."""
    if label in OPEN:
        return None if status != 401 else "refused, though this route is open"
    return None if status == 401 else "not 401 without a key"


def inference_scope(label: str, status: int) -> str | None:
    """A key with the inference scope: inference routes serve it, admin routes say 403."""
    if label in OPEN:
        return None if status not in (401, 403) else "refused, though this route is open"
    if _inference(label):
        return None if status not in (401, 403) else "refused the inference key"
    return None if status == 403 else "not 403 for a key without the admin scope"


def any_key_accepted(label: str, status: int) -> str | None:
    return "refused the admin key" if status in (401, 403) else None


@pytest.fixture
async def keyed(
    tmp_path: Path, real_binary: Path, demo_model: Path
) -> AsyncIterator[ServedLlamaherd]:
    keys = [
        {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
        {"name": "app", "key": APP_KEY, "scopes": ["inference"]},
    ]
    settings = config(real_binary, demo_model, api_keys=keys)
    async with ServedLlamaherd(write_config(tmp_path, settings)) as serve:
        yield serve


async def test_fuzz_every_operation_with_and_without_keys(
    keyed: ServedLlamaherd, figures: Figures
) -> None:
    """With keys configured: every operation with the admin key (both generation modes),
    then each again with no key (401 but on the open routes) and with the inference key
    (403 on admin routes); never a 5xx of llamaherd's own."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    schema, listed = await schema_of(keyed, admin)
    tally = Tally(keyed)
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

    def run_all() -> None:
        fuzz(tally, schema, headers=admin, modes=modes, expect=any_key_accepted)
        positive = (GenerationMode.POSITIVE,)
        few = UNKEYED_EXAMPLES
        fuzz(tally, schema, headers={}, modes=positive, examples=few, expect=only_open_routes)
        app = {"x-api-key": APP_KEY}
        fuzz(tally, schema, headers=app, modes=positive, examples=few, expect=inference_scope)

    await asyncio.to_thread(run_all)
    report(figures, tally, listed, keyed)
    await still_serves(keyed, {"x-api-key": APP_KEY})


def test_the_5xx_rule_itself() -> None:
    """What the fuzzer calls a 5xx of llamaherd's own: a 500 always, any other 5xx unless it
    is a documented 502/503/504 with an OpenAI-style body."""
    proper = json.dumps({"error": {"message": "llama-server is gone", "type": "x"}}).encode()
    assert _our_5xx_problem(502, proper) is None
    assert _our_5xx_problem(503, proper) is None
    assert _our_5xx_problem(500, proper) is not None
    assert _our_5xx_problem(501, proper) is not None
    assert _our_5xx_problem(503, b"Service Unavailable") is not None
    assert _our_5xx_problem(503, b'{"detail": "busy"}') is not None
    assert _our_5xx_problem(502, b"[1]") is not None
    assert _relayed("POST /v1/chat/completions") and _relayed("GET /upstream/{model}/{path}")
    assert not _relayed("POST /api/llama/stop")
