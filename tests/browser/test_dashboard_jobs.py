"""The jobs page in a real headless Chromium (fixtures in conftest.py): the status filter swaps the table
through htmx, without a reload, and the pushed URL opens the same filtered page afresh."""

import re

from playwright.sync_api import expect

from tests.browser.test_dashboard_flows import MARK_PAGE, PAGE_MARKED, _document_loads


def test_filtering_the_jobs_page_by_status_swaps_the_table_in_place(signed_in_page):
    from tests.jobs.test_dashboard_jobs import _job

    queued, succeeded, failed = _job(), _job(status="succeeded"), _job(status="failed", error="the upstream failed")
    page = signed_in_page
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page).to_have_url(re.compile(r"/dashboard/jobs/$"))
    rows = page.locator("section#jobs-table tr[data-job]")
    expect(rows).to_have_count(3)
    page.evaluate(MARK_PAGE)
    loads = _document_loads(page)

    with page.expect_response(lambda response: re.search(r"[?&]status=failed(&|$)", response.url)) as filtered:
        page.locator("#job-filters select[name=status]").select_option("failed")
    assert filtered.value.request.headers.get("hx-request") == "true"
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job", failed.pk)
    expect(rows.first).to_contain_text("the upstream failed")
    expect(page).to_have_url(re.compile(r"/dashboard/jobs/\?(.*&)?status=failed(&|$)"))

    page.locator("#job-filters select[name=status]").select_option("succeeded")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job", succeeded.pk)
    assert page.evaluate(PAGE_MARKED), "the page was reloaded"
    assert loads == [], f"full page loads instead of htmx swaps: {loads}"

    # The pushed URL is a real address: opened afresh, it shows the same filtered table.
    page.goto(page.url)
    expect(rows).to_have_count(1)
    expect(page.locator("#job-filters select[name=status]")).to_have_value("succeeded")
    assert queued.pk not in page.content()
