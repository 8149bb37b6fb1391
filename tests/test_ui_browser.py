"""The Dagster UI end to end, in headless Chromium: assets, groups, checks and a CLI-made run.

One throwaway instance: `c360 c360:load` materializes `customer_360` (and `lake/crm_opps_table`) on
it, the scoring stages and ACME-001's playbook follow, then `c360 c360:ui` serves the project on a
free local port, as the README starts it. The last test stops it with Ctrl-C. Screenshots land in
the test's temporary folder (pytest keeps the last few under its basetemp).
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from forked import Fork
from ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    SERVER_START_SECONDS,
    answers,
    dagster_env,
    free_port,
    graphql,
    require_browser,
    run_c360,
)

TIMEOUT_MS = 20_000
pytestmark = pytest.mark.browser

# What definitions.py declares, written out by hand: group -> the asset names drawn in it.
GROUPS = {
    "customer": ["customer_360", "account_health", "customer_signals", "renewal_forecasts"],
    "lake": ["crm_opps_table", "account_health_table", "customer_signals_table", "renewal_forecasts_table"],
    "accounts": ["playbook", "qbr_pack"],
}
# Asset keys as the catalog spells them, with their group.
CATALOG = {
    "customer_360": "customer",
    "account_health": "customer",
    "customer_signals": "customer",
    "renewal_forecasts": "customer",
    "playbook": "accounts",
    "qbr_pack": "accounts",
    "lake / crm_opps_table": "lake",
    "lake / account_health_table": "lake",
    "lake / customer_signals_table": "lake",
    "lake / renewal_forecasts_table": "lake",
}
# The input files, external assets upstream of customer_360 (docs/inputs.md's entities).
INPUT_FILES = ["accounts", "contacts", "subs", "usage", "cases", "nps", "invoices", "crm_opps"]
# The integrity checks of domain/ingest/integrity.py and their outcome on the bundled fixtures, by hand
# from fixtures/customer/README.md: OLDCO-012 has no active subscription, and SOYLENT-006 is the one
# live account past its first 28 days without recent usage (NEWCO-011 is too new, OLDCO-012
# churned: both left out), so those two WARN checks fail.
CUSTOMER_360_CHECKS = {
    "unique_ids": "Succeeded",
    "references_resolve": "Succeeded",
    "dates_ordered": "Succeeded",
    "usage_windows_disjoint": "Succeeded",
    "values_in_range": "Succeeded",
    "has_subscription": "Succeeded",
    "has_active_subscription": "Failed",
    "has_recent_usage": "Failed",
    "active_renewals_not_past": "Succeeded",
    "invoice_currency_matches": "Succeeded",
}


@dataclass(frozen=True)
class UI:
    """A served instance on which the CLI has loaded the bundled fixtures."""

    base_url: str
    load_report: dict[str, Any]
    page: Any  # playwright.sync_api.Page
    screenshots: Path
    c360: Fork  # the `c360 c360:ui` process
    stderr: Path  # what it and the `dagster dev` it started wrote to stderr


@pytest.fixture(scope="module")
def ui(forks, tmp_path_factory) -> Iterator[UI]:
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)  # a busy machine draws the graph slowly

    tmp = tmp_path_factory.mktemp("ui")
    env = dagster_env(tmp / "dagster_home")
    artifacts = ["--artifacts", str(tmp / "artifacts")]
    report = run_c360(forks, env, "c360:load", "--dir", str(REPO / "fixtures" / "customer"), *artifacts)
    for stage in ("c360:health", "c360:signals", "c360:renewals"):
        run_c360(forks, env, stage, *artifacts)
    run_c360(forks, env, "c360:playbook", "--account", "ACME-001", *artifacts)
    port, stderr = free_port(), tmp / "ui.stderr"
    c360 = forks.start(
        ["c360", "c360:ui", "--port", str(port)], cwd=REPO, env=env, stdout=tmp / "ui.out", stderr=stderr
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not answers(f"{base_url}/server_info"):
            assert c360.poll() is None and time.monotonic() < deadline, "the UI did not come up:\n" + stderr.read_text()
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            # Tall enough for the catalog to draw every asset's row without scrolling.
            context = browser.new_context(viewport={"width": 1600, "height": 1800})
            # A returning user: the one-time "join the community" dialog would cover the page.
            context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            try:
                yield UI(base_url, report, page, tmp, c360, stderr)
            finally:
                browser.close()
    finally:
        if c360.poll() is None:
            # The Ctrl-C test did not stop it: leave no server behind (`dagster dev` outlives a killed parent).
            leftovers = psutil.Process(c360.pid).children(recursive=True)
            c360.kill()
            for process in leftovers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()


def _drawn_name(name: str) -> str | re.Pattern:
    """The node's name as the graph draws it. Zoomed out, Dagster 1.13 cuts a name past 18
    characters at an underscore (`withMiddleTruncation`); worked out by hand for the lake
    tables' keys: `account_health_table` is drawn `account_hea…_table`."""
    if len(name) <= 18:
        return name
    return re.compile(f"^({re.escape(name)}|{re.escape(name[:11])}…_table)$")


