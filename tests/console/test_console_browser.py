"""The console in real headless Chromium (Debian's ``chromium``, driven by Playwright): an operator's day.

Screenshots of every page are saved to ``$SEEDGATE_SCREENSHOTS`` (``scripts/console-screenshots``
points it at ``docs/console/``), else to the test's temp directory.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.console.render import usd
from app.fake_upstream import FakeUpstreamThread
from tests.support.backends import backend_overrides, database_url
from tests.support.gateway import MASTER_KEY, GatewayProcess, api_client, base_config, chat_body, deep_merge

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing: run scripts/services start"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[str]:
    """A loopback receiver that takes every alert (its deliveries show on the alerts page)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway(tmp_path: Path, fake: FakeUpstreamThread, webhook: str) -> Iterator[GatewayProcess]:
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API keeps an event loop running in this thread
        url = pool.submit(database_url, tmp_path).result(timeout=60)
    config = deep_merge(base_config(fake.url, url), backend_overrides())
    config["alerts"] = {"webhook_url": webhook, "webhook_secret": "whsec-console-test", "default_threshold_usd": "4.9"}
    process = GatewayProcess(tmp_path, config).start()
    try:
        yield process
    finally:
        process.terminate()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("SEEDGATE_SCREENSHOTS") or tmp_path / "shots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def snap(page: Page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def sign_in(page: Page, gateway: GatewayProcess, key: str) -> None:
    page.goto(gateway.base_url + "/console")
    expect(page).to_have_url(gateway.base_url + "/console/login")
    page.fill("input[name=master_key]", key)
    page.click("button[type=submit]")


def traffic(gateway: GatewayProcess, fake: FakeUpstreamThread, key: str, *, requests: int = 3) -> None:
    with api_client(gateway, key) as http:
        for _ in range(requests):
            assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
        with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as streamed:
            assert streamed.status_code == 200
            streamed.read()
        fake.enqueue({"reset_after_events": 2})  # cut mid-stream: charged for what was sent, status upstream_error
        with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as cut:
            cut.read()
        fake.enqueue({"status": 500}, {"status": 500}, {"status": 500})  # refused: released, no usage row
        assert http.post("/v1/chat/completions", json=chat_body()).status_code >= 500


