"""Inference speed on this machine's CPU: chest X-ray classifier and CT tissue segmentation.

    python benchmarks/inference.py [--repeats 30] [--ct ../shared/data/ct_chest_midrc_ricord_1a]

Prints the classifier's latency per image from DICOM file to probabilities (pre-processing
included), with and without Grad-CAM, beside the same with the image decoded in full (the node
decodes a JPEG 2000 radiograph at a reduced resolution), its batch throughput, and the CT
segmentation's wall time split into decode / segmentation / measurement with the process's peak
memory, against the issue's targets (<= 100 ms per radiograph without Grad-CAM; <= 10 s and
<= 3 GB for the 248-slice CT). The CT part runs in a fresh process so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dicom_node.config import BUILTIN_BUNDLES  # noqa: E402
from inference.bundle import find_bundles  # noqa: E402
from inference.ct_series import load_ct_series  # noqa: E402
from inference.image2d import DISPLAY_MIN_SIDE, load_image2d, shrink, to_display  # noqa: E402
from inference.run import classify, measure  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def met(condition: bool) -> str:
    return "met" if condition else "NOT met"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def full_decode(path: Path) -> np.ndarray:
    """What the node did before reduced JPEG 2000 decoding: every pixel decoded, then shrunk."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    return to_display(shrink(pixels, min(pixels.shape[:2]) // DISPLAY_MIN_SIDE), ds)


def time_classifier(files: list[Path], repeats: int) -> None:
    bundle = find_bundles([BUILTIN_BUNDLES])["cxr_pneumonia"]
    classify(bundle, [load_image2d(files[0])])  # load weights, warm up
    threads = torch.get_num_threads()
    print(f"chest X-ray classifier ({bundle.name} {bundle.version}), {threads} threads")
    variants = [
        ("node, without Grad-CAM", load_image2d, False),
        ("full decode, no Grad-CAM", full_decode, False),
        ("node, with Grad-CAM", load_image2d, True),
    ]
    for file in files:
        print(f"  {file.name}")
        times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for _ in range(repeats):  # alternating, so load on a shared machine hits both alike
            for label, load, explain in variants:
                started = time.perf_counter()
                classify(bundle, [load(file)], explain=explain)
                times[label].append((time.perf_counter() - started) * 1000)
        for label, _, explain in variants:
            values = times[label]
            median = statistics.median(values)
            verdict = "" if explain else f"  (target <= 100 ms: {met(median <= 100)})"
            print(
                f"    {label:26s} median {median:6.1f} ms, "
                f"p95 {percentile(values, 0.95):6.1f} ms{verdict}"
            )
    images = [load_image2d(files[i % len(files)]) for i in range(32)]
    started = time.perf_counter()
    for _ in range(3):
        classify(bundle, images)
    rate = 3 * len(images) / (time.perf_counter() - started)
    print(f"  batch of 32 decoded images: {rate:.0f} images/s")


def ct_run(folder: Path) -> dict[str, float]:
    """One CT pipeline run, in this process: the phases' wall times and the peak memory."""
    bundle = find_bundles([BUILTIN_BUNDLES])["ct_tissue"]
    network = bundle.network
    started = time.perf_counter()
    volume = load_ct_series(sorted(folder.glob("*.dcm")))
    decoded = time.perf_counter()
    labels = network.segment(volume.hu)
    segmented = time.perf_counter()
    measure(
        labels, volume.hu, volume.voxel_ml, bundle.labels, bundle.metadata["composite_segments"]
    )
    measured = time.perf_counter()
    return {
        "slices": volume.hu.shape[0],
        "decode_s": decoded - started,
        "segmentation_s": segmented - decoded,
        "measurement_s": measured - segmented,
        "total_s": measured - started,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def time_ct(folder: Path, repeats: int) -> None:
    runs = []
    for _ in range(repeats):
        output = subprocess.run(
            [sys.executable, __file__, "--ct-run", str(folder)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs.append(json.loads(output.splitlines()[-1]))
    best = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(
        f"CT tissue segmentation, {int(best['slices'])} slices, median of {repeats} fresh processes"
    )
    print(
        f"  decode {best['decode_s']:.2f} s, segmentation {best['segmentation_s']:.2f} s, "
        f"measurement {best['measurement_s']:.2f} s; total {best['total_s']:.2f} s "
        f"(target <= 10 s: {met(best['total_s'] <= 10)})"
    )
    print(f"  peak memory {best['peak_gb']:.2f} GB (target <= 3 GB: {met(best['peak_gb'] <= 3)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--ct", type=Path, default=SHARED / "ct_chest_midrc_ricord_1a")
    parser.add_argument("--ct-repeats", type=int, default=3, help="0: the classifier only")
    parser.add_argument("--ct-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ct_run:
        print(json.dumps(ct_run(args.ct_run)))
        return
    time_classifier(sorted((SHARED / "cxr_dicom").glob("*.dcm")), args.repeats)
    if args.ct_repeats > 0:
        time_ct(args.ct, args.ct_repeats)


if __name__ == "__main__":
    main()
