"""The asset graph a data engineer sees: keys, groups, checks, partitions, jobs, automation."""

from __future__ import annotations

import dagster as dg

from c360_dagster.definitions import defs


def _asset_keys() -> set[str]:
    return {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}


def test_every_stage_is_an_asset_with_lineage():
    assert _asset_keys() == {
        "customer_inputs",
        "customer_360",
        "account_health",
        "customer_signals",
        "renewal_forecasts",
        "playbook",
        "qbr_pack",
        "lake/crm_opps_table",
        "lake/account_health_table",
        "lake/customer_signals_table",
        "lake/renewal_forecasts_table",
        # The roll-ups: today's documents from the shards' frames.
        "report/customer_360_report",
        "report/account_health_report",
        "report/customer_signals_report",
        "report/renewal_forecasts_report",
        # The input files, external assets (docs/inputs.md's entities): the lineage starts there.
        *(
            f"inputs/{name}"
            for name in ("accounts", "contacts", "subs", "usage", "cases", "nps", "invoices", "crm_opps")
        ),
    }
    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}

    assert parents("customer_inputs") == {key for key in _asset_keys() if key.startswith("inputs/")}
    assert parents("customer_360") == {"customer_inputs"}
    assert parents("account_health") == {"customer_360"}
    assert parents("renewal_forecasts") == {"customer_360", "account_health", "customer_signals"}
    assert parents("report/account_health_report") == {"account_health"}
    reports = {
        f"report/{name}_report" for name in ("customer_360", "account_health", "customer_signals", "renewal_forecasts")
    }
    assert parents("playbook") == reports
    assert parents("qbr_pack") == reports | {"playbook", "lake/account_health_table"}
    assert parents("lake/account_health_table") == {"account_health"}


def test_every_node_of_the_graph_has_a_name_of_its_own():
    # Dagster 1.13's graph names a node by its key's last part: a lake table must not read as
    # the customer asset it is made of, nor as the input file of the same name.
    names = [key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys()]
    assert len(names) == len(set(names)), sorted(names)


def test_the_chain_is_partitioned_by_shard_as_scale_yaml_says():
    from c360_dagster.definitions import definitions_for

    sharded = {"customer_360", "account_health", "customer_signals", "renewal_forecasts"}
    sharded |= {
        f"lake/{table}_table" for table in ("crm_opps", "account_health", "customer_signals", "renewal_forecasts")
    }
    for count in (1, 3):
        graph = definitions_for(count).resolve_asset_graph()
        for key in graph.get_all_asset_keys():
            partitions = graph.get(key).partitions_def
            if key.to_user_string() in sharded:
                assert partitions.get_partition_keys() == [str(k) for k in range(count)], key
            elif key.to_user_string() not in {"playbook", "qbr_pack"}:
                assert partitions is None, key  # the split and the roll-ups see the whole book


def test_assets_are_grouped_described_owned_and_versioned():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name in {"inputs", "customer", "lake", "reports", "accounts"}, key
        assert node.description, key
        assert node.owners == ["team:customer-success-ops"], key
        # Dagster does not run the input files (external assets), so they have no code.
        assert bool(node.code_version) == (node.group_name != "inputs"), key


def test_per_account_assets_use_account_partitions():
    graph = defs.resolve_asset_graph()
    for name in ("playbook", "qbr_pack"):
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        assert partitions.name == "account"


def test_checks_are_declared():
    checks = {(k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys}
    assert ("qbr_pack", "duty_of_care") in checks
    assert ("qbr_pack", "privacy_signoff") in checks
    assert ("account_health", "points_sum_to_score") in checks
    assert ("customer_signals", "signal_codes_known") in checks
    assert sum(1 for asset, _ in checks if asset == "customer_360") >= 8


def test_jobs_schedule_and_sensors():
    assert defs.resolve_job_def("c360_chain") is not None
    assert defs.resolve_schedule_def("c360_daily").default_status == dg.DefaultScheduleStatus.STOPPED
    assert defs.resolve_sensor_def("input_files_sensor") is not None
    assert defs.resolve_sensor_def("account_refresh_sensor") is not None


def test_code_versions_cover_every_module_an_asset_runs():
    import hashlib

    from c360_dagster.defs.versions import PACKAGE_DIR, source_files, source_version
    from c360_dagster.domain.ingest import shards
    from c360_dagster.domain.qbr import pack as qbr
    from c360_dagster.domain.scoring import health, overrides

    domain = PACKAGE_DIR / "domain"
    files = source_files(health, overrides)
    # health.json's text comes from json_text, imported by health: its code is in the version.
    assert {domain / "core/json_text.py", domain / "scoring/health.py", domain / "scoring/overrides.py"} <= set(files)
    assert len(files) == len(set(files))
    expected = hashlib.sha256()
    for path in files:
        expected.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0" + path.read_bytes())
    assert source_version(health, overrides) == expected.hexdigest()[:12]
    node = defs.resolve_asset_graph().get(dg.AssetKey("account_health"))
    assert node.code_version == source_version(health, overrides, shards)
    # The QBR pack renders Jinja templates: each template is part of its version.
    qbr_files = source_files(qbr)
    assert PACKAGE_DIR / "templates" / "qbr_index.md.j2" in qbr_files and domain / "core/text.py" in qbr_files
    # Modules found without importing them: `from package import module` (the deck, the PowerPoint
    # writer) and `from module import names` (the models) both count the module.
    assert {domain / "qbr" / f"{name}.py" for name in ("deck", "powerpoint", "models", "layout")} <= set(qbr_files)
    # The asset graph names the pack's modules (importing them is left to its run); a name is its module.
    from c360_dagster.defs.accounts import QBR_MODULES
    from c360_dagster.domain.scoring import account_state

    assert QBR_MODULES[0] == qbr.__name__ and source_files(*QBR_MODULES[:1]) == qbr_files
    node = defs.resolve_asset_graph().get(dg.AssetKey("qbr_pack"))
    assert node.code_version == source_version(qbr, *QBR_MODULES[1:], account_state)


def test_the_jobs_that_load_observe_the_input_files_first():
    for job in ("c360_load", "c360_chain"):
        nodes = {node.name for node in defs.resolve_job_def(job).graph.node_defs}
        assert {"input_files", "customer_inputs", "customer_360"} <= nodes, job
