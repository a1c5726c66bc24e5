"""A real CardDAV server (Radicale, from the dev extra) on a free loopback port, with a password, for tests."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

USER, PASSWORD = "alice", "s3cret pass"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Radicale:
    url: str  # server root, ending in "/"
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    log: BinaryIO | None = None

    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/xml") -> int:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(self.url + path.lstrip("/"), data=body, method=method,
                                         headers={"Authorization": f"Basic {token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def make_address_book(self, name: str) -> str:
        body = (b'<?xml version="1.0"?><d:mkcol xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:set>'
                b"<d:prop><d:resourcetype><d:collection/><c:addressbook/></d:resourcetype></d:prop></d:set></d:mkcol>")
        status = self._call("MKCOL", f"{USER}/{name}/", body)
        if status != 201:
            raise RuntimeError(f"MKCOL {name}: HTTP {status}")
        return f"{self.url}{USER}/{name}/"

    def put_card(self, book: str, uid: str, vcard: str) -> None:
        status = self._call("PUT", f"{USER}/{book}/{uid}.vcf", vcard.encode(), "text/vcard; charset=utf-8")
        if status not in (201, 204):
            raise RuntimeError(f"PUT {uid}: HTTP {status}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.log is not None:
            self.log.close()
            self.log = None

    def start(self) -> None:
        port = int(self.url.rsplit(":", 1)[1].strip("/"))
        self.log = (self.directory / "radicale.log").open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(self.directory / "config")],
                                        stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.directory / "radicale.log").read_text()[-2000:]
                    raise RuntimeError(f"radicale did not start: {log}") from None
                time.sleep(0.05)
