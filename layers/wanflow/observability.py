"""Powertools Logger, Tracer and Metrics, configured once for every handler.

Logs go to stderr as JSON (Lambda sends both streams to CloudWatch; the local stack keeps stdout for
notifications). The job id is the correlation id: handlers call `logger.set_correlation_id(job_id)`.
"""

from __future__ import annotations

import logging
import sys

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="wanflow", logger_handler=logging.StreamHandler(sys.stderr))
tracer = Tracer(service="wanflow")
metrics = Metrics(namespace="wanflow", service="wanflow")

# The domain modules log through the standard library; route them through the Powertools formatter.
for name in ("wanflow",):
    library_logger = logging.getLogger(name)
    library_logger.handlers = logger.handlers
    library_logger.setLevel(logger.log_level)
    library_logger.propagate = False
