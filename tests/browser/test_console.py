"""The web console driven in headless Chromium against the real local stack: form, live list, video, cancel."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from console_support import DESKTOP, NEVER_STARTS_MODEL, PHONE, Console, wait_for
from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from wanflow.capabilities import MODELS, estimate_cost_usd, output_size
from wanflow_tools.console.proxy import ConsoleProxy
from wanflow_tools.local_mode.banner import SAMPLE_IMAGE

pytestmark = pytest.mark.slow

POLL_MS = 300
NO_VALUE = "\u2013"  # what the list shows in a cell with nothing to say (an en dash)
JOB_SECONDS = 60


def page(console_url: str, fragment: str, **query: Any) -> str:
    parameters = "&".join(f"{name}={value}" for name, value in {"poll_ms": POLL_MS, **query}.items())
    return f"{console_url}/?{parameters}#{fragment}"


def usd(amount: float | None) -> str:
    """A price as the console shows it: the list price's own digits, up to four decimals, at least two."""
    assert amount is not None
    return "$" + re.sub(r"0{1,2}$", "", f"{amount:.4f}")


def text_of(browser: Any, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def option_values(browser: Any, element_id: str) -> list[str]:
    return [option.get_attribute("value") for option in Select(browser.find_element(By.ID, element_id)).options]


def visible(browser: Any, element_id: str) -> bool:
    return bool(browser.find_element(By.ID, element_id).is_displayed())


def job_id_in_address(browser: Any) -> str | None:
    found = re.fullmatch(r"/jobs/([0-9a-f]{32})", urlsplit(browser.current_url).fragment)
    return found.group(1) if found else None


def whole_page_screenshot(browser: Any, path: Path) -> None:
    """A screenshot of the whole page: the window grows to the page's height for it, then shrinks back."""
    width, height = browser.get_window_size()["width"], browser.get_window_size()["height"]
    page_height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, max(height, page_height + 120))
    try:
        browser.save_screenshot(str(path))
    finally:
        browser.set_window_size(width, height)


def sample_data_uri() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(SAMPLE_IMAGE.read_bytes()).decode()


def load_form(browser: Any, console: Console) -> WebDriverWait:
    browser.get(page(console.url, "/new"))
    wait = WebDriverWait(browser, 30)
    wait.until(lambda driver: option_values(driver, "model"))
    return wait


def test_a_job_from_the_form_reaches_succeeded_and_its_video_plays(
    console: Console, browser: Any, screenshots: Path
) -> None:
    browser.set_window_size(*DESKTOP)
    wait = load_form(browser, console)
    spec = MODELS["wan2.6-i2v-flash"]
    Select(browser.find_element(By.ID, "model")).select_by_value(spec.name)

    # The form offers exactly what the capability table allows for the model, and its price.
    assert option_values(browser, "resolution") == list(spec.resolutions)
    assert option_values(browser, "duration") == [str(duration) for duration in spec.durations]
    assert visible(browser, "audio-field") and visible(browser, "shot-field")
    Select(browser.find_element(By.ID, "resolution")).select_by_value("720P")
    Select(browser.find_element(By.ID, "duration")).select_by_value("2")
    browser.find_element(By.ID, "audio").click()  # silent
    expected_price = estimate_cost_usd(spec, "720P", 2, False)
    assert expected_price is not None
    assert text_of(browser, "price").startswith(usd(expected_price))

    browser.find_element(By.ID, "image").send_keys(str(SAMPLE_IMAGE))
    browser.find_element(By.ID, "prompt").send_keys("a sailboat drifts slowly across the lake at sunset")
    whole_page_screenshot(browser, screenshots / "new-job.png")
    browser.find_element(By.ID, "submit").click()

    job_id = wait.until(job_id_in_address)
    WebDriverWait(browser, JOB_SECONDS).until(lambda driver: text_of(driver, "job-status") == "SUCCEEDED")
    WebDriverWait(browser, 30).until(
        lambda driver: driver.execute_script("return document.getElementById('job-video').readyState >= 1")
    )
    duration, width, height = browser.execute_script(
        "const video = document.getElementById('job-video');"
        "return [video.duration, video.videoWidth, video.videoHeight];"
    )
    assert duration == pytest.approx(2.0, abs=0.1)
    assert (width, height) == output_size(*Image.open(SAMPLE_IMAGE).size, "720P")

    with console.api() as api:
        job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "SUCCEEDED"
    assert job["model"] == spec.name
    assert job["request"]["parameters"]["resolution"] == "720P"
    assert job["request"]["parameters"]["duration"] == 2
    assert job["request"]["parameters"]["audio"] is False
    assert job["cost_estimate_usd"] == expected_price
    assert job["request"]["input"]["img_url"].startswith("s3://")  # uploaded through POST /v1/uploads

    # The page shows the job's facts, its download and the first frame.
    assert job["provider"]["task_id"] in text_of(browser, "job-params")
    download = browser.find_element(By.ID, "job-download")
    assert download.is_displayed()
    assert urlsplit(download.get_attribute("href")).path.endswith(f"{job_id}.mp4")
    # Across origins a link's `download` attribute is ignored: S3's own header makes the browser save the file.
    saved = httpx.get(download.get_attribute("href"), timeout=30)
    assert saved.status_code == 200 and saved.content[4:8] == b"ftyp"
    assert saved.headers["content-disposition"] == f'attachment; filename="{job_id}.mp4"'

    assert "a sailboat drifts" in text_of(browser, "job-prompt")
    assert "SUCCEEDED" in text_of(browser, "job-events")
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script("return document.getElementById('job-frame').naturalWidth")
    )
    assert browser.execute_script("return document.getElementById('job-frame').naturalWidth") == 750
    browser.execute_script("window.scrollTo(0, 0)")
    # The picture shows the video's first frame, not a loading spinner.
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script("return document.getElementById('job-video').readyState >= 2")
    )
    whole_page_screenshot(browser, screenshots / "job.png")


