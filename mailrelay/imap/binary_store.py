"""A message APPENDed with NUL octets in a single-part body is stored base64-encoded.

RFC 3516 §4.2: literal8 is allowed only in a BINARY[] response; BODY[] and RFC822 send a
``literal``, which may not hold NUL (RFC 3501 §4.3). A part sent with
``Content-Transfer-Encoding: binary`` (APPEND literal8, RFC 3516 §4.4) therefore cannot be
returned by BODY[] as it came; like Dovecot we keep its content and change its transfer
encoding to base64 once, when it is stored, so BODY[] is base64 and BINARY[] gives back
the very bytes sent. Multipart messages are stored as sent (see docs/imaptest.md).
"""

from __future__ import annotations

import base64
import re

__all__ = ["nul_body_to_base64"]

_CTE = re.compile(rb"^content-transfer-encoding:[ \t]*[^\r\n]*(\r?\n[ \t][^\r\n]*)*\r?\n",
                  re.I | re.M)
_MULTI = re.compile(rb"^content-type:[ \t]*(multipart|message)/", re.I | re.M)


def nul_body_to_base64(raw: bytes) -> bytes:
    """``raw`` unchanged unless it is a single-part message whose body holds NUL."""
    if b"\0" not in raw:
        return raw
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw
    head, body = raw[: end + 2], raw[end + 4 :]
    if b"\0" in head or _MULTI.search(head):
        return raw
    head = _CTE.sub(b"", head)
    lines = base64.encodebytes(body).replace(b"\n", b"\r\n")
    return head + b"Content-Transfer-Encoding: base64\r\n\r\n" + lines
