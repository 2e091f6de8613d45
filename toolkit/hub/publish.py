"""Publish an adapter folder to the Hugging Face Hub: one repo, one atomic commit, verified afterwards.

    >>> from toolkit.hub.publish import dry_run, push
    >>> plan = dry_run("adapters/llava-1-4-1-s0", repo_id="alice/llava-1-4-1", license="apache-2.0")
    >>> [f.path_in_repo for f in plan.files]
    ['README.md', 'adapter_config.json', 'adapter_model.safetensors', 'cmba.json', 'eval/...', 'metrics.jsonl']
    >>> push("adapters/llava-1-4-1-s0", "alice/llava-1-4-1", token=None, private=True)   # HF_TOKEN or `hf auth login`
    PushResult(url='https://huggingface.co/alice/llava-1-4-1', commit='4f1c...', verified=True, ...)

What is published: `adapter_config.json`, `adapter_model.safetensors`, `cmba.json`, `metrics.jsonl`,
`eval/<tag>/results.json`, and `eval/<tag>/predictions.jsonl` up to 10 MB each (per-question predictions let
others re-score and re-run the paired bootstrap; bigger ones are left out and listed as skipped). README.md is
the card built by `toolkit.hub.modelcard` (PEFT's own template README, if any, is replaced). Never published:
`checkpoints/` (trainer state, optimizer pickles), anything else. Pickle weights (*.bin, *.pt, *.pth, *.pkl,
*.pickle, *.ckpt) anywhere outside `checkpoints/` stop the publish: only safetensors adapters go out.

The token comes from the argument, else HF_TOKEN, else the huggingface_hub login; it is only handed to
`HfApi`, never printed, logged, written or kept in error text (messages are scrubbed). Repo ids are checked
before any request. `push` creates the repo (or finds it, refusing a visibility other than the one asked for),
uploads every file in ONE `create_commit` (the Hub applies a commit all-or-nothing), then checks the remote file
list and that the safetensors' LFS sha256 equals the local one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import runs, tensorfile
from toolkit.errors import CmbaError, InputError, looks_like_token

DEFAULT_ENDPOINT = "https://huggingface.co"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_PREDICTIONS_BYTES = 10 * 1024 * 1024
"""predictions.jsonl above this are not published (the Hub keeps text files above 10 MiB in LFS only)"""
ADAPTER_FILES = (runs.ADAPTER_CONFIG, runs.ADAPTER_WEIGHTS, runs.ADAPTER_DOC)
OPTIONAL_FILES = (runs.METRICS,)
TOKENS_URL = "https://huggingface.co/settings/tokens"

Progress = Callable[[float, str], None]


class PublishError(CmbaError):
    """The Hub refused or failed a publish step; the message says what to do (never contains the token)."""


@dataclass(frozen=True)
class PublishFile:
    """One file of the commit."""

    path_in_repo: str
    size: int
    sha256: str
    source: Path | None = None
    """local file to upload; None when `content` is generated (the card)"""
    content: bytes | None = None

    def payload(self) -> str | bytes:
        return self.content if self.content is not None else str(self.source)


@dataclass(frozen=True)
class PublishPlan:
    """What `push` would upload: the dry run."""

    adapter_dir: Path
    repo_id: str | None
    license: str | None
    files: list[PublishFile]
    skipped: list[tuple[str, str]]
    """(relative path, reason) of files in the folder that are not published"""
    card: str

    def to_dict(self) -> dict:
        return {"adapter": str(self.adapter_dir), "repo_id": self.repo_id, "license": self.license,
                "files": [{"path": f.path_in_repo, "size": f.size, "sha256": f.sha256} for f in self.files],
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "total_bytes": sum(f.size for f in self.files), "card": self.card}


@dataclass(frozen=True)
class PushResult:
    """A finished, verified push."""

    repo_id: str
    url: str
    commit: str
    commit_url: str
    private: bool
    files: list[str]
    verified: bool
    checks: list[str] = field(default_factory=list)
    """what was verified on the remote, one line each"""
    changed: bool = True
    """False: the repo already held exactly these files (the Hub made no new commit)"""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------- checks


def validate_repo_id(repo_id: str | None) -> str:
    """`namespace/name` as the Hub accepts it, else InputError (no request is made)."""
    from huggingface_hub.utils import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hf_validate

    text = repo_id or ""
    if looks_like_token(text.strip()):  # a token pasted in the wrong field: never echo it
        raise InputError("repo-id: the value looks like an access token (not shown); give 'namespace/name' here "
                         "and the token in HF_TOKEN")
    allowed = "'namespace/name' with letters, digits, '-', '_', '.'; no '--' or '..'; not ending in '.git'; at most 96 characters each"
    if any(c.isspace() or not c.isprintable() for c in text):  # 'alice/x\n' pasted with its newline: refuse, never strip
        raise InputError(f"repo-id: {text!r} holds spaces or control characters; it must be {allowed}")
    if text.count("/") != 1:
        raise InputError(f"repo-id: '{text}' must be {allowed}")
    namespace, name = text.split("/")
    for part in (namespace, name):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", part) or part[-1] in "-.":
            raise InputError(f"repo-id: '{text}' must be {allowed}")
    try:
        hf_validate(text)
    except HFValidationError:
        raise InputError(f"repo-id: '{text}' must be {allowed}") from None
    return text


_sha256 = tensorfile.sha256


def _inside(root: Path, path: Path) -> str | None:
    """Why `path` must not be published: a symlink on the way, or it resolves outside `root`; None if fine."""
    rel = path.relative_to(root)
    for i in range(1, len(rel.parts) + 1):
        if (root / Path(*rel.parts[:i])).is_symlink():
            return f"'{Path(*rel.parts[:i])}' is a symbolic link"
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return f"'{rel}' resolves outside the adapter folder"
    return None


def _refuse_links(root: Path) -> None:
    """Only what the folder itself holds is published: a link could point anywhere on the disk."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here == root and "checkpoints" in dirnames:
            dirnames.remove("checkpoints")  # never published, whatever it holds
        for name in dirnames + filenames:
            if (here / name).is_symlink():
                raise InputError(f"adapter: '{(here / name).relative_to(root)}' in '{root}' is a symbolic link; only "
                                 "regular files inside the adapter folder are published (replace it with the file)")


