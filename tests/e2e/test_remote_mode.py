"""The end-to-end tests also run against an API server in another process, over HTTP only.

This is how they run against a real cluster (``VK_TRIO_TEST_KUBECONFIG``); here the "real"
server is ``vk-trio sim kube`` started as a subprocess, so the remote mode cannot rot unseen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBSET = "runs_with_address or bad_annotation or restarted or health"


def test_node_tests_pass_against_an_api_server_in_another_process(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vk_trio",
            "sim",
            "kube",
            "--listen",
            "127.0.0.1:0",
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline()
        assert url.startswith(b"http://"), url
        env = {**os.environ, "VK_TRIO_TEST_KUBECONFIG": str(kubeconfig)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/e2e/test_node.py",
                "-k",
                SUBSET,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    output = result.stdout
    assert result.returncode == 0, output[-3000:]
    assert "4 passed" in output
