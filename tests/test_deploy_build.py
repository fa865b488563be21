"""Build what the README and each example build, for real, as far as a machine without Docker
allows: fresh virtualenvs, real `pip install`s of this source tree, real `jobwrap` runs.

Slow (each test makes a virtualenv and installs into it), still run in CI. pip uses the
machine's configuration (indexes, find-links, cache), so the installs are as offline as that.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import jobwrap
from tests.fakes.idlemon_server import TOKEN, IdlemonServer
from tests.test_examples import add_monitor
from tests.test_quality import readme_setup_commands

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
INSTALL_TIMEOUT = 600


def _dockerignore() -> list[str]:
    lines = (EXAMPLES / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(patterns: list[str]):
    """shutil.copytree's ignore for .dockerignore patterns (by name, which is all ours use)."""
    names = [p.removeprefix("**/") for p in patterns]

    def ignore(_directory: str, entries: list[str]) -> set[str]:
        return {e for e in entries if any(fnmatch.fnmatch(e, n) for n in names)}
    return ignore


def copy_source_tree(target: Path) -> Path:
    """The repository as a clean clone (or a Docker build context) holds it."""
    shutil.copytree(ROOT, target, ignore=_ignored(_dockerignore()), symlinks=True)
    return target


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without its virtualenv or PYTHONPATH: a fresh shell's."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_BREAK_SYSTEM_PACKAGES",
                        "PIP_USER", "PYTEST_ADDOPTS")}
    # A fake HOME must not cost pip its cache.
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    env.update(extra)
    return env


def sh(command: str, *, cwd: Path, env: dict[str, str], shell: str = "bash",
       timeout: float = INSTALL_TIMEOUT) -> subprocess.CompletedProcess:
    done = subprocess.run([shell, "-ec", command], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (command, done.stdout.decode(errors="replace")[-3000:],
                                  done.stderr.decode(errors="replace")[-3000:])
    return done


def _installed_from_this_tree(python: Path) -> None:
    code = "import jobwrap, sys; print(jobwrap.__version__, jobwrap.__file__)"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                         env=clean_env(), cwd="/", timeout=60)
    version, where = out.stdout.split()
    assert version == jobwrap.__version__
    assert not where.startswith(str(ROOT)), f"the test's own jobwrap: {where}"


# -- the README's set-up on a Python that refuses system installs -----------------------

def _externally_managed_python() -> Path | None:
    for python in (Path("/usr/bin/python3"), Path(sys.executable)):
        if not python.exists():
            continue
        stdlib = subprocess.run([str(python), "-c",
                                 "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        if stdlib and (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
            return python
    return None


EXTERNALLY_MANAGED = _externally_managed_python()


@pytest.mark.skipif(EXTERNALLY_MANAGED is None,
                    reason="no externally-managed Python (PEP 668) on this machine")
def test_the_readmes_two_setup_commands_work_with_a_python_that_refuses_system_installs(
        tmp_path):
    python = EXTERNALLY_MANAGED
    assert python is not None
    tree = copy_source_tree(tmp_path / "jobwrap")
    # The machine as a new user finds it: that Python first on PATH, no virtualenv active.
    env = clean_env(PATH=f"{python.parent}:/usr/bin:/bin", HOME=str(tmp_path / "home"))
    # The premise: a plain `pip install` into that Python is refused.
    refused = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "."],
                             cwd=tree, env=env, capture_output=True, timeout=120)
    assert refused.returncode != 0
    assert b"externally-managed-environment" in refused.stderr

    install_and_run, install_and_test = readme_setup_commands()
    ran = sh(install_and_run, cwd=tree, env=env)
    assert ran.stdout.endswith(b"hello\n"), ran.stdout
    venv_cfg = (tree / ".venv" / "pyvenv.cfg").read_text()
    assert f"home = {python.parent}" in venv_cfg
    _installed_from_this_tree(tree / ".venv" / "bin" / "python")

    # The test command as written; its pytest limited to one test so that it does not run
    # this suite (and this test) again.
    env["PYTEST_ADDOPTS"] = "-p no:cacheprovider tests/test_quality.py::test_version"
    tested = sh(install_and_test, cwd=tree, env=env)
    assert b"1 passed" in tested.stdout, tested.stdout


