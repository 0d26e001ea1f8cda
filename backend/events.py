"""Label Studio webhook actions, named once for the app, the scheduler and `setup-project`."""

from __future__ import annotations

# Annotation changes: each may change what the student and the demo index should learn from.
ANNOTATION_EVENTS: tuple[str, ...] = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
# "Start training" in Label Studio posts START_TRAINING over the ML connection.
TRAIN_EVENTS: tuple[str, ...] = (*ANNOTATION_EVENTS, "START_TRAINING")
# What `setup-project` subscribes the project webhook to.
WEBHOOK_ACTIONS: list[str] = list(ANNOTATION_EVENTS)
# Every action Label Studio 1.23.2 may send; others are a client error.
KNOWN_EVENTS: frozenset[str] = frozenset(TRAIN_EVENTS) | {
    "ANNOTATIONS_CREATED", "TASKS_CREATED", "TASKS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED",
    "PROJECT_DELETED", "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED",
}
