"""An annotator in a real Chromium: log in, Label All Tasks, read the rendered pre-labels, submit.

Playwright drives Debian's `chromium` (no browser download). Every task Label Studio serves to the page
is recorded from the network (the next-task action, `/api/tasks/<id>`), so a test knows which task
is on screen without relying on Label Studio's URL scheme.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Response

HIGHLIGHT = ".htx-highlight"  # Label Studio's rendered text region (one element per region and text node)
# The stream's "next task": the Data Manager posts `/api/dm/actions?id=next_task` (Label All Tasks sends an
# empty body, so project sampling applies); the plain API is `GET /api/projects/<id>/next`.
NEXT_URL = re.compile(r"/api/projects/\d+/next|/api/dm/actions\?.*\bid=next_task")
TASK_URL = re.compile(r"/api/tasks/(\d+)(\?|$)")


@dataclass
class Served:
    """One task as Label Studio handed it to the page."""

    task_id: int
    via: str  # "next" (the labeling stream) or "task" (opened from the Data Manager)
    queue: str | None
    predictions: list[dict[str, Any]]


@dataclass
class Annotator:
    page: Page
    ls_url: str
    shots: Path
    served: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("response", self._record)

    def _record(self, response: Response) -> None:
        via = "next" if NEXT_URL.search(response.url) else "task" if TASK_URL.search(response.url) else None
        if via is None or response.status != 200:
            return
        try:
            body = response.json()
        except Exception:  # noqa: BLE001 - not a task payload
            return
        if isinstance(body, dict) and isinstance(body.get("id"), int) and isinstance(body.get("data"), dict):
            self.served.append(Served(body["id"], via, body.get("queue"), body.get("predictions") or []))

    # ------------------------------------------------------------------ navigation

    def login(self, email: str, password: str) -> None:
        self.page.goto(f"{self.ls_url}/user/login/")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000, wait_until="commit")

    def open_data_manager(self, project_id: int) -> None:
        self.page.goto(f"{self.ls_url}/projects/{project_id}/data")
        self.page.get_by_role("button", name="Label All Tasks").wait_for(timeout=60_000)

    def label_all_tasks(self, project_id: int) -> Served:
        self.open_data_manager(project_id)
        before = len(self.served)
        self.page.get_by_role("button", name="Label All Tasks").click()
        return self.wait_served(before, "next")

    def label_tasks_as_displayed(self, project_id: int, tab_id: int) -> Served:
        """The stream over one Data Manager tab (its filters and ordering): the button's dropdown entry."""
        self.page.goto(f"{self.ls_url}/projects/{project_id}/data?tab={tab_id}")
        self.page.get_by_role("button", name="Label All Tasks").wait_for(timeout=60_000)
        before = len(self.served)
        self.page.get_by_role("button", name="Toggle open").click()
        self.page.get_by_text("Label Tasks As Displayed").click()
        return self.wait_served(before, "next")

    def open_task(self, project_id: int, task_id: int) -> Served:
        """The Data Manager's quick view of one task (what clicking its row opens)."""
        before = len(self.served)
        self.page.goto(f"{self.ls_url}/projects/{project_id}/data?task={task_id}")
        return self.wait_served(before, "task", task_id)

    def wait_served(self, before: int, via: str, task_id: int | None = None, timeout: float = 60) -> Served:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.served[before:]:
                if item.via == via and (task_id is None or item.task_id == task_id):
                    self.wait_rendered()
                    return item
            self.page.wait_for_timeout(200)
        raise AssertionError(f"Label Studio served no task via {via} within {timeout:.0f}s")

    def wait_rendered(self) -> None:
        # The text tag is on screen; regions render right after it, so allow them a moment.
        self.page.locator(".lsf-main-view, .lsf-main-content").first.wait_for(timeout=60_000)
        self.page.locator("text=/./").first.wait_for(timeout=10_000)
        self.page.wait_for_timeout(1500)

    def submit(self, project_id: int) -> Served:
        before = len(self.served)
        self.page.get_by_test_id("bottombar-submit-button").click()
        return self.wait_served(before, "next")

    # ------------------------------------------------------------------ what is on screen

    def highlights(self) -> list[tuple[str, str]]:
        """(text, label) of every region rendered over the text. Label Studio sets `data-label` to
        "<index>:<label>" on each highlight element."""
        found = self.page.locator(HIGHLIGHT).evaluate_all(
            "els => els.map(e => [e.innerText, e.getAttribute('data-label') || ''])")
        return [(text.strip(), label.split(":", 1)[-1]) for text, label in found]

    def labeling_text(self) -> str:
        """What the labeling area (not the Data Manager's side list) shows as text."""
        return self.page.locator(".lsf-main-view, .lsf-main-content").first.inner_text()

    def data_manager_row_text(self, task_id: int) -> str:
        """The text of the Data Manager row of `task_id` (its first cell is the id)."""
        for row in self.page.locator(".lsf-table-row").all_inner_texts():
            if row.split("\n", 1)[0].strip() == str(task_id):
                return row
        raise AssertionError(f"task {task_id} is not on the Data Manager's first page")

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / name
        self.page.screenshot(path=str(path), full_page=False)
        return path


def launch(playwright: Any, chromium: Path) -> Browser:
    return playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])


def region_texts(prediction: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, label) of each region of a prediction, as `Annotator.highlights` reports them."""
    return [(r["value"]["text"], (r["value"].get("labels") or [""])[0])
            for r in prediction.get("result") or [] if "text" in (r.get("value") or {})]