def _machine_install_blocks() -> dict[str, str]:
    """The blocks that install jobwrap for a machine's cron and units, by where they are."""
    found = {}
    for path in (ROOT / "README.md", EXAMPLES / "systemd-timer.md"):
        blocks = path.read_text().split("```")[1::2]
        [block] = [b for b in blocks if b.startswith("sh\n") and "/opt/jobwrap/bin/pip" in b]
        found[path.name] = block[len("sh\n"):]
    return found


@pytest.mark.parametrize("name", sorted(_machine_install_blocks()))
def test_the_machine_install_makes_usr_local_bin_jobwrap_from_the_checkout(tmp_path, name):
    # As root (sudo dropped), with /opt and /usr/local taken into a temporary root, on the
    # machine's own python3 (externally-managed where there is one).
    python = EXTERNALLY_MANAGED or Path(sys.executable)
    tree = copy_source_tree(tmp_path / "jobwrap")
    root = tmp_path / "root"
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    block = _machine_install_blocks()[name].replace("sudo ", "")
    env = clean_env(PATH=f"{python.parent}:/usr/bin:/bin", HOME=str(tmp_path / "home"))
    sh(IMAGE_PATH.sub(str(root) + "/", block), cwd=tree, env=env)
    linked = root / "usr" / "local" / "bin" / "jobwrap"
    assert linked.resolve() == root / "opt" / "jobwrap" / "bin" / "jobwrap"
    _installed_from_this_tree(root / "opt" / "jobwrap" / "bin" / "python")
    ran = subprocess.run([str(linked), "run", "--", "echo", "hello"], capture_output=True,
                         env=env, timeout=60)
    assert (ran.returncode, ran.stdout) == (0, b"hello\n"), ran.stderr


# -- examples/Dockerfile, replayed without a Docker engine -------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


# Absolute paths of the image, taken into the temporary root.
IMAGE_PATH = re.compile(r"(?<![\w./-])/(?=(?:src|opt|usr/local|etc|var|app)(?:/|\b))")


