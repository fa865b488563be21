"""A fake Idlemon API (see /work/shared/api/idlemon.md), served under ``<url>/api``.

It is stricter than the real API is known to be, so a client mistake shows up as a failure:
it requires ``Accept: application/json`` (406), the project's ``Api-Token`` (401),
``Content-Type: application/json`` on a body (415), and a body of exactly
``{"duration": int >= 0, "metas": [{"name": str, "value": str}]}`` (422).
"""

from __future__ import annotations

import copy
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fakes import FakeServer, RecordedRequest, Reply, json_error

TOKEN = "0123456789abcdef0123456789abcdef"
PROJECT_ID = "9934826a-adb5-11ea-a64d-0242ac130004"


def default_project() -> dict[str, Any]:
    """The documented example project (wire format), with a second, idle monitor."""
    return {
        "id": PROJECT_ID,
        "name": "Foo",
        "description": "Lorem ipsum",
        "token_last_used": "2025-06-15T11:06:07+00:00",
        "monitors": [
            _monitor("c383b446-adb5-11ea-a64d-0242ac130004", "Bar", "bar", is_idle=False),
            _monitor("5f0c4a2e-adb6-11ea-a64d-0242ac130004", "Nightly backup", "backup job/1"),
        ],
    }


def _monitor(monitor_id: str, name: str, slug: str, *, is_idle: bool = True) -> dict[str, Any]:
    return {
        "id": monitor_id,
        "project_id": PROJECT_ID,
        "name": name,
        "slug": slug,
        "description": "Lorem ipsum",
        "interval": 60,
        "interval_avg": 60,
        "duration_avg": 42,
        "is_idle": is_idle,
        "last_idle": "2025-06-14T03:00:00+02:00" if is_idle else None,
        "last_contact": "2025-06-15T11:00:00+00:00",
    }


@dataclass(frozen=True)
class StoredLog:
    slug: str
    duration: int
    metas: tuple[tuple[str, str], ...]


class IdlemonServer(FakeServer):
    """Fake Idlemon for one project.  ``project`` is wire-format JSON that tests may alter."""

    def __init__(
        self, token: str = TOKEN, project: dict[str, Any] | None = None, *, keep_alive: bool = False
    ) -> None:
        super().__init__(keep_alive=keep_alive)
        self.token = token
        self.project = project if project is not None else default_project()
        self._logs_lock = threading.Lock()
        self._logs: list[StoredLog] = []

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def logs(self) -> list[StoredLog]:
        with self._logs_lock:
            return list(self._logs)

    def route(self, request: RecordedRequest) -> Reply:
        if "application/json" not in (request.header("Accept") or ""):
            return json_error(406, "This API only speaks application/json.")
        if request.header("Api-Token") != self.token:
            return json_error(401, "Unauthenticated.")
        segments = urllib.parse.urlsplit(request.path).path.split("/")
        match request.method, segments:
            case "POST", ["", "api", "monitors", slug, "logs"]:
                return self._add_log(urllib.parse.unquote(slug), request)
            case "GET", ["", "api", "projects", project_id]:
                return self._show_project(urllib.parse.unquote(project_id))
        return json_error(404, "Not found.")

    def _add_log(self, slug: str, request: RecordedRequest) -> Reply:
        if slug not in {monitor["slug"] for monitor in self.project["monitors"]}:
            return json_error(404, "Monitor not found.")
        if request.header("Content-Type") != "application/json":
            return json_error(415, "Send application/json.")
        problem = _body_problem(request.body)
        if problem:
            return json_error(422, problem, errors={"body": [problem]})
        metas = tuple((meta["name"], meta["value"]) for meta in request.body.get("metas", []))
        with self._logs_lock:
            self._logs.append(StoredLog(slug, request.body["duration"], metas))
        log = {
            "id": str(uuid.uuid4()),
            "duration": request.body["duration"],
            "metas": [{"id": str(uuid.uuid4()), "name": n, "value": v} for n, v in metas],
        }
        return Reply.json(201, {"log": log})

    def _show_project(self, project_id: str) -> Reply:
        if project_id != self.project.get("id"):
            return json_error(404, "Project not found.")
        return Reply.json(200, {"project": copy.deepcopy(self.project)})


def _body_problem(body: Any) -> str | None:
    """Why Idlemon would refuse ``body`` (422), or None."""
    if not isinstance(body, dict) or set(body) - {"duration", "metas"}:
        return "The body must be an object with duration and metas."
    duration = body.get("duration")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        return "The duration must be a non-negative integer."
    metas = body.get("metas", [])
    if not isinstance(metas, list):
        return "The metas must be a list."
    for meta in metas:
        if not isinstance(meta, dict) or set(meta) != {"name", "value"}:
            return "Each meta must have exactly a name and a value."
        if not isinstance(meta["name"], str) or not isinstance(meta["value"], str):
            return "Meta names and values must be strings."
    return None
