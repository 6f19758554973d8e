"""wanflow's use cases, one module each; every function takes its adapters as a `Dependencies`.

| module | what |
|---|---|
| `submit` | a job from `POST /v1/jobs`: validate, store, create its DashScope task at most once, start polling |
| `intake` | a job from an object uploaded under `incoming/` (S3 event -> SQS), queued like an API job |
| `admission` | the admission queue: running slots per model, granting queued jobs, the queue's repairs |
| `pacing` | turns under DashScope's rate limits for the whole deployment (queries, creates) |
| `budget` | the spend cap: a job's price reserved at its grant, held jobs, settling at the end, `GET /v1/usage` |
| `poll` | one status query of the poll loop, and what the state machine does next |
| `retries` | a new task for a job whose task DashScope failed for its own reason |
| `webhooks` | signed webhook deliveries: which webhook an event goes to, one attempt, retries, `job.started` |
| `finalize` | store and verify the video, end the job SUCCEEDED |
| `ending` | every ending of a job and its one notification: the only place that publishes a job's event |
| `cancel` | `POST /v1/jobs/{id}/cancel` |
| `batches` | `POST/GET /v1/batches`, batch cancel, `incoming/*.jsonl`: many jobs validated, stored and queued at once |
| `batch_completion` | a batch job's ending recorded on its batch, and the batch's one `batch.completed` |
| `queries` | reads (`GET /v1/jobs...`) and upload grants |
| `sweep` | the scheduled repair of jobs that lost their way |
| `views` | how a job is shown, and where its documents live |
| `context` | `Dependencies`, the adapters a use case talks to |
"""
