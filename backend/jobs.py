"""Webhook events → at most one queued retrain per project, on RQ (Redis).

Label Studio delivers webhooks synchronously inside the annotation save with a 1 s timeout, so
`/webhook` only counts the event and, when a retrain is due, enqueues one job; the training runs in
`llmaaa worker` processes (any number, on any machines sharing the Redis).

Debounce, per project, with two Redis keys:
- `llmaaa:p:<id>:new`: annotation events since the last retrain started (INCR);
- `llmaaa:p:<id>:queued`: the id of the retrain waiting in the queue (SET NX).
A burst therefore yields one queued job. When that job *starts* it deletes `queued` and takes the count,
so events that arrive during training queue exactly one follow-up job: none is lost, none piles up.
`START_TRAINING` (Label Studio's "Start training" button) is always honoured, whatever the count.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue

from backend.events import ANNOTATION_EVENTS

log = logging.getLogger(__name__)

QUEUE_NAME = "llmaaa"
# A queued job older than this is assumed lost (e.g. Redis flushed), so a new one may be queued.
QUEUED_KEY_TTL_S = 6 * 3600


class QueueUnavailable(RuntimeError):
    """Redis does not answer: nothing was queued (the annotation itself is safe in Label Studio)."""


def new_key(project_id: int) -> str:
    return f"llmaaa:p:{project_id}:new"


def queued_key(project_id: int) -> str:
    return f"llmaaa:p:{project_id}:queued"


@dataclass
class EnqueueResult:
    queued: bool
    job_id: str | None
    reason: str
    new_annotations: int


class RetrainScheduler:
    def __init__(self, redis_url: str, min_new_annotations: int = 1, job_timeout_s: int = 3600) -> None:
        self.redis_url = redis_url
        self.min_new = max(1, min_new_annotations)
        self.job_timeout_s = job_timeout_s
        # Short timeouts: a dead Redis must turn into a fast 503, not a hung webhook.
        self.conn = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=1.0)
        self.queue = Queue(QUEUE_NAME, connection=self.conn)

    def on_event(self, project_id: int, action: str) -> EnqueueResult:
        try:
            count = int(self.conn.incr(new_key(project_id))) if action in ANNOTATION_EVENTS else int(
                self.conn.get(new_key(project_id)) or 0)
            force = action == "START_TRAINING"
            if not force and count < self.min_new:
                return EnqueueResult(False, None, f"{count}/{self.min_new} new annotations", count)
            job_id = f"retrain-{project_id}-{int(time.time())}-{uuid.uuid4().hex[:8]}"
            if not self.conn.set(queued_key(project_id), job_id, nx=True, ex=QUEUED_KEY_TTL_S):
                existing = self.conn.get(queued_key(project_id))
                return EnqueueResult(False, existing.decode() if existing else None, "coalesced", count)
            self.queue.enqueue_call("backend.retrain.retrain_job", args=(project_id,), job_id=job_id,
                                    timeout=self.job_timeout_s, result_ttl=7 * 24 * 3600,
                                    failure_ttl=7 * 24 * 3600, meta={"project": project_id, "trigger": action})
            return EnqueueResult(True, job_id, "queued", count)
        except redis.RedisError as exc:
            raise QueueUnavailable(f"Redis at {safe_url(self.redis_url)} is unavailable ({type(exc).__name__}); "
                                   "nothing queued, the annotation is safe in Label Studio and the next "
                                   "retrain will include it") from exc


def claim_start(conn: redis.Redis, project_id: int) -> int:
    """Called when a retrain job starts: free the queued slot and take the pending count."""
    pipe = conn.pipeline()
    pipe.delete(queued_key(project_id))
    pipe.getset(new_key(project_id), 0)
    _, taken = pipe.execute()
    return int(taken or 0)


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def queue_status(conn: redis.Redis, project_id: int | None = None) -> dict[str, Any]:
    from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

    q = Queue(QUEUE_NAME, connection=conn)
    status: dict[str, Any] = {
        "queued": q.count,
        "started": StartedJobRegistry(queue=q).count,
        "finished": FinishedJobRegistry(queue=q).count,
        "failed": FailedJobRegistry(queue=q).count,
    }
    if project_id is not None:
        pending = conn.get(queued_key(project_id))
        status["project_queued_job"] = pending.decode() if pending else None
        status["project_new_annotations"] = int(conn.get(new_key(project_id)) or 0)
    return status
