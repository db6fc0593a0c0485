"""Every error llamaherd raises on purpose, in one place.

    LlamaherdError                 base: catch this to catch all of ours
     ├── ConfigError               the config file or a setting is wrong; names the key and the fix
     ├── ModelFileError            a model path is missing, unreadable or not a GGUF file
     ├── BinaryNotFoundError       no llama-server binary could be found or executed
     ├── PortInUseError            another program (not llama-server) holds the configured port
     ├── StateDirInUseError        another llamaherd holds the state folder (history, log files)
     ├── StartupError              llama-server exited or never became ready while starting
     ├── ControlConflictError      a control conflicts with what runs (the API's 409)
     ├── ServiceUnreachableError   the CLI cannot reach a running `llamaherd serve`
     ├── PeerDiscoveryError        a DNS SRV lookup of peers (peers_dns) timed out or failed
     ├── PeerCallError             a peer did not answer what a front asked it for a client
     └── PullError                 a model cannot be pulled from Hugging Face (or removed); has
                                   the HTTP status the API answers with

Messages are written for the person running llamaherd: what is wrong, and how to fix it.
"""

from __future__ import annotations


class LlamaherdError(Exception):
    """Base of every error llamaherd raises on purpose."""


class ConfigError(LlamaherdError):
    """The configuration is invalid; the message names the key and the fix."""


class ModelFileError(LlamaherdError):
    """A model file is missing, unreadable, or not a GGUF file."""


class BinaryNotFoundError(LlamaherdError):
    """No usable llama-server binary was found."""


class PortInUseError(LlamaherdError):
    """The llama-server port is held by a program that does not answer like llama-server."""


class StateDirInUseError(LlamaherdError):
    """Another llamaherd holds the state folder: the message names its pid and the way out."""


class StartupError(LlamaherdError):
    """llama-server exited, or did not become ready, while starting."""


class ControlConflictError(LlamaherdError):
    """A control conflicts with what runs: a new launch for a server still supervised, or the
    API's 409 as the command line reads it (a model that cannot fit, a host not named)."""


class ServiceUnreachableError(LlamaherdError):
    """The command line could not reach llamaherd's API (not running, wrong --url, timeout)."""


class PeerDiscoveryError(LlamaherdError):
    """A DNS SRV lookup of the peers (`peers_dns`) timed out or failed: the message names the SRV
    name, the name server asked, and what went wrong. A name that does not exist is no error: it
    means no peers."""


class PeerCallError(LlamaherdError):
    """A front asked a peer on a client's behalf (an action on one of its models, its
    /metrics, its /api/history) and got no answer in time, or none it could read."""


class PullError(LlamaherdError):
    """A model cannot be pulled from the Hugging Face Hub, or a pulled model cannot be removed:
    a wrong source, no such repository or file, a gated repository, an ambiguous quantisation,
    too little disk space, a download that failed its checksum. `status` is the HTTP status
    the API answers with, `code` a word for scripts ("ambiguous_quant", "no_space"...)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "pull_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
