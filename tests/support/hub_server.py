"""A local stand-in for ModelScope and the Hugging Face Hub, so the real clients download from 127.0.0.1.

Served shapes (read from the installed clients: modelscope-hub 0.5.1 `_legacy_api.py`/`_download.py`,
huggingface_hub 2.4 `hf_api.py`/`file_download.py`/`_snapshot_download.py`):

ModelScope (`/api/v1`, answers wrapped as {"Code", "Data", "Message", "RequestId", "Success"}):
  GET /api/v1/models/{owner}/{name}                        repository info
  GET /api/v1/models/{owner}/{name}/revisions              branches and tags
  GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=   {"Files": [{"Path", "Size", "Sha256", ...}]}
  GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=          the bytes, with Range (206 / 416)
  GET /api/v1/repos/internalAccelerationInfo               404 (the client's cloud-region probe)
  unknown repository: 404 {"Message": "模型不存在", "Success": false}, which the client maps to NotExistError.

Hugging Face:
  GET /api/models/{owner}/{name}[/revision/{rev}]          model info with "sha" and "siblings"
  GET /api/models/{owner}/{name}/tree/{rev}?recursive=     [{"type": "file", "path", "size", "oid", "lfs"?}]
  HEAD|GET /{owner}/{name}/resolve/{rev}/{path}            ETag, X-Repo-Commit, Content-Length; GET honours Range
  unknown repository: 404 with X-Error-Code: RepoNotFound (RepositoryNotFoundError); file: EntryNotFound.
  Not served: Xet storage (no X-Xet-Hash header is sent, so the client takes the plain HTTP path) and the
  CDN redirect of LFS files (files are answered directly, as a mirror does).

Every response closes its connection, so once `stop()` returns nothing answers on the port.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.helpers import DEMO_DIR

MS_BRANCH, HF_BRANCH = "master", "main"


@dataclass
class Repo:
    """A repository: file paths to bytes, at one commit."""

    repo_id: str
    files: dict[str, bytes]
    commit: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex[:8])

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.files[path]).hexdigest()

    def git_oid(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return not path.endswith((".json", ".jinja", ".txt", ".md", ".py", ".gitattributes"))

    def folders(self) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}


@dataclass
class Transfer:
    """One GET of a file's bytes: where it started and how many bytes went out."""

    api: str
    repo: str
    path: str
    range_start: int | None
    bytes_sent: int = 0
    dropped: bool = False


