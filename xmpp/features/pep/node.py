"""Pure rules of a PEP node (XEP-0060 node configuration as XEP-0163 needs it): the
options we implement, their defaults, parsing of data forms (XEP-0004), publish-options
preconditions (XEP-0060 §7.1.5) and the access models. No I/O.

Options (``pubsub#`` prefix on the wire):

- ``access_model``: ``presence`` (XEP-0163 §4 default), ``open``, ``whitelist`` (owner only:
  we keep no member lists);
- ``max_items``: 1..``MAX_ITEMS`` or ``max`` (= ``MAX_ITEMS``), default 1;
- ``persist_items``: items are always stored; the value is kept and compared;
- ``send_last_published_item``: ``on_sub_and_presence`` (default), ``on_sub``, ``never``;
- ``notify_retract``: notify retractions (default true);
- ``deliver_notifications``, ``deliver_payloads``: default true.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element, SubElement

XDATA = "jabber:x:data"
PUBSUB = "http://jabber.org/protocol/pubsub"
NODE_CONFIG = f"{PUBSUB}#node_config"
PUBLISH_OPTIONS = f"{PUBSUB}#publish-options"
MAX_ITEMS = 1000  # what "max" means, and the largest number accepted

ACCESS_MODELS = ("open", "presence", "whitelist")
SEND_LAST = ("on_sub_and_presence", "on_sub", "never")
BOOLEANS = ("persist_items", "notify_retract", "deliver_notifications", "deliver_payloads")

DEFAULTS: dict[str, Any] = {
    "access_model": "presence",
    "max_items": 1,
    "persist_items": True,
    "send_last_published_item": "on_sub_and_presence",
    "notify_retract": True,
    "deliver_notifications": True,
    "deliver_payloads": True,
}


class OptionError(ValueError):
    """A field we do not implement or a value out of range; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def _bool(field: str, value: str) -> bool:
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise OptionError(field, "expected a boolean")


def normalise(field: str, value: str) -> Any:
    """The stored value of option `field` (without ``pubsub#``) given as `value`."""
    value = value.strip()
    if field == "access_model":
        if value not in ACCESS_MODELS:
            raise OptionError(field, "unsupported access model")
        return value
    if field == "max_items":
        if value == "max":
            return MAX_ITEMS
        if not value.isdigit() or not 1 <= int(value) <= MAX_ITEMS:
            raise OptionError(field, f"expected 1..{MAX_ITEMS} or max")
        return int(value)
    if field == "send_last_published_item":
        if value not in SEND_LAST:
            raise OptionError(field, "unsupported value")
        return value
    if field in BOOLEANS:
        return _bool(field, value)
    raise OptionError(field, "not supported")


def read_form(x: Element | None) -> dict[str, Any]:
    """The ``pubsub#`` options of a submitted data form, normalised (FORM_TYPE and
    fields outside ``pubsub#`` skipped). Raises OptionError."""
    out: dict[str, Any] = {}
    if x is None:
        return out
    for field in x.iter(f"{{{XDATA}}}field"):
        var = field.get("var") or ""
        if var == "FORM_TYPE" or not var.startswith("pubsub#"):
            continue
        values = [v.text or "" for v in field.findall(f"{{{XDATA}}}value")]
        out[var[7:]] = normalise(var[7:], values[0] if values else "")
    return out


def config_of(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULTS, **(stored or {})}


def unmet(config: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Options of `wanted` the node's `config` does not have (XEP-0060 §7.1.5.2)."""
    full = config_of(config)
    return [k for k, v in wanted.items() if full.get(k) != v]


def may_read(access_model: str, owner: str, requester: str, subscribed: bool) -> bool:
    """XEP-0060 §4.5 access models: `subscribed` = `requester` has a presence
    subscription to `owner` ('from' or 'both' in the owner's roster)."""
    if requester == owner:
        return True
    if access_model == "open":
        return True
    if access_model == "presence":
        return subscribed
    return False  # whitelist: the owner alone (no member lists kept)


def config_form(config: Mapping[str, Any]) -> Element:
    """The node configuration form (XEP-0060 §8.2) with the current values."""
    full = config_of(config)
    x = Element(f"{{{XDATA}}}x", {"type": "form"})
    ft = SubElement(x, f"{{{XDATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    SubElement(ft, f"{{{XDATA}}}value").text = NODE_CONFIG
    for key in DEFAULTS:
        value = full[key]
        if isinstance(value, bool):
            ftype, text = "boolean", "1" if value else "0"
        elif key == "max_items":
            ftype, text = "text-single", str(value)
        else:
            ftype, text = "list-single", str(value)
        f = SubElement(x, f"{{{XDATA}}}field", {"var": f"pubsub#{key}", "type": ftype})
        SubElement(f, f"{{{XDATA}}}value").text = text
        if key == "access_model":
            for opt in ACCESS_MODELS:
                SubElement(SubElement(f, f"{{{XDATA}}}option"), f"{{{XDATA}}}value").text = opt
        elif key == "send_last_published_item":
            for opt in SEND_LAST:
                SubElement(SubElement(f, f"{{{XDATA}}}option"), f"{{{XDATA}}}value").text = opt
    return x
