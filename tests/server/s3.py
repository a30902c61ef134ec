"""moto's S3 server mode on 127.0.0.1, for the S3 blob store tests.

``moto_server`` runs as a child process (``python -m moto.server``), so its imports and
warnings stay out of the test process. Each test gets a bucket of its own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.server.helpers import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's S3 server on a free port of 127.0.0.1; yield its URL."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto[server] is not installed (it is in the dev extra)")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}")
            try:
                httpx.get(url + "/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("moto_server did not answer in time")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def new_bucket(endpoint: str) -> str:
    """Create a bucket (moto checks no signature on this plain PUT); return its name."""
    name = f"plasma-test-{uuid.uuid4().hex[:16]}"
    response = httpx.put(f"{endpoint}/{name}", timeout=10.0)
    assert response.status_code == 200, response.text
    return name


def multipart_uploads(endpoint: str, bucket: str) -> str:
    """The raw ListMultipartUploads answer (XML): unfinished uploads are listed in it."""
    return httpx.get(f"{endpoint}/{bucket}?uploads", timeout=10.0).text
