"""Image references parse as Docker parses them (distribution's grammar and defaults)."""

from __future__ import annotations

import pytest

from vk_trio.errors import PermanentError
from vk_trio.registry import ImageReference, InvalidReference, parse_reference

HUB = "registry-1.docker.io"
D = "sha256:" + "ab" * 32

GOOD: list[tuple[str, tuple[str, str, str | None, str | None]]] = [
    ("ubuntu", (HUB, "library/ubuntu", "latest", None)),
    ("ubuntu:22.04", (HUB, "library/ubuntu", "22.04", None)),
    ("  ubuntu  ", (HUB, "library/ubuntu", "latest", None)),
    ("pytorch/pytorch:2.3.0-cuda12.1", (HUB, "pytorch/pytorch", "2.3.0-cuda12.1", None)),
    ("docker.io/ubuntu", (HUB, "library/ubuntu", "latest", None)),
    ("docker.io/library/ubuntu:1", (HUB, "library/ubuntu", "1", None)),
    ("index.docker.io/foo/bar", (HUB, "foo/bar", "latest", None)),
    ("registry-1.docker.io/busybox", (HUB, "library/busybox", "latest", None)),
    ("ghcr.io/org/team/app:v1", ("ghcr.io", "org/team/app", "v1", None)),
    ("GHCR.io/org/app", ("ghcr.io", "org/app", "latest", None)),
    ("localhost/app", ("localhost", "app", "latest", None)),
    ("localhost:5000/app:dev", ("localhost:5000", "app", "dev", None)),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000", "a/b", "latest", None)),
    ("[::1]:5000/app", ("[::1]:5000", "app", "latest", None)),
    ("registry.example.com:443/x", ("registry.example.com:443", "x", "latest", None)),
    (f"ubuntu@{D}", (HUB, "library/ubuntu", None, D)),
    (f"ubuntu:22.04@{D}", (HUB, "library/ubuntu", "22.04", D)),
    (f"localhost:5000/app@{D}", ("localhost:5000", "app", None, D)),
    ("my_app.v2__x-y--z", (HUB, "library/my_app.v2__x-y--z", "latest", None)),
]


@pytest.mark.parametrize(("image", "expected"), GOOD, ids=[g[0] for g in GOOD])
def test_references_parse_with_dockers_defaults(
    image: str, expected: tuple[str, str, str | None, str | None]
) -> None:
    ref = parse_reference(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert ref.reference == (expected[3] or expected[2])


BAD: list[tuple[str, str]] = [
    ("", "empty"),
    ("   ", "empty"),
    ("Ubuntu", "lower-case"),
    ("org/App", "lower-case"),
    ("ubuntu:", "tag ''"),
    ("ubuntu:-x", "tag '-x'"),
    ("ubuntu:" + "x" * 129, "1-128"),
    ("ubuntu@sha256:abc", "64 lower-case hex"),
    ("ubuntu@sha256:" + "AB" * 32, "64 lower-case hex"),
    ("ubuntu@md5:" + "ab" * 16, "'md5' is not supported"),
    ("ubuntu@nodigest", "is not a digest"),
    ("a//b", "'' is not a valid repository name component"),
    ("ubuntu/", "'' is not a valid repository name component"),
    ("-bad.host/x", "is not a registry host"),
    ("host:port:5000/x", "is not a registry host"),
    ("ex.com/a_", "'a_' is not a valid"),
    ("ex.com/" + "a" * 256, "longer than 255"),
]


@pytest.mark.parametrize(("image", "fragment"), BAD, ids=[b[0][:40] or "empty" for b in BAD])
def test_bad_references_are_permanent_with_one_clear_line(image: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(image)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(caught.value, PermanentError)
    assert caught.value.reason == "InvalidImageName"


def test_a_reference_prints_as_its_full_name() -> None:
    assert str(parse_reference("ubuntu")) == f"{HUB}/library/ubuntu:latest"
    assert str(parse_reference(f"x.io/a:1@{D}")) == f"x.io/a:1@{D}"
    assert parse_reference("x.io/a") == ImageReference("x.io", "a", "latest", None)
