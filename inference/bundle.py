"""MONAI bundles as the unit of a model: found in folders, parsed with MONAI's own ``ConfigParser``.

A bundle is a folder with ``configs/metadata.json`` and ``configs/inference.json`` (and usually
``models/model.pt``, a state dict, or ``models/model.ts``, TorchScript). The runner uses these ids
of
``inference.json``: ``network_def`` (or the TorchScript file), ``preprocessing`` (array transforms
taking
the image channel-first), optionally ``postprocessing`` and ``gradcam_layer``. A bundle written for
another pipeline (Model Zoo style, loading files in dictionary transforms) runs unchanged beside an
adapter ``configs/node.json`` whose keys override those of ``inference.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PyTorch and MONAI load with the first network or transform a job needs
    import torch
    from monai.bundle import ConfigParser

    from inference.calibration import Calibration
    from inference.input_domain import FeatureStatistics, InputDomain

CONFIG_FILES = ("inference.json", "node.json")


class BundleError(ValueError):
    """A bundle folder that cannot be used as a model; the message names folder and problem."""


@dataclass
class Bundle:
    """One model: its name (the folder name), metadata and inference configuration (parsed by
    MONAI when first used, so that finding and checking bundles imports neither MONAI nor
    PyTorch)."""

    path: Path
    metadata: dict[str, Any]
    #: ``inference.json`` and the adapter ``node.json`` if any, in the order they apply
    config_files: list[Path] = field(repr=False)
    #: the ids the configuration files define at their top level
    config_ids: frozenset[str] = field(repr=False)
    #: the device the network runs on (`inference.device`); ``auto`` is settled when the network
    #: loads, so that a process that runs no model never imports PyTorch
    device: str = "cpu"

    @classmethod
    def load(cls, path: Path) -> Bundle:
        configs = path / "configs"
        try:
            metadata = json.loads((configs / "metadata.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"bundle {path}: cannot read configs/metadata.json ({exc})") from exc
        files = [configs / name for name in CONFIG_FILES if (configs / name).is_file()]
        if not files or files[0].name != "inference.json":
            raise BundleError(f"bundle {path}: configs/inference.json is missing")
        ids: set[str] = set()
        for config in files:
            try:
                ids.update(json.loads(config.read_text()))
            except (OSError, ValueError) as exc:
                raise BundleError(
                    f"bundle {path}: cannot read configs/{config.name} ({exc})"
                ) from exc
        if "network_def" not in ids and not (path / "models" / "model.ts").is_file():
            raise BundleError(
                f"bundle {path}: neither network_def in inference.json nor models/model.ts"
            )
        return cls(path, metadata, files, frozenset(ids))

    @cached_property
    def parser(self) -> ConfigParser:
        """MONAI's parser of the configuration files (a later file's ids override)."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(f) for f in self.config_files])
        return parser

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "0"))

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation`` (from ``metadata.json``)."""
        return str(self.metadata.get("task", "classification")).lower()

    @property
    def labels(self) -> dict[int, str]:
        """Output channels (classifiers) or label values (segmentation) and their names."""
        channels = self.metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        return {int(k): str(v) for k, v in channels.items()}

    @property
    def threshold(self) -> float:
        """Operating threshold on the last class's (calibrated) probability, chosen on the
        validation data."""
        return float(self.metadata.get("threshold", 0.5))

    @cached_property
    def calibration(self) -> Calibration | None:
        """The map from the network's logits to calibrated probabilities (``calibration`` in
        ``metadata.json``, fitted on validation data); None: the outputs are used as they are."""
        from inference.calibration import Calibration

        if "calibration" not in self.metadata:
            return None
        if len(self.labels) != 2:
            raise BundleError(f"bundle {self.path}: calibration is for two-class models only")
        return Calibration.from_metadata(self.metadata)

    @cached_property
    def input_domain(self) -> InputDomain | None:
        """What the model was trained on and how an input is checked against it
        (``input_domain`` in ``metadata.json``); None: inputs are not checked."""
        from inference.input_domain import InputDomain

        return InputDomain.from_metadata(self.metadata)

    @cached_property
    def feature_statistics(self) -> FeatureStatistics | None:
        """The training features' subspace the feature check measures against, if shipped."""
        from inference.input_domain import FEATURE_STATISTICS, FeatureStatistics

        path = self.path / FEATURE_STATISTICS
        domain = self.input_domain
        if domain is None or domain.feature_layer is None or not path.is_file():
            return None
        return FeatureStatistics.load(path)

    def get(self, key: str, default: Any = None) -> Any:
        """A parsed (instantiated) item of the inference configuration."""
        if key not in self.config_ids:
            return default
        return self.parser.get_parsed_content(key)

    @cached_property
    def network(self) -> torch.nn.Module:
        """The network in eval mode, with its weights, loaded once."""
        import torch

        from inference.device import choose_device

        self.device = choose_device(self.device)
        script = self.path / "models" / "model.ts"
        if "network_def" not in self.config_ids:
            return torch.jit.load(str(script), map_location=self.device).eval()
        network = self.parser.get_parsed_content("network_def")
        weights = self.path / "models" / "model.pt"
        if weights.is_file():
            state = torch.load(weights, map_location="cpu", weights_only=True)
            network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        elif any(True for _ in network.parameters()):
            raise BundleError(
                f"bundle {self.path}: the network has parameters but models/model.pt is missing"
            )
        # Channels-last 4D weights (other parameters are left as they are): oneDNN's faster
        # convolutions on a CPU (the chest classifier: 24 -> 19 ms an image on 2 cores).
        return network.to(self.device, memory_format=torch.channels_last).eval()

    @cached_property
    def preprocessing(self) -> Any:
        return self.get("preprocessing", lambda image: image)

    @cached_property
    def postprocessing(self) -> Any:
        return self.get("postprocessing", lambda output: output)


def find_bundles(folders: list[Path]) -> dict[str, Bundle]:
    """Every bundle directly under the given folders, by name; the first folder wins a clash."""
    bundles: dict[str, Bundle] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if (path / "configs" / "metadata.json").is_file() and path.name not in bundles:
                bundles[path.name] = Bundle.load(path)
    return bundles
