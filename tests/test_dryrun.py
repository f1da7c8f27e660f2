"""``vk-trio offers`` (``vk_trio.dryrun``): manifests and flags in, offers and reasons out,
against the simulator (in-process, and over HTTP as if it were the real API). Nothing is bought."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.seed import SEED_ANNOTATIONS
from vk_trio import cli, dryrun
from vk_trio.devtools.sim.vast import Faults, VastSim
from vk_trio.provider.requirements import parse_requirements
from vk_trio.provider.selection import build_query
from vk_trio.vast import Pacer, RetryPolicy, VastClient

DEPLOYMENT = """\
apiVersion: v1
kind: Secret
metadata: {name: unrelated}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu-services}
spec:
  template:
    metadata:
      annotations: %s
    spec:
      containers:
        - name: sidecar
          image: busybox
        - name: stt
          image: ghcr.io/example/stt:1
          resources:
            limits: {nvidia.com/gpu: %s}
"""

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    dryrun.add_arguments(parser)
    return dryrun.main(parser.parse_args(list(argv)))


def annotation_flags(annotations: dict[str, str]) -> list[str]:
    return ["--annotations", *(f"{key}={value}" for key, value in annotations.items())]


def write_deployment(tmp_path: Path, annotations: dict[str, str], gpus: int = 1) -> Path:
    chosen = {**annotations, "vast.ai/container": "stt"}
    path = tmp_path / "deployment.yaml"
    path.write_text(DEPLOYMENT % (json.dumps(chosen), gpus))
    return path


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.delenv("VAST_API_URL", raising=False)


def test_seed_example_from_a_deployment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run("-f", str(write_deployment(tmp_path, SEED_ANNOTATIONS)), "--limit", "3")
    out = capsys.readouterr().out
    assert code == 0
    assert f"the built-in simulator (seed {dryrun.MARKET_SEED}); nothing is bought" in out
    assert "Matching offers, best first (3 of " in out
    table = out.split("Matching offers", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert len(table) == 3
    for row in table:
        cells = row.split()
        assert cells[2:4] == ["RTX", "3060"]
        assert float(cells[5]) <= 0.30
        assert row.rstrip()[-2:] in {"US", "CA", "MX"}
    assert "Would buy offer " in out
    assert "Rejected offers (" in out


def test_annotations_only_and_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    flags = annotation_flags({**SEED_ANNOTATIONS, "vast.ai/price-max": "0.01"})
    assert run("--simulate", *flags) == 1
    out = capsys.readouterr().out
    assert "none of " in out
    assert "Would buy" not in out
    assert "vast.ai/price-max: " in out
    assert "> price-max $0.01/h" in out


def test_malformed_annotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_deployment(tmp_path, {**SEED_ANNOTATIONS, "vast.ai/price-max": "abc"})
    assert run("-f", str(manifest)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        'vast.ai/price-max: "abc" is not a price; expected a number of USD per hour such as "0.30"'
        in captured.err
    )


def test_gpu_count_from_the_chosen_container_and_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_deployment(tmp_path, {}, gpus=0)
    assert run("-f", str(manifest)) == 2
    assert 'resources.limits["nvidia.com/gpu"]: "0" must be at least 1' in capsys.readouterr().err
    assert run("-f", str(manifest), "--gpus", "2") in (0, 1)
    assert "any GPU x2" in capsys.readouterr().out


def test_show_query_prints_the_nodes_query(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--simulate", "--show-query", *annotation_flags(SEED_ANNOTATIONS)) == 0
    out = capsys.readouterr().out
    text = out.split("Query (POST /api/v0/bundles/):\n", 1)[1].split("\n}\n", 1)[0] + "\n}"
    assert json.loads(text) == build_query(parse_requirements(SEED_ANNOTATIONS))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: Service\nmetadata: {name: x}\n", "holds no Pod and no workload"),
        ("kind: Pod\nspec: [1, 2\n", "is not valid YAML"),
        ("kind: Pod\nspec: {containers: [{image: x}]}\n", "the pod spec is invalid"),
    ],
)
def test_bad_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert run("-f", str(path)) == 2
    assert message in capsys.readouterr().err


def test_missing_file_and_bad_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("-f", str(tmp_path / "absent.yaml")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert run("--annotations", "novalue") == 2
    assert '"novalue" is not KEY=VALUE' in capsys.readouterr().err


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "Pod", "metadata": {"annotations": {"vast.ai/gpu-type": "X"}}, "spec": {}},
        {
            "kind": "CronJob",
            "spec": {
                "jobTemplate": {
                    "spec": {"template": {"metadata": {"annotations": {"vast.ai/gpu-type": "X"}}}}
                }
            },
        },
        {
            "kind": "List",
            "items": [
                {
                    "kind": "Job",
                    "spec": {"template": {"metadata": {"annotations": {"vast.ai/gpu-type": "X"}}}},
                }
            ],
        },
    ],
    ids=["pod", "cronjob", "list"],
)
def test_pod_templates(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps(document))
    pod = dryrun._pod_from_manifest(path)
    assert pod.metadata.annotations == {"vast.ai/gpu-type": "X"}


async def test_real_api_path_uses_vast_api_url(
    vast_sim: VastSim, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With VAST_API_KEY set, the dry run talks HTTP to VAST_API_URL (here: a simulator that
    stands in for console.vast.ai), sending the node's query; still nothing is bought."""
    assert vast_sim.url is not None
    monkeypatch.setenv("VAST_API_KEY", "test-key")
    monkeypatch.setenv("VAST_API_URL", vast_sim.url)

    # The real pacing (2 s between searches) is the client's business, not this test's.
    def unpaced(**kwargs: Any) -> VastClient:
        return VastClient(**{**kwargs, "pacer": Pacer(scale=0)})

    monkeypatch.setattr(dryrun, "VastClient", unpaced)
    argv = annotation_flags(SEED_ANNOTATIONS)
    code = await trio.to_thread.run_sync(lambda: run(*argv))
    out = capsys.readouterr().out
    assert code == 0
    assert f"Searching: {vast_sim.url}; nothing is bought" in out
    assert "Would buy offer " in out
    assert vast_sim.created == 0
    assert vast_sim.stats()["POST /api/v0/bundles/"] == 2


