"""Turns under DashScope's account limits for the whole deployment, whichever Lambda asks.

Task queries share the deployment's query budget (`Settings.query_budget_rps`, below the account's 20/s so that
other users of the key keep room); creates share each model's submit rate (the capability table). Turns are
reserved in one shared place (`RateLimiter`, a DynamoDB item per key), so that ten concurrent Lambdas together
stay under the limit as one would.

Turns are spaced for 90% of the limit: DashScope counts requests in a sliding one-second window as they arrive, and
the gap absorbs the network's jitter between reserving a turn and the request reaching DashScope.
"""

from __future__ import annotations

from wanflow.capabilities import ModelSpec
from wanflow.errors import RetryLaterError
from wanflow.usecases.context import Dependencies

QUERY_KEY = "dashscope-query"
HEADROOM = 0.9


def query_turn(deps: Dependencies, *, max_wait_seconds: float) -> bool:
    """Wait for a query turn under the budget; False (nothing reserved) if none is free within `max_wait_seconds`."""
    return _turn(deps, QUERY_KEY, deps.settings.query_budget_rps, max_wait_seconds)


def create_turn(deps: Dependencies, spec: ModelSpec, *, max_wait_seconds: float) -> bool:
    """Wait for a create turn under the model's submit rate; False if none is free within `max_wait_seconds`."""
    return _turn(deps, f"dashscope-create#{spec.name}", spec.submit_rps, max_wait_seconds)


def query_turn_or_retry_later(deps: Dependencies, *, max_wait_seconds: float = 10.0) -> None:
    """For steps that simply retry later (the finalizer, the sweeper): RetryLaterError when the budget is full."""
    if not query_turn(deps, max_wait_seconds=max_wait_seconds):
        raise RetryLaterError(
            "the deployment's DashScope query budget is in use; try again shortly", code="QueryBudget"
        )


def _turn(deps: Dependencies, key: str, per_second: float, max_wait_seconds: float) -> bool:
    wait = deps.limiter.reserve(key, per_second * HEADROOM, max_wait_seconds=max_wait_seconds)
    if wait is None:
        return False
    if wait > 0:
        deps.sleep(wait)
    return True
