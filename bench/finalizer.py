"""Finalizer copy: throughput and peak memory while streaming a video from a loopback server into S3, side by side
with boto3's own `upload_fileobj` reading the same HTTP stream into the same kind of S3 endpoint.

For 200 MB and 1 GB videos, ROUNDS times each, every copy in a fresh child process (so one copy's peak does not
hide another's), wanflow's and the baseline's alternating:
- the video server and the S3 endpoint (a moto server) run as separate processes, so the child's memory is the
  copy's;
- `wanflow`: `wanflow.adapters.video_copy.copy_url_to_s3` (verifies Content-Length and SHA-256);
- `upload_fileobj_baseline`: boto3's `upload_fileobj` (TransferConfig: 8 MB parts, 10 threads) reading the
  HTTP response through a file object; it verifies nothing;
- end to end (`copy_mb_per_s`) and for the streaming phase alone (download, hash, part uploads: until
  CompleteMultipartUpload is called), because moto assembles the parts of CompleteMultipartUpload in Python,
  slowly, where S3 does it server-side. moto's assembly is slower still for wanflow's uploads than for
  upload_fileobj's: upload_fileobj creates the upload with ChecksumAlgorithm=CRC32 (per-part checksums, combined),
  wanflow with none, for which moto (like S3) computes a checksum of the whole object;
- peak RSS growth of the child during the copy (goal for wanflow: under part size + 64 MB, whatever the size);
- for wanflow, also a plain streaming download of the same bytes to /dev/null, and how fast the S3 endpoint alone
  takes the same parts from memory with as many parts in flight (the copy's ceiling here).
Medians over the rounds; the per-round numbers are kept.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MB = 1024 * 1024
SIZES_MB = (200, 1024)
ROUNDS = 3
BASELINE_THREADS = 10
COPIERS = ("wanflow", "upload_fileobj_baseline")
_BLOCK = bytes(range(256)) * 4096  # 1 MiB of a fixed pattern


class _VideoHandler(BaseHTTPRequestHandler):
    size = 0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        remaining = self.size
        while remaining:
            chunk = _BLOCK[: min(len(_BLOCK), remaining)]
            self.wfile.write(chunk)
            remaining -= len(chunk)

    def log_message(self, *_: object) -> None:
        pass


def serve_video(port: int, size: int) -> None:
    _VideoHandler.size = size
    ThreadingHTTPServer(("127.0.0.1", port), _VideoHandler).serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet; nothing to wait on
    raise TimeoutError(f"port {port} did not open")


@contextmanager
def background(*command: str):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class _ResponseReader(io.RawIOBase):
    """An httpx response's raw chunks as a readable file object (what upload_fileobj reads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def baseline_copy(s3: Any, http: Any, url: str, bucket: str, key: str, part_size: int) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=BASELINE_THREADS
    )
    with http.stream("GET", url) as response:
        response.raise_for_status()
        reader = io.BufferedReader(_ResponseReader(response.iter_raw()))
        s3.upload_fileobj(reader, bucket, key, ExtraArgs={"ContentType": "video/mp4"}, Config=config)