def test_an_operator_signs_in_manages_a_key_and_exports_its_usage(
    browser: Browser, gateway: GatewayProcess, fake: FakeUpstreamThread, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway.base_url)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    csp_violations: list[str] = []
    loaded: list[str] = []
    page.on("request", lambda request: loaded.append(request.url))
    page.on("console", lambda msg: csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None)

    # a wrong master key is refused, in place
    sign_in(page, gateway, "wrong-master-key-0123456789abcdef")
    expect(page.locator(".notice.error")).to_have_text("That is not the master key.")
    snap(page, shots, "sign-in")
    page.fill("input[name=master_key]", MASTER_KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(gateway.base_url + "/console")
    assert not [c for c in context.cookies() if MASTER_KEY in c["value"]]
    assert MASTER_KEY not in str(page.evaluate("() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"))

    # create a key: shown once, copied with the button
    page.click("nav >> text=Keys")
    expect(page.locator(".empty")).to_contain_text("No keys yet")
    page.fill("#create-key input[name=name]", "research team")
    page.fill("#create-key input[name=balance_usd]", "1")
    page.click("#create-key button[type=submit]")
    key = page.locator("#new-key").inner_text().strip()
    assert key.startswith("sk-")
    page.click("button[data-copy=new-key]")
    expect(page.locator("button[data-copy=new-key]")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == key
    snap(page, shots, "keys-created")
    page.click("#created >> text=Open the key's page")
    key_id = page.url.rsplit("/", 1)[1]

    # top up
    page.fill("#topup input[name=amount_usd]", "4")
    page.click("#topup button[type=submit]")
    expect(page.locator(".notice.success")).to_have_text("Balance topped up.")
    expect(page.locator(".stat.big .value")).to_have_text("$5.00")
    page.fill("#topup input[name=amount_usd]", "-3")
    page.click("#topup button[type=submit]")
    expect(page.locator("#topup .notice.error")).to_contain_text("amount_usd")

    # traffic shows up on the overview chart and the key's page
    traffic(gateway, fake, key)
    other_id, other_key = gateway.create_key("3", name="staging")
    traffic(gateway, fake, other_key, requests=2)
    page.click("nav >> text=Overview")
    bars = page.locator("#chart-requests-24h rect.bar")
    values = [float(v or 0) for v in bars.evaluate_all("els => els.map(e => e.getAttribute('data-value'))")]
    assert sum(values) == 9  # (3 + 2) answers + 2 streams + 2 cut streams (an hour may have turned meanwhile)
    assert values[-1] > 0
    expect(page.locator("#ledger")).to_contain_text("topped up")
    expect(page.locator("h2 .badge.ok")).to_have_text("balanced")
    snap(page, shots, "overview")
    page.goto(f"{gateway.base_url}/console/keys/{key_id}")
    expect(page.locator("#recent tbody tr")).to_have_count(5)
    spend = page.locator("#key-chart rect.bar").evaluate_all("els => els.map(e => e.getAttribute('data-value'))")
    assert sum(float(v or 0) for v in spend) > 0
    snap(page, shots, "key")

    # the usage explorer, and the CSV of the same selection
    page.goto(f"{gateway.base_url}/console/usage?key_id={key_id}")
    expect(page.locator("#usage-rows tbody tr")).to_have_count(5)
    with page.expect_download() as download:
        page.click("#export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 5
    assert {r["key_id"] for r in rows} == {key_id}
    page.goto(f"{gateway.base_url}/console/usage")
    snap(page, shots, "usage")
    page.click("nav >> text=Upstreams")
    expect(page.locator("#targets")).to_contain_text("ark/doubao-seed-2-0-pro-260215")
    snap(page, shots, "upstreams")
    page.click("nav >> text=Alerts")
    expect(page.locator("#deliveries")).to_contain_text("staging")  # $3 < $4.90: fired on its first request
    for _ in range(50):  # delivery follows within a second or so; bounded
        if page.locator("#deliveries .badge.ok").count():
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(page.locator("#deliveries .badge.ok").first).to_have_text("delivered")
    snap(page, shots, "alerts")

    # CSRF: a POST from the page's own origin without the token is refused
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: 'POST', body: new URLSearchParams({amount_usd: '100'}),
        credentials: 'same-origin'})).status""",
        f"{gateway.base_url}/console/keys/{key_id}/topup",
    )
    assert status == 403
    assert gateway.key(key_id)["topped_up_usd"] == "5.00"

    # revoke (confirmed in a dialog): the key is refused from then on
    page.goto(f"{gateway.base_url}/console/keys/{key_id}")
    page.click("#revoke button[type=submit]")
    expect(page.locator(".notice.success")).to_contain_text("Key revoked")
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 401

    # sign out: the console is closed again
    page.click("nav >> text=Sign out")
    expect(page).to_have_url(gateway.base_url + "/console/login")
    page.goto(gateway.base_url + "/console/keys")
    expect(page).to_have_url(gateway.base_url + "/console/login")

    # the key holder's page: the key goes in a form body, never in the URL
    page.goto(gateway.base_url + "/me")
    page.fill("input[name=key]", other_key)
    page.click("button[type=submit]")
    expect(page.locator(".stat.big .value")).to_have_text(usd(gateway.key(other_id)["balance_usd"]))
    assert other_key not in page.url
    assert other_key not in page.content()
    snap(page, shots, "me")
    assert not csp_violations
    requested = {r for r in loaded if not r.startswith(gateway.base_url)}
    assert not requested  # nothing from outside the gateway: the console works with no internet
    context.close()
    assert all((shots / f"{name}.png").stat().st_size > 10_000 for name in ("overview", "key", "usage", "me"))