def resolve_adapter(adapter: str | Path) -> Path:
    """An adapter folder given as a path, or as a name inside `adapters_dir()`."""
    from toolkit.paths import adapters_dir

    path = Path(adapter).expanduser()
    if not path.is_dir() and (adapters_dir() / str(adapter)).is_dir():
        path = adapters_dir() / str(adapter)
    if not path.is_dir():
        raise InputError(f"adapter: '{adapter}' is not a folder (give a path or a name in {adapters_dir()})")
    return path


def collect_files(adapter_dir: str | Path) -> tuple[list[PublishFile], list[tuple[str, str]]]:
    """(files to publish except the card, skipped files with reasons); InputError for an unpublishable folder."""
    root = resolve_adapter(adapter_dir)
    pickles = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                     if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES and p.relative_to(root).parts[0] != "checkpoints")
    if pickles:
        raise InputError(f"adapter: pickle files found ({', '.join(pickles[:5])}); only safetensors adapters are "
                         "published: re-save with save_pretrained(..., safe_serialization=True) and remove them")
    meta = runs.read_adapter_doc(root)
    if meta.kind == "base":
        raise InputError(f"adapter: '{root}' is a base-model reference evaluation, not an adapter")
    for name in ADAPTER_FILES:
        if not (root / name).is_file():
            raise InputError(f"adapter: '{root}' lacks {name}")
    _refuse_links(root)
    tensorfile.check(root / runs.ADAPTER_WEIGHTS, label="adapter")
    runs.read_json(root / runs.ADAPTER_CONFIG)

    tags = runs.evaluations(root)
    wanted = [root / n for n in ADAPTER_FILES + OPTIONAL_FILES if (root / n).is_file()]
    wanted += [runs.eval_dir(root, t) / runs.RESULTS for t in tags]
    wanted += [root / runs.RETRIEVAL / f"{t}.json" for t in runs.read_retrievals(root)]  # the card's alignment table
    skipped: list[tuple[str, str]] = []
    for pred in [runs.eval_dir(root, t) / runs.PREDICTIONS for t in tags]:
        if not pred.is_file():
            continue
        if pred.stat().st_size <= MAX_PREDICTIONS_BYTES:
            wanted.append(pred)
        else:
            skipped.append((str(pred.relative_to(root)), "larger than 10 MB"))
    chosen = {p.resolve() for p in wanted}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.resolve() not in chosen and rel.parts[0] != "checkpoints":
            reason = "replaced by the generated model card" if str(rel) == "README.md" else "not part of a published adapter"
            if (str(rel), "larger than 10 MB") not in skipped:
                skipped.append((str(rel), reason))
    if (root / "checkpoints").is_dir():
        skipped.append(("checkpoints/", "training checkpoints are never published"))
    for p in wanted:  # the walk above saw the folder; a link made since is refused here
        if (why := _inside(root, p)) is not None:
            raise InputError(f"adapter: {why}; only regular files inside '{root}' are published")
    files = [PublishFile(str(p.relative_to(root)).replace(os.sep, "/"), p.stat().st_size, _sha256(p), source=p)
             for p in wanted]
    return files, skipped


