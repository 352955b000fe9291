"""The status page in headless Chromium (Playwright): the study row and the overlay image appear."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processed_node import ANALYSED_END, Processed

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium not installed (CI installs it via .ci/run: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def test_status_page_lists_the_study_and_shows_its_overlays(browser, processed: Processed,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(f"{processed.node.api_url}/status/?study={processed.mr_study}")
    row = page.locator(f'tr[data-study="{processed.mr_study}"]')
    row.wait_for(timeout=15000)
    assert row.locator(".state").inner_text() in ANALYSED_END
    assert row.locator("td").nth(2).inner_text().split(": ")[1] in ("positive", "negative")
    assert float(row.locator(".probability").inner_text()) >= 0
    # The detail leads with the conclusion's headline, and names key-slice values as per slice.
    page.locator("#detail-result", has_text="study probability").wait_for(timeout=15000)
    assert page.locator("#detail-result").inner_text().startswith("test finding: ")
    assert "(per slice)" in page.locator("#detail-keys").inner_text()
    other = page.locator(f'tr[data-study="{processed.multiframe_study}"]')
    assert "no applicable model" in other.inner_text()
    image = page.locator("#overlays img.overlay").first
    image.wait_for(timeout=15000)
    page.wait_for_function("() => [...document.querySelectorAll('#overlays img')].every(i => i.complete "
                           "&& i.naturalWidth > 0)", timeout=15000)
    assert page.locator("#overlays img.overlay").count() >= 1
    assert page.locator("#detail-history li").count() >= 5
    assert "TAKEN" in page.locator("#detail-series").inner_text()
    assert page.locator("#ready").inner_text() == "ready"
    shot = tmp_path / "status.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    page.close()


def test_clicking_a_row_opens_that_study(browser, processed: Processed) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(f"{processed.node.api_url}/status/")
    row = page.locator(f'tr[data-study="{processed.multiframe_study}"]')
    row.wait_for(timeout=15000)
    row.click()
    page.locator("#detail-uid", has_text=processed.multiframe_study).wait_for(timeout=15000)
    assert "no applicable model" in page.locator("#detail-result").inner_text()
    page.select_option("#state-filter", "no_model")
    page.locator(f'tr[data-study="{processed.mr_study}"]').wait_for(state="detached", timeout=15000)
    assert page.locator(f'tr[data-study="{processed.multiframe_study}"]').count() == 1
    page.close()


def test_with_a_token_the_page_asks_for_it_then_lists_studies(browser, tmp_path: Path, data: Path) -> None:  # type: ignore[no-untyped-def]
    from onconode.dicom_node.scu import PeerAddress, send_paths
    from tests.support import NodeProcess

    node = NodeProcess(tmp_path, api={"token": "page-token"})
    node.start()
    try:
        localizer = data / "dicom" / "misc" / "ct-localizer-ap.dcm"
        assert send_paths([localizer], PeerAddress("ONCONODE", "127.0.0.1", node.port)).all_succeeded
        page = browser.new_page()
        page.goto(f"{node.api_url}/status/")
        page.locator("#auth").wait_for(state="visible", timeout=15000)
        assert "token" in page.locator("#error").inner_text()
        page.fill("#token", "page-token")
        page.get_by_role("button", name="Use token").click()
        page.locator("#studies tbody tr").first.wait_for(timeout=15000)
        assert page.locator("#studies tbody tr").count() == 1
        assert page.locator("#auth").is_hidden()
        page.close()
    finally:
        node.stop()


def test_a_study_without_a_verdict_reads_no_verdict(browser, processed: Processed) -> None:  # type: ignore[no-untyped-def]
    """A model that states no verdict (``Decision.verdict`` false): the row names the finding with
    "no verdict", never positive or negative; a study never analysed keeps its own wording."""
    page = browser.new_page()
    page.goto(f"{processed.node.api_url}/status/")
    page.locator("#ready").wait_for(timeout=15000)
    cell = page.evaluate("() => { const c = finding({positive: null, positive_probability: 0.31, state: 'reported', "
                         "finding: 'suspicious lung nodule or mass', headline: 'h'}); "
                         "return [c.textContent, c.className]; }")
    assert cell == ["suspicious lung nodule or mass: no verdict", "no-verdict"]
    assert page.evaluate("() => finding({positive: null, positive_probability: null, state: 'no_model'})"
                         ".textContent") == "no applicable model"
    page.close()
