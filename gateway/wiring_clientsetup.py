"""Wires client self-configuration into the HTTP front end (no listener of its own):
Thunderbird autoconfig at both of its URLs, Outlook POX autodiscover, the Apple
configuration profile, and the MTA-STS policy (RFC 8461 §3.2) whose TXT record
`cxgw dns records` prints."""

from __future__ import annotations

from typing import Any

from gateway import clientsetup, dnsrecords, webchat
from gateway.app import COMPONENT_FACTORIES, Endpoint, Services
from gateway.http import Request, Response

XML = "application/xml; charset=utf-8"
AUTODISCOVER_MAX_BODY = 8192  # a POX request is a few hundred bytes


class ClientSetupWiring:
    name = "clientsetup"

    def __init__(self, s: Services) -> None:
        self.settings = clientsetup.ClientSettings.from_config(s.cfg)
        http = s.http
        # Thunderbird asks autoconfig.<domain>/mail/config-v1.1.xml, then
        # <domain>/.well-known/autoconfig/mail/config-v1.1.xml (both with ?emailaddress=).
        http.route("/.well-known/autoconfig/mail/config-v1.1.xml", self._thunderbird)
        http.route("/mail/config-v1.1.xml", self._thunderbird)
        # Outlook POSTs to autodiscover.<domain>/autodiscover/autodiscover.xml; the
        # capitalised spelling is what older Outlooks and the SRV target's users send.
        for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
            http.route(path, self._autodiscover, methods=("POST",),
                       max_body=AUTODISCOVER_MAX_BODY)
        http.route("/apple/", self._apple)
        http.route("/.well-known/mta-sts.txt", self._mta_sts)
        http.route(webchat.PATH, webchat.WebChat(s.cfg).handle)

    async def _thunderbird(self, req: Request) -> Response:
        given = req.query.get("emailaddress", [""])[0]
        address = clientsetup.local_address(self.settings, given)
        if given and address is None:
            return Response(404, b"not a domain served here\n")
        return Response(200, clientsetup.thunderbird(self.settings, address), XML)

    async def _autodiscover(self, req: Request) -> Response:
        given = clientsetup.autodiscover_request_address(req.body)
        address = clientsetup.local_address(self.settings, given)
        return Response(200, clientsetup.autodiscover(self.settings, address), XML)

    async def _apple(self, req: Request) -> Response:
        name = req.path[len("/apple/"):]
        if not name.endswith(".mobileconfig"):
            return Response(404, b"not found\n")
        address = clientsetup.local_address(self.settings, name[:-len(".mobileconfig")])
        if address is None:
            return Response(404, b"not an address of this domain\n")
        return Response(200, clientsetup.mobileconfig(self.settings, address),
                        "application/x-apple-aspen-config",
                        {"Content-Disposition":
                         f'attachment; filename="{address}.mobileconfig"'})

    async def _mta_sts(self, req: Request) -> Response:
        return Response(200, dnsrecords.mta_sts_policy(self.settings).encode(),
                        "text/plain; charset=utf-8")

    async def start(self) -> list[Endpoint]:
        return []

    async def stop(self) -> None:
        return None


def factory(s: Services) -> Any:
    return ClientSetupWiring(s)


COMPONENT_FACTORIES.append(factory)
