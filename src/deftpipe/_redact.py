"""Secrets never reach an artefact or a message: one scrubber for everything deftpipe writes that
came from outside (a storage URL, a user program's output, an argv).

Hidden: the password of any ``scheme://user:password@host`` URL, and the value of every environment
variable whose name says it is a secret (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*PASSWD*``,
``*API_KEY*``, ``*CREDENTIAL*``, ``*PRIVATE_KEY*``, ``PG*PASS*``) and is at least 4 characters long.
"""

from __future__ import annotations

import os
import re

_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@\s]*@")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|PRIVATE_?KEY|^PG.*PASS", re.I)


def redact_url(text: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def scrub(text: str) -> str:
    """``text`` with URL passwords and secret environment values replaced by ``***``."""
    text = redact_url(text)
    for name, value in os.environ.items():
        if len(value) >= 4 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return text


__all__ = ["redact_url", "scrub"]
