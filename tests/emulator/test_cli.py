"""`wanflow emulator`: the CLI dispatcher, the flags, and a real process that prints its URL and stops on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from emulator_support import ASYNC, CREATE, body, wait_until

from wanflow_tools import cli
from wanflow_tools.emulator.commands import config_from_args


def parse(*argv: str):
    return cli.build_parser().parse_args(["emulator", *argv])


def test_the_cli_finds_the_emulator_subcommand():
    args = parse()
    assert args.func.__module__ == "wanflow_tools.emulator.commands"
    config = config_from_args(args)
    assert (config.host, config.port, config.api_key) == ("127.0.0.1", 8080, None)
    assert (config.task_ttl_seconds, config.url_ttl_seconds) == (86_400, 86_400)
    assert config.faults == []
    assert config.rate_limits is True
    assert config.max_running == {}


def test_flags_become_the_config(tmp_path: Path):
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps([{"on": "query", "status": 500, "times": 2}]))
    args = parse(
        "--host", "127.0.0.2", "--port", "0", "--api-key", "sk-x",
        "--pending-seconds", "0.5", "--running-seconds", "0",
        "--task-ttl-seconds", "60", "--url-ttl-seconds", "30",
        "--faults", str(plan), "--region", "ap-southeast-1", "--no-rate-limits",
        "--max-running", "wan2.6-i2v-flash=12", "--max-running", "wan2.1-i2v-turbo=3",
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.host, config.port, config.api_key) == ("127.0.0.2", 0, "sk-x")
    assert (config.pending_seconds, config.running_seconds) == (0.5, 0.0)
    assert (config.task_ttl_seconds, config.url_ttl_seconds) == (60.0, 30.0)
    assert config.faults == [{"on": "query", "status": 500, "times": 2}]
    assert config.region == "ap-southeast-1"
    assert config.rate_limits is False
    assert config.max_running == {"wan2.6-i2v-flash": 12, "wanx2.1-i2v-turbo": 3}  # canonical names


@pytest.mark.parametrize("value", ["no-such-model=3", "wan2.6-i2v-flash=0", "wan2.6-i2v-flash"])
def test_bad_max_running_is_refused(value: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        parse("--max-running", value)
    assert exited.value.code == 2


def test_negative_seconds_are_refused(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        parse("--pending-seconds", "-1")
    assert exited.value.code == 2


def test_bad_fault_plan_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps([{"on": "nowhere"}]))
    assert cli.main(["emulator", "--port", "0", "--faults", str(plan)]) == 2
    assert "fault #1" in capsys.readouterr().err


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]):
    assert cli.main([]) == 2
    assert "emulator" in capsys.readouterr().err


@pytest.mark.slow
def test_emulator_process_serves_and_stops_cleanly_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "wanflow_tools.cli", "emulator", "--port", "0", "--pending-seconds", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        ready = wait_until(lambda: next((line for line in lines if "ready:" in line), None), what="the ready line")
        base_url = ready.split("ready:", 1)[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v1")
        reply = httpx.post(base_url + CREATE, json=body(), headers=ASYNC)
        assert reply.status_code == 200

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        reader.join(5)
        assert any("stopped" in line for line in lines)
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