def dry_run(adapter_dir: str | Path, *, repo_id: str | None = None, license: str | None = None) -> PublishPlan:
    """Render the card and list the files (with sizes and sha256) that `push` would upload. No network."""
    from toolkit.hub.modelcard import render_card, validate_license

    if repo_id is not None:
        repo_id = validate_repo_id(repo_id)
    license = validate_license(license)
    root = resolve_adapter(adapter_dir)
    files, skipped = collect_files(root)
    card = render_card(root, repo_id=repo_id, license=license)
    data = card.encode()
    readme = PublishFile("README.md", len(data), hashlib.sha256(data).hexdigest(), content=data)
    return PublishPlan(root, repo_id, license, sorted([readme, *files], key=lambda f: f.path_in_repo), skipped, card)


def folder_stamp(adapter_dir: str | Path) -> tuple:
    """(path, size, mtime) of every file outside checkpoints/: a cheap cache key for `dry_run` results."""
    root = resolve_adapter(adapter_dir)
    return tuple((str(p.relative_to(root)), st.st_size, st.st_mtime_ns) for p in sorted(root.rglob("*"))
                 if p.is_file() and p.relative_to(root).parts[0] != "checkpoints" and (st := p.stat()))


def list_adapters(root: str | Path | None = None) -> list[Path]:
    """Complete, publishable-looking adapters (cmba.json, not a base reference, safetensors present)."""
    from toolkit.paths import adapters_dir

    return [folder for folder, _ in runs.list_adapters(root if root is not None else adapters_dir())]


# ---------------------------------------------------------------------------------------------- token


def resolve_token(token: str | None = None) -> str:
    """The token to use: argument, else HF_TOKEN, else the huggingface_hub login. Never returned in messages."""
    if token and token.strip():
        return token.strip()
    if os.environ.get("HF_TOKEN", "").strip():
        return os.environ["HF_TOKEN"].strip()
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise InputError(f"token: none found; set HF_TOKEN to a token with write access ({TOKENS_URL}), run "
                         "`hf auth login`, or enter one in the app")
    return found


def _scrub(text: str, token: str | None) -> str:
    text = str(text)
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _hub_message(exc: BaseException) -> str:
    server = getattr(exc, "server_message", None)
    if server:
        return server
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _explain(exc: BaseException, *, repo_id: str, endpoint: str, stage: str) -> str:
    """One line for a failed Hub call (without the token: the caller scrubs it)."""
    import httpx2

    status = _http_status(exc)
    namespace = repo_id.split("/")[0]
    if status == 401:
        return (f"token rejected (401): set HF_TOKEN to a token with write access ({TOKENS_URL}), run "
                "`hf auth login`, or enter a valid token in the app")
    if status == 403:
        return (f"token has no write access to '{namespace}' (403) while {stage}: use a token with the 'write' role, "
                "or a fine-grained token with 'Write access to contents/settings of all repos under your personal "
                "namespace' (for an organization's namespace: write access to that organization's repos)")
    if isinstance(exc, httpx2.HTTPError) and status is None:
        return f"cannot reach {endpoint} while {stage} ({type(exc).__name__}): check the network or --endpoint"
    if status is not None:
        return f"the Hub answered {status} while {stage}: {_hub_message(exc)}"
    return f"{stage} failed: {_hub_message(exc)}"


# ---------------------------------------------------------------------------------------------- push


def push(adapter_dir: str | Path, repo_id: str, *, token: str | None = None, private: bool = False,
         license: str | None = None, endpoint: str | None = None, progress: Progress | None = None) -> PushResult:
    """Create (or reuse) `repo_id` and upload the adapter in one commit; verify the result.

    `endpoint` defaults to HF_ENDPOINT or https://huggingface.co. `progress(fraction, message)` is called
    at each step. Raises InputError for bad input (before any request) and PublishError for Hub failures.
    """
    repo_id = validate_repo_id(repo_id)
    plan = dry_run(adapter_dir, repo_id=repo_id, license=license)
    secret = resolve_token(token)
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    report = progress or (lambda fraction, message: None)
    try:
        return _push(plan, repo_id, secret, private, endpoint, report)
    except CmbaError as exc:
        raise type(exc)(_scrub(str(exc), secret)) from None
    except Exception as exc:  # anything else from the client: one line, token removed, no chained context
        raise PublishError(_scrub(f"{type(exc).__name__}: {exc}", secret)) from None