def _box_center_inside(inner: dict, outer: dict) -> bool:
    x, y = inner["x"] + inner["width"] / 2, inner["y"] + inner["height"] / 2
    return outer["x"] <= x <= outer["x"] + outer["width"] and outer["y"] <= y <= outer["y"] + outer["height"]


def test_asset_graph_draws_every_asset_inside_its_group(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/asset-groups")
    # The graph's canvas: the drawing that names the groups (all start collapsed).
    graph = page.locator("svg").filter(has=page.get_by_text("customer", exact=True))
    expect(graph.first).to_be_visible()
    # Groups start collapsed; expand them the way a user does, from the graph's menu.
    graph.first.click(button="right", position={"x": 20, "y": 20})
    page.get_by_role("menuitem", name="Expand all groups").click()
    page.reload()  # re-lays out the expanded graph to fit the viewport
    graph = page.locator("svg").filter(has=page.locator("foreignObject.group")).first
    for group, assets in GROUPS.items():
        group_node = graph.locator("foreignObject.group").filter(has=page.get_by_text(group, exact=True))
        expect(group_node).to_be_visible()
        group_box = group_node.bounding_box()
        for asset in assets:
            names = graph.get_by_text(_drawn_name(asset), exact=True)
            expect(names.first).to_be_visible()
            boxes = [names.nth(i).bounding_box() for i in range(names.count())]
            assert any(_box_center_inside(box, group_box) for box in boxes), f"{asset} not drawn in group {group}"
    # The CLI materialized customer_360 and renewal_forecasts: their nodes turn green, unlike qbr_pack.
    for asset, colour in (("customer_360", "green"), ("renewal_forecasts", "green"), ("qbr_pack", "gray")):
        node_box = graph.get_by_text(asset, exact=True).first.locator("..")
        expect(node_box).to_have_attribute("style", re.compile(f"--minimal-bg: var\\(--color-background-{colour}\\)"))
    page.screenshot(path=ui.screenshots / "asset_graph.png")


def test_catalog_lists_every_asset_key_with_its_group(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets")
    for key, group in CATALOG.items():
        link = page.locator(f'a[href="/assets/{key.replace(" / ", "/")}"]')
        expect(link.first).to_be_visible()
        expect(link.first).to_contain_text(key)
        # The catalog row: the grid holding the asset's link also names its group.
        row = link.first.locator("xpath=ancestor::div[contains(@class, 'rowGrid')][1]")
        expect(row).to_contain_text(group)


def _drawn_check_name(row):
    """A check's name as its row in the checks list draws it. Dagster 1.13's MiddleTruncate
    draws the name in a span, cut in the middle with "…" when it does not fit, beside a hidden
    copy of the whole name that it measures."""
    return row.locator("div[class*='MiddleTruncate_container'] > span")


def test_customer_360_checks_tab_shows_the_cli_check_results(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets/customer_360?view=checks")
    rows = page.locator("div[class*='checkRow']")
    expect(rows).to_have_count(len(CUSTOMER_360_CHECKS))
    for check, status in CUSTOMER_360_CHECKS.items():
        row = rows.filter(has=page.get_by_text(check, exact=True))
        expect(row).to_have_count(1)
        expect(row).to_contain_text(status)
        expect(_drawn_check_name(row)).to_have_text(check)  # whole, not cut with "…"
    page.screenshot(path=ui.screenshots / "customer_360_checks.png")


def test_account_health_checks_are_declared_in_the_ui(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets/account_health?view=checks")
    rows = page.locator("div[class*='checkRow']")
    for check in ("every_account_scored_once", "score_within_0_100", "points_sum_to_score"):
        expect(_drawn_check_name(rows.filter(has=page.get_by_text(check, exact=True)))).to_have_text(check)


def test_runs_page_lists_the_cli_materialization(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/runs")
    run_id = ui.load_report["run_id"]
    # The runs table shows a run by the first 8 characters of its id, linking to the full id.
    run_link = page.locator(f'a[href*="/runs/{run_id}"]').first
    expect(run_link).to_have_text(run_id[:8])
    row = run_link.locator("xpath=ancestor::div[contains(@class, 'rowGrid')][1]")
    expect(row).to_contain_text("c360_load")
    expect(row).to_contain_text("Success")


def test_graphql_lists_the_account_partitions_the_chain_registered(ui):
    data = graphql(
        ui.base_url,
        '{ assetNodeOrError(assetKey: {path: ["playbook"]}) '
        "{ ... on AssetNode { partitionDefinition { name } partitionKeys } } }",
    )
    node = data["assetNodeOrError"]
    assert node["partitionDefinition"]["name"] == "account"
    # The acted-on accounts of fixtures/customer/README.md (red, or amber renewing in 120 days),
    # in the order renewal_forecasts registered them; not all twelve.
    assert node["partitionKeys"] == ["ACME-001", "INITECH-003", "PIPE-004", "SOYLENT-006", "STARK-008", "WAYNE-009"]


def test_an_account_added_in_the_ui_becomes_a_partition(ui):
    # What the materialize dialog's "Add partition" sends: GLOBEX-002 is green and renews after
    # the window, so no stage registered it.
    repository = graphql(
        ui.base_url, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
    )["repositoriesOrError"]["nodes"][0]
    added = graphql(
        ui.base_url,
        'mutation { addDynamicPartition(partitionsDefName: "account", partitionKey: "GLOBEX-002", '
        f'repositorySelector: {{repositoryName: "{repository["name"]}", '
        f'repositoryLocationName: "{repository["location"]["name"]}"}}) '
        "{ __typename ... on AddDynamicPartitionSuccess { partitionKey } } }",
    )["addDynamicPartition"]
    assert added == {"__typename": "AddDynamicPartitionSuccess", "partitionKey": "GLOBEX-002"}
    keys = graphql(
        ui.base_url, '{ assetNodeOrError(assetKey: {path: ["qbr_pack"]}) { ... on AssetNode { partitionKeys } } }'
    )["assetNodeOrError"]["partitionKeys"]
    assert keys[-1] == "GLOBEX-002" and len(keys) == 7


# Each asset's parents as the UI's lineage draws them, written out by hand: every edge a read.
UPSTREAM = {
    "renewal_forecasts": {"customer_360", "account_health", "customer_signals"},
    # An account's assets read the roll-ups (the whole book's documents), not one shard.
    "playbook": {
        "report/customer_360_report",
        "report/account_health_report",
        "report/customer_signals_report",
        "report/renewal_forecasts_report",
    },
    "qbr_pack": {
        "report/customer_360_report",
        "report/account_health_report",
        "report/customer_signals_report",
        "report/renewal_forecasts_report",
        "playbook",
        "lake/account_health_table",
    },
    "lake/customer_signals_table": {"customer_signals"},
}


def test_the_lineage_edges_are_the_reads(ui):
    from playwright.sync_api import expect

    for asset, parents in UPSTREAM.items():
        path = ", ".join(f'"{part}"' for part in asset.split("/"))
        node = graphql(
            ui.base_url,
            f"{{ assetNodeOrError(assetKey: {{path: [{path}]}}) {{ ... on AssetNode {{ dependencyKeys {{ path }} }} }} }}",
        )["assetNodeOrError"]
        assert {"/".join(key["path"]) for key in node["dependencyKeys"]} == parents, asset
    page = ui.page
    page.goto(f"{ui.base_url}/assets/qbr_pack?view=lineage&lineageScope=upstream")
    graph = page.locator("svg").filter(has=page.locator("foreignObject")).first
    # The health scores and their lake table are two nodes with names of their own.
    for name in ("account_health_report", "account_health_table", "playbook", "qbr_pack"):
        expect(graph.get_by_text(name, exact=True).first).to_be_visible()
    page.screenshot(path=ui.screenshots / "qbr_pack_lineage.png")


def test_a_lake_table_shows_its_name_location_and_columns(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets/lake/customer_signals_table")
    expect(page.get_by_text("c360.main.customer_signals").first).to_be_visible()
    page.screenshot(path=ui.screenshots / "lake_table.png")
    expect(page.get_by_text("artifacts/lake/c360.duckdb").first).to_be_visible()  # `lake`: where it lives
    # Columns of contracts/schemas/customer_signals.schema.json, with their SQL types.
    for column in ("as_of", "account_id", "snoozed_until"):
        expect(page.get_by_text(column, exact=True).first).to_be_visible()


def test_lineage_starts_at_the_input_files(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets/customer_inputs?view=lineage")  # the split reads the files
    graph = page.locator("svg").filter(has=page.locator("foreignObject")).first
    # The lineage view draws each group as a box whose header names it.
    inputs = graph.get_by_text("inputs", exact=True).first.locator("xpath=ancestor::*[local-name()='foreignObject'][1]")
    expect(inputs).to_be_visible()
    inputs_box = inputs.bounding_box()
    for name in INPUT_FILES:
        names = graph.get_by_text(name, exact=True)
        expect(names.first).to_be_visible()
        boxes = [names.nth(i).bounding_box() for i in range(names.count())]
        assert any(_box_center_inside(box, inputs_box) for box in boxes), f"input file {name} not in group inputs"
    page.screenshot(path=ui.screenshots / "customer_inputs_lineage.png")


def test_a_failing_check_shows_its_failing_rows_as_a_table(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets/customer_360?view=checks&checkDetail=has_recent_usage")
    expect(page.get_by_text("failing_rows", exact=True)).to_be_visible()
    # By hand from fixtures/customer/README.md: SOYLENT-006, live and past its first 28 days, has no
    # usage in the last 28; NEWCO-011 (too new) and OLDCO-012 (churned) are left out.
    expect(page.locator("table td", has_text="SOYLENT-006").first).to_be_visible()
    for account_id in ("NEWCO-011", "OLDCO-012"):
        expect(page.locator("table td", has_text=account_id)).to_have_count(0)
    page.screenshot(path=ui.screenshots / "failing_check.png")


def test_a_partition_shows_its_own_metadata(ui):
    from playwright.sync_api import expect

    page = ui.page
    page.goto(f"{ui.base_url}/assets/playbook?view=partitions&partition=ACME-001")
    # fixtures/customer/README.md: ACME-001 is amber with score 68.
    for label, value in (("tier", "amber"), ("score", "68"), ("path", "playbooks/ACME-001.md")):
        row = page.locator("tr").filter(has=page.get_by_text(label, exact=True))
        expect(row.first).to_contain_text(value)
    page.screenshot(path=ui.screenshots / "playbook_partition.png")


STOP_WITHIN_S = 10.0


# Last: it stops the UI the tests above looked at.
def test_ctrl_c_stops_the_ui_and_every_process_it_started(ui):
    started = psutil.Process(ui.c360.pid).children(recursive=True)
    assert started, "dagster dev runs as a child of c360"
    ui.c360.send_signal(signal.SIGINT)  # what a terminal sends on Ctrl-C
    stopping = time.monotonic()
    ui.c360.wait(timeout=STOP_WITHIN_S * 3)
    assert time.monotonic() - stopping < STOP_WITHIN_S
    assert ui.c360.returncode == 0
    _, alive = psutil.wait_procs(started, timeout=1)
    assert [process for process in alive if _running(process)] == []
    assert not answers(f"{ui.base_url}/server_info")
    # Not Dagster's advice to run `dg dev` instead: c360 starts `dagster dev` itself.
    assert "dg dev" not in ui.stderr.read_text(encoding="utf-8")


def _running(process: psutil.Process) -> bool:
    """Still running: a zombie has exited and only waits for a parent (in a container, often a PID 1
    that reaps nobody) to collect its exit status."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
