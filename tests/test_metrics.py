"""`--metrics-dir`: node_exporter textfile metrics, parsed with prometheus_client's parser."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobwrap.run.metrics import escape_label, textfile_name
from tests.helpers import JOBWRAP, jobwrap, py

ROOT = Path(__file__).resolve().parent.parent


def _samples(path: Path) -> dict[tuple[str, tuple], float]:
    text = path.read_text(encoding="utf-8")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_textfile_holds_the_last_run_and_the_counts_from_the_history(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    base = ["run", "-m", "backup", "--report", "never", "--metrics-dir", str(metrics)]
    ok = py("print('processed 42 rows; took 1.5e3 ms; host abc')")
    for _ in range(2):
        assert jobwrap(*base, "--meta", "rows=processed (\\d+) rows", "--", *ok).returncode == 0
    before_fail = time.time()
    failed = jobwrap(*base, "--meta", "rows=processed (\\d+) rows", "--meta", "ms=took (\\S+) ms",
                     "--meta", "word=host (\\w+)", "--",
                     *py("print('processed 7 rows; took 1.5e3 ms; host abc'); raise SystemExit(3)"))
    assert failed.returncode == 3
    assert failed.stderr == b""
    path = metrics / "jobwrap_backup.prom"
    assert sorted(os.listdir(metrics)) == ["jobwrap_backup.prom"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    samples = _samples(path)
    job = (("job", "backup"),)
    assert samples[("jobwrap_runs_total", (*job, ("result", "success")))] == 2
    assert samples[("jobwrap_runs_total", (*job, ("result", "failure")))] == 1
    assert samples[("jobwrap_last_exit_code", job)] == 3
    assert samples[("jobwrap_running", job)] == 0
    last_run = samples[("jobwrap_last_run_timestamp_seconds", job)]
    last_ok = samples[("jobwrap_last_success_timestamp_seconds", job)]
    assert last_ok < before_fail <= last_run + 1 and last_run <= time.time()
    assert 0 < samples[("jobwrap_last_duration_seconds", job)] < 30
    assert samples[("jobwrap_meta", (*job, ("name", "rows")))] == 7
    assert samples[("jobwrap_meta", (*job, ("name", "ms")))] == 1500
    assert samples[("jobwrap_meta", (*job, ("name", "stdout_lines")))] == 1
    assert not any(name == "jobwrap_meta" and ("name", "word") in labels
                   for name, labels in samples)  # not a number: not a metric
    assert not any(name == "jobwrap_meta" and ("name", "run_id") in labels
                   for name, labels in samples)


def test_the_running_gauge_is_1_while_the_run_is_in_progress(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    ready = tmp_path / "ready"
    code = f"import sys; open({str(ready)!r}, 'w').write('x'); sys.stdin.read()"
    proc = subprocess.Popen([*JOBWRAP, "run", "-m", "slow", "--metrics-dir", str(metrics), "--",
                             *py(code)], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = _samples(metrics / "jobwrap_slow.prom")
        assert samples[("jobwrap_running", (("job", "slow"),))] == 1
        assert ("jobwrap_last_exit_code", (("job", "slow"),)) not in samples  # no run yet
        assert samples[("jobwrap_last_success_timestamp_seconds", (("job", "slow"),))] == 0
    finally:
        proc.communicate(timeout=30)
    samples = _samples(metrics / "jobwrap_slow.prom")
    assert samples[("jobwrap_running", (("job", "slow"),))] == 0
    assert samples[("jobwrap_last_exit_code", (("job", "slow"),))] == 0


def test_label_values_are_escaped_per_the_exposition_format(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    code = 'print("quote \\" backslash \\\\")\nprint("a real newline in the argument")'
    assert "\n" in code and '"' in code and "\\" in code
    argv = py(code)
    # The job of a run without a monitor is its command line: quotes, backslashes, newlines.
    result = jobwrap("run", "--metrics-dir", str(metrics), "--", *argv)
    assert result.returncode == 0, result.stderr
    files = os.listdir(metrics)
    assert files == [textfile_name(shlex.join(argv))]
    assert files[0].startswith("jobwrap_") and files[0].endswith(".prom")
    assert "/" not in files[0] and " " not in files[0]
    samples = _samples(metrics / files[0])
    assert samples[("jobwrap_last_exit_code", (("job", shlex.join(argv)),))] == 0
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_the_metrics_dir_comes_from_the_environment_and_the_config(tmp_path):
    from_env = tmp_path / "env"
    from_env.mkdir()
    jobwrap("run", "-m", "a", "--", "true", env={"JOBWRAP_METRICS_DIR": str(from_env)})
    assert os.listdir(from_env) == ["jobwrap_a.prom"]
    from_file = tmp_path / "file"
    from_file.mkdir()
    config = tmp_path / "config" / "jobwrap" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[run]\nmetrics_dir = "{from_file}"\n')
    jobwrap("run", "-m", "b", "--", "true")
    assert os.listdir(from_file) == ["jobwrap_b.prom"]


def test_an_unusable_metrics_dir_is_a_warning_and_the_status_stands(tmp_path):
    result = jobwrap("run", "--metrics-dir", str(tmp_path / "missing"), "--", *py(
        "raise SystemExit(4)"))
    assert result.returncode == 4
    lines = result.stderr.decode().splitlines()
    assert lines and all(line.startswith("jobwrap: warning: cannot write the metrics")
                         for line in lines)
    assert len(lines) == 1  # said once, not at start and again at the end
    assert jobwrap("history").stdout.count(b"\n") == 2  # header and the run


def test_the_metrics_module_is_not_imported_without_the_option():
    code = ("import sys; from jobwrap.cli.main import main\n"
            "try:\n    main(['run', '--', 'true'])\nexcept SystemExit:\n    pass\n"
            "assert 'jobwrap.run.metrics' not in sys.modules\n"
            "assert 'prometheus_client' not in sys.modules\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_the_example_alert_rule_and_node_exporter_setup_are_valid():
    rules = yaml.safe_load((ROOT / "examples" / "prometheus-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert any("jobwrap_last_success_timestamp_seconds" in e and "26 * 3600" in e for e in exprs)
    from tests.test_examples import check_invocation, code_blocks, invocations_in_text

    text = (ROOT / "examples" / "node-exporter.md").read_text()
    commands = invocations_in_text(code_blocks(text))
    assert any("--metrics-dir" in argv for argv in commands)
    for argv in commands:
        check_invocation(argv)


def test_a_run_skipped_by_the_lock_leaves_the_running_gauge_of_the_run_in_progress(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    ready = tmp_path / "ready"
    code = f"import sys; open({str(ready)!r}, 'w').write('x'); sys.stdin.read()"
    base = [*JOBWRAP, "run", "-m", "long", "--lock", "--metrics-dir", str(metrics), "--"]
    proc = subprocess.Popen([*base, *py(code)], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        skipped = subprocess.run([*base, "true"], capture_output=True, timeout=60)
        assert skipped.returncode == 75
        samples = _samples(metrics / "jobwrap_long.prom")
        job = (("job", "long"),)
        assert samples[("jobwrap_running", job)] == 1
        assert samples[("jobwrap_runs_total", (*job, ("result", "skipped")))] == 1
    finally:
        proc.communicate(timeout=30)
    assert _samples(metrics / "jobwrap_long.prom")[("jobwrap_running", job)] == 0
