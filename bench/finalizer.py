"""Finalizer copy: peak memory growth and throughput while streaming a video from a loopback server into S3.

For 200 MB and 1 GB videos, in a fresh child process each (so one size's peak does not hide the other's):
- the video server and the S3 endpoint (moto server) run as separate processes, so the child's memory is the copy's;
- peak RSS growth of the child during `wanflow.storage.copy_url_to_s3` (goal: under 64 MB above the part size,
  the same for both sizes);
- throughput as a ratio to a plain streaming download of the same bytes to /dev/null in the same run (goal >= 0.7),
  end to end and for the streaming phase alone (download, hash, part uploads), because moto assembles the parts of
  CompleteMultipartUpload in Python, slowly, where S3 does it server-side in well under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MB = 1024 * 1024
SIZES_MB = (200, 1024)
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


def s3_sink_seconds(storage, size_mb: int) -> float:
    """How fast the S3 endpoint alone takes the same parts from memory (no download): the copy's ceiling here."""
    from concurrent.futures import ThreadPoolExecutor

    s3 = storage.client("s3")
    part = _BLOCK * int(storage.PART_SIZE / MB)
    upload_id = s3.create_multipart_upload(Bucket="bench-output", Key="sink.bin")["UploadId"]
    started = time.perf_counter()
    with ThreadPoolExecutor(storage.PARTS_IN_FLIGHT) as pool:
        list(
            pool.map(
                lambda number: s3.upload_part(
                    Bucket="bench-output", Key="sink.bin", UploadId=upload_id, PartNumber=number, Body=part
                ),
                range(1, size_mb * MB // storage.PART_SIZE + 1),
            )
        )
    seconds = time.perf_counter() - started
    s3.abort_multipart_upload(Bucket="bench-output", Key="sink.bin", UploadId=upload_id)
    return seconds


def child(size_mb: int) -> dict[str, float]:
    """Runs in its own process: one copy and one plain download of `size_mb` megabytes."""
    import boto3
    import httpx

    from wanflow import storage
    from wanflow.aws import reset_clients

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
        reset_clients()
        boto3.client("s3").create_bucket(Bucket="bench-output")
        # moto assembles the parts in Python when the upload completes; time that apart from the streaming.
        completing: list[float] = []
        storage.client("s3").meta.events.register(
            "before-call.s3.CompleteMultipartUpload", lambda **_: completing.append(time.perf_counter())
        )
        url = f"http://127.0.0.1:{video_port}/video.mp4"
        with httpx.Client(timeout=60) as http:
            rss_before = peak_rss_mb()
            started = time.perf_counter()
            stored = storage.copy_url_to_s3(
                url, "bench-output", "video.mp4", content_type="video/mp4", metadata={}, http=http
            )
            copy_seconds = time.perf_counter() - started
            streaming_seconds = completing[-1] - started
            peak_growth = peak_rss_mb() - rss_before
            started = time.perf_counter()
            with http.stream("GET", url) as response, open(os.devnull, "wb") as sink:
                for chunk in response.iter_raw(MB):
                    sink.write(chunk)
            plain_seconds = time.perf_counter() - started
            sink_seconds = s3_sink_seconds(storage, size_mb)
    assert stored.bytes == size_mb * MB
    return {
        "size_mb": size_mb,
        "part_size_mb": storage.PART_SIZE / MB,
        "peak_rss_growth_mb": round(peak_growth, 1),
        "copy_seconds": round(copy_seconds, 2),
        "copy_mb_per_s": round(size_mb / copy_seconds, 1),
        "plain_download_mb_per_s": round(size_mb / plain_seconds, 1),
        "throughput_ratio": round(plain_seconds / copy_seconds, 3),
        "streaming_seconds": round(streaming_seconds, 2),
        "streaming_throughput_ratio": round(plain_seconds / streaming_seconds, 3),
        "moto_complete_seconds": round(copy_seconds - streaming_seconds, 2),
        "s3_sink_only_mb_per_s": round(size_mb / sink_seconds, 1),
        "streaming_ratio_to_s3_sink": round(sink_seconds / streaming_seconds, 3),
    }


def run() -> list[dict[str, float]]:
    results = []
    for size_mb in SIZES_MB:
        out = subprocess.run(
            [sys.executable, "-m", "bench.finalizer", "--child", str(size_mb)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=int)
    parser.add_argument("--serve", nargs=2, type=int)
    args = parser.parse_args()
    if args.serve:
        serve_video(*args.serve)
    elif args.child:
        print(json.dumps(child(args.child)))
    else:
        print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
