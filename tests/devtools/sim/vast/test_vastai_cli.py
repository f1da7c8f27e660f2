"""The real ``vastai`` CLI (1.9.1) against the simulator: if the CLI works, our quirks are right.

Each call is a separate process (about half a second each, mostly imports), so the file keeps
to a handful of calls. The CLI exits 0 even on errors, so every test checks what it printed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from vk_trio.devtools.sim.vast import VastSim


def _find_vastai() -> str | None:
    """The CLI installed with the test extra: next to this Python (``.venv/bin``, which the
    README's ``.venv/bin/pytest`` does not put on ``PATH``), else on ``PATH``."""
    beside = Path(sys.executable).parent / "vastai"
    return str(beside) if beside.exists() else shutil.which("vastai")


VASTAI = _find_vastai()
if VASTAI is None and os.environ.get("CI"):
    raise RuntimeError("the vastai CLI (the test extra's vastai==1.9.1) is missing in CI")
pytestmark = pytest.mark.skipif(VASTAI is None, reason="the vastai CLI is not installed")


async def vastai(sim: VastSim, home: Path, *args: str) -> tuple[str, str]:
    """Run ``vastai args...`` against ``sim`` in a sandboxed home; returns (stdout, stderr)."""
    assert VASTAI is not None and sim.url is not None
    env = {
        **os.environ,
        "VAST_URL": sim.url,
        "VAST_API_KEY": "test",
        "VASTAI_NO_UPDATE_CHECK": "1",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "COLUMNS": "200",
    }
    with trio.fail_after(30):
        done = await trio.run_process(
            [VASTAI, *args], env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    return done.stdout.decode(), done.stderr.decode()


async def vastai_json(sim: VastSim, home: Path, *args: str) -> Any:
    out, err = await vastai(sim, home, "--raw", *args)
    assert out.strip(), f"no output; stderr: {err}"
    return json.loads(out)


async def test_search_offers_applies_every_filter_and_the_order(
    vast_sim: VastSim, tmp_path: Path
) -> None:
    query = "gpu_name=RTX_3090 num_gpus=1 geolocation in [US,CA] reliability>0.9"
    offers = await vastai_json(vast_sim, tmp_path, "search", "offers", query, "-o", "dph_total")

    assert offers, "the seeded market has single RTX 3090s in North America"
    for offer in offers:
        assert offer["gpu_name"] == "RTX 3090"
        assert offer["num_gpus"] == 1
        assert offer["geolocation"][-2:] in ("US", "CA")
        assert offer["reliability"] > 0.9
        assert offer["verification"] == "verified"  # the CLI's default filter
    prices = [offer["dph_total"] for offer in offers]
    assert prices == sorted(prices)


async def test_instance_lifecycle_through_the_cli(vast_sim: VastSim, tmp_path: Path) -> None:
    offer_id = min(o["id"] for o in vast_sim.offers() if o["gpu_name"] == "RTX 3060")
    created = await vastai_json(
        vast_sim, tmp_path, "create", "instance", str(offer_id), "--image", "ubuntu:22.04",
        "--disk", "20", "--label", "vk-pod-abc", "--env", "-e FOO=bar -p 8080:8080",
        "--onstart-cmd", "echo started-by-cli",
    )  # fmt: skip
    instance_id = created["new_contract"]
    assert created["success"] is True
    await vast_sim.wait_until(
        lambda s: (s.instance(instance_id) or {}).get("actual_status") == "running"
    )

    listed = await vastai_json(vast_sim, tmp_path, "show", "instances")
    assert [(i["id"], i["label"]) for i in listed] == [(instance_id, "vk-pod-abc")]
    shown = await vastai_json(vast_sim, tmp_path, "show", "instance", str(instance_id))
    assert shown["extra_env"]["FOO"] == "bar"
    assert "8080/tcp" in shown["ports"]

    out, _ = await vastai(vast_sim, tmp_path, "label", "instance", str(instance_id), "renamed")
    assert "label for" in out
    assert (vast_sim.instance(instance_id) or {}).get("label") == "renamed"

    logs, _ = await vastai(vast_sim, tmp_path, "logs", str(instance_id))
    assert "echo started-by-cli" in logs

    out, _ = await vastai(vast_sim, tmp_path, "destroy", "instance", str(instance_id), "-y")
    assert f"destroying instance {instance_id}" in out
    assert vast_sim.live_instances() == []
    assert vast_sim.ledger()[0]["destroyed_at"] is not None
    out, err = await vastai(vast_sim, tmp_path, "show", "instance", str(instance_id))
    assert "not found or no longer exists" in out + err


async def test_buying_a_taken_offer_reports_no_such_ask(vast_sim: VastSim, tmp_path: Path) -> None:
    offer_id = vast_sim.offers()[0]["id"]
    first = await vastai_json(vast_sim, tmp_path, "create", "instance", str(offer_id),
                              "--image", "busybox")  # fmt: skip
    assert first["success"] is True
    out, err = await vastai(vast_sim, tmp_path, "--raw", "create", "instance", str(offer_id),
                            "--image", "busybox")  # fmt: skip
    assert "no_such_ask" in out + err
    assert vast_sim.created == 1


async def test_change_bid_resumes_an_outbid_instance(vast_sim: VastSim, tmp_path: Path) -> None:
    offer = min(vast_sim.offers(), key=lambda o: o["dph_base"])
    created = await vastai_json(
        vast_sim, tmp_path, "create", "instance", str(offer["id"]), "--image", "busybox",
        "--bid_price", str(offer["min_bid"]),
    )  # fmt: skip
    instance_id = created["new_contract"]
    vast_sim.outbid(instance_id)
    going = (vast_sim.instance(instance_id) or {})["min_bid"]
    out, err = await vastai(
        vast_sim, tmp_path, "change", "bid", str(instance_id), "--price", str(going)
    )
    assert "bid price changed" in out, err
    await vast_sim.wait_until(
        lambda s: (s.instance(instance_id) or {}).get("actual_status") == "running"
    )


async def test_the_account_credit_and_charges_through_the_cli(
    vast_sim: VastSim, tmp_path: Path
) -> None:
    """``vastai show user`` shows the credit the simulator bills down; ``show invoices-v1
    --charges`` lists each instance's charges with its GPU and storage items."""
    vast_sim.set_faults(credit=25.0)
    [offer_id] = vast_sim.add_offers([{"dph_base": 0.5}])
    created = await vastai_json(
        vast_sim, tmp_path, "create", "instance", str(offer_id), "--image", "busybox"
    )
    await trio.sleep(0.5)  # booted: its GPU bills
    user = await vastai_json(vast_sim, tmp_path, "show", "user")
    assert 24.99 < user["credit"] < 25.0
    charges = await vastai_json(vast_sim, tmp_path, "show", "invoices-v1", "--charges")
    [charge] = charges["results"]
    assert charge["source"] == f"instance-{created['new_contract']}"
    assert [item["type"] for item in charge["items"]] == ["gpu", "storage"]
    assert charge["amount"] >= 25.0 - user["credit"] - 1e-6  # read later: billed more
