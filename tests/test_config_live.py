"""What a reload applies: the live settings only, checked together with the running values of the
others; a refused file changes nothing and tells no part of the node."""

from __future__ import annotations

import yaml

from dicom_node.config import load_config
from dicom_node.config.live import LiveConfiguration, changed_keys

PACS = {"ae_title": "PACS", "host": "127.0.0.1", "port": 104}


def live_node(tmp_path, settings: dict) -> tuple[LiveConfiguration, list]:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(settings))
    told: list = []
    live = LiveConfiguration(path, load_config(path), load_config)
    live.subscribe(told.append)
    return live, told


def test_changed_keys_name_a_peer_and_a_list_as_one_key():
    old = {"peers": {"a": {"port": 1}}, "inference": {"routes": [{"name": "x"}]}, "b": {"c": 1}}
    new = {"peers": {"a": {"port": 2}, "n": {}}, "inference": {"routes": []}, "b": {"c": 2}}
    assert changed_keys(old, new) == ["b.c", "inference.routes", "peers.a", "peers.n"]


def test_live_settings_are_applied_and_the_others_kept_until_a_restart(tmp_path):
    live, told = live_node(tmp_path, {"dicom": {"port": 11112}})
    live.path.write_text(
        yaml.safe_dump(
            {
                "dicom": {"port": 11113, "require_known_calling_ae": True},
                "peers": {"pacs": PACS},
                "results": {"destinations": ["pacs"]},
                "storage": {"path": str(tmp_path / "elsewhere")},
            }
        )
    )
    outcome = live.reload()
    assert outcome.applied
    assert outcome.changed == [
        "dicom.require_known_calling_ae",
        "peers.pacs",
        "results.destinations",
    ]
    assert outcome.needs_restart == ["dicom.port", "storage.path"]
    assert told == [live.config]
    assert live.config.dicom.port == 11112 and live.config.dicom.require_known_calling_ae
    assert live.config.results.destinations == ["pacs"]

    assert live.reload().changed == []  # nothing new: no part of the node is told again
    assert len(told) == 1


def test_a_live_change_that_needs_a_restarted_setting_is_refused(tmp_path):
    live, told = live_node(tmp_path, {})
    tls = {"port": 2762, "certificate_file": "c.pem", "key_file": "k.pem", "ca_file": "ca.pem"}
    pinned = {**PACS, "certificate_subject": "CN=pacs"}
    live.path.write_text(yaml.safe_dump({"dicom": {"tls": tls}, "peers": {"pacs": pinned}}))
    outcome = live.reload()
    assert not outcome.applied and told == [] and live.config.peers == {}
    assert "needs dicom.tls.port" in outcome.message
    assert outcome.message.startswith(
        "configuration reload refused, the running configuration stays: configuration error: "
    )
