"""Metas that say where a run ran: the CI job, or the systemd unit.

:func:`environment_metas` reads only the environment it is given (and, for systemd, one small
file whose path can be injected), so it is tested with plain dicts.  A meta whose value is
unknown is left out rather than sent empty.

CI providers, first match wins (``ci`` value: detected by; ``ci_job_url``; ``commit``):

* ``github-actions``: ``GITHUB_ACTIONS``;
  ``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID``; ``GITHUB_SHA``
* ``gitlab-ci``: ``GITLAB_CI``; ``CI_JOB_URL``; ``CI_COMMIT_SHA``
* ``circleci``: ``CIRCLECI``; ``CIRCLE_BUILD_URL``; ``CIRCLE_SHA1``
* ``jenkins``: ``JENKINS_URL``; ``BUILD_URL``; ``GIT_COMMIT``
* ``buildkite``: ``BUILDKITE``; ``$BUILDKITE_BUILD_URL#$BUILDKITE_JOB_ID``; ``BUILDKITE_COMMIT``
* ``ci``: ``CI`` alone (every provider above sets it too); no URL, no commit

A variable counts as set when it is non-empty and not ``false``/``0``/``no``.  ``commit`` is
given only when it looks like a hexadecimal commit id (Buildkite may say ``HEAD``), and a URL
only when it is an http(s) URL; a value longer than 200 characters is left out, not cut (a
cut URL would point nowhere).

``systemd_unit``: under systemd (``$INVOCATION_ID`` is set for every unit's processes), the
unit is ``$JOBWRAP_SYSTEMD_UNIT`` when set (``Environment=JOBWRAP_SYSTEMD_UNIT=%n`` in a unit
file names it explicitly), else the innermost ``*.service`` in ``/proc/self/cgroup``.  Jobs
started by ``jobwrap cron`` under systemd thus carry the supervisor's unit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

CGROUP_FILE = Path("/proc/self/cgroup")
UNIT_VARIABLE = "JOBWRAP_SYSTEMD_UNIT"
VALUE_CAP = 200  # as user metas: Idlemon shows short values
_COMMIT = re.compile(r"[0-9a-fA-F]{7,64}\Z")
_FALSE = ("", "false", "0", "no")

Env = Mapping[str, str]


@dataclass(frozen=True)
class CiProvider:
    """How one CI service announces itself and where its job and commit are found."""

    name: str
    detect: str
    job_url: Callable[[Env], str | None]
    commit: str | None


def _github_url(env: Env) -> str | None:
    repository, run_id = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if not repository or not run_id:
        return None
    server = (env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
    return f"{server}/{repository}/actions/runs/{run_id}"


def _buildkite_url(env: Env) -> str | None:
    build, job = env.get("BUILDKITE_BUILD_URL"), env.get("BUILDKITE_JOB_ID")
    if not build:
        return None
    return f"{build}#{job}" if job else build


def _variable(name: str) -> Callable[[Env], str | None]:
    return lambda env: env.get(name)


PROVIDERS = (
    CiProvider("github-actions", "GITHUB_ACTIONS", _github_url, "GITHUB_SHA"),
    CiProvider("gitlab-ci", "GITLAB_CI", _variable("CI_JOB_URL"), "CI_COMMIT_SHA"),
    CiProvider("circleci", "CIRCLECI", _variable("CIRCLE_BUILD_URL"), "CIRCLE_SHA1"),
    CiProvider("jenkins", "JENKINS_URL", _variable("BUILD_URL"), "GIT_COMMIT"),
    CiProvider("buildkite", "BUILDKITE", _buildkite_url, "BUILDKITE_COMMIT"),
    CiProvider("ci", "CI", lambda env: None, None),
)


def environment_metas(env: Env, *, cgroup_file: Path = CGROUP_FILE) -> list[tuple[str, str]]:
    """``ci``, ``ci_job_url``, ``commit``, ``systemd_unit`` -- those that are known, in order."""
    return ci_metas(env) + systemd_metas(env, cgroup_file=cgroup_file)


def ci_metas(env: Env) -> list[tuple[str, str]]:
    """The CI metas for the first provider detected; empty outside CI."""
    provider = next((p for p in PROVIDERS if _is_set(env.get(p.detect))), None)
    if provider is None:
        return []
    metas = [("ci", provider.name)]
    url = _clean(provider.job_url(env))
    if url and url.startswith(("https://", "http://")):
        metas.append(("ci_job_url", url))
    commit = _clean(env.get(provider.commit)) if provider.commit else None
    if commit and _COMMIT.match(commit):
        metas.append(("commit", commit))
    return metas


def systemd_metas(env: Env, *, cgroup_file: Path = CGROUP_FILE) -> list[tuple[str, str]]:
    """``systemd_unit`` when running in a systemd unit and its name can be found."""
    unit = _clean(env.get(UNIT_VARIABLE))
    if unit is None and env.get("INVOCATION_ID"):
        unit = unit_from_cgroup(cgroup_file)
    return [("systemd_unit", unit)] if unit else []


def unit_from_cgroup(cgroup_file: Path = CGROUP_FILE) -> str | None:
    """The innermost ``*.service`` in this process's cgroup path(s); None if there is none.

    cgroup v2 has one line ``0::/system.slice/x.service``; v1 has one per hierarchy, the
    ``name=systemd`` one naming the unit.  Innermost, so a user service
    (``user@1000.service/app.slice/x.service``) gives ``x.service``, and a service's own
    sub-cgroups (``x.service/payload``) still give ``x.service``.
    """
    try:
        text = cgroup_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        services = [part for part in path.split("/") if part.endswith(".service")]
        if services:
            return _clean(services[-1])
    return None


def _is_set(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _FALSE


def _clean(value: str | None) -> str | None:
    """A one-line value of reasonable length, or None."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > VALUE_CAP or any(c in value for c in "\r\n\0"):
        return None
    return value
