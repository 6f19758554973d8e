"""SQS adapter of the webhook queue (WebhookQueue in template.yaml): one message per delivery."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsWebhookQueue:
    """The `WebhookQueue` port of a deployed stack; `sqs` is a boto3 SQS client."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    def send(self, body: str) -> None:
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=body)

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )
