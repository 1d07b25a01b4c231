"""The README's set-up commands: the install line pins the PyTorch that setup.cfg pins, the CPU
path takes it from PyTorch's CPU index, and `.ci/run` runs the README's test command verbatim."""

from __future__ import annotations

import configparser
import re

from .conftest import ROOT

SETUP = (ROOT / "README.md").read_text().split("## Set-up: two commands")[1].split("\n## ")[0]
#: the indented command lines of the README's set-up section, in order
COMMANDS = [line[4:] for line in SETUP.splitlines() if line.startswith("    ") and line[4] != "#"]
CI = (ROOT / ".ci" / "run").read_text().splitlines()
#: the console's three.js bundle, built from npm before the node starts
FRONTEND = [
    "npm ci --prefix dicom_node/console/frontend",
    "npm run build --prefix dicom_node/console/frontend",
]


def pinned_torch() -> str:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    (pin,) = re.findall(r"^torch==(\S+)$", setup["options"]["install_requires"], re.M)
    return pin


def test_the_first_command_makes_a_venv_installs_cpu_pytorch_then_starts_the_node():
    cpu, gpu, _ = COMMANDS
    steps = cpu.split(" && ")
    assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"]
    assert steps[2] == (
        f"pip install torch=={pinned_torch()} --index-url https://download.pytorch.org/whl/cpu"
    )
    assert steps[3:] == [
        "pip install -e .",
        *FRONTEND,
        "dicom-node serve --config config/node.yaml",
    ]
    assert gpu.split(" && ") == steps[:2] + steps[3:]  # the same without the CPU build


def test_ci_runs_the_readme_test_command_with_the_pinned_cpu_pytorch():
    test_command = COMMANDS[-1]
    assert test_command == "pip install -q -e '.[test]' && python -m pytest -q"
    assert CI[-1] == test_command
    assert f"pip install -q torch=={pinned_torch()}" in CI
    assert CI.index("python3 -m venv .venv") < CI.index(". .venv/bin/activate")
    for step in FRONTEND:  # before the tests, which show the console's 3D view
        assert any(line.startswith(step) for line in CI[: CI.index(". .venv/bin/activate")])
