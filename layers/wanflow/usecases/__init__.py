"""wanflow's use cases, one module each; every function takes its adapters as a `Dependencies`.

| module | what |
|---|---|
| `submit` | a job from `POST /v1/jobs`: validate, store, create its DashScope task at most once, start polling |
| `intake` | a job from an object uploaded under `incoming/` (S3 event -> SQS), paced under the submit rate |
| `poll` | one status query of the poll loop, and what the state machine does next |
| `finalize` | store and verify the video, end the job SUCCEEDED |
| `ending` | every ending of a job and its one notification: the only place that publishes |
| `cancel` | `POST /v1/jobs/{id}/cancel` |
| `batches` | `POST/GET /v1/batches`, batch cancel, `incoming/*.jsonl`: many jobs validated, stored and queued at once |
| `batch_completion` | a batch job's ending recorded on its batch, and the batch's one `batch.completed` |
| `queries` | reads (`GET /v1/jobs...`) and upload grants |
| `sweep` | the scheduled repair of jobs that lost their way |
| `views` | how a job is shown, and where its documents live |
| `context` | `Dependencies`, the adapters a use case talks to |
"""
