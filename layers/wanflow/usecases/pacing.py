"""Turns under DashScope's account limits for the whole deployment, whichever Lambda asks.

Task queries share the deployment's query budget (`Settings.query_budget_rps`, below the account's 20/s so that
other users of the key keep room); creates share each model's submit rate (the capability table). Turns are
reserved in one shared place (`RateLimiter`, a DynamoDB item per key), so that ten concurrent Lambdas together
stay under the limit as one would.

DashScope counts requests in a sliding one-second window as they arrive, so turns are spaced for a fraction `h` of
the limit: any `n + 1` turns under a limit of `n` per second then span `1 / h` seconds, and the time from a turn to its
request's arrival may vary by up to `1 / h - 1` seconds, at every rate, without a 429. Queries are spaced for 90% of a
budget that is itself below the account's limit. Creates are spaced for 75% of the model's submit rate (a third of a
second): between a create's turn and its arrival come the job's claim (a DynamoDB write) and, on a cold start, a new
TLS connection, which vary by more than the 0.11 s that 90% leaves. Creates are never the bottleneck (a model runs a
few tasks at a time, for minutes each), so the margin costs nothing.
"""

from __future__ import annotations

from wanflow.capabilities import ModelSpec
from wanflow.errors import RetryLaterError
from wanflow.usecases.context import Dependencies

QUERY_KEY = "dashscope-query"
HEADROOM = 0.9
CREATE_HEADROOM = 0.75


def query_turn(deps: Dependencies, *, max_wait_seconds: float) -> bool:
    """Wait for a query turn under the budget; False (nothing reserved) if none is free within `max_wait_seconds`."""
    return _turn(deps, QUERY_KEY, deps.settings.query_budget_rps, max_wait_seconds)


def create_turn(deps: Dependencies, spec: ModelSpec, *, max_wait_seconds: float) -> bool:
    """Wait for a create turn under the model's submit rate; False if none is free within `max_wait_seconds`."""
    return _turn(deps, f"dashscope-create#{spec.name}", spec.submit_rps, max_wait_seconds, headroom=CREATE_HEADROOM)


def query_turn_or_retry_later(deps: Dependencies, *, max_wait_seconds: float = 10.0) -> None:
    """For steps that simply retry later (the finalizer, the sweeper): RetryLaterError when the budget is full."""
    if not query_turn(deps, max_wait_seconds=max_wait_seconds):
        raise RetryLaterError(
            "the deployment's DashScope query budget is in use; try again shortly", code="QueryBudget"
        )


def _turn(
    deps: Dependencies, key: str, per_second: float, max_wait_seconds: float, *, headroom: float = HEADROOM
) -> bool:
    wait = deps.limiter.reserve(key, per_second * headroom, max_wait_seconds=max_wait_seconds)
    if wait is None:
        return False
    if wait > 0:
        deps.sleep(wait)
    return True
