"""Real images get valid results whatever Type 2 attributes they lack (absent is empty): a CR
stripped of each Type 2 attribute highdicom reads, the NIH DX (no birth date, study date or time,
study ID, accession number or referring physician) and a CT series stripped of them all, each
through the job's path (de-identified, encoded, re-identified) or straight to the encoders."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset

from dicom_node.config import BUILTIN_BUNDLES
from dicom_node.deid.deidentify import Deidentifier
from dicom_node.deid.pseudonyms import Pseudonymizer
from dicom_node.deid.reidentify import reidentify
from dicom_node.index.database import open_engine
from dicom_node.index.pseudonyms import PseudonymTable
from inference.bundle import find_bundles
from inference.dicom_seg import (
    HIGHDICOM_TYPE_2,
    encode_explanation,
    encode_segmentation,
    highdicom_source,
)
from inference.dicom_sr import encode_finding, encode_measurements
from inference.image2d import display_pixels
from inference.run import classify

from .conftest import SHARED_DATA, dciodvfy_errors, result_identity

NIH_DX = next((SHARED_DATA / "cxr_dicom").glob("nih_*.dcm"))


def stripped(header: Dataset, keywords: tuple[str, ...]) -> Dataset:
    copied = copy.deepcopy(header)
    for keyword in keywords:
        delattr(copied, keyword)
    return copied


def valid(results: list[Dataset], folder: Path) -> list[Dataset]:
    """``results``, each saved and found without error by dciodvfy."""
    for result in results:
        path = folder / f"{result.SOPInstanceUID}.dcm"
        result.save_as(path)
        assert dciodvfy_errors(path) == set(), result.Modality
    return results


def radiograph_results(bundle, result, header: Dataset) -> list[Dataset]:
    return [
        encode_explanation(bundle, result, header, result_identity(903)),
        encode_finding(bundle, result, header, result_identity(904)),
    ]


@pytest.fixture(scope="module")
def through_the_job(tmp_path_factory):
    """What the job does around the encoders: results made on a de-identified copy of the
    header, then re-identified to the original."""
    index = tmp_path_factory.mktemp("index") / "index.sqlite"
    store = PseudonymTable(open_engine(f"sqlite:///{index}"))
    pseudonyms = Pseudonymizer(b"k" * 32)
    deidentify = Deidentifier(pseudonyms)

    def run(bundle, result, header: Dataset) -> list[Dataset]:
        pseudonymous = deidentify(header)
        store.save(pseudonyms.take_issued())
        made = radiograph_results(bundle, result, pseudonymous)
        return [reidentify(one, store, header) for one in made]

    return run


@pytest.mark.parametrize("keyword", HIGHDICOM_TYPE_2)
def test_a_radiograph_lacking_a_type_2_attribute_gets_valid_results(
    keyword, classified, through_the_job, tmp_path
):
    bundle, result, header, *_ = classified
    source = stripped(header, (keyword,))
    for made in valid(through_the_job(bundle, result, source), tmp_path):
        assert keyword in made and not made[keyword].value


def test_the_nih_dx_gets_valid_results(through_the_job, tmp_path):
    """Its Patient's Age "81" (not AS) is left out of the results made straight from it."""
    bundle = find_bundles([BUILTIN_BUNDLES])["cxr_pneumonia"]
    (result,) = classify(bundle, [display_pixels(pydicom.dcmread(NIH_DX))], explain=True)
    header = pydicom.dcmread(NIH_DX, stop_before_pixels=True)
    assert not set(HIGHDICOM_TYPE_2) <= set(header.dir())
    valid(through_the_job(bundle, result, header), tmp_path)
    for made in valid(radiograph_results(bundle, result, header), tmp_path):
        assert made.PatientID == header.PatientID and "PatientAge" not in made


def test_a_ct_series_lacking_every_type_2_attribute_gets_valid_results(ct_slab, tmp_path):
    sources = [stripped(d, HIGHDICOM_TYPE_2) for d in ct_slab.volume.datasets]
    seg = encode_segmentation(ct_slab.bundle, ct_slab.result, sources, result_identity(901))
    report = encode_measurements(ct_slab.bundle, ct_slab.result, seg, sources, result_identity(902))
    valid([seg, report], tmp_path)


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_highdicom_gets_a_copy_and_the_original_stays_as_it_was(ct_slab):
    header = ct_slab.volume.datasets[0]
    assert highdicom_source(header) is header, "nothing to mend: no copy"
    source = stripped(header, HIGHDICOM_TYPE_2)
    source.PatientAge = "81"
    source.PixelSpacing = [0, 0]
    before = copy.deepcopy(source)
    usable = highdicom_source(source)
    assert source == before
    assert all(usable[keyword].value in (None, "") for keyword in HIGHDICOM_TYPE_2)
    assert "PatientAge" not in usable and "PixelSpacing" not in usable
    assert usable.SOPInstanceUID == source.SOPInstanceUID
