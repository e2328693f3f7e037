"""The auditor's pages in a real headless Chromium (the Debian package), with no network.

The store is built through the real ingest route (``clerk-audit serve``, svix-signed) from the
fixture history; ``clerk-audit datasette`` serves it under real uvicorn; Chromium loads each
page with every host but the loopback unresolvable, and its rendered DOM is checked: the
links resolve, the search finds a user by email, the pictures are non-empty SVG, and nothing
is fetched from elsewhere. With ``CLERK_AUDIT_SCREENSHOTS=DIR`` each page is also saved as a
PNG in ``DIR`` (how ``docs/screenshots`` is made).

Skipped, saying why, where ``chromium`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import pytest

from tests.support.audit_story import at, fixture_events
from tests.support.server import running_server
from tests.support.signing import new_secret
from tests.test_datasette_live import Running, running_datasette

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)  # fmt: skip
PAGES = {
    "timeline": "/audit/audit_timeline",
    "user": "/audit/users/user_maya",
    "user_history": "/audit/user_history?user_id=user_maya&from=&to=",
    "user_changes": "/audit/user_changes?user_id=user_maya&from=&to=",
    "sign_ins": "/audit/sign_ins_for_user?user_id=user_maya&from=&to=",
    "members_as_of": f"/audit/organization_members_as_of?organization_id=org_h&at={at(3)}",
    "search": "/audit/audit_timeline?_search=maia%40example.com",
    "raw_event": "/log/events/1",
    "charts": "/-/clerk-audit/charts",
    "roles": "/-/clerk-audit/roles/org_h",
}


class Links(HTMLParser):
    """A page's links (``<a href>``), the resources it loads (``src``, ``<link href>``) and
    its SVG rectangles."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.resources: list[str] = []
        self.svg_rects = 0
        self.folded: list[str] = []
        """The classes of the ``<pre>`` elements inside a ``<details>`` (folded)."""
        self._open_details = 0
        self.text = ""

    def handle_data(self, data: str) -> None:
        self.text += data

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.urls.append(str(found["href"]))
        for key in ("src", "href") if tag != "a" else ():
            if found.get(key):
                self.resources.append(str(found[key]))
        self.svg_rects += tag == "rect"
        self._open_details += tag == "details"
        if tag == "pre" and self._open_details:
            self.folded.append(str(found.get("class")))

    def handle_endtag(self, tag: str) -> None:
        self._open_details -= tag == "details"


def local(base: str, url: str) -> bool:
    """Whether ``url`` (relative to ``base``) is served here, or inline."""
    return url.startswith("data:") or urlsplit(urljoin(base, url)).hostname == "127.0.0.1"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    db_path = tmp_path_factory.mktemp("browser") / "audit.db"
    with running_server(db_path, new_secret()) as server, httpx.Client(timeout=30) as client:
        for event_id, body in fixture_events():
            assert server.post(event_id, body, client=client).json()["status"] == "stored"
        server.wait_projected()
    with running_datasette(db_path, os.environ) as running:
        yield running


def chromium(url: str, *args: str) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dom(site: Running, path: str) -> Links:
    links = Links()
    links.feed(chromium(site.url + path, "--dump-dom"))
    return links


@pytest.fixture(scope="module")
def pages(site: Running) -> dict[str, Links]:
    """Each page as Chromium rendered it (and, with ``CLERK_AUDIT_SCREENSHOTS``, a PNG)."""
    shots = os.environ.get("CLERK_AUDIT_SCREENSHOTS")
    rendered = {}
    for name, path in PAGES.items():
        rendered[name] = dom(site, path)
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            chromium(site.url + path, f"--screenshot={Path(shots) / name}.png",
                     "--window-size=1400,900", "--hide-scrollbars")  # fmt: skip
    return rendered


@pytest.mark.slow
def test_the_key_pages_render_offline_and_their_links_resolve(
    site: Running, pages: dict[str, Links]
) -> None:
    checked: set[str] = set()
    with httpx.Client(timeout=30, follow_redirects=True) as client:
        for name, page in pages.items():
            base = site.url + PAGES[name]
            assert page.urls, name
            assert all(local(base, r) for r in page.resources), name  # nothing from elsewhere
            for url in page.urls:
                full = urljoin(base, url)
                parts = urlsplit(full)  # links to other pages, one per route and parameters
                kind = f"{parts.path}?{sorted(k for k, _ in parse_qsl(parts.query))}"
                if parts.path == urlsplit(base).path or not local(base, full) or kind in checked:
                    continue  # the page's own sorting and facet links, or the world outside
                checked.add(kind)
                assert client.get(full).status_code == 200, (name, url)
    assert len(checked) >= 10


@pytest.mark.slow
def test_the_search_finds_a_user_by_email(pages: dict[str, Links]) -> None:
    found = pages["search"]
    assert "/log/events/" in " ".join(found.urls)
    assert "maia@example.com" in found.text and "msg_05" in found.text
    assert "msg_02" not in found.text


@pytest.mark.slow
def test_the_pictures_are_non_empty_svg(
    site: Running, pages: dict[str, Links], tmp_path: Path
) -> None:
    assert pages["charts"].svg_rects >= 3
    assert pages["roles"].svg_rects == 2
    shot = tmp_path / "charts.png"
    chromium(site.url + PAGES["charts"], f"--screenshot={shot}", "--window-size=1000,700")
    assert shot.stat().st_size > 5_000  # a rendered picture, not a blank page


@pytest.mark.slow
def test_the_pages_link_their_whole_exports(site: Running, pages: dict[str, Links]) -> None:
    for name in ("timeline", "search", "user_history", "user_changes", "sign_ins"):
        exports = [url for url in pages[name].urls if "/-/clerk-audit/export/" in url]
        assert [urlsplit(url).path.rsplit(".", 1)[1] for url in exports] == ["csv", "json"], name
    csv_url, json_url = (
        urljoin(site.url + PAGES["user_history"], url)
        for url in pages["user_history"].urls
        if "/-/clerk-audit/export/" in url
    )
    with httpx.Client(timeout=30) as client:
        header, *rows = csv.reader(io.StringIO(client.get(csv_url).text))
        objects = client.get(json_url).json()
        page = client.get(f"{site.url}/audit/user_history.json?user_id=user_maya&from=&to=")
    assert header == page.json()["columns"] and list(objects[0]) == header
    assert len(rows) == len(objects) == len(page.json()["rows"]) > 5


@pytest.mark.slow
def test_a_user_page_folds_the_snapshot(pages: dict[str, Links]) -> None:
    user = pages["user"]
    assert user.folded == ["snapshot"] and "JSON, " in user.text  # one line until opened
    assert "/audit/user_history?user_id=user_maya" in user.urls
