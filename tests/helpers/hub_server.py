"""A local, Hub-compatible HTTP server for tests: the real `huggingface_hub` client pushes to it and downloads from it.

    def test_x(hub):                              # the `hub` fixture (tests/conftest.py) yields from serve_hub()

                                                  # HF_ENDPOINT etc. already point at it
        HfApi(endpoint=hub.url, token=hub.write_token).create_repo("alice/x")
        hub.fail("lfs-upload", status=400)       # the next LFS object PUT fails after its body was sent
        assert hub.requests == []                # (method, path) of every request since the last reset

It speaks the endpoints `huggingface_hub` 2.x calls (read from its source: hf_api.py, _commit_api.py, lfs.py,
file_download.py, _snapshot_download.py):

    GET  /api/whoami-v2                                     token check (401 missing/unknown token)
    POST /api/repos/create                                  {name, organization, visibility|private, type}; 409 exists
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]          repo info: sha, private, siblings
    POST /api/{type}s/{ns}/{name}/preupload/{rev}           lfs vs regular from path, size and 512-byte sample
    POST /{prefix}{ns}/{name}.git/info/lfs/objects/batch    LFS batch API (transfer "basic")
    PUT  /lfs-upload/{oid}?sig=..                           the object upload (signed URL, no auth, like S3)
    POST /lfs-verify/{type}/{ns}/{name}                     LFS verify (oid + size)
    POST /api/{type}s/{ns}/{name}/commit/{rev}              NDJSON: header, file, lfsFile, deletedFile, deletedFolder
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]       listing (recursive, one page)
    POST /api/{type}s/{ns}/{name}/paths-info/{rev}          form: paths=..&expand=..
    HEAD|GET /{prefix}{ns}/{name}/resolve/{rev}/{path}      download, X-Repo-Commit, ETag, X-Linked-Etag/Size
    POST /api/validate-yaml                                 README metadata check made by create_commit

Hub rules it enforces: write needs a token of role "write" whose user or orgs own the namespace (403 otherwise,
401 without a valid token); private repos are invisible to others; files bigger than 10 MiB, binary samples and
paths matched by the default `.gitattributes` go through LFS, and a regular "file" entry that breaks this is
refused; a commit is applied all-or-nothing (it is built on a copy of the tree and swapped in at the end); an
`lfsFile` entry must name an object already uploaded and verified.

Xet: huggingface_hub 2.x uploads through Xet whenever the `hf_xet` package is installed, without asking the
server (`_commit_api._upload_files` checks only `is_xet_available()`), so a server cannot steer it to LFS. The
client side must set `HF_HUB_DISABLE_XET` (the fixture sets `huggingface_hub.constants.HF_HUB_DISABLE_XET`, which
`is_xet_available()` reads at call time). The server never advertises Xet: no X-Xet-Hash / xet-auth link on
resolve, no xetHash in listings, and its xet token endpoints answer 501 naming HF_HUB_DISABLE_XET.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REGULAR_MAX_BYTES = 10 * 1024 * 1024
"""the Hub stores bigger files with LFS only"""
DEFAULT_GITATTRIBUTES_LFS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz "
    "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
    "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
"""the patterns of the `.gitattributes` the Hub writes in a new repo's initial commit"""
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_GITATTRIBUTES_LFS).encode()
FAILURE_POINTS = ("create", "preupload", "lfs-batch", "lfs-upload", "lfs-verify", "commit", "resolve")
TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_binary(sample: bytes) -> bool:
    """What the Hub's preupload treats as binary: a NUL byte, or bytes that are not UTF-8 text."""
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(sample) - 3  # a multi-byte character cut at the 512-byte sample's end is fine
    return False


def needs_lfs(path: str, size: int, sample: bytes) -> bool:
    name = path.rsplit("/", 1)[-1]
    by_pattern = any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in DEFAULT_GITATTRIBUTES_LFS)
    return by_pattern or size > REGULAR_MAX_BYTES or is_binary(sample)


