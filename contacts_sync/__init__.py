"""harkd contacts sync: the owner's names, from where people keep them, into the recogniser's bias list.

* :mod:`contacts_sync.vcard`: vCard 2.1/3.0/4.0 files (folded lines, quoted-printable, UTF-8, N and FN,
  nicknames, organisations), tolerant of bad input.
* :mod:`contacts_sync.carddav`: a CardDAV client (discovery, Basic/Digest authentication).
* :mod:`contacts_sync.homeassistant`: Home Assistant MQTT discovery: light, switch, fan, climate, cover,
  lock and media player names, following renames and removals.
* :mod:`contacts_sync.link`: the MQTT connection (discovery in, the retained bias list out).
* :mod:`contacts_sync.sync`: one sync: every source (a failed one replaced by its last good result), merged,
  normalised, de-duplicated, capped, written atomically to the state directory and published.

The command line is ``harkd contacts sync|watch|show`` (:mod:`daemon.commands.contacts`); systemd runs
``harkd contacts sync`` from ``packaging/systemd/harkd-contacts.timer``.
"""
