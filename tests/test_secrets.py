"""Secrets out of the YAML: each secret from a file (``KEY_file``) or an environment variable
(``KEY_env``); check-config warns about one written inline and refuses key and secret files
that group or others may read."""

from __future__ import annotations

import pytest

from dicom_node.config import ConfigError, parse_config
from dicom_node.config.secrets import masked

from .test_cli import dicom_node, write_config

OAUTH = {
    "method": "oauth2",
    "token_url": "https://ehr.example/token",
    "client_id": "ai-node",
}
FHIR = {"base_url": "https://ehr.example/fhir", "patient_identifier_system": "urn:oid:1.2.3"}


def secret_file(tmp_path, name: str, text: str, mode: int = 0o600):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_every_secret_can_come_from_a_file_or_an_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_TOKEN", "a-static-token-of-32-characters!")
    monkeypatch.setenv("EHR_SECRET", "from the environment")
    config = parse_config(
        {
            "fhir": {**FHIR, "auth": {**OAUTH, "client_secret_env": "EHR_SECRET"}},
            "http": {
                "dicomweb": {
                    "auth": {
                        "bearer_tokens": [{"token_env": "NODE_TOKEN"}],
                        "basic_users": [
                            {
                                "username": "viewer",
                                "password_file": str(secret_file(tmp_path, "pw", "s3cret-pw\n")),
                            }
                        ],
                    }
                }
            },
            "peers": {
                "archive": {
                    "dicomweb_url": "https://archive.example/dicomweb",
                    "auth": {
                        "method": "bearer",
                        "token_file": str(secret_file(tmp_path, "tok", "archive-token")),
                    },
                }
            },
        }
    )
    assert config.fhir.auth.client_secret == "from the environment"
    assert config.http.dicomweb.auth.bearer_tokens[0].token == "a-static-token-of-32-characters!"
    assert config.http.dicomweb.auth.basic_users[0].password == "s3cret-pw", "newline dropped"
    assert config.peers["archive"].auth.token == "archive-token"


@pytest.mark.parametrize(
    "auth, message",
    [
        (
            {"client_secret": "x", "client_secret_env": "EHR_SECRET"},
            "fhir.auth.client_secret: give one of client_secret, client_secret_env",
        ),
        (
            {"client_secret_env": "NOT_SET_ANYWHERE"},
            "fhir.auth.client_secret_env: environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            {"client_secret_file": "/nonexistent/secret"},
            "fhir.auth.client_secret_file: cannot read",
        ),
    ],
)
def test_a_secret_that_cannot_be_read_names_its_key(auth, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"fhir": {**FHIR, "auth": {**OAUTH, **auth}}})


def test_check_config_warns_about_inline_secrets_and_refuses_files_others_may_read(tmp_path):
    settings = {
        "storage": {"path": str(tmp_path / "storage")},
        "fhir": {**FHIR, "auth": {**OAUTH, "client_secret": "written-inline"}},
    }
    inline = dicom_node("check-config", str(write_config(tmp_path, settings)))
    assert inline.returncode == 0, inline.stderr
    assert "warning: fhir.auth.client_secret is written in the configuration file" in inline.stderr

    loose = secret_file(tmp_path, "secret", "s", mode=0o640)
    settings["fhir"]["auth"] = {**OAUTH, "client_secret_file": str(loose)}
    refused = dicom_node("check-config", str(write_config(tmp_path, settings)))
    assert refused.returncode == 3
    assert f"fhir.auth.client_secret_file: {loose} may be read by group or others" in refused.stderr
    assert "mode 0640" in refused.stderr and "warning" not in refused.stderr

    loose.chmod(0o600)
    key = secret_file(tmp_path, "node.key", "not really a key", mode=0o644)
    settings["http"] = {"tls_certificate_file": str(key), "tls_key_file": str(key)}
    refused = dicom_node("check-config", str(write_config(tmp_path, settings)))
    assert refused.returncode == 3 and f"http.tls_key_file: {key} may be read" in refused.stderr


CELERY = {
    "storage": {"database": "postgresql+psycopg://dicom@db.example/node"},
    "jobs": {"engine": "celery", "broker_url": "amqp://dicom@mq.example:5672/node"},
}


def test_the_broker_password_comes_from_a_file_and_is_never_shown(tmp_path, monkeypatch):
    password = "br0ker:pass/w@rd%"
    settings = {
        **CELERY,
        "jobs": {
            **CELERY["jobs"],
            "broker_password_file": str(secret_file(tmp_path, "broker", password + "\n")),
        },
    }
    config = parse_config(settings)
    assert config.jobs.broker_password == password
    # put into the URL, escaped, only to connect (kombu unquotes it)
    from kombu.utils.url import url_to_parts

    connect = config.jobs.broker_connection_url
    assert connect == "amqp://dicom:br0ker%3Apass%2Fw%40rd%25@mq.example:5672/node"
    assert url_to_parts(connect).password == password
    assert password not in repr(config)
    shown = str(masked(config.model_dump(mode="json")))
    assert password not in shown and "'broker_password': '********'" in shown

    monkeypatch.setenv("BROKER_PASSWORD", password)
    settings["jobs"] = {**CELERY["jobs"], "broker_password_env": "BROKER_PASSWORD"}
    settings["storage"]["path"] = str(tmp_path / "storage")
    checked = dicom_node("check-config", str(write_config(tmp_path, settings)))
    assert checked.returncode == 0, checked.stderr
    assert "warning" not in checked.stderr
    assert "broker amqp://dicom@mq.example:5672/node" in checked.stdout
    assert password not in checked.stdout + checked.stderr


def test_a_broker_password_in_the_url_is_warned_about_masked_and_not_given_twice(tmp_path):
    settings = {
        **CELERY,
        "storage": {**CELERY["storage"], "path": str(tmp_path / "storage")},
        "jobs": {**CELERY["jobs"], "broker_url": "amqp://dicom:inline-pw@mq.example:5672/node"},
    }
    inline = dicom_node("check-config", str(write_config(tmp_path, settings)))
    assert inline.returncode == 0, inline.stderr
    assert (
        "warning: jobs.broker_url carries a password written in the configuration file: leave it "
        "out of the URL and give jobs.broker_password_file or jobs.broker_password_env instead"
    ) in inline.stderr
    assert "inline-pw" not in inline.stdout
    assert "broker amqp://dicom:********@mq.example:5672/node" in inline.stdout

    settings["jobs"]["broker_password"] = "another"
    with pytest.raises(ConfigError, match="jobs.broker_url carries a password already"):
        parse_config(settings)
