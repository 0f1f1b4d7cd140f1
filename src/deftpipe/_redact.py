"""Secrets never reach an artefact or a message: one scrubber for everything deftpipe writes that
came from outside (a storage URL, a user program's output, an argv, an exception's text).

Hidden (replaced by ``***``):

* the password of any ``scheme://user:password@host`` URL;
* the value of every environment variable whose name says it is a secret: it contains ``TOKEN``,
  ``SECRET``, ``PASSWORD``, ``PASSWD``, ``PWD`` (not the shell's ``PWD``/``OLDPWD``), ``PASS``,
  ``KEY``, ``AUTH``, ``CRED``, ``DSN``, ``PRIVATE``, ``SESSION``, ``COOKIE`` or ``SIGNATURE``;
* the value of every variable named in ``DEFTPIPE_SECRET_VARS`` (comma-separated names: mark your
  own, e.g. ``DEFTPIPE_SECRET_VARS=PLANT_DB,LINE_ID``);
* the value of every variable that holds a URL with a password.

Values shorter than 4 characters are not hidden (a ``1`` would turn every digit into ``***``).
Always scrub *before* cutting a text to length (:func:`scrub_clip`): a secret that straddles the
cut would otherwise survive in part.
"""

from __future__ import annotations

import os
import re

from deftpipe.errors import MAX_ECHO, clip

_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@\s]*@")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASS|PWD|KEY|AUTH|CRED|DSN|PRIVATE|SESSION|COOKIE|SIGNATURE", re.I)
_NOT_SECRET = {"PWD", "OLDPWD", "DEFTPIPE_SECRET_VARS"}
MIN_SECRET = 4
USER_MARKED = "DEFTPIPE_SECRET_VARS"


def redact_url(text: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """The values :func:`scrub` hides, longest first (a secret that contains another goes whole)."""
    env = os.environ if environ is None else environ
    marked = {n.strip() for n in env.get(USER_MARKED, "").split(",") if n.strip()}
    values = set()
    for name, value in env.items():
        if len(value) < MIN_SECRET or name.upper() in _NOT_SECRET:
            continue
        if name in marked or _SECRET_NAME.search(name) or _URL_PASSWORD.search(value):
            values.add(value)
            m = _URL_PASSWORD.search(value)  # the password alone, wherever else it is printed
            if m:
                pw = value[m.end(1) + 1:m.end() - 1]
                if len(pw) >= MIN_SECRET:
                    values.add(pw)
    return sorted(values, key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with URL passwords and secret environment values replaced by ``***``."""
    text = redact_url(str(text))
    for value in secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text


def scrub_clip(text: object, limit: int = MAX_ECHO) -> str:
    """Scrub, *then* clip to about ``limit`` characters (:func:`deftpipe.errors.clip`)."""
    return clip(scrub(str(text)), limit)


__all__ = ["USER_MARKED", "redact_url", "scrub", "scrub_clip", "secret_values"]
