"""The page at / in a real Chromium (Debian's, driven by Playwright's Python package).

Plain (not async) tests: the server runs in a ``Controller`` thread, the browser in
its own process.  Without a Chromium the tests skip, but under CI=true they fail:
CI installs one (.ci/run), and a missing install must not pass for green.
Set JOBMONITOR_SCREENSHOT=PATH to save the page as it looks mid-job.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest

from jobmonitor import Controller

from ..conftest import MACHINE, release
from ..support import jobs
from ..support.helpers import split_lines, submit, xml_packet

CHROMIUM = os.environ.get("JOBMONITOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Flags that keep a headless Chromium from dialling out (updates, sync, metrics).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-gpu"]
WAIT_MS = 10_000


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must install it (see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright's Python package is not installed (the test extra has it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def site() -> Iterator[Controller]:
    controller = Controller(jobs.app, host="127.0.0.1", port=0, http_port=_free_port(),
                            machine_name=MACHINE, linger_s=0.5, shutdown_grace_s=0.5)
    controller.start()
    yield controller
    for key in ("p", "w"):  # (a job still waiting would hold the shutdown's grace)
        controller.run_coroutine(release(key))
    controller.stop()


@pytest.fixture
def page(browser, site):
    from playwright.sync_api import Page

    context = browser.new_context()  # type: ignore[attr-defined]
    page: Page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.set_default_timeout(WAIT_MS)
    assert site.http is not None
    page.goto(site.http.url)
    yield page
    context.close()
    # No script error and no refused inline code (the content security policy).
    assert not [p for p in problems if "Content Security Policy" in p or "Uncaught" in p]


def _tcp(site: Controller, packet: bytes) -> list[str]:
    """Send a packet to the TCP port and read the answer to its end (plain
    sockets: Playwright's sync API runs a loop, where SyncClient may not)."""
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as sock:
        sock.sendall(packet)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return split_lines(b"".join(chunks))


def _step(site: Controller, key: str) -> None:
    site.run_coroutine(release(key))


def _line_numbers(page) -> list[int]:
    return [int(n) for n in page.locator("[data-testid=lines] li").evaluate_all(
        "items => items.map(item => item.dataset.n)")]


def test_the_page_lists_a_job_submitted_over_tcp(page, site):
    from playwright.sync_api import expect

    answer = _tcp(site, submit("echo", Customer="<b>ACME</b>", JobName="<i>Flyers</i>"))
    tid = answer[0].split(": ")[1]
    assert answer[-1] == f"J0000001: Transaction {tid} ended"
    row = page.locator(f"tr[data-id={tid}]")
    expect(row).to_contain_text("Completed")
    expect(row).to_contain_text("<i>Flyers</i>")  # job text shown as text, never as markup
    assert page.locator("tbody i").count() == 0
    row.click()
    expect(page.locator("[data-testid=lines] li")).to_have_count(len(answer) - 1)
    expect(page.locator("[data-testid=lines]")).to_contain_text("Customer=<b>ACME</b>")
    expect(page.locator("[data-testid=delete]")).to_be_enabled()
    expect(page.locator("[data-testid=cancel]")).to_be_disabled()


def test_a_job_submitted_from_the_page_streams_live_and_its_progress_moves(page, site):
    from playwright.sync_api import expect

    expect(page.locator("[data-testid=project] option[value=progress-steps]")).to_have_count(1)
    page.select_option("[data-testid=project]", "progress-steps")
    page.fill("[data-testid=job-name]", "from the page")
    page.fill("[data-testid=parameters]", "Key=p\nCount=3")
    page.click("[data-testid=submit]")
    lines = page.locator("[data-testid=lines] li")
    expect(lines).to_have_count(2)  # the machine's name, "starting": live, the job waits
    bar = page.locator("[data-testid=job-progress]")
    for step in (1, 2):
        _step(site, "p")
        expect(lines).to_have_count(2 + step)
        expect(lines.nth(1 + step)).to_have_text(f"J0000110: Progress: {step}/3 "
                                                 f"({step * 100 // 3}%) step {step}")
        expect(bar).to_have_js_property("value", step)
        expect(bar).to_have_js_property("max", 3)
    expect(page.locator("[data-testid=suspend]")).to_be_enabled()
    shot = os.environ.get("JOBMONITOR_SCREENSHOT")
    if shot:
        page.set_viewport_size({"width": 1200, "height": 900})
        page.screenshot(path=shot, full_page=True)
    _step(site, "p")
    expect(page.locator("[data-testid=job-status]")).to_have_text("Completed")
    title = page.locator("[data-testid=job-title]").inner_text()
    expect(lines.last).to_have_text(f"J0000001: Transaction {title} ended")
    expect(bar).to_have_js_property("value", 3)


def test_cancel_works_and_the_buttons_follow_the_state(page, site):
    from playwright.sync_api import expect

    tid = _tcp(site, submit("wait", monitor=False, Key="w"))[0].split(": ")[1]
    page.locator(f"tr[data-id={tid}]").click()
    cancel = page.locator("[data-testid=cancel]")
    expect(cancel).to_be_enabled()
    expect(page.locator("[data-testid=resume]")).to_be_disabled()
    expect(page.locator("[data-testid=delete]")).to_be_disabled()
    cancel.click()
    expect(page.locator("[data-testid=job-status]")).to_have_text("Cancelled")
    expect(page.locator("[data-testid=lines] li.error")).to_have_count(0)
    expect(page.locator("[data-testid=lines]")).to_contain_text("J0000023: Job cancelled by user.")
    expect(cancel).to_be_disabled()
    expect(page.locator("[data-testid=delete]")).to_be_enabled()


def test_a_reload_and_a_dropped_stream_mid_job_show_every_line_once(page, site):
    from playwright.sync_api import expect

    tid = _tcp(site, submit("progress-steps", monitor=False, Key="p", Count="4"))[0].split(": ")[1]
    page.goto(f"{site.http.url}#{tid}")
    lines = page.locator("[data-testid=lines] li")
    _step(site, "p")
    expect(lines).to_have_count(3)
    page.reload()
    expect(lines).to_have_count(3)
    _step(site, "p")
    expect(lines).to_have_count(4)

    async def drop_streams() -> None:  # the server side breaks every HTTP connection
        for connection in list(site.http._connections):
            connection.abort()

    site.run_coroutine(drop_streams())
    _step(site, "p")  # said while the page is away: it comes with the reconnect
    expect(lines).to_have_count(5)
    _step(site, "p")
    expect(page.locator("[data-testid=job-status]")).to_have_text("Completed")
    expect(lines).to_have_count(8)
    assert _line_numbers(page) == list(range(1, 9))
    wire = _tcp(site, xml_packet("MonitorJob", {"_sys_TransactionID": tid}))
    assert page.locator("[data-testid=lines] li").all_inner_texts() == wire[1:]


def test_a_queue_is_paused_and_resumed_from_the_page(page, site):
    from playwright.sync_api import expect

    queue = page.locator("tr[data-queue=default]")
    expect(queue.locator("td").first).to_have_text("default")
    queue.locator("[data-testid=pause-queue]").click()
    expect(queue.locator("[data-testid=resume-queue]")).to_be_visible()
    expect(queue.locator("td").nth(5)).to_have_text("Paused")
    tid = _tcp(site, submit("echo", monitor=False))[0].split(": ")[1]
    job = page.locator(f"tr[data-id={tid}]")
    expect(job).to_contain_text("Queued")  # (at the list's next poll)
    expect(queue.locator("td").nth(1)).to_have_text("1")  # waiting
    queue.locator("[data-testid=resume-queue]").click()
    expect(job).to_contain_text("Completed")
    expect(queue.locator("td").nth(5)).to_have_text("")
    expect(queue.locator("[data-testid=pause-queue]")).to_be_visible()


def test_a_job_is_placed_and_run_again_from_the_page(page, site):
    from playwright.sync_api import expect

    expect(page.locator("[data-testid=project] option[value=echo]")).to_have_count(1)
    page.select_option("[data-testid=project]", "echo")
    page.fill("[data-testid=queue-name]", "reports")
    page.fill("[data-testid=priority]", "8")
    page.click("[data-testid=submit]")
    status = page.locator("[data-testid=job-status]")
    expect(status).to_have_text("Completed")
    expect(page.locator("[data-testid=job-facts]")).to_contain_text("reports, priority 8")
    first = page.locator("[data-testid=job-title]").inner_text()
    rerun = page.locator("[data-testid=rerun]")
    expect(rerun).to_be_enabled()
    rerun.click()
    title = page.locator("[data-testid=job-title]")
    expect(title).not_to_have_text(first)
    expect(status).to_have_text("Completed")
    expect(page.locator("[data-testid=history]")).to_contain_text(f"rerun ({first})")
    expect(page.locator("[data-testid=job-facts]")).to_contain_text("reports, priority 8")
    expect(page.locator("[data-testid=lines] li").last).to_have_text(
        f"J0000001: Transaction {title.inner_text()} ended")