def test_the_jobs_list_pages_filters_and_follows_status_live(console: Console, browser: Any, screenshots: Path) -> None:
    browser.set_window_size(*DESKTOP)
    browser.get(page(console.url, "/jobs", page_size=2))
    body = {"model": NEVER_STARTS_MODEL, "input": {"img_url": sample_data_uri(), "prompt": "list"}}
    with console.api() as api:
        # The model's two slots are taken by the first two jobs (the emulator never starts them); the third queues.
        job_ids = [api.post("/v1/jobs", json=body).json()["job_id"] for _ in range(3)]
        wait_for(
            lambda: (
                [api.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in job_ids]
                == ["PENDING", "PENDING", "QUEUED"]
            ),
            30,
            "two jobs PENDING and the third QUEUED",
        )
        wait = WebDriverWait(browser, 20)

        def row(job_id: str) -> dict[str, str] | None:
            # Read in one script: the list replaces a changed row on each refresh, so a row element found by one
            # call may be gone by the next.
            found: dict[str, str] | None = browser.execute_script(
                "const row = document.querySelector(`tr[data-job-id='${arguments[0]}']`);"
                "return row && {status: row.dataset.status, text: row.innerText,"
                " queue: row.querySelector('[data-label=Queue]').innerText};",
                job_id,
            )
            return found

        # Newest first, two a page, with the queued job's place in the queue; no reload.
        wait.until(lambda _: row(job_ids[2]) is not None and row(job_ids[1]) is not None)
        queued = row(job_ids[2])
        assert queued is not None and queued["status"] == "QUEUED"
        assert "#1" in queued["queue"]
        spec = MODELS[NEVER_STARTS_MODEL]
        price = estimate_cost_usd(spec, spec.default_resolution, spec.default_duration, False)
        assert usd(price) in queued["text"]
        browser.save_screenshot(str(screenshots / "jobs.png"))
        browser.find_element(By.ID, "page-older").click()
        wait.until(lambda _: row(job_ids[0]) is not None and row(job_ids[2]) is None)
        browser.find_element(By.ID, "page-newer").click()
        wait.until(lambda _: row(job_ids[2]) is not None)

        # The list refreshes without taking the keyboard focus away from a job's link.
        browser.execute_script(
            "window.jobListReads = 0; const fetchBefore = window.fetch;"
            "window.fetch = (...args) => { if (String(args[0]).startsWith('/v1/jobs?')) window.jobListReads += 1;"
            " return fetchBefore(...args); };"
        )
        browser.find_element(By.CSS_SELECTOR, f'a[href="#/jobs/{job_ids[1]}"]').send_keys(Keys.NULL)
        assert browser.switch_to.active_element.get_attribute("href").endswith(job_ids[1])
        wait.until(lambda driver: driver.execute_script("return window.jobListReads") >= 3)
        assert browser.switch_to.active_element.get_attribute("href").endswith(job_ids[1])

        # Filter by status.
        Select(browser.find_element(By.ID, "status-filter")).select_by_value("QUEUED")
        wait.until(lambda _: row(job_ids[2]) is not None and row(job_ids[1]) is None)
        Select(browser.find_element(By.ID, "status-filter")).select_by_value("RUNNING")
        wait.until(lambda driver: visible(driver, "jobs-empty"))
        assert text_of(browser, "jobs-empty") == "No RUNNING jobs."
        Select(browser.find_element(By.ID, "status-filter")).select_by_value("")
        wait.until(lambda _: row(job_ids[1]) is not None)

        # Live: canceling a pending job frees its slot, the queued job takes it; the page follows both.
        assert api.post(f"/v1/jobs/{job_ids[1]}/cancel").status_code == 200
        wait.until(lambda _: (row(job_ids[1]) or {}).get("status") == "CANCELED")
        wait.until(lambda _: (row(job_ids[2]) or {}).get("status") == "PENDING")
        assert (row(job_ids[2]) or {}).get("queue") == NO_VALUE
        for job_id in (job_ids[0], job_ids[2]):  # give the model's slots back for the other tests
            wait_for(lambda job_id=job_id: api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200, 20, "cancel")


