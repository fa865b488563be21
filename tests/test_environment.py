"""Metas from the environment: CI providers and the systemd unit, from plain dicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobwrap.run.context import ci_metas, environment_metas, systemd_metas, unit_from_cgroup

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {
                "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_REPOSITORY": "acme/app", "GITHUB_RUN_ID": "42", "GITHUB_SHA": SHA,
            },
            [
                ("ci", "github-actions"),
                ("ci_job_url", "https://github.com/acme/app/actions/runs/42"),
                ("commit", SHA),
            ],
        ),
        (
            {
                "CI": "true", "GITLAB_CI": "true",
                "CI_JOB_URL": "https://gitlab.example.com/acme/app/-/jobs/7",
                "CI_COMMIT_SHA": SHA,
            },
            [
                ("ci", "gitlab-ci"),
                ("ci_job_url", "https://gitlab.example.com/acme/app/-/jobs/7"),
                ("commit", SHA),
            ],
        ),
        (
            {
                "CIRCLECI": "true", "CIRCLE_BUILD_URL": "https://circleci.com/gh/acme/app/9",
                "CIRCLE_SHA1": SHA,
            },
            [
                ("ci", "circleci"),
                ("ci_job_url", "https://circleci.com/gh/acme/app/9"),
                ("commit", SHA),
            ],
        ),
        (
            {
                "JENKINS_URL": "https://ci.example.com/",
                "BUILD_URL": "https://ci.example.com/job/app/3/", "GIT_COMMIT": SHA,
            },
            [
                ("ci", "jenkins"),
                ("ci_job_url", "https://ci.example.com/job/app/3/"),
                ("commit", SHA),
            ],
        ),
        (
            {
                "BUILDKITE": "true",
                "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/app/builds/5",
                "BUILDKITE_JOB_ID": "e44f9784", "BUILDKITE_COMMIT": SHA,
            },
            [
                ("ci", "buildkite"),
                ("ci_job_url", "https://buildkite.com/acme/app/builds/5#e44f9784"),
                ("commit", SHA),
            ],
        ),
        ({"CI": "true"}, [("ci", "ci")]),
        ({"CI": "1"}, [("ci", "ci")]),
    ],
    ids=["github", "gitlab", "circleci", "jenkins", "buildkite", "generic", "generic-1"],
)
def test_each_provider_gives_its_name_job_url_and_commit(env, expected) -> None:
    assert environment_metas(env, cgroup_file=Path("/nonexistent")) == expected


def test_github_without_a_server_url_defaults_to_github_com() -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "a/b", "GITHUB_RUN_ID": "1"}
    assert ("ci_job_url", "https://github.com/a/b/actions/runs/1") in ci_metas(env)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CI": "false"},
        {"CI": "0"},
        {"CI": ""},
        {"GITHUB_ACTIONS": "false"},
        {"JENKINS_URL": ""},
        {"GITHUB_SHA": SHA, "BUILD_URL": "https://x"},  # the data without the detector
    ],
)
def test_outside_ci_there_are_no_ci_metas(env) -> None:
    assert ci_metas(env) == []


def test_unknown_or_odd_values_are_left_out_not_sent_empty() -> None:
    env = {
        "BUILDKITE": "true",
        "BUILDKITE_COMMIT": "HEAD",  # a symbolic name, not a commit id
        "BUILDKITE_BUILD_URL": "",  # empty
    }
    assert ci_metas(env) == [("ci", "buildkite")]
    assert ci_metas({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "a/b"}) == [
        ("ci", "github-actions")  # no run id: no URL
    ]
    assert ci_metas({"GITLAB_CI": "true", "CI_JOB_URL": "javascript:alert(1)"}) == [
        ("ci", "gitlab-ci")
    ]
    assert ci_metas({"CIRCLECI": "true", "CIRCLE_BUILD_URL": "https://x/" + "y" * 300}) == [
        ("ci", "circleci")  # too long to show: left out rather than cut into a broken URL
    ]
    assert ci_metas({"CIRCLECI": "true", "CIRCLE_SHA1": "abc\ndef"}) == [("ci", "circleci")]


def write_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cgroup"
    path.write_text(text)
    return path


def test_systemd_unit_from_a_cgroup_v2_file(tmp_path: Path) -> None:
    cgroup = write_cgroup(tmp_path, "0::/system.slice/jobwrap@backup.service\n")
    env = {"INVOCATION_ID": "abc123"}
    assert systemd_metas(env, cgroup_file=cgroup) == [("systemd_unit", "jobwrap@backup.service")]


def test_systemd_unit_from_a_cgroup_v1_file(tmp_path: Path) -> None:
    cgroup = write_cgroup(
        tmp_path,
        "12:memory:/system.slice/backup.service\n"
        "1:name=systemd:/system.slice/backup.service\n",
    )
    assert unit_from_cgroup(cgroup) == "backup.service"


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/sync.service", "sync.service"),
        ("/system.slice/jobwrap-cron.service/payload", "jobwrap-cron.service"),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/", None),
    ],
)
def test_the_innermost_service_names_the_unit(tmp_path: Path, path: str, unit) -> None:
    assert unit_from_cgroup(write_cgroup(tmp_path, f"0::{path}\n")) == unit


def test_no_systemd_unit_outside_systemd_or_without_a_name(tmp_path: Path) -> None:
    cgroup = write_cgroup(tmp_path, "0::/system.slice/backup.service\n")
    assert systemd_metas({}, cgroup_file=cgroup) == []  # no INVOCATION_ID: not under systemd
    env = {"INVOCATION_ID": "abc"}
    assert systemd_metas(env, cgroup_file=tmp_path / "missing") == []


def test_an_explicit_unit_variable_wins(tmp_path: Path) -> None:
    cgroup = write_cgroup(tmp_path, "0::/system.slice/other.service\n")
    env = {"INVOCATION_ID": "abc", "JOBWRAP_SYSTEMD_UNIT": "jobwrap@nightly.service"}
    assert systemd_metas(env, cgroup_file=cgroup) == [("systemd_unit", "jobwrap@nightly.service")]


def test_ci_metas_come_before_the_systemd_unit(tmp_path: Path) -> None:
    cgroup = write_cgroup(tmp_path, "0::/system.slice/runner.service\n")
    env = {"JENKINS_URL": "https://ci", "INVOCATION_ID": "x"}
    assert environment_metas(env, cgroup_file=cgroup) == [
        ("ci", "jenkins"),
        ("systemd_unit", "runner.service"),
    ]
