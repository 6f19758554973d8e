"""The client CLI's exit codes, one meaning each, so that scripts can branch on them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # The job ended FAILED or CANCELED (`wait`, `submit --wait`, `download` of such a job).
    JOB_UNSUCCESSFUL = 1
    # The request is wrong and repeating it will not help: bad arguments, HTTP 400/401/403/404/409/413.
    # argparse also exits 2 on bad arguments, so the meaning is the same whichever layer noticed.
    USAGE = 2
    # Try again later: HTTP 429 or 5xx, connection refused or reset.
    UNAVAILABLE = 3
    # A deadline passed: `wait --timeout`, or an HTTP request timed out.
    TIMEOUT = 4
    # The downloaded video does not match the job's `output.bytes`/`output.sha256`; nothing was saved.
    VERIFICATION_FAILED = 5
