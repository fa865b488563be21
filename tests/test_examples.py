"""Every example and unit file parses, and every jobwrap command in them is a valid invocation."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobwrap.cli.main import cli
from jobwrap.cron.crontab import read_crontab
from jobwrap.output.patterns import parse_pattern_spec
from tests.fakes.idlemon_server import TOKEN, IdlemonServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
UNITS = ROOT / "systemd"
INVOCATION = re.compile(r"(?:^|[\s\"'`=])((?:/usr/local/bin/)?jobwrap (?:run|cron|next)\b[^\n`]*)")


def check_invocation(argv: list[str]) -> None:
    """Parse argv with the real CLI (nothing runs) and validate what click cannot."""
    assert Path(argv[0]).name == "jobwrap", argv
    name = argv[1]
    sub = cli.commands[name].make_context(name, argv[2:])
    for spec in sub.params.get("metas", ()):
        parse_pattern_spec(spec, "meta")
    for spec in sub.params.get("counts", ()):
        parse_pattern_spec(spec, "count")
    if name == "run":
        assert sub.params["command"], f"no command in {argv}"


def invocations_in_text(text: str, only=lambda line: True) -> list[list[str]]:
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not only(line):
            continue
        for match in INVOCATION.finditer(line):
            command = match.group(1).replace("%i", "backup").replace("%n", "x")
            found.append(shlex.split(command, comments=True))
    return found


def code_blocks(text: str) -> str:
    return "\n".join(text.split("```")[1::2])


def _ini_blocks(text: str) -> list[str]:
    return [block[len("ini\n"):] for block in text.split("```")[1::2]
            if block.startswith("ini\n")]


def test_the_example_crontabs_parse_and_their_jobwrap_lines_are_valid():
    for name in ("crontab", "jobwrap-cron.crontab"):
        table = read_crontab(EXAMPLES / name)
        assert table.errors == (), table.errors
        assert table.entries
        for entry in table.entries:
            if entry.command.startswith("jobwrap "):
                check_invocation(shlex.split(entry.command))


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml",
                                  "kubernetes-cronjob.yaml", "kubernetes-fleet-lock.yaml"])
def test_yaml_examples_parse_and_their_commands_are_valid(name):
    text = (EXAMPLES / name).read_text()
    documents = list(yaml.safe_load_all(text))
    assert documents and all(documents)
    commands = invocations_in_text(text)
    for doc in documents:
        commands += list(_command_arrays(doc))
    assert commands, f"{name} shows no jobwrap command"
    for argv in commands:
        check_invocation(argv)


def _command_arrays(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("command", "args") and isinstance(value, list) and value \
                    and value[0] == "jobwrap":
                yield [str(v) for v in value]
            else:
                yield from _command_arrays(value)
    elif isinstance(node, list):
        for item in node:
            yield from _command_arrays(item)


def _kubernetes_documents() -> dict[str, dict]:
    docs = yaml.safe_load_all((EXAMPLES / "kubernetes-cronjob.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def test_kubernetes_cronjob_forbids_concurrency():
    doc = _kubernetes_documents()["CronJob"]
    assert doc["spec"]["concurrencyPolicy"] == "Forbid"


def test_kubernetes_state_outlives_the_pod_on_a_claim_the_file_defines():
    # An emptyDir dies with the pod and takes the reports an outage held back with it.
    docs = _kubernetes_documents()
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[env["JOBWRAP_STATE_DIR"]])
    assert "emptyDir" not in volume
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == claim


def test_kubernetes_cronjobs_in_two_clusters_share_one_lock_and_claim_the_slot():
    (doc,) = yaml.safe_load_all((EXAMPLES / "kubernetes-fleet-lock.yaml").read_text())
    spec = doc["spec"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    argv = container["command"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JOBWRAP_LOCK_URL"]["value"].startswith(("redis://", "rediss://"))
    assert "secretKeyRef" in env["JOBWRAP_LOCK_PASSWORD"]["valueFrom"]
    assert "$(CLUSTER_NAME)" in env["JOBWRAP_HOSTNAME"]["value"]
    assert "--lock" in argv
    # The slot is the CronJob's own fire time, in the zone jobwrap reads the schedule in.
    assert argv[argv.index("--schedule") + 1] == spec["schedule"]
    assert spec["timeZone"] in ("Etc/UTC", "UTC") and env["TZ"]["value"] == "UTC"
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0  # a skip is not retried


# `pip install jobwrap`, `pip install -U jobwrap==1.0`: a registry that has no jobwrap.
REGISTRY_INSTALL = re.compile(r"pip3? install\b[^\n;&|]*?(?<![\w./@-])jobwrap\b(?![\w./-])")


@pytest.mark.parametrize("path", [*sorted(EXAMPLES.iterdir()), *sorted(UNITS.iterdir()),
                                  ROOT / "README.md"], ids=lambda p: p.name)
def test_nothing_installs_jobwrap_from_a_package_registry(path):
    # jobwrap is not published: every example installs it from its repository.
    found = REGISTRY_INSTALL.findall(path.read_text())
    assert not found, found


def test_the_regex_that_finds_registry_installs_tells_them_from_source_installs():
    assert REGISTRY_INSTALL.search("RUN pip install --no-cache-dir jobwrap tzdata")
    assert REGISTRY_INSTALL.search("pip install jobwrap==1.2")
    for source in ("/opt/jobwrap/bin/pip install /src tzdata", "pip install ./jobwrap",
                   'pip install "jobwrap @ git+https://example.com/jobwrap.git"',
                   "pip install -e '.[test]'"):
        assert not REGISTRY_INSTALL.search(source.replace('"jobwrap @', '"x @')), source


@pytest.mark.parametrize("name", ["jobwrap@.service", "jobwrap-cron.service"])
def test_the_state_directory_is_private_to_its_owner(name):
    lines = (UNITS / name).read_text().splitlines()
    assert "StateDirectoryMode=0700" in lines


def test_dockerfile_runs_jobwrap_cron_as_its_entrypoint():
    lines = (EXAMPLES / "Dockerfile").read_text().splitlines()
    entry = next(line for line in lines if line.startswith("ENTRYPOINT"))
    argv = json.loads(entry.split(None, 1)[1])
    assert argv[:2] == ["jobwrap", "cron"]
    check_invocation(argv)
    for line in lines:
        if line.startswith("RUN ") and "jobwrap cron --check" in line:
            check_invocation(shlex.split(line[4:]))


@pytest.mark.parametrize("path", sorted(UNITS.iterdir()) + [EXAMPLES / "systemd-timer.md"],
                         ids=lambda p: p.name)
def test_unit_files_run_valid_jobwrap_commands(path):
    text = path.read_text()
    if path.suffix == ".md":
        commands = invocations_in_text(code_blocks(text))
    else:
        commands = invocations_in_text(text, only=lambda line: line.startswith("Exec"))
    if path.suffix == ".timer":
        # A timer runs no command itself: the service it activates (Unit=, else the service of
        # the same name) must be one of ours and run jobwrap.
        assert re.search(r"^OnCalendar=\S", text, re.M), f"{path.name} has no default schedule"
        named = re.search(r"^Unit=(\S+)", text, re.M)
        service = UNITS / (named.group(1) if named else path.stem + ".service")
        assert service.is_file(), f"{path.name} activates {service.name}, which is not shipped"
        commands = invocations_in_text(service.read_text(),
                                       only=lambda line: line.startswith("ExecStart="))
        assert [(Path(argv[0]).name, argv[1]) for argv in commands] == [("jobwrap", "run")]
        return
    assert commands, f"{path.name} runs no jobwrap command"
    for argv in commands:
        check_invocation(argv)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    # verify checks that ExecStart binaries exist: give it a root where they do.
    root = tmp_path / "root"
    for exe in ("usr/local/bin/jobwrap", "bin/kill", "usr/local/lib/jobwrap/backup"):
        path = root / exe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    system = root / "etc" / "systemd" / "system"
    shutil.copytree("/lib/systemd/system", root / "lib" / "systemd" / "system", symlinks=True)
    system.mkdir(parents=True)
    units = []
    for unit in UNITS.iterdir():
        target = system / unit.name.replace("@.", "@backup.")
        shutil.copy(unit, target)
        units.append(str(target))
    # The drop-ins systemd-timer.md tells the reader to write, applied to the instance.
    for block in _ini_blocks((EXAMPLES / "systemd-timer.md").read_text()):
        unit = "jobwrap@backup.timer" if "[Timer]" in block else "jobwrap@backup.service"
        dropin = system / f"{unit}.d" / "override.conf"
        dropin.parent.mkdir(exist_ok=True)
        dropin.write_text(block)
    assert (system / "jobwrap@backup.service.d").is_dir()
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # An unknown or misspelt key is only a warning, and systemd runs the unit without it.
    assert "ignoring" not in result.stderr.lower(), result.stderr


def add_monitor(server: IdlemonServer, slug: str) -> None:
    first = server.project["monitors"][0]
    server.project["monitors"].append(dict(first, slug=slug, id=f"{slug}-0000"))


def _section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


def test_the_readmes_reporting_snippet_gets_the_token_to_a_job_that_cron_starts(tmp_path):
    # cron starts jobs with HOME, LOGNAME, SHELL and PATH, not the variables of the shell that
    # ran `crontab -e`: the snippet must get the token to jobwrap some other way.
    section = _section((ROOT / "README.md").read_text(), "## Reporting to Idlemon")
    blocks = section.split("```")[1::2]
    setup = next(b for b in blocks if b.startswith("sh\n"))[len("sh\n"):]
    crontab_line = next(b for b in blocks if "jobwrap run" in b and not b.startswith("sh"))
    home = tmp_path / "home"
    home.mkdir()
    shell = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(["bash", "-euc", setup], input=TOKEN.encode() + b"\n", env=shell,
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    token_file = home / ".config" / "jobwrap" / "idlemon-token"
    assert token_file.stat().st_mode & 0o077 == 0, "the token file is readable by others"

    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "jobwrap").write_text(
        f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m jobwrap \"$@\"\n")
    (bindir / "jobwrap").chmod(0o755)
    table = tmp_path / "crontab"
    job = bindir / "backup.sh"
    job.write_text("#!/bin/sh\necho backed up\n")
    job.chmod(0o755)
    table.write_text(crontab_line.strip().replace("/usr/local/bin/backup.sh", str(job)) + "\n")
    [entry] = read_crontab(table).entries
    with IdlemonServer() as server:
        add_monitor(server, "backup")
        config = home / ".config" / "jobwrap" / "config.toml"
        # Only the address differs from a real machine: the fake Idlemon on loopback.
        config.write_text(config.read_text() + f'url = "{server.api_url}"\n')
        cron_env = {"HOME": str(home), "LOGNAME": "me", "SHELL": "/bin/sh",
                    "PATH": f"{bindir}:/usr/bin:/bin",
                    "JOBWRAP_SYSTEM_CONFIG": str(tmp_path / "no-system-config.toml"),
                    # and the test's own state dir (as root the default is /var/lib/jobwrap)
                    "JOBWRAP_STATE_DIR": os.environ["JOBWRAP_STATE_DIR"]}
        ran = subprocess.run(["/bin/sh", "-c", entry.command], env=cron_env,
                             capture_output=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == b"backed up\n"
        assert [log.slug for log in server.logs] == ["backup"], ran.stderr
