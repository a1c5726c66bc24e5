"""A small CardDAV client (RFC 6352) on the standard library: find the address books, fetch every card.

``url`` may be an address book, an address book home, a principal or the server root: the client follows
``current-user-principal`` and ``addressbook-home-set`` to the address books. Cards come from one
``addressbook-query`` REPORT per address book; servers that refuse it get a ``PROPFIND`` listing and
``addressbook-multiget`` REPORTs in batches instead. Authentication is HTTP Basic or Digest, whichever the
server asks for. Answers are size-limited and parsed with the standard XML parser (no DTDs or external
entities are resolved).

A server that cannot be reached, refuses the credentials or answers nonsense raises :class:`CardDavError`
with the reason; one bad card only adds a warning.
"""

from __future__ import annotations

import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from contacts_sync.vcard import MAX_VCARD_BYTES, ParseResult, parse_vcards

log = logging.getLogger(__name__)

__all__ = ["CardDavClient", "CardDavError", "CardDavSettings"]

_DAV = "DAV:"
_CARD = "urn:ietf:params:xml:ns:carddav"
_MULTIGET_BATCH = 100
_MAX_REDIRECTS = 3


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


class CardDavError(RuntimeError):
    """The address book could not be read; the message says why (never the password)."""


class _HttpStatus(CardDavError):
    """An HTTP error status other than 401 (which is an authentication failure)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CardDavSettings:
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 20.0  # per request
    max_bytes: int = MAX_VCARD_BYTES  # per response
    ca_file: str | None = None  # CA bundle for https; None: the system store


@dataclass(frozen=True)
class _Response:
    href: str
    props: dict[str, ET.Element]  # props with a 2xx status, by qualified tag


class CardDavClient:
    def __init__(self, settings: CardDavSettings) -> None:
        parsed = urllib.parse.urlsplit(settings.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CardDavError(f"CardDAV URL must be http:// or https://, not {settings.url!r}")
        self.settings = settings
        handlers: list[urllib.request.BaseHandler] = []
        if settings.username is not None:
            manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            manager.add_password(None, settings.url, settings.username, settings.password or "")
            handlers += [urllib.request.HTTPBasicAuthHandler(manager), urllib.request.HTTPDigestAuthHandler(manager)]
            if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
                log.warning("CardDAV: the password goes to %s without TLS (use https://)", parsed.hostname)
        if parsed.scheme == "https":
            context = ssl.create_default_context(cafile=settings.ca_file)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    # -- HTTP -------------------------------------------------------------------------------------------

    def _request(self, method: str, url: str, body: str | None = None, depth: str | None = None) -> bytes:
        headers = {"Content-Type": "application/xml; charset=utf-8", "User-Agent": "harkd-contacts"}
        if depth is not None:
            headers["Depth"] = depth
        data = body.encode("utf-8") if body is not None else None
        for _ in range(_MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self._opener.open(request, timeout=self.settings.timeout_s) as response:
                    content: bytes = response.read(self.settings.max_bytes + 1)
                    if len(content) > self.settings.max_bytes:
                        raise CardDavError(f"{method} {url}: answer larger than {self.settings.max_bytes} bytes")
                    return content
            except urllib.error.HTTPError as exc:
                location = exc.headers.get("Location") if exc.headers else None
                if exc.code in (301, 302, 307, 308) and location:
                    url = urllib.parse.urljoin(url, location)
                    continue
                if exc.code == 401:
                    who = f"user {self.settings.username!r}" if self.settings.username else "no credentials"
                    raise CardDavError(f"{method} {url}: authentication failed ({who})") from None
                raise _HttpStatus(exc.code, f"{method} {url}: HTTP {exc.code} {exc.reason}") from None
            except urllib.error.URLError as exc:
                raise CardDavError(f"cannot reach {url}: {exc.reason}") from None
            except (TimeoutError, OSError) as exc:
                raise CardDavError(f"{method} {url}: {exc}") from None
        raise CardDavError(f"{method} {url}: too many redirects")

    def _multistatus(self, method: str, url: str, body: str, depth: str) -> list[_Response]:
        content = self._request(method, url, body, depth)
        try:
            root = ET.fromstring(content)
        except ET.ParseError as exc:
            raise CardDavError(f"{method} {url}: the answer is not XML: {exc}") from None
        if root.tag != _q(_DAV, "multistatus"):
            raise CardDavError(f"{method} {url}: expected a DAV multistatus answer, got {root.tag}")
        out = []
        for response in root.iter(_q(_DAV, "response")):
            href = (response.findtext(_q(_DAV, "href")) or "").strip()
            props: dict[str, ET.Element] = {}
            for propstat in response.iter(_q(_DAV, "propstat")):
                status = propstat.findtext(_q(_DAV, "status")) or ""
                if " 2" not in status:
                    continue
                for prop in propstat.iter(_q(_DAV, "prop")):
                    for child in prop:
                        props[child.tag] = child
            out.append(_Response(urllib.parse.urljoin(url, href), props))
        return out

    # -- discovery --------------------------------------------------------------------------------------

    def address_books(self) -> list[str]:
        """The URLs of the address books reachable from the configured URL."""
        url = self.settings.url
        body = _propfind("<d:resourcetype/><d:current-user-principal/><c:addressbook-home-set/>")
        here = self._props_of(url, body)
        if _is_address_book(here):
            return [url]
        home = _href_in(here, _q(_CARD, "addressbook-home-set"), url)
        if home is None:
            principal = _href_in(here, _q(_DAV, "current-user-principal"), url)
            if principal is not None:
                home = _href_in(self._props_of(principal, _propfind("<c:addressbook-home-set/>")),
                                _q(_CARD, "addressbook-home-set"), principal)
        books = self._books_in(home or url)
        if not books:
            raise CardDavError(f"no address book found at {url}")
        return books

    def _props_of(self, url: str, body: str) -> dict[str, ET.Element]:
        try:
            responses = self._multistatus("PROPFIND", url, body, "0")
        except _HttpStatus as exc:
            raise CardDavError(str(exc)) from None
        return responses[0].props if responses else {}

    def _books_in(self, url: str) -> list[str]:
        try:
            responses = self._multistatus("PROPFIND", url, _propfind("<d:resourcetype/>"), "1")
        except _HttpStatus as exc:
            raise CardDavError(str(exc)) from None
        return sorted({r.href for r in responses if _is_address_book(r.props)})

    # -- cards ------------------------------------------------------------------------------------------

    def fetch(self) -> ParseResult:
        """Every card of every address book; raises :class:`CardDavError` when the server cannot be read."""
        result = ParseResult()
        for book in self.address_books():
            try:
                responses = self._multistatus("REPORT", book, _QUERY, "1")
            except _HttpStatus as exc:
                log.info("CardDAV: %s; listing the address book and fetching the cards in batches", exc)
                responses = self._multiget(book)
            for response in responses:
                data = response.props.get(_q(_CARD, "address-data"))
                if data is None or not (data.text or "").strip():
                    if response.href.rstrip("/") != book.rstrip("/"):
                        result.warn(f"{response.href}: no address data in the answer")
                    continue
                result.extend(parse_vcards(data.text or "", response.href))
            log.info("CardDAV: %s: %d cards", book, len(result.cards))
        return result

    def _multiget(self, book: str) -> list[_Response]:
        try:
            listing = self._multistatus("PROPFIND", book, _propfind("<d:getetag/><d:resourcetype/>"), "1")
        except _HttpStatus as exc:
            raise CardDavError(str(exc)) from None
        hrefs = [urllib.parse.urlsplit(r.href).path for r in listing
                 if r.href.rstrip("/") != book.rstrip("/") and _q(_DAV, "getetag") in r.props]
        out: list[_Response] = []
        for i in range(0, len(hrefs), _MULTIGET_BATCH):
            body = _multiget_body(hrefs[i : i + _MULTIGET_BATCH])
            try:
                out += self._multistatus("REPORT", book, body, "1")
            except _HttpStatus as exc:
                raise CardDavError(str(exc)) from None
        return out


def _propfind(props: str) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="{_DAV}" xmlns:c="{_CARD}">'
            f"<d:prop>{props}</d:prop></d:propfind>")


_QUERY = (f'<?xml version="1.0" encoding="utf-8"?><c:addressbook-query xmlns:d="{_DAV}" xmlns:c="{_CARD}">'
          "<d:prop><d:getetag/><c:address-data/></d:prop></c:addressbook-query>")


def _multiget_body(hrefs: Iterable[str]) -> str:
    items = "".join(f"<d:href>{escape(h)}</d:href>" for h in hrefs)
    return (f'<?xml version="1.0" encoding="utf-8"?><c:addressbook-multiget xmlns:d="{_DAV}" xmlns:c="{_CARD}">'
            f"<d:prop><d:getetag/><c:address-data/></d:prop>{items}</c:addressbook-multiget>")


def _is_address_book(props: dict[str, ET.Element]) -> bool:
    kind = props.get(_q(_DAV, "resourcetype"))
    return kind is not None and kind.find(_q(_CARD, "addressbook")) is not None


def _href_in(props: dict[str, ET.Element], tag: str, base: str) -> str | None:
    element = props.get(tag)
    href = element.findtext(_q(_DAV, "href")) if element is not None else None
    return urllib.parse.urljoin(base, href.strip()) if href and href.strip() else None
