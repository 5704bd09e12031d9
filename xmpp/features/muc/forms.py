"""XEP-0004 data forms, just what MUC needs: build a form, read a submitted one."""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree.ElementTree import Element, SubElement

DATA = "jabber:x:data"
X = f"{{{DATA}}}x"
FIELD = f"{{{DATA}}}field"
VALUE = f"{{{DATA}}}value"
OPTION = f"{{{DATA}}}option"
TRUE = frozenset({"1", "true"})


def form(form_type: str, ftype: str = "form", title: str = "") -> Element:
    x = Element(X, {"type": ftype})
    if title:
        SubElement(x, f"{{{DATA}}}title").text = title
    hidden(x, "FORM_TYPE", form_type)
    return x


def hidden(x: Element, var: str, value: str) -> None:
    add(x, var, "hidden", [value])


def add(x: Element, var: str, ftype: str, values: Iterable[str], label: str = "",
        options: Iterable[tuple[str, str]] = ()) -> Element:
    attrs = {"var": var}
    if ftype:
        attrs["type"] = ftype
    if label:
        attrs["label"] = label
    f = SubElement(x, FIELD, attrs)
    for label_, value in options:
        opt = SubElement(f, OPTION, {"label": label_} if label_ else {})
        SubElement(opt, VALUE).text = value
    for v in values:
        SubElement(f, VALUE).text = v
    return f


def boolean(x: Element, var: str, value: bool, label: str = "") -> None:
    add(x, var, "boolean", ["1" if value else "0"], label)


def values(x: Element) -> dict[str, list[str]]:
    """var → values of a submitted form (XEP-0004 §3.2)."""
    out: dict[str, list[str]] = {}
    for f in x.findall(FIELD):
        var = f.get("var")
        if var:
            out[var] = [v.text or "" for v in f.findall(VALUE)]
    return out


def form_type(x: Element) -> str:
    vals = values(x).get("FORM_TYPE")
    return vals[0] if vals else ""


def as_bool(vals: list[str]) -> bool:
    return bool(vals) and vals[0].strip().lower() in TRUE