def _push(plan: PublishPlan, repo_id: str, token: str, private: bool, endpoint: str, report: Progress) -> PushResult:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token, library_name="cmba-toolkit")
    stage = "checking the token"
    try:
        report(0.05, "checking the token")
        user = api.whoami()
        report(0.15, f"creating {repo_id} (as {user.get('name', '?')})")
        stage = "creating the repo"
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        stage = "reading the repo"
        info = api.repo_info(repo_id)
    except Exception as exc:
        raise PublishError(_scrub(_explain(exc, repo_id=repo_id, endpoint=endpoint, stage=stage), token)) from None
    if bool(info.private) != private:
        have, want = ("private", "public") if info.private else ("public", "private")
        raise PublishError(f"private: '{repo_id}' already exists as a {have} repo and you asked for a {want} one; "
                           f"nothing was uploaded: change its visibility in the repo settings on the Hub, or "
                           f"{'drop --public' if info.private else 'pass --public'} (app: the Private checkbox)")
    before = info.sha
    total = sum(f.size for f in plan.files)
    report(0.25, f"uploading {len(plan.files)} files ({total:,} bytes) in one commit")
    operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.payload()) for f in plan.files]
    try:
        commit = api.create_commit(repo_id, operations, commit_message=f"Upload CMBA adapter {plan.adapter_dir.name}",
                                   commit_description="Adapter, model card, allocation and evaluation results "
                                                      "published by CMBA Toolkit in one commit.")
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, RuntimeError) and exc.__cause__ is not None else None
        what = _explain(cause or exc, repo_id=repo_id, endpoint=endpoint, stage="uploading")
        if cause is not None:  # huggingface_hub wraps a failed LFS upload: "Error while uploading 'x' to the Hub."
            what = f"{str(exc).rstrip('.')}: {what}"
        raise PublishError(_scrub(f"{what}; {_unchanged(api, repo_id, before)}", token)) from None
    report(0.85, "verifying the remote files")
    checks = _verify(api, repo_id, commit.oid, plan)
    changed = commit.oid != before
    report(1.0, f"{'published' if changed else 'already up to date:'} {url} at {commit.oid[:10]}")
    return PushResult(repo_id=repo_id, url=str(url), commit=commit.oid, commit_url=commit.commit_url, private=private,
                      files=[f.path_in_repo for f in plan.files], verified=True, checks=checks, changed=changed)


def _unchanged(api, repo_id: str, before: str | None) -> str:
    """What a failed upload left behind, checked on the Hub rather than assumed."""
    try:
        now = api.repo_info(repo_id).sha
    except Exception:
        return "could not re-read the repo to confirm its state"
    if now == before:
        return f"nothing was committed: the repo is unchanged (still at {str(before)[:10]})"
    return f"the repo moved from {str(before)[:10]} to {str(now)[:10]} meanwhile: check it on the Hub"


def _verify(api, repo_id: str, commit: str, plan: PublishPlan) -> list[str]:
    """Every planned file is in the commit with the local size; the safetensors' LFS sha256 is the local one."""
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import sha as hf_sha

    remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=commit) if isinstance(f, RepoFile)}
    problems, checks = [], []
    for f in plan.files:
        r = remote.get(f.path_in_repo)
        if r is None:
            problems.append(f"{f.path_in_repo} missing")
            continue
        if r.size != f.size:
            problems.append(f"{f.path_in_repo} has {r.size} bytes, local {f.size}")
        elif r.lfs is not None:
            if r.lfs.sha256 != f.sha256:
                problems.append(f"{f.path_in_repo} sha256 {r.lfs.sha256[:12]} != local {f.sha256[:12]}")
            else:
                checks.append(f"{f.path_in_repo}: LFS sha256 {f.sha256} matches")
        elif f.path_in_repo.endswith(".safetensors"):
            problems.append(f"{f.path_in_repo} is not stored with LFS, so its sha256 cannot be checked")
        else:
            data = f.content if f.content is not None else f.source.read_bytes()
            if r.blob_id != hf_sha.git_hash(data):
                problems.append(f"{f.path_in_repo} content differs (git blob {r.blob_id[:12]})")
            else:
                checks.append(f"{f.path_in_repo}: git blob {r.blob_id[:12]} matches")
    if problems:
        raise PublishError(f"pushed commit {commit[:10]} but verification failed: {'; '.join(problems)}")
    return checks
