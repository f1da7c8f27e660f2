"""Namespace verbs against the stand-in: a read, and an annotation merge that is a
compare-and-swap on the resourceVersion (409 when someone wrote first, as the real server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vk_trio.devtools.sim.kube import KubeSim
from vk_trio.kube.api import KubeClient
from vk_trio.kube.config import load_config
from vk_trio.kube.errors import KubeConflict
from vk_trio.kube.namespaces import get_namespace, patch_namespace_annotations


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_config(await load_config(kubeconfig=str(kubeconfig))) as client:
        yield client


async def test_a_patch_at_the_version_read_applies_and_a_stale_one_is_a_conflict(
    kube: KubeClient, kube_sim: KubeSim
) -> None:
    kube_sim.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    read = await get_namespace(kube, "team")
    assert read is not None
    version = read.metadata.resource_version
    written = await patch_namespace_annotations(
        kube, "team", resource_version=version, annotations={"a": "1"}
    )
    assert written is not None and written.metadata.annotations == {"a": "1"}
    with pytest.raises(KubeConflict):  # a second writer that read the same version
        await patch_namespace_annotations(
            kube, "team", resource_version=version, annotations={"a": "2"}
        )
    after = kube_sim.get("namespaces", None, "team")
    assert after is not None and after["metadata"]["annotations"] == {"a": "1"}


async def test_a_missing_namespace_reads_and_patches_as_none(kube: KubeClient) -> None:
    assert await get_namespace(kube, "nowhere") is None
    assert (
        await patch_namespace_annotations(kube, "nowhere", resource_version="1", annotations={})
        is None
    )
