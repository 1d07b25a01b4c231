"""The model bundles a job may run: found in the configured folders and checked against the
routing rules before anything runs, so a missing or incomplete bundle is a configuration error at
start rather than a failed job later."""

from __future__ import annotations

from inference.bundle import Bundle, BundleError, find_bundles
from inference.device import DeviceUnavailable, choose_device
from inference.result_codes import check_result_codes

from ..config import ConfigError, InferenceConfig


def known_bundles(bundles: dict[str, Bundle]) -> str:
    return f"bundles found: {', '.join(sorted(bundles)) or 'none'}"


def model_device(config: InferenceConfig) -> str:
    """The device the models run on in this process; a GPU that this host lacks is a
    configuration error naming the key. ``auto`` and ``cpu`` are left as they are, without
    importing PyTorch: a process that runs no model never loads it (``auto`` is settled when a
    network loads)."""
    if config.device in ("auto", "cpu"):
        return config.device
    try:
        return choose_device(config.device)
    except DeviceUnavailable as error:
        raise ConfigError(f"inference.device: {error}") from None


def load_bundles(
    config: InferenceConfig, encodes_results: bool = True, device: str = "cpu"
) -> dict[str, Bundle]:
    """The configured bundles, their networks to run on ``device``; a route or the image model
    naming a missing one is a configuration error, reported before anything runs, and so is a
    routed one whose metadata lacks the codes of its DICOM results, unless ``encodes_results``
    is false (`infer` only prints results)."""
    try:
        bundles = find_bundles(config.bundles)
    except BundleError as error:
        raise ConfigError(str(error)) from None
    routed = {model for rule in config.routes for model in rule.models}
    missing = sorted((routed | {config.image_model}) - set(bundles))
    if missing:
        raise ConfigError(
            f"inference names models that no bundle folder holds: {', '.join(missing)} "
            f"({known_bundles(bundles)})"
        )
    for name in sorted(routed) if encodes_results else []:
        try:
            check_result_codes(bundles[name])
        except BundleError as error:
            problem = f"model {name} is routed, its results cannot be encoded: {error}"
            raise ConfigError(problem) from None
    for bundle in bundles.values():
        bundle.device = device
    return bundles
