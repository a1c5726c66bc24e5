"""Fixtures for the contacts sync tests: a real CardDAV server (helpers in radicale_server.py)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

# radicale_server.py is "tests.contacts_sync.radicale_server" if tests/ is a package, else "radicale_server".
_helpers = importlib.import_module(f"{__package__}.radicale_server" if __package__ else "radicale_server")


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running Radicale with user alice (Basic auth) and no address books yet."""
    if importlib.util.find_spec("radicale") is None:
        pytest.skip("radicale is not installed (pip install -e '.[dev]')")
    directory = tmp_path_factory.mktemp("radicale")
    port = _helpers.free_port()
    (directory / "users").write_text(f"{_helpers.USER}:{_helpers.PASSWORD}\n")
    (directory / "config").write_text(
        "[server]\n"
        f"hosts = 127.0.0.1:{port}\n"
        "[auth]\n"
        "type = htpasswd\n"
        f"htpasswd_filename = {directory / 'users'}\n"
        "htpasswd_encryption = plain\n"
        "delay = 0\n"
        "[storage]\n"
        f"filesystem_folder = {directory / 'collections'}\n"
        "[rights]\n"
        "type = owner_only\n"
        "[logging]\n"
        "level = warning\n"
    )
    server = _helpers.Radicale(f"http://127.0.0.1:{port}/", directory)
    server.start()
    yield server
    server.stop()
