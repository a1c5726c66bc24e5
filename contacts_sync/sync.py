"""One sync: read every source, merge, and hand the bias list to the daemon (file and/or retained MQTT).

Sources: each configured vCard file or directory, the CardDAV server, and Home Assistant discovery. Each
source's last good result is kept in ``<state_dir>/contacts/``; when a source cannot be read this time
(missing file, unreachable server, wrong password, broker away), or yields nothing but errors, its last
good result stands in for it, with a warning. So a failed sync never wipes the last good list: the list is
only replaced by one built from every source's newest good data, and when no source has ever been read
nothing is written or published at all.

Merging: every name is normalised exactly as the recogniser's training text (:func:`daemon.textnorm.normalize`),
de-duplicated, and the list is capped at ``max_entries``: appliances first, then contacts' full names and
organisations, then nicknames, then given names alone; alphabetical within each rank. Names longer than a
person would say (more than :data:`MAX_WORDS` words) are left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contacts_sync.carddav import CardDavClient, CardDavError, CardDavSettings
from contacts_sync.homeassistant import DiscoveryState
from contacts_sync.link import LinkError, SyncLink
from contacts_sync.vcard import Card, ParseResult, read_vcard_paths
from daemon.bias import BIAS_STATE_FILE, BiasFileError, load_bias_file, save_bias_file
from daemon.messages import BiasSet
from daemon.textnorm import normalize

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "MAX_WORDS",
    "SourceCache",
    "SourceResult",
    "SyncReport",
    "SyncSettings",
    "carddav_source",
    "homeassistant_source",
    "merge",
    "run_sync",
    "vcard_source",
]

DEFAULT_MAX_ENTRIES = 1000
MAX_WORDS = 8
_MAX_NAME_CHARS = 200  # the bias list schema's limit

# Rank of a name in the cap: lower is kept first.
_RANK = {"appliance": 0, "formatted": 1, "full": 1, "organization": 1, "nickname": 2, "given": 3}


@dataclass(frozen=True)
class SyncSettings:
    vcard_paths: tuple[Path, ...] = ()
    carddav: CardDavSettings | None = None
    homeassistant: bool = True  # take appliance names from Home Assistant MQTT discovery
    state_dir: Path | None = None  # bias.json and the per-source caches; None: neither
    write: bool = True  # write <state_dir>/bias.json and refresh the caches (else only read them)
    publish: bool = True  # publish the list retained on <prefix>/<device_id>/bias/set
    max_entries: int = DEFAULT_MAX_ENTRIES  # names in the list at most
    given_names: bool = True  # also bias toward contacts' given names alone ("call Siobhan")

    @property
    def bias_file(self) -> Path | None:
        return self.state_dir / BIAS_STATE_FILE if self.state_dir is not None else None


@dataclass
class SourceResult:
    key: str  # stable identity, e.g. "vcard:/home/me/contacts.vcf"
    contacts: list[tuple[str, str]] = field(default_factory=list)  # (name as written, what it is)
    appliances: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: str | None = None  # why the source could not be read at all
    cached_at: float | None = None  # set when the names are the last good ones from the cache

    @property
    def size(self) -> int:
        return len(self.contacts) + len(self.appliances)


@dataclass
class SyncReport:
    sources: list[SourceResult]
    document: BiasSet | None = None  # what is in force now (None: nothing was ever synced)
    warnings: list[str] = field(default_factory=list)
    written: Path | None = None
    published: bool = False
    errors: list[str] = field(default_factory=list)  # the list could not be delivered somewhere

    @property
    def exit_status(self) -> int:
        """0: all good; 1: delivered, but a source failed or something was not delivered; 2: nothing to give."""
        if self.document is None:
            return 2
        if self.errors or any(s.failed for s in self.sources):
            return 1
        return 0


# --------------------------------------------------------------------------------------------- sources


def _cards_to_names(cards: Iterable[Card], given_names: bool) -> list[tuple[str, str]]:
    return [pair for card in cards for pair in card.names(given_names=given_names)]


def _from_parse(key: str, parsed: ParseResult, given_names: bool) -> SourceResult:
    return SourceResult(key, _cards_to_names(parsed.cards, given_names), warnings=parsed.all_warnings())


def vcard_source(path: Path, given_names: bool = True) -> SourceResult:
    """One vCard file or directory."""
    parsed, unreadable = read_vcard_paths([path])
    result = _from_parse(f"vcard:{path}", parsed, given_names)
    if unreadable and not parsed.cards:
        result.failed = "; ".join(unreadable)
    else:
        result.warnings += unreadable
    return result


def carddav_source(settings: CardDavSettings, given_names: bool = True) -> SourceResult:
    key = f"carddav:{settings.url}"
    try:
        parsed = CardDavClient(settings).fetch()
    except CardDavError as exc:
        return SourceResult(key, failed=str(exc))
    return _from_parse(key, parsed, given_names)


def homeassistant_source(discovery: DiscoveryState, failed: str | None = None) -> SourceResult:
    key = f"homeassistant:{discovery.prefix}"
    if failed is not None:
        return SourceResult(key, failed=failed)
    return SourceResult(key, appliances=discovery.names(), warnings=discovery.take_warnings())


# --------------------------------------------------------------------------------------------- caches


class SourceCache:
    """The last good names of each source, one JSON file per source in ``directory``."""

    def __init__(self, directory: Path, *, read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only

    def _path(self, key: str) -> Path:
        kind = key.split(":", 1)[0]
        return self.directory / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    def load(self, key: str) -> SourceResult | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            contacts = [(str(n), str(w)) for n, w in data["contacts"]]
            appliances = [str(n) for n in data["appliances"]]
            saved = float(data["saved_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("contacts sync: ignoring the unreadable cache %s: %s", path, exc)
            return None
        return SourceResult(key, contacts, appliances, cached_at=saved)

    def save(self, result: SourceResult) -> None:
        if self.read_only:
            return
        data = {"key": result.key, "saved_at": time.time(), "contacts": [list(c) for c in result.contacts],
                "appliances": result.appliances}
        path = self._path(result.key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("contacts sync: cannot save the cache %s: %s", path, exc)


def _settle(result: SourceResult, cache: SourceCache | None) -> SourceResult:
    """Fall back to the cache when the source failed, or gave nothing but errors; else refresh the cache."""
    broken = result.failed is not None or (result.size == 0 and bool(result.warnings))
    if not broken:
        if cache is not None:
            cache.save(result)
        return result
    reason = result.failed or "it gave no names, only errors"
    cached = cache.load(result.key) if cache is not None else None
    if cached is None:
        result.warnings.append(f"{result.key}: {reason}; no earlier list of it to fall back on")
        return result
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cached.cached_at))
    cached.failed = result.failed
    cached.warnings = [*result.warnings, f"{result.key}: {reason}; using its last good list, from {when}"]
    return cached


# --------------------------------------------------------------------------------------------- merging


def merge(results: Sequence[SourceResult], max_entries: int = DEFAULT_MAX_ENTRIES) -> tuple[BiasSet, list[str]]:
    """The bias list of all sources: normalised, de-duplicated, capped; and the warnings."""
    warnings: list[str] = []
    best: dict[tuple[str, str], int] = {}  # (kind, normalised) -> rank
    too_long = 0
    for result in results:
        named = [(n, w, "contact") for n, w in result.contacts] + [(n, "appliance", "appliance")
                                                                      for n in result.appliances]
        for name, what, kind in named:
            text = normalize(name)
            if not text:
                continue
            if len(text) > _MAX_NAME_CHARS or text.count(" ") >= MAX_WORDS:
                too_long += 1
                continue
            rank = _RANK.get(what, 2)
            key = (kind, text)
            best[key] = min(rank, best.get(key, rank))
    if too_long:
        warnings.append(f"{too_long} names longer than {MAX_WORDS} words left out")
    ordered = sorted(best.items(), key=lambda item: (item[1], item[0][1], item[0][0]))
    if len(ordered) > max_entries:
        warnings.append(f"the list has {len(ordered)} names; capped at {max_entries} (the least likely to be "
                        f"said, given names alone first, left out)")
        ordered = ordered[:max_entries]
    contacts = sorted(text for (kind, text), _ in ordered if kind == "contact")
    appliances = sorted(text for (kind, text), _ in ordered if kind == "appliance")
    digest = hashlib.sha256(json.dumps([contacts, appliances]).encode()).hexdigest()[:16]
    return BiasSet.of(contacts, appliances, version=digest), warnings


# --------------------------------------------------------------------------------------------- one sync


def _read_sources(settings: SyncSettings, discovery: DiscoveryState | None, link_error: str | None,
                  cache: SourceCache | None, address_books: bool) -> list[SourceResult]:
    results: list[SourceResult] = []
    for path in settings.vcard_paths:
        cached = None if address_books or cache is None else cache.load(f"vcard:{path}")
        results.append(cached or vcard_source(path, settings.given_names))
    if settings.carddav is not None:
        cached = None if address_books or cache is None else cache.load(f"carddav:{settings.carddav.url}")
        results.append(cached or carddav_source(settings.carddav, settings.given_names))
    if discovery is not None:
        results.append(homeassistant_source(discovery, link_error))
    return results


def previous_list(settings: SyncSettings) -> BiasSet | None:
    path = settings.bias_file
    if path is None or not path.exists():
        return None
    try:
        return load_bias_file(path)
    except BiasFileError as exc:
        log.warning("contacts sync: the previous list is unreadable: %s", exc)
        return None


def run_sync(settings: SyncSettings, link: SyncLink | None = None, discovery: DiscoveryState | None = None,
             link_error: str | None = None, *, address_books: bool = True) -> SyncReport:
    """Read, merge and deliver once. ``link`` (connected) publishes and feeds ``discovery``; ``link_error``
    says why there is no link when one was wanted (the Home Assistant source then counts as failed).
    With ``address_books`` false, vCard and CardDAV names come from the cache when it has them (a
    re-sync because Home Assistant announced a change)."""
    cache = None
    if settings.state_dir is not None:
        cache = SourceCache(settings.state_dir / "contacts", read_only=not settings.write)
    raw = _read_sources(settings, discovery, link_error, cache, address_books)
    results = [r if r.cached_at is not None and r.failed is None else _settle(r, cache) for r in raw]
    report = SyncReport(results)
    for result in results:
        report.warnings += result.warnings
    if not results:
        report.errors.append("nothing to sync: no vCard paths, no CardDAV URL and Home Assistant discovery off")
        return report
    if all(r.failed and r.cached_at is None for r in results):
        report.errors.append("no source could be read and none was read before; nothing written or published")
        report.document = previous_list(settings)
        return report
    document, merge_warnings = merge(results, settings.max_entries)
    report.warnings += merge_warnings
    previous = previous_list(settings)
    if not document.phrases and previous is not None and previous.phrases and any(r.failed for r in results):
        report.warnings.append("the new list is empty while a source failed; the previous list stays in force")
        document = previous
    report.document = document
    log.info("contacts sync: %d contacts, %d appliances (version %s)", len(document.contacts),
             len(document.appliances), document.version)
    path = settings.bias_file
    if path is not None and settings.write:
        if previous == document:
            log.info("contacts sync: %s is already up to date", path)
            report.written = path
        else:
            try:
                save_bias_file(path, document)
                report.written = path
            except OSError as exc:
                report.errors.append(f"cannot write {path}: {exc.strerror or exc}")
    if settings.publish:
        if link is None:
            report.errors.append(f"not published: {link_error or 'no MQTT connection'}")
        else:
            try:
                link.publish_bias(document)
                report.published = True
            except LinkError as exc:
                report.errors.append(f"not published: {exc}")
    return report