def test_the_dockerfile_builds_and_its_entrypoint_starts_when_replayed_in_a_temp_root(
        tmp_path):
    context = copy_source_tree(tmp_path / "context")
    root = tmp_path / "root"
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    # python:3.11-slim's interpreter and pip, at their place in the image: a fresh
    # virtualenv's, so that nothing a RUN line installs lands in this machine's Python.
    base = fresh_python(tmp_path)
    for name in ("python", "python3", "pip", "pip3"):
        # A script, not a symlink: Python finds its virtualenv next to the path it was run by.
        stub = root / "usr" / "local" / "bin" / name
        stub.write_text(f'#!/bin/sh\nexec {base / name} "$@"\n')
        stub.chmod(0o755)

    def into_root(text: str) -> str:
        return IMAGE_PATH.sub(str(root) + "/", text)

    env = clean_env(PATH=f"{root}/usr/local/bin:/usr/bin:/bin", HOME=str(tmp_path / "home"))
    entrypoint: list[str] = []
    for word, args in dockerfile_instructions((EXAMPLES / "Dockerfile").read_text()):
        if word == "COPY":
            source, target = shlex.split(args)
            src, dst = context / source, Path(into_root(target))
            assert src.exists(), f"COPY {source}: not in the build context (repo root)"
            if src.is_dir():
                shutil.copytree(src, dst, ignore=_ignored(_dockerignore()), symlinks=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        elif word == "RUN" and args.startswith("useradd "):
            # Not on this machine: the stand-in makes the home directory the image would get.
            argv = shlex.split(args)
            Path(into_root(argv[argv.index("--home-dir") + 1])).mkdir(parents=True)
        elif word == "RUN":
            sh(into_root(args), cwd=root, env=env, shell="sh")
        elif word == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = into_root(value)
        elif word == "ENTRYPOINT":
            entrypoint = [into_root(arg) for arg in json.loads(args)]
    assert not (root / "src").exists(), "the image keeps a copy of the source tree"
    _installed_from_this_tree(root / "opt" / "jobwrap" / "bin" / "python")
    assert (root / "usr" / "local" / "bin" / "jobwrap").resolve() == \
        root / "opt" / "jobwrap" / "bin" / "jobwrap"

    executable = shutil.which(entrypoint[0], path=env["PATH"])
    assert executable == f"{root}/usr/local/bin/jobwrap"
    supervisor = subprocess.Popen([executable, *entrypoint[1:]], env=env, cwd=root,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
    try:
        assert supervisor.stderr is not None
        first = supervisor.stderr.readline()
        assert b"event=ready" in first, first + supervisor.stderr.read()
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, err = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0, err
    assert (root / "var" / "lib" / "jobwrap").is_dir()


# -- the CI examples, their steps run --------------------------------------------------

def source_archive(tmp_path: Path) -> Path:
    """What a forge serves as a tag's source archive: the tree under one top directory."""
    tree = copy_source_tree(tmp_path / "checkout")
    archive = tmp_path / f"jobwrap-{jobwrap.__version__}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=f"jobwrap-{jobwrap.__version__}")
    return archive


def _install_from_this_tree(env: dict[str, str], tmp_path: Path) -> None:
    """Only the archive's address differs from CI: this tree, as the forge would serve it."""
    if "JOBWRAP_SOURCE" in env:
        assert env["JOBWRAP_SOURCE"].endswith(".tar.gz"), env["JOBWRAP_SOURCE"]
        env["JOBWRAP_SOURCE"] = str(source_archive(tmp_path))


def fresh_python(tmp_path: Path) -> Path:
    """A runner's or an image's own Python (setup-python, python:3.11-slim): a fresh venv."""
    venv = tmp_path / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300,
                   env=clean_env())
    return venv / "bin"


def workspace(tmp_path: Path) -> Path:
    """The checked-out repository of the job, holding the script the examples run."""
    repo = tmp_path / "workspace"
    repo.mkdir()
    (repo / "etl.sh").write_text("#!/bin/sh\necho 'loaded 42 rows'\n")
    (repo / "etl.sh").chmod(0o755)
    return repo


def _expand_secrets(value: str, secrets: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", lambda m: secrets[m.group(1)], value)


def test_the_github_actions_workflow_installs_jobwrap_and_reports_the_run(tmp_path):
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    [job] = workflow["jobs"].values()
    with IdlemonServer() as server:
        add_monitor(server, "nightly-etl")
        secrets = {"JOBWRAP_IDLEMON_TOKEN": TOKEN}
        env = clean_env(HOME=str(tmp_path / "home"), CI="true", GITHUB_ACTIONS="true",
                        JOBWRAP_IDLEMON_URL=server.api_url)
        env.update(workflow.get("env", {}))
        _install_from_this_tree(env, tmp_path)
        repo, ran = None, []
        for step in job["steps"]:
            uses = step.get("uses", "")
            if uses.startswith("actions/checkout@"):
                repo = workspace(tmp_path)
            elif uses.startswith("actions/setup-python@"):
                env["PATH"] = f"{fresh_python(tmp_path)}:{env['PATH']}"
            else:
                assert "run" in step and repo is not None, step
                step_env = {k: _expand_secrets(str(v), secrets)
                            for k, v in step.get("env", {}).items()}
                ran.append(sh(step["run"], cwd=repo, env={**env, **step_env}))
        assert [log.slug for log in server.logs] == ["nightly-etl"], ran[-1].stderr
    assert ran[-1].stdout == b"loaded 42 rows\n"


def test_the_gitlab_job_installs_jobwrap_and_reports_the_run(tmp_path):
    [job] = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text()).values()
    assert job["image"].startswith("python:")
    with IdlemonServer() as server:
        add_monitor(server, "nightly-etl")
        env = clean_env(HOME=str(tmp_path / "home"), CI="true", GITLAB_CI="true",
                        CI_PIPELINE_SOURCE="schedule", JOBWRAP_IDLEMON_URL=server.api_url,
                        JOBWRAP_IDLEMON_TOKEN=TOKEN)
        env.update(job.get("variables", {}))
        _install_from_this_tree(env, tmp_path)
        env["PATH"] = f"{fresh_python(tmp_path)}:{env['PATH']}"
        # The runner runs before_script and script in one shell that stops at an error.
        ran = sh("\n".join(job["before_script"] + job["script"]), cwd=workspace(tmp_path),
                 env=env, shell="sh")
        assert [log.slug for log in server.logs] == ["nightly-etl"], ran.stderr
    assert ran.stdout.endswith(b"loaded 42 rows\n")
