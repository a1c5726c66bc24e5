"""``harkd contacts``: keep the bias list current from address books and Home Assistant.

``harkd contacts sync`` runs once (the systemd timer's job), ``harkd contacts watch`` keeps running and
follows Home Assistant renames and removals as they happen, ``harkd contacts show`` prints the names found
in vCard files. Sources and delivery come from the ``contacts:`` and ``mqtt:`` sections of the configuration;
the options below override them. The CardDAV password comes from ``contacts.carddav_password`` or the
``HARKD_CARDDAV_PASSWORD`` environment variable, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from contacts_sync.carddav import CardDavSettings
from contacts_sync.homeassistant import DiscoveryState
from contacts_sync.link import LinkError, SyncLink
from contacts_sync.sync import DEFAULT_MAX_ENTRIES, SyncReport, SyncSettings, run_sync
from contacts_sync.vcard import read_vcard_paths
from daemon.config import Config, ConfigError, add_config_arguments, load_config_from_args
from daemon.mqtt import MqttError, settings_from_config

log = logging.getLogger(__name__)

PASSWORD_ENV = "HARKD_CARDDAV_PASSWORD"
_DEBOUNCE_S = 2.0  # after a Home Assistant change, wait this long for more before re-syncing


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--vcard", type=Path, action="append", default=[], metavar="PATH",
                        help="vCard file or directory of *.vcf (repeatable; added to contacts.vcard_paths)")
    parser.add_argument("--carddav-url", default=None, metavar="URL",
                        help="CardDAV server, principal or address book (instead of contacts.carddav_url)")
    parser.add_argument("--carddav-user", default=None, metavar="USER",
                        help="CardDAV user name (instead of contacts.carddav_username)")
    parser.add_argument("--no-homeassistant", dest="homeassistant", action="store_false",
                        help="do not take appliance names from Home Assistant MQTT discovery")
    parser.add_argument("--discovery-prefix", default="homeassistant", metavar="PREFIX",
                        help="Home Assistant discovery topic prefix (default %(default)s)")
    parser.add_argument("--discovery-wait", type=float, default=5.0, metavar="SECONDS",
                        help="longest wait for the retained discovery configs (default %(default)s)")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="where bias.json and the source caches go (default: state_dir of the config)")
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not write <state_dir>/bias.json")
    parser.add_argument("--no-publish", dest="publish", action="store_false",
                        help="do not publish the list on <prefix>/<device_id>/bias/set")
    parser.add_argument("--max-entries", type=int, default=None, metavar="N",
                        help="names in the list at most (default 1000)")
    parser.add_argument("--no-given-names", dest="given_names", action="store_false",
                        help="leave out contacts' given names alone (keep full names and nicknames)")


def register(sub: Any) -> None:
    parser = sub.add_parser("contacts", help="build the bias list from address books and Home Assistant",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="contacts_command", metavar="ACTION", required=True)

    sync = actions.add_parser(
        "sync", help="read every source once, write and publish the list",
        description="Read the vCard files, the CardDAV address books and Home Assistant discovery once; merge, "
                    "normalise, de-duplicate and cap the names; write <state_dir>/bias.json atomically and publish "
                    "it retained on <prefix>/<device_id>/bias/set. A source that fails is replaced by its last "
                    "good result. Exit status: 0 all good, 1 delivered with problems, 2 nothing delivered.",
    )
    _common(sync)
    sync.add_argument("--dry-run", action="store_true",
                      help="print the list as JSON instead of writing or publishing it")
    sync.set_defaults(func=run_sync_command)

    watch = actions.add_parser(
        "watch", help="keep the list current: follow Home Assistant live, re-read address books periodically",
        description="Stay connected: re-sync when Home Assistant announces, renames or removes a device, and "
                    "re-read the address books every contacts.sync_interval_s. Stops on SIGTERM or SIGINT.",
    )
    _common(watch)
    watch.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                       help="address book refresh period (default contacts.sync_interval_s)")
    watch.set_defaults(func=run_watch_command)

    show = actions.add_parser("show", help="print the names found in vCard files",
                              description="Print each card's names (and every warning) from vCard files.")
    show.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="vCard files or directories")
    show.add_argument("--no-given-names", dest="given_names", action="store_false")
    show.set_defaults(func=run_show_command)


# --------------------------------------------------------------------------------------------- settings


def _settings(config: Config, args: argparse.Namespace) -> SyncSettings:
    c = config.contacts
    url = args.carddav_url or c.carddav_url
    carddav = None
    if url:
        user = args.carddav_user or c.carddav_username
        password = os.environ.get(PASSWORD_ENV) or c.carddav_password
        carddav = CardDavSettings(url, user, password)
    max_entries = args.max_entries if args.max_entries is not None else DEFAULT_MAX_ENTRIES
    if max_entries < 1:
        raise ValueError(f"--max-entries must be at least 1, not {max_entries}")
    dry_run = getattr(args, "dry_run", False)
    return SyncSettings(
        vcard_paths=(*c.vcard_paths, *args.vcard),
        carddav=carddav,
        homeassistant=args.homeassistant,
        state_dir=args.state_dir or config.state_dir,
        write=args.write and not dry_run,
        publish=args.publish and not dry_run,
        max_entries=max_entries,
        given_names=args.given_names,
    )


def _load(args: argparse.Namespace) -> tuple[Config, SyncSettings] | int:
    try:
        config = load_config_from_args(args)
        return config, _settings(config, args)
    except ConfigError as exc:
        print(f"harkd contacts: {exc}", file=sys.stderr)
    except ValueError as exc:
        print(f"harkd contacts: {exc}", file=sys.stderr)
    return 2


def _connect(config: Config, settings: SyncSettings, args: argparse.Namespace,
             on_change: Callable[[], None] | None = None) -> tuple[SyncLink | None, DiscoveryState | None, str | None]:
    """(link or None, discovery state or None, why there is no link)."""
    discovery = DiscoveryState(args.discovery_prefix) if settings.homeassistant else None
    if discovery is None and not settings.publish:
        return None, None, None
    try:
        link = SyncLink(settings_from_config(config), discovery, on_change)
        link.connect()
    except (LinkError, MqttError) as exc:
        return None, discovery, str(exc)
    if discovery is not None:
        link.wait_settled(max_s=args.discovery_wait)
    return link, discovery, None


def _report(report: SyncReport, *, dry_run: bool = False) -> None:
    for warning in report.warnings:
        print(f"harkd contacts: warning: {warning}", file=sys.stderr)
    for error in report.errors:
        print(f"harkd contacts: error: {error}", file=sys.stderr)
    for source in report.sources:
        state = "FAILED, last good list used" if source.failed and source.cached_at else (
            "FAILED" if source.failed else "ok")
        print(f"harkd contacts: {source.key}: {len(source.contacts)} contact names, "
              f"{len(source.appliances)} appliances ({state})", file=sys.stderr)
    doc = report.document
    if doc is not None:
        where = [str(report.written)] if report.written else []
        where += ["MQTT (retained)"] if report.published else []
        delivered = f"; delivered to {', '.join(where)}" if where else ("" if dry_run else "; not delivered")
        print(f"harkd contacts: bias list {doc.version}: {len(doc.contacts)} contacts, {len(doc.appliances)} "
              f"appliances{delivered}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- commands


def run_sync_command(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    link, discovery, link_error = _connect(config, settings, args)
    try:
        report = run_sync(settings, link, discovery, link_error)
    finally:
        if link is not None:
            link.close()
    _report(report, dry_run=args.dry_run)
    if args.dry_run and report.document is not None:
        print(json.dumps(report.document.to_dict(), ensure_ascii=False, indent=1))
    return report.exit_status


def run_watch_command(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    config, settings = loaded
    interval = args.interval if args.interval is not None else config.contacts.sync_interval_s
    stop = threading.Event()
    changed = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    link, discovery, link_error = _connect(config, settings, args, changed.set)
    connections = link.connections if link is not None else 0
    next_full = 0.0
    try:
        while not stop.is_set():
            if link is None and (settings.homeassistant or settings.publish):
                link, discovery, link_error = _connect(config, settings, args, changed.set)
                connections = link.connections if link is not None else 0
            elif link is not None and link.connections != connections:
                # paho reconnected: the retained configs came again; what did not come was removed meanwhile
                link.wait_settled(max_s=args.discovery_wait)
                connections = link.connections
            full = time.monotonic() >= next_full
            changed.clear()
            report = run_sync(settings, link, discovery, link_error, address_books=full)
            _report(report)
            if full:
                next_full = time.monotonic() + interval
            # Sleep until the next full refresh, a Home Assistant change (debounced) or a stop; without a
            # broker, try to connect again every minute.
            wake_at = next_full if link is not None or link_error is None else min(next_full, time.monotonic() + 60)
            while not stop.is_set() and time.monotonic() < wake_at:
                if changed.wait(min(1.0, max(0.0, wake_at - time.monotonic()))):
                    stop.wait(_DEBOUNCE_S)
                    break
    finally:
        if link is not None:
            link.close()
    return 0


def run_show_command(args: argparse.Namespace) -> int:
    result, unreadable = read_vcard_paths(args.paths)
    for card in result.cards:
        names = ", ".join(f"{name} ({what})" for name, what in card.names(given_names=args.given_names))
        print(f"{card.source}: {names}")
    for warning in [*unreadable, *result.all_warnings()]:
        print(f"harkd contacts: warning: {warning}", file=sys.stderr)
    return 1 if unreadable and not result.cards else 0


__all__ = ["PASSWORD_ENV", "register"]
