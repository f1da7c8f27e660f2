"""The seed README's example annotations: the user-facing contract several tests check."""

SEED_ANNOTATIONS = {
    "vast.ai/gpu-type": "RTX 3060",
    "vast.ai/gpu-fallbacks": "RTX 3060 Ti,RTX 4060,RTX 4070,RTX 3090",
    "vast.ai/price-max": "0.30",
    "vast.ai/region": "North America",
    "vast.ai/memory": "12GB",
    "vast.ai/disk": "50GB",
}
