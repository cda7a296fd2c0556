"""The operator dashboard in a real headless Chromium: signing in and out (fixtures in conftest.py)."""

import re
import struct

from playwright.sync_api import expect

from tests.browser.conftest import VIEWPORT, sign_in

LOGIN = re.compile(r"/dashboard/login/$")
LOGIN_FOR_OVERVIEW = re.compile(re.escape("/dashboard/login/?next=/dashboard/") + "$")
OVERVIEW = re.compile(r"/dashboard/$")


def assert_full_page_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height >= VIEWPORT["height"]) == (VIEWPORT["width"], True), (width, height)
    assert len(data) > 5_000, f"{path} is {len(data)} bytes: an empty page?"


def test_an_anonymous_visit_signs_in_and_comes_back_to_the_overview(page, operator_login, screenshot):
    page.goto("/dashboard/")

    expect(page).to_have_url(LOGIN_FOR_OVERVIEW)
    expect(page.get_by_text("Sign in to continue to")).to_contain_text("/dashboard/")
    sign_in(page, *operator_login)

    expect(page).to_have_url(OVERVIEW)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    badge = page.locator("header [data-mode]")
    expect(badge).to_be_visible()
    expect(badge).to_have_attribute("data-mode", "sandbox")
    expect(badge).to_have_text("sandbox")
    page.wait_for_load_state("networkidle")  # the overview's htmx parts have come in
    assert_full_page_png(screenshot(page, "overview"))


def test_signing_out_goes_back_to_the_login_page_and_the_dashboard_asks_again(signed_in_page):
    page = signed_in_page

    page.get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(LOGIN)
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    expect(page.locator("input[name=password]")).to_be_visible()
    page.goto("/dashboard/")
    expect(page).to_have_url(LOGIN_FOR_OVERVIEW)


def test_a_wrong_password_shows_the_form_error_and_stays_on_the_login_page(page, operator_login):
    username, _ = operator_login
    page.goto("/dashboard/login/")

    sign_in(page, username, "not-the-password")

    expect(page.locator(".errorlist")).to_contain_text("correct username and password")
    expect(page).to_have_url(LOGIN)
    expect(page.locator("input[name=username]")).to_have_value(username)
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    page.goto("/dashboard/")
    expect(page).to_have_url(LOGIN_FOR_OVERVIEW)