def demo_repo(repo_id: str, weights: bytes | None = None) -> Repo:
    """The bundled demo checkpoint (loadable), plus files a download must skip."""
    files = {p.name: p.read_bytes() for p in sorted(DEMO_DIR.iterdir()) if p.is_file()}
    if weights is not None:
        files["model.safetensors"] = weights
    files.update({
        "pytorch_model.bin": b"\x80\x02duplicate of the safetensors weights" * 4096,
        "model-q4_k_m.gguf": b"GGUF" + bytes(64 * 1024),
        "onnx/model.onnx": b"onnx" * 1024,
        "logo.png": b"\x89PNG\r\n\x1a\n" + bytes(2048),
        "README.md": b"# Demo MoE\n",
        "configuration.json": b'{"framework": "pytorch", "task": "text-generation"}',
        "modeling_demo.py": b"raise SystemExit('remote code must not be fetched')\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    })
    return Repo(repo_id, files)


def needed_files(repo: Repo) -> set[str]:
    """What a download of `demo_repo` must fetch: config, tokenizer, template, safetensors weights."""
    return {p.name for p in DEMO_DIR.iterdir() if p.is_file()} & set(repo.files)


class HubServer:
    """Serves `repos` on 127.0.0.1 in both hubs' shapes, logging every file transfer."""

    def __init__(self, repos: list[Repo]) -> None:
        self.repos = {r.repo_id: r for r in repos}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.transfers: list[Transfer] = []
        self._drops: dict[str, list[int]] = {}  # file path -> bytes to send before dropping, one entry per drop
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.chunk_delay_s = 0.0  # pause after each 256 KiB sent, to make a download slow enough to watch

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def drop_after(self, path: str, n_bytes: int, times: int = 1) -> None:
        """The next `times` GETs of `path` send `n_bytes` of the body, then close the connection."""
        with self._lock:
            self._drops.setdefault(path, []).extend([n_bytes] * times)

    def transfers_of(self, path: str) -> list[Transfer]:
        with self._lock:
            return [t for t in self.transfers if t.path == path]

    def fetched(self) -> set[str]:
        """Paths whose bytes were requested at least once."""
        with self._lock:
            return {t.path for t in self.transfers}

    def _take_drop(self, path: str) -> int | None:
        with self._lock:
            pending = self._drops.get(path)
            return pending.pop(0) if pending else None

    def _log(self, method: str, target: str) -> None:
        with self._lock:
            self.requests.append((method, target))

    def _log_transfer(self, transfer: Transfer) -> None:
        with self._lock:
            self.transfers.append(transfer)


_MS_ROUTES = [
    ("ms_files", re.compile(r"/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo/files")),
    ("ms_file", re.compile(r"/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo")),
    ("ms_revisions", re.compile(r"/api/v1/models/(?P<repo>[^/]+/[^/]+)/revisions")),
    ("ms_info", re.compile(r"/api/v1/models/(?P<repo>[^/]+/[^/]+)")),
]
_HF_ROUTES = [
    ("hf_tree", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?")),
    ("hf_info", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?")),
    ("hf_file", re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def end_headers(self) -> None:
        self.send_header("Connection", "close")  # or a client reuses a connection this server has closed
        super().end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(head=False)

    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), {k: v[0] for k, v in parse_qs(url.query).items()}
        self.hub._log(self.command, self.path)
        for name, pattern in _MS_ROUTES + _HF_ROUTES:
            match = pattern.fullmatch(path)
            if match:
                repo = self.hub.repos.get(match["repo"])
                if repo is None:  # ModelScope answers in Chinese; its client translates the message itself
                    ms = name.startswith("ms")
                    return self._missing(ms, "RepoNotFound", "模型不存在" if ms else "Repository not found")
                return getattr(self, f"_{name}")(repo, match, query, head)
        self._json({"Code": 404, "Message": "not found", "Success": False}, status=404)

    # --- ModelScope ---

    def _ms_info(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        owner, name = repo.repo_id.split("/")
        self._ms_ok({"Id": 1, "Name": name, "Path": owner, "ChineseName": name, "Visibility": 5,
                     "DefaultBranch": MS_BRANCH, "Revision": repo.commit})

    def _ms_revisions(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        self._ms_ok({"RevisionMap": {"Branches": [{"Revision": MS_BRANCH, "CommitId": repo.commit}], "Tags": []}})

    def _ms_files(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        if query.get("Revision", MS_BRANCH) not in (MS_BRANCH, repo.commit):
            return self._missing(True, "", "Revision not found")
        root = (query.get("Root") or "").strip("/")
        entries = [{"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0} for d in sorted(repo.folders())]
        entries += [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(data),
                     "Sha256": repo.sha256(p), "IsLFS": repo.is_lfs(p), "Mode": "100644", "Revision": repo.commit,
                     "CommittedDate": 1735689600, "CommitMessage": "upload"} for p, data in sorted(repo.files.items())]
        self._ms_ok({"Files": [e for e in entries if not root or e["Path"].startswith(root + "/")]})

    def _ms_file(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        if query.get("FilePath") not in repo.files:
            return self._missing(True, "", "文件不存在")
        self._send_file("modelscope", repo, query["FilePath"], {"ETag": f'"{repo.sha256(query["FilePath"])}"'}, head)

    def _ms_ok(self, data: object) -> None:
        self._json({"Code": 200, "Data": data, "Message": "success", "RequestId": uuid.uuid4().hex, "Success": True})

    # --- Hugging Face ---

    def _hf_info(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        if match["rev"] not in (None, HF_BRANCH, repo.commit):
            return self._missing(False, "RevisionNotFound", "Invalid rev id")
        self._json({"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                    "private": False, "gated": False, "disabled": False, "tags": [], "library_name": "transformers",
                    "lastModified": "2025-01-01T00:00:00.000Z", "siblings": [{"rfilename": p} for p in repo.files]})

    def _hf_tree(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        if match["rev"] not in (HF_BRANCH, repo.commit):
            return self._missing(False, "RevisionNotFound", "Invalid rev id")
        entries: list[dict] = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                               for d in sorted(repo.folders())]
        for p in sorted(repo.files):
            entry = {"type": "file", "oid": repo.git_oid(p), "size": len(repo.files[p]), "path": p}
            if repo.is_lfs(p):
                entry["lfs"] = {"oid": repo.sha256(p), "size": len(repo.files[p]), "pointerSize": 134}
            entries.append(entry)
        self._json(entries)

    def _hf_file(self, repo: Repo, match: re.Match, query: dict, head: bool) -> None:
        path = match["path"]
        if match["rev"] not in (HF_BRANCH, repo.commit):
            return self._missing(False, "RevisionNotFound", "Invalid rev id")
        if path not in repo.files:
            return self._missing(False, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.commit})
        etag = repo.sha256(path) if repo.is_lfs(path) else repo.git_oid(path)
        self._send_file("huggingface", repo, path, {"ETag": f'"{etag}"', "X-Repo-Commit": repo.commit}, head)

    # --- shared ---

    def _send_file(self, api: str, repo: Repo, path: str, headers: dict[str, str], head: bool) -> None:
        data = repo.files[path]
        start, end, status = 0, len(data) - 1, 200
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if asked:
            start = int(asked[1])
            end = min(int(asked[2]), end) if asked[2] else end
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        transfer = Transfer(api, repo.repo_id, path, start if asked else None)
        self.hub._log_transfer(transfer)
        body = data[start:end + 1]
        drop = self.hub._take_drop(path)
        if drop is not None and drop < len(body):
            body, transfer.dropped = body[:drop], True
        for offset in range(0, len(body), 256 * 1024):
            chunk = body[offset:offset + 256 * 1024]
            self.wfile.write(chunk)
            transfer.bytes_sent += len(chunk)
            if self.hub.chunk_delay_s:
                time.sleep(self.hub.chunk_delay_s)
        self.wfile.flush()

    def _missing(self, modelscope: bool, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        if modelscope:
            return self._json({"Code": 404, "Message": message, "RequestId": uuid.uuid4().hex, "Success": False},
                              status=404)
        extra = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})} if code else headers
        self._json({"error": message}, status=404, headers=extra)

    def _json(self, payload: object, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
