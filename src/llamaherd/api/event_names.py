"""The names of the Socket.IO events and of the `/api/events` stream's events: part of the wire
contract, shared by the server (api/payloads.py re-exports them) and the command line's client
(client/remote.py). Free of imports, so the client does not load the server to know a name."""

STATUS_EVENT = "llamaStatus"
STATUS_REQUEST = "requestLlamaStatus"
LOG_EVENT = "llamaLog"
LOG_SUBSCRIBE = "subscribeLlamaLogs"
LOG_UNSUBSCRIBE = "unsubscribeLlamaLogs"
MODELS_EVENT = "llamaModels"
MODELS_REQUEST = "requestLlamaModels"
METRICS_REQUEST = "requestLlamaMetrics"
LOAD_MODEL = "loadModel"
UNLOAD_MODEL = "unloadModel"
# Any model's server, beside the primary's llamaStatus; and any model's start, stop, restart.
MODEL_STATUS_EVENT = "llamaModelStatus"
MODEL_STATUS_REQUEST = "requestLlamaModelStatus"
START_MODEL = "startModel"
STOP_MODEL = "stopModel"
RESTART_MODEL = "restartModel"
# A pull of a model from the Hugging Face Hub: the pull's object on every change.
MODEL_PULL_EVENT = "modelPull"
