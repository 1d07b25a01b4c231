"""Secrets kept out of the YAML file.

Every secret key (``token``, ``password``, ``client_secret``, ``broker_password``, wherever it
appears: the FHIR server's auth, a peer's auth, DICOMweb's bearer tokens and basic users, the
Celery broker's password) may instead be given as
``KEY_file: PATH`` (the file's content, without its trailing newline) or ``KEY_env: NAME`` (an
environment variable). They are resolved in the loaded document before validation, so every
section sees plain values and no section needs to know where a value came from.

`check-config` uses `findings` to warn about secrets written inline (also a password written in
``jobs.broker_url``) and to refuse key and secret files that group or others may read; the
console shows the configuration through `masked`.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

SECRET_KEYS = ("token", "password", "client_secret", "broker_password")
#: URLs whose password has a secret key of its own, given apart from the URL
URL_SECRETS = {"broker_url": "broker_password"}
#: keys naming a private key: only its owner may read the file
PRIVATE_KEY_FILES = ("key_file", "tls_key_file", "private_key_file")


class SecretError(ValueError):
    """A secret's file or environment variable cannot be read."""


def _where(location: str, key: str) -> str:
    return f"{location}.{key}" if location else key


def _read(location: str, key: str, value: object) -> str:
    if key.endswith("_env"):
        if not isinstance(value, str) or value not in os.environ:
            raise SecretError(f"{_where(location, key)}: environment variable {value} is not set")
        return os.environ[value]
    try:
        return Path(str(value)).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except OSError as error:
        raise SecretError(
            f"{_where(location, key)}: cannot read {value}: {error.strerror}"
        ) from None


def resolve_secrets(data: object, location: str = "") -> object:
    """`data` with each ``KEY_file``/``KEY_env`` of a secret key replaced by ``KEY``'s value."""
    if isinstance(data, list):
        return [resolve_secrets(item, _where(location, str(n))) for n, item in enumerate(data)]
    if not isinstance(data, dict):
        return data
    resolved = {
        key: resolve_secrets(value, _where(location, str(key))) for key, value in data.items()
    }
    for secret in SECRET_KEYS:
        given = [key for key in (secret, f"{secret}_file", f"{secret}_env") if key in resolved]
        if len(given) > 1:
            raise SecretError(f"{_where(location, secret)}: give one of {', '.join(given)}")
        if given and given[0] != secret:
            resolved[secret] = _read(location, given[0], resolved.pop(given[0]))
    return resolved


@dataclass
class Findings:
    """What `check-config` reports about secrets: warnings, and files it refuses."""

    inline: list[str] = field(default_factory=list)
    #: (the URL's key, the secret key to give its password with instead)
    url_passwords: list[tuple[str, str]] = field(default_factory=list)
    readable_by_others: list[str] = field(default_factory=list)

    def check_file(self, key: str, path: Path) -> None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            return  # a missing file is the validation's or the loader's to report
        if mode & 0o077:
            self.readable_by_others.append(
                f"{key}: {path} may be read by group or others (mode {mode:04o}; chmod 600 it)"
            )


def findings(data: object, location: str = "", found: Findings | None = None) -> Findings:
    """Secrets written in the (unresolved) document, and key or secret files others may read."""
    found = found if found is not None else Findings()
    if isinstance(data, list):
        for number, item in enumerate(data):
            findings(item, _where(location, str(number)), found)
    elif isinstance(data, dict):
        for key, value in data.items():
            where = _where(location, str(key))
            if key in SECRET_KEYS and isinstance(value, str):
                found.inline.append(where)
            elif key in URL_SECRETS and isinstance(value, str) and url_password(value):
                found.url_passwords.append((where, _where(location, URL_SECRETS[key])))
            elif key in PRIVATE_KEY_FILES or key in {f"{s}_file" for s in SECRET_KEYS}:
                if isinstance(value, str):
                    found.check_file(where, Path(value))
            else:
                findings(value, where, found)
    return found


#: what the console shows in place of a secret
MASK = "********"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")


def url_password(url: str) -> bool:
    """Whether `url` carries a password (``scheme://user:password@host``)."""
    return _URL_PASSWORD.match(url) is not None


def masked(data: object) -> object:
    """`data` (a configuration as loaded) with every secret's value, and the password of every
    URL that carries one (a database's, a broker's), replaced by `MASK`: what may be shown."""
    if isinstance(data, list):
        return [masked(item) for item in data]
    if isinstance(data, dict):
        return {
            key: MASK if key in SECRET_KEYS and value else masked(value)
            for key, value in data.items()
        }
    if isinstance(data, str):
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", data)
    return data
