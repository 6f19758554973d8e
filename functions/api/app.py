"""HTTP API (docs/product.md section 2): parse the request, call the domain, shape the reply."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

from wanflow.callers import Caller, caller_from_api_event
from wanflow.errors import WanflowError
from wanflow.http import (
    batch_id_from_path,
    error_response,
    idempotency_key_of,
    job_id_from_path,
    list_query,
    page_query,
    parse_json_body,
)
from wanflow.observability import inject_lambda_context, logger, metrics, tracer
from wanflow.telemetry import BATCHES_SUBMITTED
from wanflow.usecases import batches, budget, queries
from wanflow.usecases.cancel import cancel_job as cancel
from wanflow.usecases.models import CACHE_SECONDS, model_catalog
from wanflow.usecases.submit import submit_api_job
from wanflow.usecases.views import job_view
from wanflow.usecases.webhooks import redeliver
from wanflow.wiring import dependencies

app = APIGatewayHttpResolver()


def _caller() -> Caller:
    return caller_from_api_event(app.current_event.raw_event, dependencies().settings.admins)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body), headers=headers)


@app.post("/v1/jobs")
def create_job() -> Response:
    event = app.current_event
    body = parse_json_body(event.body, base64_encoded=bool(event.is_base64_encoded))
    job, _ = submit_api_job(
        dependencies(),
        body,
        idempotency_key=idempotency_key_of(event.headers),
        caller=_caller(),
    )
    logger.set_correlation_id(job.job_id)
    return _json(202, job_view(dependencies(), job), {"Location": f"/v1/jobs/{job.job_id}"})


@app.get("/v1/jobs")
def list_jobs() -> Response:
    status, limit, cursor = list_query(app.current_event.query_string_parameters or {})
    return _json(200, queries.list_jobs(dependencies(), _caller(), status=status, limit=limit, cursor=cursor))


@app.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    logger.set_correlation_id(job_id)
    return _json(200, queries.get_job(dependencies(), job_id_from_path(job_id), _caller()))


@app.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    logger.set_correlation_id(job_id)
    job = cancel(dependencies(), job_id_from_path(job_id), _caller())
    return _json(200, job_view(dependencies(), job))


@app.post("/v1/jobs/<job_id>/webhook/redeliver")
def redeliver_webhook(job_id: str) -> Response:
    logger.set_correlation_id(job_id)
    return _json(202, redeliver(dependencies(), job_id_from_path(job_id), _caller()))


@app.post("/v1/uploads")
def create_upload() -> Response:
    event = app.current_event
    body = parse_json_body(event.body, base64_encoded=bool(event.is_base64_encoded))
    content_type = body.get("content_type") if isinstance(body, dict) else None
    return _json(201, queries.create_upload(dependencies(), _caller(), str(content_type or "")))


@app.get("/v1/models")
def list_models() -> Response:
    return _json(200, model_catalog(dependencies().settings), {"Cache-Control": f"private, max-age={CACHE_SECONDS}"})


@app.get("/v1/usage")
def get_usage() -> Response:
    day = (app.current_event.query_string_parameters or {}).get("date")
    return _json(200, budget.usage(dependencies(), _caller(), day))


@app.post("/v1/batches")
def create_batch() -> Response:
    event = app.current_event
    body = parse_json_body(event.body, base64_encoded=bool(event.is_base64_encoded))
    deps = dependencies()
    batch, created = batches.submit_api_batch(
        deps, body, idempotency_key=idempotency_key_of(event.headers), caller=_caller()
    )
    logger.set_correlation_id(batch.batch_id)
    if created:
        metrics.add_metric(name=BATCHES_SUBMITTED, unit="Count", value=1)
    # 202: queued now; 200: the same request again (Idempotency-Key), answered with the batch it made.
    return _json(
        202 if created else 200, batches.batch_view(deps, batch), {"Location": f"/v1/batches/{batch.batch_id}"}
    )


@app.get("/v1/batches/<batch_id>")
def get_batch(batch_id: str) -> Response:
    logger.set_correlation_id(batch_id)
    limit, cursor = page_query(
        app.current_event.query_string_parameters or {},
        default=batches.DEFAULT_JOB_IDS_PAGE,
        most=batches.MAX_JOB_IDS_PAGE,
    )
    view = batches.get_batch(dependencies(), batch_id_from_path(batch_id), _caller(), limit=limit, cursor=cursor)
    return _json(200, view)


@app.post("/v1/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    logger.set_correlation_id(batch_id)
    return _json(200, batches.cancel_batch(dependencies(), batch_id_from_path(batch_id), _caller()))


@app.exception_handler(WanflowError)
def wanflow_error(error: WanflowError) -> Response:
    status, body, headers = error_response(error, app.current_event.request_context.request_id)
    return _json(status, body, headers)


@app.not_found
def not_found(_: NotFoundError) -> Response:
    return _json(
        404,
        {
            "code": "NotFound",
            "message": "no such route",
            "errors": [],
            "request_id": app.current_event.request_context.request_id,
        },
    )


@app.exception_handler(Exception)
def unexpected_error(error: Exception) -> Response:
    logger.exception("unexpected error")
    request_id = app.current_event.request_context.request_id
    return _json(
        500, {"code": "InternalError", "message": "wanflow failed unexpectedly", "errors": [], "request_id": request_id}
    )


@inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