@dataclass
class Entry:
    """A file in a commit's tree."""

    size: int
    lfs_sha256: str | None
    """sha256 of the content for LFS files (the LFS oid); None for regular files"""
    blob: str
    """git blob sha1: of the content (regular) or of the LFS pointer (LFS)"""


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, dict] = field(default_factory=dict)
    """sha -> {"parent", "summary", "tree": {path: Entry}, "date"}"""
    refs: dict[str, str] = field(default_factory=dict)
    created: str = ""


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class LocalHub:
    """The server's state and its HTTP thread. Blobs live under `root`; metadata in memory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        (self.root / "staging").mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.failures: dict[str, dict] = {}
        self._secret = secrets.token_bytes(16)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="local-hub", daemon=True)  # shutdown() waits one poll

    # ------------------------------------------------------------------------------------------ control
    def start(self) -> LocalHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_token(self, token: str, *, user: str, role: str = "write", orgs: tuple[str, ...] = ()) -> str:
        self.tokens[token] = {"user": user, "role": role, "orgs": list(orgs)}
        return token

    def fail(self, point: str, *, status: int = 500, message: str = "injected failure", times: int = 1) -> None:
        """Make the next `times` requests at `point` (one of FAILURE_POINTS) fail with `status`.

        "lfs-upload" reads the whole body, stores nothing and answers `status`; "commit" applies half of the
        commit's entries to the new tree, then fails, so atomicity is what keeps the repo unchanged.
        """
        assert point in FAILURE_POINTS, point
        self.failures[point] = {"status": status, "message": message, "times": times}

    def _maybe_fail(self, point: str) -> None:
        with self.lock:
            f = self.failures.get(point)
            if not f or f["times"] <= 0:
                return
            f["times"] -= 1
        raise HubError(f["status"], f"{f['message']} ({point})")

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The content of every file of a repo at a revision (for assertions)."""
        repo = self.repos[(repo_type, repo_id)]
        tree = repo.commits[repo.refs.get(revision, revision)]["tree"]
        return {path: self._read(e) for path, e in tree.items()}

    def head(self, repo_id: str, repo_type: str = "model") -> str:
        return self.repos[(repo_type, repo_id)].refs["main"]

    # ------------------------------------------------------------------------------------------ storage
    def _read(self, e: Entry) -> bytes:
        if e.lfs_sha256:
            return (self.root / "objects" / e.lfs_sha256).read_bytes()
        return (self.root / "blobs" / e.blob).read_bytes()

    def _store_blob(self, data: bytes) -> str:
        sha = git_blob_sha1(data)
        (self.root / "blobs" / sha).write_bytes(data)
        return sha

    def _commit(self, repo: Repo, tree: dict[str, Entry], summary: str, parent: str | None) -> str:
        listing = json.dumps({p: [e.blob, e.size] for p, e in sorted(tree.items())})
        sha = hashlib.sha1(f"{parent}\n{summary}\n{listing}\n{time.time_ns()}".encode()).hexdigest()
        repo.commits[sha] = {"parent": parent, "summary": summary, "tree": tree,
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
        repo.refs["main"] = sha
        return sha

    def sign(self, oid: str, size: int) -> str:
        return hmac.new(self._secret, f"{oid}:{size}".encode(), "sha256").hexdigest()[:32]


# ---------------------------------------------------------------------------------------------- handler


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalHub/1.0"

    def log_message(self, *args):  # keep pytest output clean
        pass

    @property
    def hub(self) -> LocalHub:
        return self.server.hub  # type: ignore[attr-defined]

    # -------------------------------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _dispatch(self):
        parts = urlsplit(self.path)
        self.query = parse_qs(parts.query)
        path = parts.path
        with self.hub.lock:
            self.hub.requests.append((self.command, path))
        body = self._body() if self.command in ("POST", "PUT") else b""
        try:
            self._route(path, body)
        except HubError as exc:
            headers = dict(exc.headers)
            if exc.code:
                headers["X-Error-Code"] = exc.code
            headers["X-Error-Message"] = exc.message
            self._json(exc.status, {"error": exc.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    @property
    def base(self) -> str:
        return f"http://{self.headers.get('Host')}"

    # -------------------------------------------------------------------------------------- auth
    def _user(self) -> dict | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        info = self.hub.tokens.get(token)
        if info is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return info

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user()
        repo = self.hub.repos.get((repo_type, repo_id))
        namespace = repo_id.split("/")[0]
        owns = user is not None and namespace in [user["user"], *user["orgs"]]
        if repo is None or (repo.private and not owns):
            if user is None:
                raise HubError(401, "Repository not found", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write:
            self._require_write(user, namespace)
        return repo

    @staticmethod
    def _require_write(user: dict | None, namespace: str) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to write")
        if namespace not in [user["user"], *user["orgs"]]:
            raise HubError(403, f"You don't have the rights to write under the namespace '{namespace}'")
        if user["role"] != "write":
            raise HubError(403, "This token has no write access (role 'read'): write access is required")

    def _revision(self, repo: Repo, revision: str) -> str:
        revision = unquote(revision)
        sha = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    # -------------------------------------------------------------------------------------- routes
    def _route(self, path: str, body: bytes):
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(/.*)?", path)
        if path == "/api/whoami-v2":
            return self._whoami()
        if path == "/api/repos/create" and self.command == "POST":
            return self._create(json.loads(body or b"{}"))
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if path.startswith("/lfs-upload/") and self.command == "PUT":
            return self._lfs_put(path.rsplit("/", 1)[-1], body)
        lv = re.fullmatch(r"/lfs-verify/(model|dataset|space)/([^/]+/[^/]+)", path)
        if lv and self.command == "POST":
            return self._lfs_verify(lv.group(1), lv.group(2), json.loads(body))
        lb = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if lb and self.command == "POST":
            repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(lb.group(1) or "", "model")
            return self._lfs_batch(repo_type, lb.group(2), json.loads(body))
        if m:
            repo_type, repo_id, rest = m.group(1)[:-1], m.group(2), m.group(3) or ""
            return self._api(repo_type, repo_id, rest, body)
        r = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if r and self.command in ("GET", "HEAD"):
            repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(r.group(1) or "", "model")
            return self._resolve(repo_type, r.group(2), r.group(3), unquote(r.group(4)))
        raise HubError(404, f"not implemented by the local test Hub: {self.command} {path}")

    def _api(self, repo_type: str, repo_id: str, rest: str, body: bytes):
        if rest in ("", "/") or rest.startswith("/revision/"):
            revision = rest.removeprefix("/revision/") if rest.startswith("/revision/") else "main"
            return self._info(repo_type, repo_id, revision)
        if m := re.fullmatch(r"/xet-(read|write)-token(/.*)?", rest):
            raise HubError(501, "Xet is not served by the local test Hub: set HF_HUB_DISABLE_XET=1 to upload with LFS")
        if (m := re.fullmatch(r"/preupload/([^/]+)", rest)) and self.command == "POST":
            return self._preupload(repo_type, repo_id, m.group(1), json.loads(body))
        if (m := re.fullmatch(r"/commit/([^/]+)", rest)) and self.command == "POST":
            return self._commit_ndjson(repo_type, repo_id, m.group(1), body)
        if (m := re.fullmatch(r"/tree/([^/]+)(/.*)?", rest)) and self.command == "GET":
            return self._tree(repo_type, repo_id, m.group(1), unquote((m.group(2) or "/")[1:]))
        if (m := re.fullmatch(r"/paths-info/([^/]+)", rest)) and self.command == "POST":
            form = parse_qs(body.decode())
            return self._paths_info(repo_type, repo_id, m.group(1), form.get("paths", []))
        raise HubError(404, f"not implemented by the local test Hub: {self.command} /api/{repo_type}s/{repo_id}{rest}")

    def _whoami(self):
        user = self._user()
        if user is None:
            raise HubError(401, "Unauthorized")
        role = user["role"]
        self._json(200, {"type": "user", "name": user["user"], "fullname": user["user"],
                         "orgs": [{"name": o, "type": "org"} for o in user["orgs"]],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": role}}})

    def _create(self, payload: dict):
        self.hub._maybe_fail("create")
        user = self._user()
        name, org = payload.get("name", ""), payload.get("organization")
        repo_type = payload.get("type") or "model"
        namespace = org or (user["user"] if user else "")
        self._require_write(user, namespace)
        if not NAME_RE.fullmatch(name) or "--" in name or ".." in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: '{name}'")
        repo_id = f"{namespace}/{name}"
        visibility = payload.get("visibility") or ("private" if payload.get("private") else "public")
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:  # the Hub's 409 carries the url (create_repo reads it)
                return self._json(409, {"error": f"You already created this {repo_type} repo",
                                        "url": f"{self.base}/{TYPE_PREFIX[repo_type]}{repo_id}"})
            repo = Repo(repo_type, repo_id, private=visibility == "private",
                        created=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
            entry = Entry(len(GITATTRIBUTES), None, self.hub._store_blob(GITATTRIBUTES))
            self.hub._commit(repo, {".gitattributes": entry}, "initial commit", None)
            self.hub.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": f"{self.base}/{TYPE_PREFIX[repo_type]}{repo_id}", "name": repo_id})

    def _info(self, repo_type: str, repo_id: str, revision: str):
        repo = self._repo(repo_type, repo_id)
        sha = self._revision(repo, revision)
        commit = repo.commits[sha]
        siblings = [{"rfilename": p, "size": e.size, "blobId": e.blob,
                     **({"lfs": {"sha256": e.lfs_sha256, "size": e.size, "pointerSize": len(lfs_pointer(e.lfs_sha256, e.size))}}
                        if e.lfs_sha256 else {})}
                    for p, e in sorted(commit["tree"].items())]
        self._json(200, {"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha,
                         "private": repo.private, "disabled": False, "gated": False, "lastModified": commit["date"],
                         "createdAt": repo.created, "tags": [], "siblings": siblings, "downloads": 0, "likes": 0})

    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict):
        self.hub._maybe_fail("preupload")
        repo = self._repo(repo_type, repo_id, write=True)
        tree = repo.commits[self._revision(repo, revision)]["tree"]
        files = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f["sample"])
            lfs = needs_lfs(f["path"], int(f["size"]), sample)
            existing = tree.get(f["path"])
            oid = None
            if existing is not None and bool(existing.lfs_sha256) == lfs:
                oid = existing.lfs_sha256 or existing.blob  # sha256 for LFS, git sha1 for regular (as the client)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._json(200, {"files": files, "commitOid": repo.refs["main"]})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict):
        self.hub._maybe_fail("lfs-batch")
        self._repo(repo_type, repo_id, write=True)
        if payload.get("operation") != "upload":
            raise HubError(400, "only the upload operation is served")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size, "authenticated": True}
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                item["error"] = {"code": 422, "message": "invalid oid"}
            elif not (self.hub.root / "objects" / oid).exists():
                item["actions"] = {
                    "upload": {"href": f"{self.base}/lfs-upload/{oid}?size={size}&sig={self.hub.sign(oid, size)}",
                               "expires_in": 900},
                    "verify": {"href": f"{self.base}/lfs-verify/{repo_type}/{repo_id}", "header": {}},
                }
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, body: bytes):
        size = int(self.query.get("size", ["-1"])[0])
        if not hmac.compare_digest(self.query.get("sig", [""])[0], self.hub.sign(oid, size)):
            raise HubError(403, "Request signature does not match")
        self.hub._maybe_fail("lfs-upload")  # the body was read: the upload broke at its end, nothing stored
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match the announced oid/size")
        staging = self.hub.root / "staging" / f"{oid}.{secrets.token_hex(4)}"
        staging.write_bytes(body)
        staging.replace(self.hub.root / "objects" / oid)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, payload: dict):
        self.hub._maybe_fail("lfs-verify")
        self._repo(repo_type, repo_id, write=True)
        obj = self.hub.root / "objects" / payload["oid"]
        if not obj.exists() or obj.stat().st_size != int(payload["size"]):
            raise HubError(404, f"LFS object {payload['oid']} not found or of the wrong size")
        self._json(200, {"ok": True})

    def _commit_ndjson(self, repo_type: str, repo_id: str, revision: str, body: bytes):
        repo = self._repo(repo_type, repo_id, write=True)
        if unquote(revision) != "main":
            raise HubError(400, "the local test Hub commits to main only")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        ops = lines[1:]
        with self.hub.lock:
            head = repo.refs["main"]
            if header.get("parentCommit") and header["parentCommit"] != head:
                raise HubError(412, "A commit has happened since the parent commit. Please retry.")
            tree = dict(repo.commits[head]["tree"])  # built on a copy: swapped in only if every entry applies
            for i, op in enumerate(ops):
                if i == len(ops) // 2:
                    self.hub._maybe_fail("commit")
                self._apply(tree, op)
            sha = self.hub._commit(repo, tree, header.get("summary") or "commit", head)
        prefix = TYPE_PREFIX[repo_type]
        self._json(200, {"commitUrl": f"{self.base}/{prefix}{repo_id}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None, "success": True})

    def _apply(self, tree: dict[str, Entry], op: dict) -> None:
        key, value = op.get("key"), op.get("value", {})
        path = value.get("path", "")
        if not path or path.startswith("/") or ".." in path.split("/") or path.split("/")[0] == ".git":
            raise HubError(400, f"invalid path in commit: '{path}'")
        if key == "file":
            data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
            if len(data) > REGULAR_MAX_BYTES:
                raise HubError(400, f"Your push was rejected because it contains files larger than 10 MiB: {path}")
            if is_binary(data[:512]):
                raise HubError(400, f"Your push was rejected because it contains binary files: {path}. Use LFS")
            tree[path] = Entry(len(data), None, self.hub._store_blob(data))
        elif key == "lfsFile":
            oid = value.get("oid", "")
            obj = self.hub.root / "objects" / oid
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not obj.exists():
                raise HubError(422, f"LFS object {oid} for '{path}' was never uploaded")
            size = obj.stat().st_size
            if value.get("size") is not None and int(value["size"]) != size:
                raise HubError(422, f"LFS object size mismatch for '{path}'")
            tree[path] = Entry(size, oid, git_blob_sha1(lfs_pointer(oid, size)))
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            for p in [p for p in tree if p.startswith(path.rstrip("/") + "/")]:
                del tree[p]
        else:
            raise HubError(400, f"unknown commit entry '{key}'")

    def _entries(self, tree: dict[str, Entry], paths: list[str] | None, prefix: str, recursive: bool) -> list[dict]:
        folders: set[str] = set()
        out = []
        for p in sorted(tree):
            parents = p.split("/")[:-1]
            folders.update("/".join(parents[: i + 1]) for i in range(len(parents)))
        candidates = sorted(set(tree) | folders)
        for p in candidates:
            if paths is not None:
                if p not in paths:
                    continue
            else:
                if prefix and not p.startswith(prefix + "/"):
                    continue
                rel = p[len(prefix) + 1:] if prefix else p
                if not recursive and "/" in rel:
                    continue
            if p in tree:
                e = tree[p]
                item = {"type": "file", "oid": e.blob, "size": e.size, "path": p}
                if e.lfs_sha256:
                    item["lfs"] = {"oid": e.lfs_sha256, "size": e.size,
                                   "pointerSize": len(lfs_pointer(e.lfs_sha256, e.size))}
                out.append(item)
            else:
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
        return out

    def _tree(self, repo_type: str, repo_id: str, revision: str, prefix: str):
        repo = self._repo(repo_type, repo_id)
        tree = repo.commits[self._revision(repo, revision)]["tree"]
        recursive = self.query.get("recursive", ["False"])[0].lower() in ("1", "true")
        if prefix and not any(p.startswith(prefix + "/") for p in tree):
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        self._json(200, self._entries(tree, None, prefix.strip("/"), recursive))

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, paths: list[str]):
        repo = self._repo(repo_type, repo_id)
        tree = repo.commits[self._revision(repo, revision)]["tree"]
        self._json(200, self._entries(tree, paths, "", True))

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        self.hub._maybe_fail("resolve")
        repo = self._repo(repo_type, repo_id)
        sha = self._revision(repo, revision)
        entry = repo.commits[sha]["tree"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        data = self.hub._read(entry)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry.blob}"', "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:  # the real Hub answers a 302 to its CDN; same headers, served here directly
            headers |= {"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)}
        status = 200
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng:
            start = int(rng.group(1))
            end = int(rng.group(2)) if rng.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")

    def _validate_yaml(self, payload: dict):
        import yaml

        content = payload.get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        errors = []
        if m:
            try:
                meta = yaml.safe_load(m.group(1))
                if meta is not None and not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a dict"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"invalid YAML: {exc}"})
        status = 400 if errors else 200
        self._json(status, {"errors": errors, "warnings": [] if m else [{"message": "empty metadata"}]})


# ---------------------------------------------------------------------------------------------- fixture


@dataclass
class HubHandle:
    """What the `hub` fixture gives a test."""

    server: LocalHub
    url: str
    write_token: str
    read_token: str
    user: str

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.server.requests

    def fail(self, point: str, **kwargs) -> None:
        self.server.fail(point, **kwargs)

    def add_token(self, token: str, **kwargs) -> str:
        return self.server.add_token(token, **{"user": self.user, **kwargs})

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.server.files(repo_id, revision)

    def reset_requests(self) -> None:
        self.server.requests.clear()


def point_client_at(monkeypatch: pytest.MonkeyPatch, url: str, cache: Path) -> None:
    """Aim the already-imported huggingface_hub at `url`: it reads HF_ENDPOINT once, at import, into constants.

    Code that passes `endpoint=` explicitly (HfApi(endpoint=...)) needs none of this; downloads through
    `hf_hub_download` / `PeftModel.from_pretrained("ns/name")` use the module constants and the module-level
    `HfApi()` behind `file_exists` and friends.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "no-token"))  # never the developer's real login
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(cache / "no-stored-tokens"))
    monkeypatch.setattr(hf_api.api, "endpoint", url)


def serve_hub(tmp_path_factory, monkeypatch):
    """(A generator: the `hub` fixture of tests/conftest.py yields from it.) A running local Hub with user "alice" (also in org "cmba-lab"), a write and a read-only token."""
    server = LocalHub(tmp_path_factory.mktemp("hub-store")).start()
    write = server.add_token("hf_local_write_" + secrets.token_hex(8), user="alice", orgs=("cmba-lab",))
    read = server.add_token("hf_local_read_" + secrets.token_hex(8), user="alice", role="read", orgs=("cmba-lab",))
    point_client_at(monkeypatch, server.url, tmp_path_factory.mktemp("hf-cache"))
    try:
        yield HubHandle(server, server.url, write, read, "alice")
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


__all__ = ["LocalHub", "HubHandle", "serve_hub", "point_client_at", "needs_lfs", "git_blob_sha1"]
