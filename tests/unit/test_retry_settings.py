"""The settings of provider-side retries, from the environment the template gives every function."""

from __future__ import annotations

import pytest

from wanflow.settings import ConfigurationError, Settings

REQUIRED = {
    "WANFLOW_JOBS_TABLE": "jobs",
    "WANFLOW_INTAKE_BUCKET": "intake",
    "WANFLOW_OUTPUT_BUCKET": "output",
    "WANFLOW_TOPIC_ARN": "arn:aws:sns:ap-southeast-1:123456789012:topic",
    "WANFLOW_DASHSCOPE_SECRET_ARN": "arn:aws:secretsmanager:ap-southeast-1:123456789012:secret:dashscope",
}


def test_retries_default_to_two_after_a_30_second_backoff() -> None:
    settings = Settings.from_environment(REQUIRED)
    assert (settings.provider_retries, settings.provider_retry_backoff_seconds) == (2, 30)


def test_retries_are_read_from_the_environment_and_0_turns_them_off() -> None:
    environ = {**REQUIRED, "WANFLOW_PROVIDER_RETRIES": "0", "WANFLOW_PROVIDER_RETRY_BACKOFF_SECONDS": "1"}
    settings = Settings.from_environment(environ)
    assert (settings.provider_retries, settings.provider_retry_backoff_seconds) == (0, 1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WANFLOW_PROVIDER_RETRIES", "6"),
        ("WANFLOW_PROVIDER_RETRIES", "-1"),
        ("WANFLOW_PROVIDER_RETRY_BACKOFF_SECONDS", "x"),
    ],
)
def test_out_of_range_retry_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environment({**REQUIRED, name: value})
