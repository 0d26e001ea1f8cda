"""Stopping the services we start: nothing they forked may outlive the stop (llmaaa.services)."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue

from backend.jobs import QUEUE_NAME
from llmaaa.services import Service, descendant_pids, is_running, spawn, start_redis, start_worker
from tests.conftest import wait_for

# A parent that forks a child which leaves the process group, as RQ's work-horse does (os.setpgrp).
ESCAPING_CHILD = textwrap.dedent("""
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        os.setpgrp()
        time.sleep(600)
        os._exit(0)
    open(sys.argv[1], "w").write(str(pid))
    time.sleep(600)
""")


def test_descendant_pids_and_stop_reach_a_child_outside_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    svc = spawn("escaper", [sys.executable, "-c", ESCAPING_CHILD, str(pid_file)], "-", tmp_path / "log")
    try:
        child = int(wait_for("the child's pid", lambda: pid_file.exists() and pid_file.read_text(), 20, 0.05))
        assert svc.proc is not None
        assert child in [p for p, _ in descendant_pids(svc.proc.pid)]
        assert is_running(child)
        svc.stop(timeout=5)
        assert not svc.alive()
        deadline = time.monotonic() + 5
        while is_running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_running(child), "a child in a process group of its own outlived Service.stop()"
    finally:
        svc.stop()


def test_descendant_pids_of_a_process_without_children_is_empty(tmp_path: Path) -> None:
    svc = spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], "-", tmp_path / "log")
    try:
        assert svc.proc is not None
        assert descendant_pids(svc.proc.pid) == []
    finally:
        svc.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    svc = start_redis(tmp_path / "redis")
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.mark.integration
def test_worker_stop_kills_a_running_work_horse(own_redis: str, tmp_path: Path) -> None:
    """The demo's stop: a job that would run for minutes ends with the worker (warm, then cold shutdown)."""
    conn = redis.Redis.from_url(own_redis)
    job = Queue(QUEUE_NAME, connection=conn).enqueue(time.sleep, 600, job_timeout=900)
    worker: Service = start_worker({"REDIS_URL": own_redis}, tmp_path)
    try:
        assert worker.proc is not None
        horses = wait_for("a work-horse running the job",
                          lambda: job.get_status(refresh=True) == "started" and descendant_pids(worker.proc.pid),
                          60, 0.1)
        started = time.monotonic()
        worker.stop()
        took = time.monotonic() - started
        assert not worker.alive()
        assert took < worker.stop_grace + 10, f"stop took {took:.1f}s"
        deadline = time.monotonic() + 5
        while any(is_running(p) for p, _ in horses) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(is_running(p) for p, _ in horses), "the work-horse outlived the worker's stop"
    finally:
        worker.stop()
