"""`make demo` end to end: every service starts, tasks get pre-annotated, annotations trigger a retrain,
and Ctrl-C stops every child process."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from llmaaa.services import free_port, llmaaa_command, port_open

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_loop_and_stops_cleanly(tmp_path: Path, bc5cdr_dir: Path) -> None:
    ports = {"ls": free_port(), "backend": free_port(), "llm": free_port(), "redis": free_port()}
    state = tmp_path / "demo"
    log = (tmp_path / "demo.log").open("w")
    demo = subprocess.Popen(
        llmaaa_command("demo", "--state", str(state), "--ls-port", str(ports["ls"]), "--backend-port",
                       str(ports["backend"]), "--llm-port", str(ports["llm"]), "--redis-url",
                       f"redis://127.0.0.1:{ports['redis']}/0", "--tasks", "60", "--verified", "4",
                       "--preannotate", "30", "--data", str(bc5cdr_dir)),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
    finally:
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        demo.wait(60)
        log.close()
    assert "demo stopped" in (tmp_path / "demo.log").read_text()
    time.sleep(1)
    assert not [name for name, port in ports.items() if port_open("127.0.0.1", port)], "a child outlived the demo"
