"""`dicom-node infer`: run the models on local files and folders, chosen by the routing rules.

A file is one image (or a one-instance series), a folder is one series, a PNG/JPEG goes to the
configured image model. Each input yields result lines; a bad input yields an error line and the
others still run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pydicom
from pydicom.errors import InvalidDicomError

from inference.bundle import Bundle
from inference.ct_series import UnsupportedSeries, load_ct_series, series_files
from inference.image2d import IMAGE_SUFFIXES, display_pixels, load_image2d
from inference.run import classify, segment

from ..config import ConfigError, InferenceConfig
from ..jobs.bundles import known_bundles, load_bundles, model_device
from ..jobs.routing import SeriesFacts, route

Result = dict[str, object]


def _dicom_files(path: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """(file, header) for every DICOM file of a file or folder; other files are skipped."""
    found: list[tuple[Path, pydicom.Dataset]] = []
    for file in [path] if path.is_file() else series_files(path):
        try:
            found.append((file, pydicom.dcmread(file, stop_before_pixels=True)))
        except (InvalidDicomError, OSError, ValueError):
            if path.is_file():
                raise
    return found


class LocalInference:
    """The configured bundles and rules, applied to paths."""

    def __init__(self, config: InferenceConfig, model: str | None = None) -> None:
        self.config = config
        self.bundles = load_bundles(config, encodes_results=False, device=model_device(config))
        self.model = model
        if model:
            self.bundle(model)  # an unknown --model fails before any input is read

    def bundle(self, name: str) -> Bundle:
        if name not in self.bundles:
            raise ConfigError(f"unknown model {name!r} ({known_bundles(self.bundles)})")
        return self.bundles[name]

    def run(self, path: Path) -> Iterator[Result]:
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                yield from self._classify(
                    self.bundle(self.model or self.config.image_model), [path]
                )
                return
            if not path.exists():
                raise FileNotFoundError(f"no such file or folder: {path}")
            files = _dicom_files(path)
            if not files:
                raise InvalidDicomError(f"no DICOM files in {path}")
            series = {str(header.get("SeriesInstanceUID", "")) for _, header in files}
            if len(series) > 1:
                raise UnsupportedSeries(
                    f"{path} holds {len(series)} series; give one folder per series"
                )
            if self.model:
                models = [self.model]
            else:
                decision = route(
                    self.config.routes, SeriesFacts.from_headers([h for _, h in files])
                )
                if not decision.models:
                    yield {"path": str(path), "model": None, "skipped": decision.reason}
                    return
                models = list(decision.models)
            for name in models:
                bundle = self.bundle(name)
                if bundle.task == "segmentation":
                    paths, headers = (list(column) for column in zip(*files, strict=True))
                    result = segment(bundle, load_ct_series(paths, headers))
                    yield {"path": str(path), **result.as_json()}
                else:
                    yield from self._classify(bundle, [f for f, _ in files])
        # ValueError covers unreadable pixels and the inference package's own errors
        # (NotAnImage2D, UnsupportedSeries, BundleError).
        except (OSError, ValueError, InvalidDicomError, ConfigError) as error:
            yield {"path": str(path), "error": str(error)}

    def _classify(self, bundle: Bundle, files: list[Path]) -> Iterator[Result]:
        for file in files:
            try:
                header = None if file.suffix.lower() in IMAGE_SUFFIXES else pydicom.dcmread(file)
                pixels = load_image2d(file) if header is None else display_pixels(header)
                headers = None if header is None else [header]
                (result,) = classify(bundle, [pixels], headers=headers)
            except (ValueError, OSError) as error:
                yield {"path": str(file), "model": bundle.name, "error": str(error)}
                continue
            yield {"path": str(file), **result.as_json()}


def format_text(result: Result) -> str:
    """One human-readable line per result."""
    head = f"{result['path']}: "
    if "error" in result:
        return head + f"error: {result['error']}"
    if result.get("model") is None:
        return head + f"skipped: {result['skipped']}"
    head += f"{result['model']} {result['version']}: "
    if "probabilities" in result:
        given = cast(dict[str, float], result["probabilities"])
        probabilities = ", ".join(f"{name} {p:.3f}" for name, p in given.items())
        if result["finding"] is None:
            concerns = "; ".join(cast(list[str], result["out_of_domain"]))
            return head + f"not assessed, outside the model's domain: {concerns} ({probabilities})"
        return head + f"{result['finding']} ({probabilities})"
    segments = "; ".join(
        f"{name} {m['volume_ml']} mL, {m['mean_hu']} HU"
        for name, m in cast(dict[str, dict[str, float]], result["segments"]).items()
    )
    return head + segments


def infer(config: InferenceConfig, paths: list[Path], model: str | None, as_json: bool) -> int:
    """Print results for every path; exit status 1 if any input failed."""
    runner = LocalInference(config, model)
    failed = False
    for path in paths:
        for result in runner.run(path):
            failed |= "error" in result
            print(json.dumps(result) if as_json else format_text(result), flush=True)
    return 1 if failed else 0
