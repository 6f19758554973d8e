"""`wanflow local` configuration from its flags and the documented environment, without starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wanflow_tools.cli import build_parser
from wanflow_tools.local_mode.runner import DEFAULT_POLL_INTERVAL_SECONDS, LocalModeError, LocalModeOptions
from wanflow_tools.local_mode.serve import busy_ports


def test_local_flags_and_their_defaults() -> None:
    args = build_parser().parse_args(["local"])
    assert (args.port, args.aws_port, args.state_dir, args.host) == (8000, 5000, ".wanflow", "127.0.0.1")
    args = build_parser().parse_args(
        ["local", "--port", "0", "--aws-port", "5001", "--state-dir", "/tmp/x", "--host", "127.0.0.2"]
    )
    assert (args.port, args.aws_port, args.state_dir, args.host) == (0, 5001, "/tmp/x", "127.0.0.2")


def test_demo_flags_and_their_defaults() -> None:
    args = build_parser().parse_args(["demo", "--out", "/tmp/videos"])
    assert args.out == "/tmp/videos"
    assert (args.model, args.resolution, args.duration) == ("wan2.2-i2v-flash", "480P", 5)
    assert Path(args.image).is_file()


def test_without_dashscope_settings_the_emulator_is_used() -> None:
    options = LocalModeOptions.from_environment({}, api_port=1, aws_port=2)
    assert options.dashscope_base_url is None
    assert options.poll_interval_seconds == DEFAULT_POLL_INTERVAL_SECONDS
    assert (options.api_port, options.aws_port) == (1, 2)


def test_environment_points_at_a_real_dashscope_and_sets_the_poll_interval() -> None:
    options = LocalModeOptions.from_environment(
        {
            "DASHSCOPE_BASE_URL": "https://dashscope-intl.aliyuncs.com/api/v1",
            "DASHSCOPE_API_KEY": "sk-real",
            "WANFLOW_POLL_INTERVAL_SECONDS": "0",
        }
    )
    assert options.dashscope_base_url == "https://dashscope-intl.aliyuncs.com/api/v1"
    assert options.dashscope_api_key == "sk-real"
    assert options.poll_interval_seconds == 0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DASHSCOPE_BASE_URL": "https://dashscope-intl.aliyuncs.com/api/v1"}, "DASHSCOPE_API_KEY must be"),
        ({"WANFLOW_POLL_INTERVAL_SECONDS": "soon"}, "must be a number of seconds"),
        ({"WANFLOW_POLL_INTERVAL_SECONDS": "-1"}, "must not be negative"),
    ],
)
def test_bad_environment_is_refused_with_the_reason(environ: dict[str, str], message: str) -> None:
    with pytest.raises(LocalModeError, match=message):
        LocalModeOptions.from_environment(environ)


def test_every_client_command_is_registered_with_the_wanflow_dispatcher() -> None:
    parser = build_parser()
    for argv in (
        ["submit", "cat.png"],
        ["status", "j"],
        ["wait", "j"],
        ["list"],
        ["cancel", "j"],
        ["download", "j"],
        ["local"],
        ["demo"],
    ):
        assert callable(parser.parse_args(argv).func), argv


def test_ports_already_listened_on_are_reported_before_starting() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        busy = busy_ports("127.0.0.1", {"--port": taken, "--aws-port": 0})
    assert busy == [f"--port 127.0.0.1:{taken} (Address already in use)"]
    assert busy_ports("127.0.0.1", {"--port": 0, "--aws-port": 0}) == []
