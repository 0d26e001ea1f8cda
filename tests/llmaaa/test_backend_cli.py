"""`llmaaa serve`: each instance keeps to itself (no gunicorn control socket shared through $HOME)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
from gunicorn.config import Config

from llmaaa.backend_cli import gunicorn_settings
from llmaaa.services import free_port, http_ok, llmaaa_command, spawn, wait_until


def _serve_args(control_socket: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(host="127.0.0.1", port=9090, threads=4, control_socket=control_socket)


def test_control_socket_is_off_unless_an_instance_names_its_own(tmp_path: Path) -> None:
    known = Config().settings
    default = gunicorn_settings(_serve_args(), known)
    assert default["control_socket_disable"] is True and "control_socket" not in default
    own = gunicorn_settings(_serve_args(Path("a.ctl")), known)
    assert own["control_socket"] == str(Path("a.ctl").absolute()) and "control_socket_disable" not in own
    for settings in (default, own):  # every key is one gunicorn knows
        assert set(settings) <= set(known)
    older = {k for k in known if not k.startswith("control_socket")}  # gunicorn < 25.1
    assert "control_socket_disable" not in gunicorn_settings(_serve_args(), older)
    with pytest.raises(ValueError, match="25.1"):
        gunicorn_settings(_serve_args(tmp_path / "a.ctl"), older)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


@pytest.mark.integration
def test_two_serve_instances_do_not_share_or_delete_a_control_socket(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn's default socket is $XDG_RUNTIME_DIR/gunicorn.ctl, else ~/.gunicorn/gunicorn.ctl: one per user.
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    shared = home / ".gunicorn" / "gunicorn.ctl"
    own = tmp_path / "b.ctl"
    env = {"HOME": str(home), "LLMAAA_DATA_DIR": str(tmp_path / "data"), "LLMAAA_TORCH_THREADS": "1",
           "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-unused", "LLM_MODEL": "none"}
    services = []
    try:
        for name, extra in (("a", []), ("b", ["--control-socket", str(own)])):
            port = free_port()
            services.append(spawn(f"serve-{name}", llmaaa_command("serve", "--port", str(port), "--threads", "2",
                                                                  *extra),
                                  f"http://127.0.0.1:{port}", tmp_path / f"serve-{name}.log", env))
        for svc in services:  # started together: each takes long to import on a busy machine
            wait_until(svc, http_ok(f"{svc.url}/health"), 240)
        a, b = services
        wait_until(b, lambda: own.is_socket(), 30)
        assert not shared.exists(), "an instance opened the per-user default control socket"
        assert _accepts(own)
        a.stop()
        assert own.is_socket() and _accepts(own), "stopping one instance removed the other's socket"
        b.stop()
        # Instance b may log gunicorn 27's own CancelledError from its control server at shutdown (our probe
        # connection cancelled in gunicorn/ctl/server.py `_handle_client`), so only a is held to a clean log.
        assert "Traceback" not in (tmp_path / "serve-a.log").read_text(encoding="utf-8")
    finally:
        for svc in services:
            svc.stop()
