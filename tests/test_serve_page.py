"""The chat page at `/` in a real headless browser: Debian's chromium (CI: `apt-get install chromium`)
driven by Playwright pointed at that executable. Types a message and sees a streamed reply.

Skipped when chromium or playwright is absent; under CI=true an absent browser is a failure instead."""

import os
import shutil

import pytest

pytest.importorskip("fastapi")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _need(ok: bool, what: str):
    if not ok:
        if os.environ.get("GPT_JAX_NO_BROWSER"):  # .ci/run could not apt-get it: its log says so
            pytest.skip(os.environ["GPT_JAX_NO_BROWSER"])
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing: .ci/run must apt-get install chromium and pip install playwright")
        pytest.skip(f"{what} is not installed")


def test_page_streams_a_reply():
    _need(CHROMIUM is not None, "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright")
    from test_serve import tiny_service

    from gpt_jax.serving.app import create_app
    from gpt_jax.serving.runner import Background

    svc = tiny_service()
    try:
        with Background(create_app(svc)) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('tiny')", timeout=30_000)
            assert page.input_value("#temperature") == "0.8" and page.input_value("#max_tokens") == "64"
            page.fill("#max_tokens", "40")
            page.fill("#seed", "1")
            page.fill("#input", "Hello there")
            page.press("#input", "Enter")
            page.wait_for_selector(".msg.user")
            assert page.inner_text(".msg.user") == "Hello there"
            # Streamed: the reply grows while the state is still "streaming", then it is done.
            page.wait_for_function(
                "(() => { const m = document.querySelector('.msg.assistant, .msg.error');"
                " return m && (m.dataset.state !== 'streaming' || m.textContent.length > 0); })()",
                timeout=60_000,
            )
            page.wait_for_selector(".msg[data-state='done'], .msg[data-state='error']", timeout=60_000)
            reply = page.query_selector(".msg.assistant")
            assert reply is not None, page.inner_text("#log")
            assert reply.get_attribute("data-state") == "done" and reply.inner_text().strip()
            assert int(reply.get_attribute("data-pieces")) >= 3  # the reply arrived as several SSE deltas
            browser.close()
    finally:
        svc.close()
