"""``%plasma blob put PATH`` and ``%plasma blob get HASH [PATH]`` against a real server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.notebook.helpers import TODOS


def run(ip: Any, cell: str) -> Any:
    result = ip.run_cell(cell)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result


@pytest.mark.slow
def test_blob_put_then_get_into_a_file_and_as_bytes(ip: Any, server: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = os.urandom(100_000)
    (tmp_path / "cat.bin").write_bytes(data)
    hash = hashlib.sha256(data).hexdigest()
    run(ip, f"%plasma connect {server.url} --schema {TODOS} --name pics")
    run(ip, "h = %plasma blob put cat.bin")
    assert ip.user_ns["h"] == hash
    run(ip, "%plasma sync")
    assert ip.user_ns["__plasma_magics__"].connection("pics").client.blobs.status() == []

    # Another connection (its own cache) gets it from the server.
    run(ip, f"%plasma connect {server.url} --schema {TODOS} --name other --storage memory")
    capsys.readouterr()
    run(ip, f"%plasma blob get {hash} copy.bin --name other")
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert f"Wrote blob {hash[:12]}… to copy.bin." in capsys.readouterr().out
    run(ip, f"got = %plasma blob get {hash} --name other")
    assert ip.user_ns["got"] == data


def test_blob_usage_errors_are_one_line(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, f"%plasma connect local --schema {TODOS} --name t")
    for cell, message in [
        ("%plasma blob", "the following arguments are required: put|get, PATH|HASH"),
        ("%plasma blob fetch x", "argument put|get: invalid choice: 'fetch'"),
        ("%plasma blob put a.bin b.bin", "%plasma blob put takes one PATH"),
        ("%plasma blob get nothex", "a blob hash is 64 lowercase hex characters"),
    ]:
        capsys.readouterr()
        result = ip.run_cell(cell)
        assert not result.success, cell
        out, err = capsys.readouterr()
        assert message in err + out, (cell, err + out)
        assert "Traceback" not in err + out, err + out