def test_a_pending_job_is_canceled_from_its_page(console: Console, browser: Any, screenshots: Path) -> None:
    browser.set_window_size(*DESKTOP)
    wait = load_form(browser, console)
    Select(browser.find_element(By.ID, "model")).select_by_value(NEVER_STARTS_MODEL)
    browser.find_element(By.ID, "image").send_keys(str(SAMPLE_IMAGE))
    browser.find_element(By.ID, "submit").click()
    job_id = wait.until(job_id_in_address)
    with console.api() as api:
        task_id = wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["provider"].get("task_id"), 30, "its task")
        wait.until(lambda driver: task_id in text_of(driver, "job-params"))
        assert text_of(browser, "job-status") == "PENDING"

        browser.find_element(By.ID, "job-cancel").click()
        browser.switch_to.alert.accept()
        wait.until(lambda driver: text_of(driver, "job-status") == "CANCELED")
        assert not visible(browser, "job-cancel")
        assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "CANCELED"


def test_a_job_that_does_not_exist_shows_only_the_message_and_the_way_back(console: Console, browser: Any) -> None:
    browser.set_window_size(*DESKTOP)
    browser.get(page(console.url, f"/jobs/{'0' * 32}"))
    WebDriverWait(browser, 20).until(lambda driver: visible(driver, "banner"))
    assert text_of(browser, "banner") == "No such job (or it is not yours)."
    assert not visible(browser, "job-title") and not visible(browser, "job-cancel")
    assert browser.find_element(By.LINK_TEXT, "\u2190 All jobs").is_displayed()


def tiny_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), (200, 40, 40)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def test_bad_input_shows_the_api_errors_next_to_their_fields(
    console: Console, browser: Any, screenshots: Path, tmp_path: Path
) -> None:
    browser.set_window_size(*DESKTOP)
    with console.api() as api:
        jobs_before = len(api.get("/v1/jobs", params={"limit": 100}).json()["jobs"])
    wait = load_form(browser, console)
    spec = MODELS["wan2.2-i2v-flash"]
    Select(browser.find_element(By.ID, "model")).select_by_value(spec.name)
    # The form follows the model: its own default resolution (not the last model's 1080P, which this one has no
    # list price for), one duration, no sound, no shot type.
    assert Select(browser.find_element(By.ID, "resolution")).first_selected_option.get_attribute("value") == (
        spec.default_resolution
    )
    assert option_values(browser, "duration") == ["5"]
    assert not visible(browser, "audio-field") and not visible(browser, "shot-field")

    # No image: said at once, next to the image field.
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda driver: visible(driver, "image-error"))
    assert "Pick an image" in text_of(browser, "image-error")

    # A prompt over the model's length: the API's 400 names input.prompt, shown under the prompt (the body is
    # checked before any upload is read, so the image's own problem comes in the next answer).
    browser.find_element(By.ID, "image").send_keys(str(tiny_png(tmp_path / "tiny.png")))
    browser.execute_script("document.getElementById('prompt').value = arguments[0]", "x" * (spec.prompt_max_chars + 1))
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda driver: visible(driver, "prompt-error"))
    assert str(spec.prompt_max_chars) in text_of(browser, "prompt-error")
    assert browser.find_element(By.ID, "prompt").get_attribute("aria-invalid") == "true"
    assert not visible(browser, "image-error")
    assert browser.switch_to.active_element.get_attribute("id") == "prompt"  # focus goes to the first bad field

    # A fixed prompt; the image is below the model's smallest side: the error moves to the image.
    browser.find_element(By.ID, "prompt").clear()
    browser.find_element(By.ID, "prompt").send_keys("a red square")
    browser.find_element(By.ID, "submit").click()
    wait.until(lambda driver: visible(driver, "image-error"))
    assert "100" in text_of(browser, "image-error")  # the API's message gives the image's size
    assert not visible(browser, "prompt-error")
    assert browser.find_element(By.ID, "prompt").get_attribute("aria-invalid") is None
    assert browser.find_element(By.ID, "image").get_attribute("aria-invalid") == "true"
    assert "image-error" in browser.find_element(By.ID, "image").get_attribute("aria-describedby")
    browser.save_screenshot(str(screenshots / "field-errors.png"))
    with console.api() as api:
        assert len(api.get("/v1/jobs", params={"limit": 100}).json()["jobs"]) == jobs_before


