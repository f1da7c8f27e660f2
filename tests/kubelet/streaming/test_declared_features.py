"""What the node declares for the API server to proxy WebSocket streams to this kubelet."""

from vk_trio.kubelet.streaming.declared_features import (
    DECLARED_FEATURES_FIELD,
    EXTEND_WEBSOCKETS_TO_KUBELET,
    declared_features,
)


def test_websocket_kubelet_declares_the_gate_name() -> None:
    assert EXTEND_WEBSOCKETS_TO_KUBELET == "ExtendWebSocketsToKubelet"
    assert DECLARED_FEATURES_FIELD == "declaredFeatures"
    assert declared_features(websocket_streaming=True) == ["ExtendWebSocketsToKubelet"]


def test_without_websocket_nothing_is_declared() -> None:
    assert declared_features(websocket_streaming=False) == []


def test_list_is_sorted_without_duplicates() -> None:
    features = declared_features(
        websocket_streaming=True,
        others=["RestartAllContainersOnContainerExits", "ExtendWebSocketsToKubelet", "A"],
    )
    assert features == ["A", "ExtendWebSocketsToKubelet", "RestartAllContainersOnContainerExits"]