async def test_search_failure(
    vast_sim_factory: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing API is exit 3 with the error on stderr, never the API key."""
    sim = await vast_sim_factory(faults=Faults(rate_5xx=1.0))
    monkeypatch.setenv("VAST_API_KEY", "a-secret-key")
    monkeypatch.setenv("VAST_API_URL", sim.url)

    def impatient(**kwargs: Any) -> VastClient:
        return VastClient(**{**kwargs, "pacer": Pacer(scale=0), "retry": RetryPolicy(attempts=1)})

    monkeypatch.setattr(dryrun, "VastClient", impatient)
    code = await trio.to_thread.run_sync(lambda: run("-a", "vast.ai/gpu-type=RTX 3060"))
    assert code == 3
    err = capsys.readouterr().err
    assert "error: the search failed:" in err
    assert "a-secret-key" not in err


def test_annotation_keys_may_leave_out_the_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    short = run("-a", "price-max=0.09", "gpu-type=RTX 3060", "--limit", "3")
    short_out = capsys.readouterr().out
    full = run("-a", "vast.ai/price-max=0.09", "vast.ai/gpu-type=RTX 3060", "--limit", "3")
    assert (short, short_out) == (full, capsys.readouterr().out)
    assert "RTX 3060 x1, <= $0.09/h" in short_out


@pytest.mark.parametrize("key", ["price-mx", "vast.ai/gpus", "example.com/price-max"])
def test_an_unknown_annotation_key_is_one_line_naming_the_known_ones(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("-a", f"{key}=0.3") == dryrun.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "is not an annotation the node reads" in captured.err
    assert "vast.ai/price-max" in captured.err and "vast.ai/gpu-type" in captured.err


MIRROR_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: static-gpu
  annotations: {kubernetes.io/config.mirror: abc123, vast.ai/gpu-type: RTX 3060}
spec:
  containers: [{name: app, image: nginx}]
"""


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (ROOT / "deployments/examples/daemonset-off-virtual-node.yaml", "DaemonSet pods do not"),
        (None, "static (mirror) pods run on their own kubelet"),
    ],
)
def test_pods_the_node_refuses_buy_nothing_and_say_why(
    manifest: Path | None, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if manifest is None:
        manifest = tmp_path / "static.yaml"
        manifest.write_text(MIRROR_POD)
    assert run("-f", str(manifest)) == dryrun.EXIT_NO_MATCH
    out = capsys.readouterr().out
    assert f"The node buys nothing for this pod: {reason}" in out
    assert "Would buy" not in out and "Searching" not in out


def test_simulate_searches_the_demos_marketplace() -> None:
    """Same seed, same market: the dry run and the demo agree on the offer bought."""
    parser = cli.build_parser()
    assert parser.parse_args(["offers"]).seed == parser.parse_args(["demo"]).seed
