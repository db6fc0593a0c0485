"""Response shapes of the REST API; they are what the OpenAPI schema documents."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelOut(BaseModel):
    id: str
    name: str
    size: int = Field(description="bytes")
    type: str = Field(description="architecture, e.g. llama")
    modified_at: int = Field(description="unix seconds")


class LastExitOut(BaseModel):
    code: int | None
    signal: str | None
    lines: list[str] = Field(
        description="the telling lines of its output: its complaints, else its last lines"
    )


class StatusOut(BaseModel):
    """The `data` of the `llamaStatus` event."""

    status: str = Field(description="initial|checking|starting|ready|crashed|stopping|error")
    models: list[ModelOut]
    lastError: str | None
    retries: int
    uptime: int = Field(description="seconds")
    startedAt: str | None = Field(description="ISO 8601, UTC")
    maxRetries: int
    pid: int | None
    adopted: bool = Field(description="found running; llamaherd will not stop it")
    nextRetryAt: str | None
    restarts: int = Field(description="automatic restarts since llamaherd started")
    lastExit: LastExitOut | None


class ModelsOut(BaseModel):
    models: list[ModelOut]


class ControlOut(BaseModel):
    status: StatusOut


class LogsOut(BaseModel):
    lines: list[str]


class ModelStatusOut(StatusOut):
    """The `data` of the `llamaModelStatus` event: any model's server, with its id."""

    model: str = Field(description="the model's id (an alias in the path resolves to it)")


class ModelControlOut(BaseModel):
    status: ModelStatusOut


class ModelLogsOut(BaseModel):
    model: str
    lines: list[str] = Field(description="the tail of its llama-server's output, oldest first")


class HealthzOut(BaseModel):
    status: str
    name: str
    version: str


class ErrorBody(BaseModel):
    message: str
    type: str


class ErrorOut(BaseModel):
    error: ErrorBody


class GatewayModelOut(BaseModel):
    """One model of the gateway, as the `llamaModels` event shows it."""

    id: str
    aliases: list[str]
    default: bool
    state: str = Field(description="its llama-server's status (initial, starting, ready...)")
    phase: str = Field(description="the scheduler's view: unloaded|loading|ready|unloading|failed")
    loaded: bool
    draining: bool = Field(description="being unloaded once its requests in flight end")
    loadRequested: bool = Field(
        default=False, description="a load waits for its turn (for room to be made)"
    )
    inFlight: int
    queued: int
    maxConcurrency: int
    lastUsed: int | None = Field(description="unix milliseconds")
    ttlSeconds: float | None
    ttlLeft: float | None = Field(description="seconds until an idle unload")
    pinned: bool
    preload: int | None = Field(
        default=None, description="its place in the order of models loaded at start, if any"
    )
    port: int
    pid: int | None
    retries: int
    lastError: str | None
    waitingFor: str | None
    stopped: str | None = Field(
        default=None, description="why it refuses requests until started (a manual stop)"
    )
    retryIn: float | None = Field(
        default=None,
        description="failed: seconds until a request may try it again (failure_cooldown_s)",
    )
    path: str | None
    removable: bool = Field(
        default=False,
        description="a models_dir file (not the primary model): DELETE /api/models/{id} "
        "deletes its files once it is unloaded",
    )
    size: int | None = Field(description="bytes, every part of the file")
    architecture: str | None
    parameters: int | None
    quantisation: str | None
    contextLength: int | None
    memoryMb: float | None = Field(
        description="MiB: estimated (file plus KV cache), then measured (resident) once loaded"
    )


class ReloadOut(BaseModel):
    """How a config reload went."""

    ok: bool
    at: int = Field(description="unix milliseconds")
    trigger: str = Field(description="api, SIGHUP, file changed")
    changes: list[str] = Field(description="what changed, a line each")
    needsRestart: list[str] = Field(description="keys that changed but apply only at a restart")
    error: str | None


class ConfigInfoOut(BaseModel):
    path: str | None = None
    loadedAt: int | None = Field(default=None, description="unix milliseconds")
    lastReload: ReloadOut | None = None


class PeerOut(BaseModel):
    """One peer of a front: another llamaherd whose models it serves."""

    name: str
    url: str
    reachable: bool
    problem: str | None = Field(
        description="what is wrong with it, one sentence; null if all is well"
    )
    version: str | None = Field(description="its llamaherd version, once it answered")
    models: list[str] = Field(description="the ids of the models it serves")


class PeerModelOut(BaseModel):
    """A model a peer serves, as that peer's `llamaModels` shows it (the fields of a
    GatewayModelOut, as the peer's version has them), with the peer's name in `host`."""

    model_config = ConfigDict(extra="allow")

    id: str
    host: str = Field(description="the peer's name")
    reachable: bool = Field(description="whether the front reaches that peer now")


class GatewayModelsOut(BaseModel):
    models: list[GatewayModelOut]
    peers: list[PeerOut] = Field(default_factory=list, description="a front's peers")
    peerModels: list[PeerModelOut] = Field(
        default_factory=list, description="the models a front's peers serve, one per host"
    )
