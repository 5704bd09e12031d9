"""XEP-0352 hold (pure): what waits for an inactive client and in which order."""

from __future__ import annotations

from xmpp.features.csi import Hold


class Conn:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def emit(self, data: bytes) -> None:
        self.out.append(data)


def test_presence_held_latest_wins_body_releases_in_order() -> None:
    h, c = Hold(), Conn()
    assert h.offer(b'<presence from="a@x/1"><show>away</show></presence>', c)
    assert h.offer(b'<presence from="b@x/1"/>', c)
    assert h.offer(b'<presence from="a@x/1"><show>dnd</show></presence>', c)
    assert h.offer(b'<message from="b@x/1"><active xmlns="http://jabber.org/protocol/chatstates"/>'
                   b'</message>', c)
    assert not h.offer(b'<presence from="b@x/1" type="subscribe"/>', c)
    assert c.out == [b'<presence from="b@x/1"/>',
                     b'<presence from="a@x/1"><show>dnd</show></presence>',
                     b'<message from="b@x/1"><active xmlns="http://jabber.org/protocol/chatstates"/>'
                     b'</message>']
    c.out.clear()
    assert not h.offer(b'<message from="b@x/1"><body>hi</body></message>', c)
    assert c.out == [] and not h.items