def s3_sink_seconds(s3: Any, size_mb: int, part_size: int, in_flight: int) -> float:
    """How fast the S3 endpoint alone takes the same parts from memory (no download): the copy's ceiling here."""
    from concurrent.futures import ThreadPoolExecutor

    part = bytearray(_BLOCK * int(part_size / MB))
    upload_id = s3.create_multipart_upload(Bucket="bench-output", Key="sink.bin")["UploadId"]
    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        list(
            pool.map(
                lambda number: s3.upload_part(
                    Bucket="bench-output", Key="sink.bin", UploadId=upload_id, PartNumber=number, Body=part
                ),
                range(1, size_mb * MB // part_size + 1),
            )
        )
    seconds = time.perf_counter() - started
    s3.abort_multipart_upload(Bucket="bench-output", Key="sink.bin", UploadId=upload_id)
    return seconds


def child(size_mb: int, copier: str) -> dict[str, float]:
    """Runs in its own process: one copy of `size_mb` megabytes by `copier` (and, for wanflow, the references)."""
    import boto3
    import httpx

    from wanflow.adapters import boto, video_copy

    s3_port, video_port = free_port(), free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    with (
        background(moto, "-p", str(s3_port)),
        background(sys.executable, "-m", "bench.finalizer", "--serve", str(video_port), str(size_mb * MB)),
    ):
        wait_for_port(s3_port)
        wait_for_port(video_port)
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        boto.reset_clients()
        boto3.client("s3").create_bucket(Bucket="bench-output")
        s3 = boto.s3()  # the client the finalizer uses; the baseline gets it too
        # moto assembles the parts in Python when the upload completes; time that apart from the streaming.
        completing: list[float] = []
        s3.meta.events.register(
            "before-call.s3.CompleteMultipartUpload", lambda **_: completing.append(time.perf_counter())
        )
        url = f"http://127.0.0.1:{video_port}/video.mp4"
        with httpx.Client(timeout=60) as http:
            rss_before = peak_rss_mb()
            started = time.perf_counter()
            if copier == "wanflow":
                stored = video_copy.copy_url_to_s3(
                    s3, url, "bench-output", "video.mp4", content_type="video/mp4", metadata={}, http=http
                )
                assert stored.bytes == size_mb * MB
            else:
                baseline_copy(s3, http, url, "bench-output", "video.mp4", video_copy.PART_SIZE)
            copy_seconds = time.perf_counter() - started
            streaming_seconds = completing[-1] - started
            peak_growth = peak_rss_mb() - rss_before
            assert s3.head_object(Bucket="bench-output", Key="video.mp4")["ContentLength"] == size_mb * MB
            result = {
                "copy_mb_per_s": round(size_mb / copy_seconds, 1),
                "streaming_mb_per_s": round(size_mb / streaming_seconds, 1),
                "moto_complete_seconds": round(copy_seconds - streaming_seconds, 2),
                "peak_rss_growth_mb": round(peak_growth, 1),
            }
            if copier == "wanflow":
                started = time.perf_counter()
                with http.stream("GET", url) as response, open(os.devnull, "wb") as sink:
                    for chunk in response.iter_raw(MB):
                        sink.write(chunk)
                plain_seconds = time.perf_counter() - started
                sink_seconds = s3_sink_seconds(s3, size_mb, video_copy.PART_SIZE, video_copy.PARTS_IN_FLIGHT)
                result["plain_download_mb_per_s"] = round(size_mb / plain_seconds, 1)
                result["s3_sink_only_mb_per_s"] = round(size_mb / sink_seconds, 1)
                result["streaming_ratio_to_s3_sink"] = round(sink_seconds / streaming_seconds, 3)
    return result


def _one(size_mb: int, copier: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.finalizer", "--child", str(size_mb), "--copier", copier],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(rounds: list[dict[str, float]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in rounds[0]:
        values = [one[name] for one in rounds]
        # Memory: the worst round; everything else: the median round.
        summary[name] = max(values) if name == "peak_rss_growth_mb" else round(statistics.median(values), 3)
    summary["copy_mb_per_s_rounds"] = [one["copy_mb_per_s"] for one in rounds]
    summary["streaming_mb_per_s_rounds"] = [one["streaming_mb_per_s"] for one in rounds]
    return summary


def run() -> list[dict[str, Any]]:
    from wanflow.adapters import video_copy

    results = []
    for size_mb in SIZES_MB:
        rounds: dict[str, list[dict[str, float]]] = {copier: [] for copier in COPIERS}
        for number in range(ROUNDS):
            order = COPIERS if number % 2 == 0 else tuple(reversed(COPIERS))
            for copier in order:
                rounds[copier].append(_one(size_mb, copier))
        ours, baseline = _summary(rounds["wanflow"]), _summary(rounds["upload_fileobj_baseline"])
        results.append(
            {
                "size_mb": size_mb,
                "part_size_mb": video_copy.PART_SIZE / MB,
                "parts_in_flight": video_copy.PARTS_IN_FLIGHT,
                "rounds": ROUNDS,
                "peak_rss_growth_goal_mb": video_copy.PART_SIZE / MB + 64,
                "wanflow": ours,
                "upload_fileobj_baseline": baseline,
                "copy_ratio_to_baseline": round(ours["copy_mb_per_s"] / baseline["copy_mb_per_s"], 3),
                "streaming_ratio_to_baseline": round(ours["streaming_mb_per_s"] / baseline["streaming_mb_per_s"], 3),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=int)
    parser.add_argument("--copier", choices=COPIERS, default="wanflow")
    parser.add_argument("--serve", nargs=2, type=int)
    args = parser.parse_args()
    if args.serve:
        serve_video(*args.serve)
    elif args.child:
        print(json.dumps(child(args.child, args.copier)))
    else:
        print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
