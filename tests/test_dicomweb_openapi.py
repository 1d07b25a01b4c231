"""schemathesis against the node's served OpenAPI description: no request it generates, however
odd its paths, parameters or headers, gets a 5xx answer; and requests that break the description
(negative data: wrong types, out-of-range numbers, missing required parts) are refused with a
4xx, never served as if they were valid."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error

from .conftest import configured_node, dcmsend
from .test_dicomweb import load_files


@pytest.fixture(scope="module")
def served_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("openapi")
    node = configured_node(root / "node", f"sqlite:///{root / 'index.sqlite'}")
    node.start()
    try:
        result = dcmsend(node.port, load_files(root / "files"))
        assert result.returncode == 0, result.stderr
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{node.http_port}/openapi.json")
    finally:
        node.stop()


@pytest.mark.parametrize(
    ("mode", "checks"),
    [
        (GenerationMode.POSITIVE, [not_a_server_error]),
        (GenerationMode.NEGATIVE, [not_a_server_error, negative_data_rejection]),
    ],
    ids=["valid", "negative"],
)
def test_no_server_error(served_schema, mode, checks):
    """Each operation, with examples generated from its description (schemathesis' pytest
    plugin does not run under pytest 9, so the operations are driven here)."""
    for result in served_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case):
            case.call_and_validate(checks=checks)

        try:
            no_server_error()
        except Unsatisfiable:
            # nothing in the operation's description can be broken (no parameters, no body)
            assert mode is GenerationMode.NEGATIVE
