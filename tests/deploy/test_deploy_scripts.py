"""deploy/scripts: shellcheck-clean, and start.sh's own logic (bootstrap or not, the Ascend environment, signals
during a bootstrap) against a stand-in `vitserve` on PATH; the real one is exercised in test_start_script.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.k8s_objects import DEPLOY

SCRIPTS = sorted((DEPLOY / "scripts").glob("*.sh"))
START_SH = DEPLOY / "scripts" / "start.sh"

# Records each call; `bootstrap` behaves as FAKE_BOOTSTRAP says (ok | fail | hang), `serve` prints what it got.
FAKE_VITSERVE = """#!/usr/bin/env bash
echo "called: $*" >> "$FAKE_LOG"
case "$1" in
  bootstrap)
    case "$FAKE_BOOTSTRAP" in
      ok) exit 0 ;;
      fail) exit 3 ;;
      hang)
        sleep 60 &
        nap=$!
        trap 'echo "bootstrap: got SIGTERM" >> "$FAKE_LOG"; kill "$nap"; exit 143' TERM
        touch "$FAKE_LOG.started"
        wait "$nap" ;;
    esac ;;
  serve) echo "serving with FROM_ASCEND_ENV=${FROM_ASCEND_ENV:-unset}" ;;
esac
"""


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vitserve"
    fake.write_text(FAKE_VITSERVE)
    fake.chmod(0o755)
    return {
        # The stand-in first; then the real interpreter, which start.sh uses to ask the store.
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "VITSERVE_STORE_ROOT": str(tmp_path / "empty-store"),
        "ASCEND_ENV_SCRIPT": str(tmp_path / "no-such-set_env.sh"),
    }


def calls(env: dict[str, str]) -> list[str]:
    log = Path(env["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def run_start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(START_SH), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script: Path) -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    out = subprocess.run([str(shellcheck), str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_an_empty_store_is_bootstrapped_then_served(fake_env: dict[str, str]) -> None:
    out = run_start(fake_env | {"VITSERVE_BOOTSTRAP": "1", "FAKE_BOOTSTRAP": "ok"}, "--port", "9")
    assert out.returncode == 0, out.stderr
    assert calls(fake_env) == ["called: bootstrap", "called: serve --port 9"]
    assert "is empty: training the default digits model" in out.stderr


def test_without_bootstrap_it_serves_at_once(fake_env: dict[str, str], tmp_path: Path) -> None:
    ascend_env = tmp_path / "set_env.sh"
    ascend_env.write_text("export FROM_ASCEND_ENV=yes\necho $UNSET_IN_CANN_SCRIPTS >/dev/null\n")
    out = run_start(fake_env | {"VITSERVE_BOOTSTRAP": "0", "ASCEND_ENV_SCRIPT": str(ascend_env)})
    assert out.returncode == 0, out.stderr
    assert calls(fake_env) == ["called: serve"]
    assert "serving with FROM_ASCEND_ENV=yes" in out.stdout  # the CANN environment reaches the server


def test_a_failed_bootstrap_stops_the_start(fake_env: dict[str, str]) -> None:
    out = run_start(fake_env | {"VITSERVE_BOOTSTRAP": "1", "FAKE_BOOTSTRAP": "fail"})
    assert out.returncode == 1
    assert calls(fake_env) == ["called: bootstrap"]
    assert "bootstrap failed" in out.stderr


def test_sigterm_during_bootstrap_reaches_it_and_stops_the_start(fake_env: dict[str, str]) -> None:
    env = fake_env | {"VITSERVE_BOOTSTRAP": "1", "FAKE_BOOTSTRAP": "hang"}
    proc = subprocess.Popen(["bash", str(START_SH)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        started = Path(env["FAKE_LOG"] + ".started")
        deadline = time.monotonic() + 30
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the bootstrap never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # what dumb-init --single-child forwards on `docker stop`
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "bootstrap: got SIGTERM" in calls(env)
    assert not any(c.startswith("called: serve") for c in calls(env)), "the server must not start after a stop"
