"""The operator dashboard's flows in a real headless Chromium (fixtures in conftest.py).

Searching and filtering the services table (htmx swaps, no reload), a service's
"check now", edit and refused edit (with the service-detail screenshot), a health
run started on the dashboard, executed by a real Celery worker from its queued
message and watched by the page until it finishes, and an API key created (its
secret shown once) and revoked.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_dashboard_browser import assert_full_page_png

SERVICE = "celebrity-recognition"
RUN_SERVICES = ["celebrity-recognition", "face-detection", "scene-recognition"]
SECRET = re.compile(r"^s402_[0-9a-f]{12}_\S+$")

# Installed in a page: every full document load after it would lose window.__marker.
MARK_PAGE = "window.__marker = 1"
PAGE_MARKED = "window.__marker === 1"

# Records every state #run-progress shows ("status done/total"), as htmx swaps it in.
WATCH_RUN = """() => {
  const seen = window.__runStates = [];
  const note = () => {
    const section = document.querySelector('#run-progress');
    if (!section) return;
    const state = `${section.dataset.status} ${section.dataset.done}/${section.dataset.total}`;
    if (seen[seen.length - 1] !== state) seen.push(state);
  };
  note();
  new MutationObserver(note).observe(document.querySelector('main'), {childList: true, subtree: true});
}"""


def _document_loads(page) -> list[str]:
    """The URLs of full document requests the page makes from now on (htmx's are XHR/fetch)."""
    loads: list[str] = []
    page.on("request", lambda request: loads.append(request.url) if request.resource_type == "document" else None)
    return loads


def _row_ids(rows) -> list[str]:
    return rows.evaluate_all("rows => rows.map(row => row.dataset.service)")


# --- the services table -----------------------------------------------------------------------------------------

def test_searching_the_services_table_narrows_it_as_you_type_and_the_filters_narrow_it_too(signed_in_page):
    from catalog.models import Service
    from catalog.selectors import dashboard_services
    from health.services import service_check_now

    # One service checked (healthy, by the emulator), so the health filter has something to find.
    service_check_now(service=Service.objects.get(pk=SERVICE))
    everything = [service.id for service in dashboard_services()]
    matching = [service.id for service in dashboard_services(q="celebrity")]
    healthy = [service.id for service in dashboard_services(health="healthy")]
    assert SERVICE in matching and len(matching) < len(everything) // 10, matching
    assert healthy == [SERVICE]
    page = signed_in_page
    page.goto("/dashboard/services/")
    rows = page.locator("section#services-results tr[data-service]")
    expect(rows).to_have_count(len(everything))
    page.evaluate(MARK_PAGE)
    loads = _document_loads(page)

    # Letter by letter, as an operator types: htmx waits for a pause, then swaps the results in.
    with page.expect_response(lambda response: re.search(r"[?&]q=celebrity(&|$)", response.url)) as searched:
        page.locator("#service-filters input[name=q]").press_sequentially("celebrity", delay=40)
    assert searched.value.request.headers.get("hx-request") == "true"
    expect(rows).to_have_count(len(matching))
    assert _row_ids(rows) == matching
    expect(page.locator("#services-count")).to_have_text(str(len(matching)))
    expect(page).to_have_url(re.compile(r"/dashboard/services/\?(.*&)?q=celebrity(&|$)"))

    # A filter narrows the search's results further: no draft matches.
    page.locator("#service-filters select[name=state]").select_option("draft")
    expect(rows).to_have_count(0)
    expect(page.locator("#services-results")).to_contain_text("No service matches.")
    expect(page).to_have_url(re.compile(r"[?&]state=draft(&|$)"))
    expect(page).to_have_url(re.compile(r"[?&]q=celebrity(&|$)"))

    page.locator("#service-filters select[name=state]").select_option("")
    expect(rows).to_have_count(len(matching))
    # Search emptied: everything again, until the health filter picks the one healthy service.
    page.locator("#service-filters input[name=q]").fill("")
    expect(rows).to_have_count(len(everything))
    page.locator("#service-filters select[name=health]").select_option("healthy")
    expect(rows).to_have_count(1)
    assert _row_ids(rows) == healthy
    expect(rows.first.locator(".health")).to_have_text("healthy")
    expect(page).to_have_url(re.compile(r"[?&]health=healthy(&|$)"))

    assert page.evaluate(PAGE_MARKED), "the page was reloaded"
    assert loads == [], f"full page loads instead of htmx swaps: {loads}"

    # The pushed URL is a real address: opened afresh, it shows the same filtered table.
    page.goto(page.url)
    expect(rows).to_have_count(1)
    expect(page.locator("#service-filters select[name=health]")).to_have_value("healthy")


# --- a service's page -------------------------------------------------------------------------------------------

def test_a_service_page_checks_now_in_place_saves_an_edit_and_refuses_an_empty_name(signed_in_page, screenshot):
    from catalog.models import Service
    from health.models import ServiceHealth

    page = signed_in_page
    page.goto(f"/dashboard/services/{SERVICE}/")
    page.evaluate(MARK_PAGE)
    loads = _document_loads(page)
    panel = page.locator("#health-panel")
    expect(panel.locator("#check-result")).to_have_count(0)

    panel.get_by_role("button", name="Check now").click()

    result = page.locator("#health-panel #check-result")
    expect(result).to_contain_text("Checked just now")
    badge = result.locator(".health")
    expect(badge).to_have_text("healthy")
    expect(badge).to_have_class(re.compile(r"\bhealth-healthy\b"))
    expect(result).to_contain_text("MissingImageURL")  # the emulator's answer to the free probe
    expect(page.locator("#health-panel").get_by_role("button", name="Check now")).to_be_enabled()
    assert page.evaluate(PAGE_MARKED) and loads == [], "Check now reloaded the page"
    assert ServiceHealth.objects.get(service_id=SERVICE).status == "healthy"
    page.wait_for_load_state("networkidle")
    assert_full_page_png(screenshot(page, "service-detail"))

    # An edit, saved.
    original = Service.objects.get(pk=SERVICE)
    renamed = "Celebrity Recognition (renamed in the browser)"
    form = page.locator("#service-form")
    form.locator("[name=name]").fill(renamed)
    form.get_by_role("button", name="Save").click()
    expect(page.locator("main h1")).to_have_text(renamed)
    expect(page.locator(".messages")).to_contain_text("Saved name.")
    expect(page.locator("#service-form [name=name]")).to_have_value(renamed)
    saved = Service.objects.get(pk=SERVICE)
    assert saved.name == renamed
    assert (saved.description, saved.keywords, saved.state) == (original.description, original.keywords,
                                                                original.state)

    # An empty name: the error next to the field, nothing saved.
    form.locator("[name=name]").fill("")
    form.locator("[name=description]").fill("A description that must not be saved.")
    form.get_by_role("button", name="Save").click()
    error = page.locator("#service-form #id_name_error")
    expect(error).to_have_text("This field is required.")
    expect(page.locator("#service-form #id_name_error + input#id_name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("main h1")).to_have_text(renamed)
    expect(page.locator(".messages")).to_have_count(0)
    unchanged = Service.objects.get(pk=SERVICE)
    assert (unchanged.name, unchanged.description) == (renamed, original.description)


# --- health runs ------------------------------------------------------------------------------------------------

def test_a_health_run_started_on_the_dashboard_is_run_by_celery_while_its_page_follows_it(
        signed_in_page, celery_worker, settings):
    from health.models import HealthRun

    # The emulator answers each check after 0.8 s and the run checks one service at a time: about 2.4 s,
    # so the page's 1 s polls see it part done.
    settings.SANDBOX_LATENCY_MS = 800
    page = signed_in_page
    page.goto("/dashboard/health/runs/")
    page.locator("#start-run-panel > summary").click()
    form = page.locator("#start-run")
    for service_id in RUN_SERVICES:
        form.locator(f"input[name=services][value='{service_id}']").check()
    form.locator("input[name=concurrency]").fill("1")

    form.get_by_role("button", name="Start the run").click()

    expect(page).to_have_url(re.compile(r"/dashboard/health/runs/\d+/$"))
    run_id = int(re.search(r"/runs/(\d+)/$", page.url).group(1))
    progress = page.locator("section#run-progress")
    expect(progress).to_have_attribute("data-status", re.compile(r"^(queued|running)$"))
    page.evaluate(MARK_PAGE)
    loads = _document_loads(page)
    page.evaluate(WATCH_RUN)

    expect(progress).to_have_attribute("data-status", "succeeded", timeout=30_000)

    seen = page.evaluate("window.__runStates")
    total = len(RUN_SERVICES)
    part_done = [state for state in seen if re.fullmatch(rf"running [1-{total - 1}]/{total}", state)]
    assert part_done, f"the page never showed the run part done: {seen}"
    assert seen[-1] == f"succeeded {total}/{total}", seen
    assert page.evaluate(PAGE_MARKED) and loads == [], f"the page reloaded instead of polling: {loads}"
    expect(progress.locator("strong")).to_have_text(f"{total} of {total}")
    results = progress.locator("#run-results tr[data-service]")
    expect(results).to_have_count(total)
    assert sorted(_row_ids(results)) == sorted(RUN_SERVICES)
    expect(results.locator(".health")).to_have_text(["healthy"] * total)
    # Finished: the section no longer polls.
    expect(progress).not_to_have_attribute("hx-trigger", re.compile("."))

    run = HealthRun.objects.get(pk=run_id)
    assert (run.status, run.done, run.total, run.concurrency) == ("succeeded", total, total, 1)
    assert (run.trigger, run.started_by.get_username()) == (HealthRun.Trigger.DASHBOARD, "operator")
    assert run.started_at and run.finished_at and run.error == ""
    # Executed by the Celery worker, from the message queued when the run was committed.
    assert celery_worker.executed == [("health.tasks.execute_health_run", (run_id,))]

    page.goto("/dashboard/health/runs/")
    row = page.locator(f"#runs tr[data-run='{run_id}']")
    expect(row.locator(".health")).to_have_text("succeeded")
    expect(row).to_contain_text(f"{total}/{total}")


# --- API keys ---------------------------------------------------------------------------------------------------

def test_an_api_key_created_on_the_dashboard_shows_its_secret_once_and_is_revoked(signed_in_page, server_url):
    from payments.selectors import KEY_REVOKED, ApiKeyRejected, api_key_authenticate

    page = signed_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server_url)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    page.goto("/dashboard/keys/")
    page.locator("#create-key-panel > summary").click()
    form = page.locator("#create-key")
    form.locator("input[name=label]").fill("browser-test agent")

    form.get_by_role("button", name="Create the key").click()

    code = page.locator("#new-key .secret code")
    expect(code).to_have_text(SECRET)
    secret = code.text_content()
    key = api_key_authenticate(secret)
    assert (key.label, key.allow_all_services, key.revoked_at) == ("browser-test agent", True, None)
    expect(page.locator("#new-key h2")).to_contain_text(key.client_id)
    page.locator("#new-key .secret").get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    row = page.locator(f"#key-list tr[data-key='{key.client_id}']")
    expect(row).to_contain_text("active")

    # Shown once: neither the key's page, nor the list gone back to or opened again, shows it.
    page.locator("#new-key").get_by_role("link", name="Open the key").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/keys/{key.pk}/$"))
    expect(page.locator("#key h1 [data-status=active]")).to_have_text("active")
    assert secret not in page.content()
    page.go_back()
    expect(page).to_have_url(re.compile(r"/dashboard/keys/$"))
    expect(row).to_contain_text("browser-test agent")
    expect(page.locator(".secret")).to_have_count(0)
    assert secret not in page.content()
    page.reload()
    expect(row).to_contain_text("browser-test agent")
    expect(page.locator(".secret")).to_have_count(0)
    assert secret not in page.content()

    row.get_by_role("link", name="browser-test agent").click()
    expect(page).to_have_url(re.compile(rf"/dashboard/keys/{key.pk}/$"))
    page.locator("#revoke-panel > summary").click()
    page.locator("#key-revoke").get_by_role("button", name=f"Revoke {key.client_id} now").click()

    expect(page.locator("#key h1 [data-status=revoked]")).to_have_text(re.compile(r"^revoked\b"))
    expect(page.locator("#key .messages")).to_contain_text(f"{key.client_id} is revoked")
    expect(page.locator("#key-revoke")).to_have_count(0)
    expect(page.locator("#audit-log tr[data-action=revoked]")).to_contain_text("operator")
    with pytest.raises(ApiKeyRejected) as rejected:
        api_key_authenticate(secret)
    assert rejected.value.reason == KEY_REVOKED
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert dialogs == []  # revoking asks nothing more than opening its <details>

    page.goto("/dashboard/keys/")
    expect(page.locator(f"#key-list tr[data-key='{key.client_id}'] .health")).to_have_text("revoked")
