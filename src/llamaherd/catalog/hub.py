"""Models on the Hugging Face Hub: from `OWNER/REPO[:QUANT]` or `OWNER/REPO/FILE.gguf` to the
files to download, and the download of one file, with the `huggingface_hub` library.

Which file a quantisation tag picks, as llama.cpp's `-hf` picks it (common/download.cpp):

- the model files are the `.gguf` files whose name holds none of "mmproj", "imatrix" and the
  draft models' markers ("mtp-", "eagle3-", "dflash-", "dspark-"); of a split model
  (`name-00001-of-00003.gguf`) only the first part counts;
- the tag matches a file whose path holds the tag followed by "." or "-", in any case
  (`Q4_K_M` matches `Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`, not `...-Q4_K_M_L.gguf`);
- without a tag, `Q4_K_M`, then `Q8_0`, then the repository's only model file.

One difference, on purpose: where llama.cpp takes the first of several matches, a pull
refuses and lists them (a download of gigabytes should not be a guess). A split model comes
with all its parts; a model with a multimodal projector in its folder (or a folder above)
comes with the projector whose quantisation is closest to the model's (llama.cpp's choice),
saved as `mmproj-<model id>.gguf` so that the folder scan attaches it to that model.

The file list, sizes and checksums come from one request (`HfApi.model_info` with the files'
metadata); access is checked with one HEAD of the first file before anything is written
(a gated repository answers 401 there, not in the listing). A download resumes a partial
file with a Range request (`huggingface_hub.file_download.http_get`, which also resumes by
itself after a dropped connection), and is checked against the Hub's SHA-256 (the LFS oid;
the git blob id for a small file) before it may be used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import httpx
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils._headers import build_hf_headers

from llamaherd.catalog.library import is_mmproj_name, split_part_file_name, split_part_name
from llamaherd.errors import PullError

EXAMPLE = "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
SOURCE_HELP = (
    f"use OWNER/REPO[:QUANT] (e.g. {EXAMPLE}) or OWNER/REPO/FILE.gguf "
    "(e.g. bartowski/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf)"
)
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama.cpp's, without a tag
NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
RESOLVE_TIMEOUT_S = 30.0  # each of the two questions asked before a pull is answered
LISTED_FILES = 30  # how many of a repository's files an error lists
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO = re.compile(rf"^{_NAME}/{_NAME}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
_QUANT_IN_NAME = re.compile(r"[-.]([A-Za-z0-9_]+)$")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file size limit


@dataclass(frozen=True)
class Source:
    """What to pull: a repository and a quantisation tag (or none), or one file of it."""

    repo: str
    quant: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        if self.file is not None:
            return f"{self.repo}/{self.file}"
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


def parse_source(text: object) -> Source:
    """`OWNER/REPO`, `OWNER/REPO:QUANT` or `OWNER/REPO/PATH/FILE.gguf` (an `hf.co/` or
    `https://huggingface.co/` in front is dropped). Raises PullError (400) naming the fix."""
    if not isinstance(text, str) or not text.strip():
        raise PullError(f"name a model to pull: {SOURCE_HELP}", code="bad_source")
    value = text.strip()
    for prefix in _PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
            break
    if value.lower().endswith(".gguf"):
        owner, _, rest = value.partition("/")
        name, _, path = rest.partition("/")
        repo = f"{owner}/{name}"
        if not _REPO.match(repo) or not path or ".." in path.split("/") or "\\" in path:
            raise PullError(
                f"{text!r} is not a file of a repository: {SOURCE_HELP}", code="bad_source"
            )
        return Source(repo, file=path)
    repo, colon, quant = value.partition(":")
    if not _REPO.match(repo):
        raise PullError(f"{text!r} is not a repository name: {SOURCE_HELP}", code="bad_source")
    if colon and not _TAG.match(quant):
        raise PullError(
            f"{quant!r} is not a quantisation tag: use letters, digits and _ (e.g. Q4_K_M, "
            f"Q8_0, IQ4_XS); {SOURCE_HELP}",
            code="bad_source",
        )
    return Source(repo, quant=quant or None)


@dataclass(frozen=True)
class HubFile:
    """One file of a repository, as the Hub lists it."""

    path: str  # in the repository
    size: int
    sha256: str | None = None  # the LFS oid of a large file
    blob_id: str | None = None  # the git blob id (SHA-1), for a file kept in git itself

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class Resolution:
    """A source resolved: the repository at one commit, the files to download (the model's,
    then its projector's, if any) and the name each gets in models_dir."""

    repo: str
    revision: str  # the commit: every file comes from the same one
    model_id: str
    files: tuple[HubFile, ...]
    targets: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(file.size for file in self.files)


# ---- choosing the files (pure) ------------------------------------------------------------


def is_model_path(path: str) -> bool:
    """Whether a repository file is a model, as llama.cpp tells (not a projector, an imatrix
    or a draft model)."""
    name = PurePosixPath(path).name
    return name.endswith(".gguf") and not any(mark in name.lower() for mark in NOT_MODELS)


def _first_parts(paths: Sequence[str]) -> list[str]:
    """The model files, with a split model by its first part only."""
    found = []
    for path in paths:
        if not is_model_path(path):
            continue
        part = split_part_name(PurePosixPath(path).name)
        if part is None or part.number == 1:
            found.append(path)
    return found


def _listing(paths: Sequence[str]) -> str:
    ggufs = [p for p in paths if p.endswith(".gguf")]
    if not ggufs:
        return "it holds no .gguf file (llama-server needs a GGUF repository, often named ...-GGUF)"
    shown = ", ".join(ggufs[:LISTED_FILES])
    more = f" and {len(ggufs) - LISTED_FILES} more" if len(ggufs) > LISTED_FILES else ""
    return f"its GGUF files: {shown}{more}"


def quant_of(path: str) -> str | None:
    """The quantisation a file name ends with (`...-Q4_K_M.gguf` -> Q4_K_M), upper case."""
    stem = PurePosixPath(path).name.removesuffix(".gguf")
    part = split_part_name(PurePosixPath(path).name)
    if part is not None:
        stem = part.model_id
    match = _QUANT_IN_NAME.search(stem)
    return match[1].upper() if match else None


def pick_model(repo: str, paths: Sequence[str], quant: str | None) -> str:
    """The model file `quant` names among a repository's `paths` (see the module's rules).
    Raises PullError: 404 when none matches, 409 when several do (listing them)."""
    candidates = _first_parts(paths)
    for tag in (quant,) if quant else DEFAULT_TAGS:
        pattern = re.compile(re.escape(tag) + r"[.-]", re.IGNORECASE)
        matches = [path for path in candidates if pattern.search(path)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise PullError(
                f"the quantisation {tag} matches {len(matches)} model files of {repo}: "
                f"{', '.join(matches)}; pull one by its file name, e.g. {repo}/{matches[0]}",
                status=409,
                code="ambiguous_quant",
            )
    if quant:
        tags = sorted({q for path in candidates if (q := quant_of(path))})
        have = f"; its quantisations: {', '.join(tags)}" if tags else ""
        raise PullError(
            f"no model file of {repo} matches the quantisation {quant}{have} ({_listing(paths)})",
            status=404,
            code="no_such_file",
        )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise PullError(
            f"{repo} has no GGUF model file: {_listing(paths)}", status=404, code="no_such_file"
        )
    raise PullError(
        f"{repo} has {len(candidates)} model files and none is {' or '.join(DEFAULT_TAGS)}: "
        f"name one with :QUANT or by its file name ({_listing(paths)})",
        status=409,
        code="ambiguous_quant",
    )


def split_set(repo: str, paths: Sequence[str], model: str) -> list[str]:
    """Every part of the split model whose part `model` is, in order (or `[model]`).
    Raises PullError (404) when the repository lacks a part."""
    pure = PurePosixPath(model)
    part = split_part_name(pure.name)
    if part is None:
        return [model]
    folder = "" if str(pure.parent) == "." else f"{pure.parent}/"
    wanted = [
        f"{folder}{split_part_file_name(part.model_id, n, part.count)}"
        for n in range(1, part.count + 1)
    ]
    missing = [p for p in wanted if p not in set(paths)]
    if missing:
        raise PullError(
            f"{repo} lacks part(s) {', '.join(missing)} of the split model {model}",
            status=404,
            code="no_such_file",
        )
    return wanted


def best_mmproj(paths: Sequence[str], model: str) -> str | None:
    """The projector for `model`, as llama.cpp chooses it: a `.gguf` whose name holds "mmproj",
    in the model's folder or one above it, the deepest first, then the closest quantisation
    (by its bits: F16 is 16, Q8_0 is 8)."""
    model_dirs = PurePosixPath(model).parts[:-1]
    bits = _bits(model)
    best: tuple[int, int, str] | None = None  # (depth, -distance, path)
    for path in paths:
        pure = PurePosixPath(path)
        if not path.endswith(".gguf") or "mmproj" not in pure.name.lower():
            continue
        dirs = pure.parts[:-1]
        if dirs != model_dirs[: len(dirs)]:
            continue
        key = (len(dirs), -abs(_bits(path) - bits), path)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def _bits(path: str) -> int:
    quant = quant_of(path) or ""
    digits = re.search(r"\d+", quant)
    return int(digits[0]) if digits else 0


def model_id_of(target: str) -> str:
    """The id llamaherd serves a file as (library.py's rule): the stem, a split model's name."""
    part = split_part_name(target)
    return part.model_id if part is not None else target.removesuffix(".gguf")


def plan_files(repo: str, paths: Sequence[str], source: Source) -> tuple[list[str], str | None]:
    """The model's files (one, or every part) and its projector (or None) for `source`."""
    if source.file is not None:
        by_lower = {p.lower(): p for p in paths}
        found = by_lower.get(source.file.lower())
        if found is None:
            raise PullError(
                f"{repo} has no file {source.file} ({_listing(paths)})",
                status=404,
                code="no_such_file",
            )
        if not is_model_path(found):
            what = "a multimodal projector" if is_mmproj_name(PurePosixPath(found).name) else None
            raise PullError(
                f"{found} is {what or 'not a model file'}: pull the model "
                f"({repo}:QUANT or {repo}/FILE.gguf); its projector comes with it",
                code="bad_source",
            )
        model = found
    else:
        model = pick_model(repo, paths, source.quant)
    return split_set(repo, paths, model), best_mmproj(paths, model)


# ---- the Hub ------------------------------------------------------------------------------


class PullCancelledError(Exception):
    """A download was told to stop (raised inside the download thread)."""


class Hub:
    """One Hugging Face Hub (`endpoint`), as one account (`token`; None: huggingface_hub's
    own login, if any; False: none at all). Every method blocks: call it in a thread."""

    def __init__(self, endpoint: str, token: str | bool | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._api = HfApi(endpoint=self.endpoint, token=token)

    def resolve(self, source: Source) -> Resolution:
        """The files `source` names, at the repository's current commit, with their sizes and
        checksums; then one HEAD of the first, so that a gated repository refuses now.
        Raises PullError."""
        with self._errors(source.repo):
            info = self._api.model_info(source.repo, files_metadata=True, timeout=RESOLVE_TIMEOUT_S)
        siblings = {s.rfilename: s for s in info.siblings or []}
        revision = info.sha or "main"
        model_paths, mmproj = plan_files(source.repo, list(siblings), source)
        model_targets = [PurePosixPath(p).name for p in model_paths]
        model_id = model_id_of(model_targets[0])
        chosen = [*model_paths, *([mmproj] if mmproj else [])]
        targets = [*model_targets, *([f"mmproj-{model_id}.gguf"] if mmproj else [])]
        files = tuple(_hub_file(siblings[path]) for path in chosen)
        with self._errors(source.repo):
            get_hf_file_metadata(
                self.url(source.repo, revision, chosen[0]),
                token=self._token,
                timeout=RESOLVE_TIMEOUT_S,
            )
        return Resolution(source.repo, revision, model_id, files, tuple(targets))

    def url(self, repo: str, revision: str, path: str) -> str:
        return hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint)

    def download(  # noqa: PLR0917
        self,
        repo: str,
        revision: str,
        file: HubFile,
        part: Path,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        """Download `file` into `part`, resuming what `part` already holds, then check its
        checksum (a wrong one removes `part` and raises PullError). `on_bytes(n)`: n more
        bytes are there (negative when the server ignored a resume and it starts again).
        Raises PullCancelledError once `cancelled` is set, PullError otherwise."""
        with _writable(part) as out, _locked(out, part, file.name):
            have = out.tell()
            if have > file.size:  # not a prefix of this file: start again
                out.truncate(0)
                on_bytes(-have)
                have = 0
            with self._errors(repo, file.name):
                http_get(
                    self.url(repo, revision, file.path),
                    out,
                    resume_size=have,
                    headers=build_hf_headers(token=self._token),
                    expected_size=file.size,
                    displayed_filename=file.name,
                    tqdm_class=_progress(on_bytes, cancelled),
                )
        check_file(part, file)

    @contextlib.contextmanager
    def _errors(self, repo: str, name: str | None = None) -> Iterator[None]:
        """huggingface_hub's and httpx's errors as PullError, with what to do."""
        page = f"{self.endpoint}/{repo}"
        try:
            yield
        except (PullCancelledError, PullError):
            raise
        except GatedRepoError:
            if not self._token:
                raise PullError(
                    f"{repo} is gated: accept its conditions at {page} with your account, "
                    "then set HF_TOKEN to a token of that account (huggingface.co/settings/tokens)",
                    status=401,
                    code="gated",
                ) from None
            raise PullError(
                f"{repo} is gated and the token in HF_TOKEN has no access to it: accept its "
                f"conditions at {page} with the token's account",
                status=403,
                code="gated",
            ) from None
        except RevisionNotFoundError:
            raise PullError(
                f"{repo} has no such revision", status=404, code="no_such_repo"
            ) from None
        except EntryNotFoundError:
            raise PullError(f"{repo} has no file {name}", status=404, code="no_such_file") from None
        except RepositoryNotFoundError:
            raise PullError(
                f"no repository {repo} on {self.endpoint} (check the name at {page}; a private "
                "repository needs HF_TOKEN)",
                status=404,
                code="no_such_repo",
            ) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 502
            if status == 401:
                raise PullError(
                    "the Hub refused the token in HF_TOKEN (invalid or expired): set a valid "
                    "one, or unset it for a public repository",
                    status=401,
                    code="bad_token",
                ) from None
            raise PullError(
                f"the Hub at {self.endpoint} answered HTTP {status} for {name or repo}",
                status=502,
                code="hub_error",
            ) from None
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise self._unreachable(repo, name, exc) from None
            raise PullError(
                f"the disk filled up while downloading {name} ({_reason(exc)}); free some "
                "space (llamaherd rm MODEL), then pull again: it resumes",
                status=507,
                code="no_space",
            ) from None
        except httpx.HTTPError as exc:
            raise self._unreachable(repo, name, exc) from None

    def _unreachable(self, repo: str, name: str | None, exc: BaseException) -> PullError:
        what = "downloading " + name if name else "asking about " + repo
        return PullError(
            f"{what} from {self.endpoint} failed: {_reason(exc)}; a pull again resumes it",
            status=502,
            code="hub_unreachable",
        )


def _hub_file(sibling: Any) -> HubFile:
    lfs = getattr(sibling, "lfs", None)
    size = sibling.size if sibling.size is not None else (lfs.size if lfs else 0)
    return HubFile(
        path=sibling.rfilename,
        size=int(size or 0),
        sha256=lfs.sha256 if lfs else None,
        blob_id=sibling.blob_id,
    )


def check_file(path: Path, file: HubFile) -> None:
    """`path` is `file` byte for byte, by the Hub's checksum; else it is removed and PullError
    says so."""
    size = path.stat().st_size
    if size != file.size:
        path.unlink(missing_ok=True)
        raise PullError(
            f"{file.name}: downloaded {size} bytes, the Hub says {file.size}; removed, pull again",
            status=502,
            code="checksum_mismatch",
        )
    expected, digest = _expected_digest(file)
    if expected is None:
        return
    with path.open("rb") as data:
        if digest == "sha256":
            actual = hashlib.file_digest(data, "sha256").hexdigest()
        else:  # git's blob id: SHA-1 of "blob <size>\0" and the content
            sha1 = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
            for chunk in iter(lambda: data.read(1024 * 1024), b""):
                sha1.update(chunk)
            actual = sha1.hexdigest()
    if actual != expected:
        path.unlink(missing_ok=True)
        raise PullError(
            f"{file.name} is corrupt: its {digest} is {actual[:16]}..., the Hub's is "
            f"{expected[:16]}...; the download was removed, pull again",
            status=502,
            code="checksum_mismatch",
        )


def _expected_digest(file: HubFile) -> tuple[str | None, str]:
    if file.sha256:
        return file.sha256.lower(), "sha256"
    if file.blob_id:
        return file.blob_id.lower(), "sha1"
    return None, ""


@contextlib.contextmanager
def _writable(part: Path) -> Iterator[BinaryIO]:
    """`part` open for appending (its folder made), or PullError saying why it cannot be."""
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
        out = part.open("ab")
    except OSError as exc:
        full = exc.errno in DISK_FULL
        raise PullError(
            f"cannot write {part}: {exc.strerror or exc}; "
            + ("free some space" if full else "check models_dir's owner and permissions"),
            status=507 if full else 500,
            code="no_space" if full else "not_writable",
        ) from None
    with out:
        yield out


@contextlib.contextmanager
def _locked(out: Any, part: Path, name: str) -> Iterator[None]:
    """The partial file for this download alone: another llamaherd (the command line beside
    `serve`) downloading the same file is refused rather than appending to it too."""
    try:
        fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PullError(
            f"{name} is being downloaded by another llamaherd on this machine ({part} is "
            "locked); wait for it",
            status=409,
            code="pull_in_progress",
        ) from None
    try:
        yield
    finally:
        fcntl.flock(out.fileno(), fcntl.LOCK_UN)


def _progress(on_bytes: Callable[[int], None], cancelled: threading.Event) -> type:
    """A class that http_get takes for its progress bar: it reports bytes and stops the
    download once `cancelled` is set (http_get calls `update` before writing each chunk)."""

    class Progress:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Progress:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: float | None = 1) -> None:
            if cancelled.is_set():
                raise PullCancelledError
            on_bytes(int(n or 0))

    return Progress


def _reason(exc: BaseException) -> str:
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).splitlines()[0] if str(exc) else "").strip()
    return text or type(exc).__name__
