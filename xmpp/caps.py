"""XEP-0115 entity capabilities: the verification string of an identity/feature set."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from xml.etree.ElementTree import Element

NODE = "https://cx-gateway.example/caps"


XDATA = "jabber:x:data"


def verification_string(identities: list[tuple[str, str, str]], features: list[str],
                        forms: Sequence[Element] = ()) -> str:
    """XEP-0115 §5.1: base64(sha-1(S)), extended service discovery forms included
    (§5.1 step 3: by FORM_TYPE, then each field by var, its values sorted)."""
    parts = [f"{cat}/{typ}//{name}<" for cat, typ, name in sorted(identities)]
    parts += [f"{f}<" for f in sorted(set(features))]

    def values(field: Element) -> list[str]:
        return sorted(v.text or "" for v in field.findall(f"{{{XDATA}}}value"))

    keyed = []
    for form in forms:
        fields = form.findall(f"{{{XDATA}}}field")
        form_type = next((values(f) for f in fields if f.get("var") == "FORM_TYPE"), [""])
        keyed.append((form_type[0] if form_type else "", fields))
    for ftype, fields in sorted(keyed, key=lambda t: t[0]):
        parts.append(f"{ftype}<")
        for field in sorted((f for f in fields if f.get("var") != "FORM_TYPE"),
                            key=lambda f: f.get("var") or ""):
            parts.append(f"{field.get('var') or ''}<")
            parts += [f"{v}<" for v in values(field)]
    return base64.b64encode(hashlib.sha1("".join(parts).encode("utf-8")).digest()).decode()