# The smallest contrast ratio of any text on the page against its background (WCAG 2 relative luminance).
CONTRAST_SCRIPT = """
function rgb(value) {
  const m = value.match(/[\\d.]+/g).map(Number);
  return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1};
}
function lum(c) { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); }
function background(node) {
  for (; node && node.nodeType === 1; node = node.parentElement) {
    const c = rgb(getComputedStyle(node).backgroundColor); if (c.a > 0.5) return c; }
  return {r: 255, g: 255, b: 255, a: 1};
}
let worst = {ratio: 99, text: ""};
for (const node of document.querySelectorAll("body *")) {
  const own = [...node.childNodes].filter((n) => n.nodeType === 3 && n.textContent.trim())
    .map((n) => n.textContent.trim()).join(" ");
  if (!own || node.offsetParent === null || node.closest(".visually-hidden")) continue;
  const style = getComputedStyle(node);
  const a = lum(rgb(style.color)), b = lum(background(node));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < worst.ratio) worst = {ratio, text: own.slice(0, 40)};
}
return worst;
"""

# Form controls without a label, and images and buttons without a name.
UNLABELLED_SCRIPT = """
const missing = [];
for (const control of document.querySelectorAll("input, select, textarea")) {
  if (!control.labels || control.labels.length === 0) missing.push(control.id || control.name); }
for (const image of document.querySelectorAll("img")) { if (!image.getAttribute("alt")) missing.push(image.id); }
for (const button of document.querySelectorAll("button, a.button")) {
  if (!button.textContent.trim()) missing.push(button.id);
}
return missing;
"""


def test_the_console_is_usable_at_phone_width_and_by_keyboard(
    console: Console, browser: Any, screenshots: Path
) -> None:
    with console.api() as api:
        job_id = api.post(
            "/v1/jobs",
            json={"model": "wan2.2-i2v-flash", "input": {"img_url": sample_data_uri(), "prompt": "phone"}},
        ).json()["job_id"]
    browser.set_window_size(*PHONE)
    try:
        for fragment in ("/jobs", "/new", f"/jobs/{job_id}"):
            browser.get(page(console.url, fragment))
            WebDriverWait(browser, 20).until(
                lambda driver: driver.execute_script(
                    "return [...document.querySelectorAll('.view')].some((view) => !view.hidden)"
                    " && document.querySelectorAll('#jobs-body tr, #model option, #job-status span').length > 0"
                )
            )
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{fragment} scrolls sideways by {overflow}px at phone width"
            worst = browser.execute_script(CONTRAST_SCRIPT)
            assert worst["ratio"] >= 4.5, f"{fragment}: text {worst['text']!r} has contrast {worst['ratio']:.2f}"
            assert browser.execute_script(UNLABELLED_SCRIPT) == []
            name = {"/jobs": "phone-jobs", "/new": "phone-new-job"}.get(fragment, "phone-job")
            browser.save_screenshot(str(screenshots / f"{name}.png"))

        # Keyboard: the skip link is the first stop, and following a link moves focus to the new view's heading.
        browser.get(page(console.url, "/jobs"))
        browser.refresh()  # a fresh load: the address above differs from the last one only after the '#'
        WebDriverWait(browser, 20).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#jobs-body tr"))
        ActionChains(browser).send_keys(Keys.TAB).perform()
        assert browser.switch_to.active_element.get_attribute("class") == "skip-link"
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        assert browser.switch_to.active_element.get_attribute("id") == "main"
        assert urlsplit(browser.current_url).fragment == "/jobs"
        browser.find_element(By.CSS_SELECTOR, '[data-nav="new"]').send_keys("\n")
        WebDriverWait(browser, 10).until(
            lambda driver: driver.switch_to.active_element.get_attribute("id") == "new-title"
        )
    finally:
        browser.set_window_size(*DESKTOP)


def test_wanflow_console_serves_the_same_page_and_forwards_its_calls(console: Console, browser: Any) -> None:
    with console.api() as api:
        job_id = api.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]["job_id"]
    # The proxy of `wanflow console`, unsigned here because the local API has no auth (the signing itself is
    # checked in tests/unit/test_console_proxy.py).
    with ConsoleProxy(console.mode.api_url, auth=None, port=0) as proxy:
        browser.get(page(proxy.url, "/jobs"))
        WebDriverWait(browser, 20).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')
        )
        browser.get(page(proxy.url, "/new"))
        WebDriverWait(browser, 20).until(lambda driver: option_values(driver, "model"))
