"""`make demo` end to end: every service starts, tasks get pre-annotated, annotations trigger a retrain,
and Ctrl-C (SIGINT) or SIGTERM stops every child process, also when the demo runs as a background job of a
non-interactive shell (which starts it with SIGINT ignored)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from llmaaa.services import free_port, llmaaa_command, port_open

pytestmark = [pytest.mark.integration]


def as_background_job() -> None:
    """What `make demo &` in a non-interactive shell does to the child: SIGINT starts out ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children lead their own sessions, so walk the parent links)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def demo_command(state: Path, ports: dict[str, int], data: Path, *extra: str) -> list[str]:
    return llmaaa_command("demo", "--state", str(state), "--ls-port", str(ports["ls"]), "--backend-port",
                          str(ports["backend"]), "--llm-port", str(ports["llm"]), "--redis-url",
                          f"redis://127.0.0.1:{ports['redis']}/0", "--data", str(data), *extra)


def wait_for_log(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        assert proc.poll() is None, f"demo exited early:\n{text[-3000:]}"
        assert time.monotonic() < deadline, f"no {needle!r} in the demo log:\n{text[-3000:]}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the signal tests: only the first one pays Label Studio's migrations.
    return tmp_path_factory.mktemp("demo-signals")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_background_demo_stops_on_signal_during_startup_and_leaves_no_child(
    sig: signal.Signals, demo_state: Path, bc5cdr_dir: Path, tmp_path: Path,
) -> None:
    ports = {"ls": free_port(), "backend": free_port(), "llm": free_port(), "redis": free_port()}
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log:
        demo = subprocess.Popen(demo_command(demo_state, ports, bc5cdr_dir, "--tasks", "20"), stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=as_background_job)
    try:
        # Label Studio, the simulated LLM and Redis are up; the backend is starting: several children to stop.
        wait_for_log(log_path, "starting the backend", demo, 900)
        time.sleep(1)
        children = descendants(demo.pid)
        assert len(children) >= 3, children
        demo.send_signal(sig)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:  # the behaviour under test failed: do not leak the demo's services
            for pid in descendants(demo.pid):
                os.kill(pid, signal.SIGKILL)
            demo.kill()
    text = log_path.read_text()
    assert "demo stopped" in text and sig.name in text
    deadline = time.monotonic() + 10
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "a child outlived the demo"
    assert not [name for name, port in ports.items() if port_open("127.0.0.1", port)]


@pytest.mark.slow
def test_demo_runs_the_loop_and_stops_cleanly(tmp_path: Path, bc5cdr_dir: Path) -> None:
    ports = {"ls": free_port(), "backend": free_port(), "llm": free_port(), "redis": free_port()}
    state = tmp_path / "demo"
    log = (tmp_path / "demo.log").open("w")
    # Started as a background job would be (SIGINT ignored): Ctrl-C / `kill -INT` must still stop it.
    demo = subprocess.Popen(
        demo_command(state, ports, bc5cdr_dir, "--tasks", "60", "--verified", "4", "--preannotate", "30",
                     "--max-epochs", "3"),  # the loop, not the student's quality, is under test here
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=as_background_job)
    text = ""
    try:
        deadline = time.monotonic() + 400
        while "demo is ready" not in text:
            assert demo.poll() is None, f"demo exited early:\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"demo not ready:\n{text[-3000:]}"
            time.sleep(2)
            text = (tmp_path / "demo.log").read_text()
        assert "SIMULATION" in text
        stored = int(text.split("pre-annotated:")[1].split("tasks")[0])
        assert stored >= 25  # a few may fail by the simulation's fault injection, and are retried later
        # A stand-in human submits 5 annotations: the webhook queues a retrain, the demo's worker runs it.
        out = subprocess.run(llmaaa_command("demo-annotate", "--n", "5", "--ls-url",
                                            f"http://127.0.0.1:{ports['ls']}", "--data", str(bc5cdr_dir)),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        state_file = next(iter((state / "backend" / "projects").glob("*/state.json")), None)
        deadline = time.monotonic() + 400
        while True:
            current = json.loads(state_file.read_text()) if state_file and state_file.exists() else {}
            if (current.get("last_retrain") or {}).get("status") == "ok":
                break
            assert time.monotonic() < deadline, f"no retrain finished: {current}"
            time.sleep(3)
            state_file = state_file or next(iter((state / "backend" / "projects").glob("*/state.json")), None)
        assert current["student_version"] and current["model_version"].startswith("acq-r")
        children = descendants(demo.pid)
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        demo.wait(60)
        log.close()
    assert "demo stopped" in (tmp_path / "demo.log").read_text()
    assert not [pid for pid in children if alive(pid)], "a child outlived the demo"
    time.sleep(1)
    assert not [name for name, port in ports.items() if port_open("127.0.0.1", port)], "a child outlived the demo"
