"""All or nothing with shards: a bad config, override or snooze stops the command before any shard writes.

With N = 3 the fixtures' HOOLI-007 is in the last shard (shard 2) and the typo HOOLI-07 hashes
there too, so only that shard's run would meet the entry. The check runs once on the whole book
(in the split, or before the shard runs for the commands that start after it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import untraced

from c360_dagster.console import main
from c360_dagster.domain.ingest.shards import shard_of

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "fixtures" / "customer"
SHARDS = 3
BAD_OVERRIDE = "overrides:\n  - {account: HOOLI-07, tier: red, reason: r, author: a@x.test, expires_on: 2030-01-01}\n"
BAD_SNOOZE = "snoozes:\n  - {account: HOOLI-07, code: SIG_SUPPORT_SPIKE, until: 2030-01-01, reason: r}\n"


class ShardedProject:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.configs = root / "configs"
        shutil.copytree(REPO_ROOT / "configs" / "customer", self.configs)
        (self.configs / "scale.yaml").write_text(f"shards: {SHARDS}\n", encoding="utf-8")

    def c360(self, capsys, *argv: str, configs: Path | None = None) -> tuple[int, str, str]:
        args = ["--artifacts", str(self.artifacts), "--configs", str(configs or self.configs), "--quiet"]
        code = main([*argv, *args])
        out, err = capsys.readouterr()
        return code, out, err

    def snapshot(self) -> dict[str, bytes]:
        """Every file under artifacts/ (each shard's stages and live links, the split, the event
        logs, the metrics, the lake) and its bytes."""
        return {
            str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.artifacts.rglob("*"))
            if path.is_file()
        }

    def configs_with(self, name: str, text: str) -> Path:
        """A copy of the project's configs with `<name>.yaml` replaced by `text`."""
        configs = self.root / f"configs-bad-{name}"
        shutil.rmtree(configs, ignore_errors=True)
        shutil.copytree(self.configs, configs)
        (configs / f"{name}.yaml").write_text(text, encoding="utf-8")
        return configs


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, pytestconfig):
    """The sharded project loaded, scored and signalled (untraced: the chain's tests run it all)."""
    project = ShardedProject(tmp_path_factory.mktemp("preflight"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)
        patch.setenv("DAGSTER_HOME", str(project.root / "dagster_home"))
        with untraced(pytestconfig):
            for argv in (["c360:load", "--dir", str(FIXTURES)], ["c360:health"], ["c360:signals"]):
                assert main([*argv, "--artifacts", str(project.artifacts), "--configs", str(project.configs)]) == 0
        yield project


@pytest.fixture
def in_sharded(sharded, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("DAGSTER_HOME", str(sharded.root / "dagster_home"))
    return sharded


def test_the_bad_entry_belongs_to_the_last_shard_only():
    assert shard_of("HOOLI-07", SHARDS) == shard_of("HOOLI-007", SHARDS) == SHARDS - 1


@pytest.mark.parametrize(
    ("name", "text", "command"),
    [
        ("overrides", BAD_OVERRIDE, ["c360:health"]),  # no split in the run: checked before the shards
        ("overrides", BAD_OVERRIDE, ["c360:load", "--dir", str(FIXTURES)]),  # the split checks it
        ("snoozes", BAD_SNOOZE, ["c360:signals"]),
        ("snoozes", BAD_SNOOZE, ["c360:run", "--dir", str(FIXTURES)]),
    ],
)
def test_a_bad_entry_of_one_shard_stops_the_command_with_nothing_written(in_sharded, capsys, name, text, command):
    before = in_sharded.snapshot()
    assert any(path.startswith(f"artifacts/customer/shards/{SHARDS - 1}/") for path in before)
    assert any(path.startswith("artifacts/governance/shards/") for path in before)
    configs = in_sharded.configs_with(name, text)
    code, out, err = in_sharded.c360(capsys, *command, configs=configs)
    assert (code, out) == (2, "")
    assert err == (
        f"c360: CONFIG_INVALID: {configs / f'{name}.yaml'}: {name}.0.account: expected an account_id of the "
        "input accounts, got 'HOOLI-07'; did you mean HOOLI-007?\n"
    )
    # Every shard's live stages, the split, the main and shard event logs, the metrics and the
    # lake are byte for byte what they were.
    assert in_sharded.snapshot() == before


def _broken(name: str, line: str) -> str:
    """The project's `<name>.yaml` with `line` given a value no loader accepts."""
    text = (REPO_ROOT / "configs" / "customer" / f"{name}.yaml").read_text(encoding="utf-8")
    assert text.count(line) == 1
    return text.replace(line, line.split(":")[0] + ": lots")


@pytest.mark.parametrize(
    ("name", "line", "key"),
    [
        ("health", "  adoption: 30", "weights.adoption"),
        ("signals", "  drop_pct_over: 25", "usage_slide_4w.drop_pct_over"),
        ("renewals", "  High: 0.9", "buckets.High"),
    ],
)
def test_a_bad_stage_config_stops_the_run_before_the_split_writes(in_sharded, capsys, name, line, key):
    before = in_sharded.snapshot()
    configs = in_sharded.configs_with(name, _broken(name, line))
    code, out, err = in_sharded.c360(capsys, "c360:run", "--dir", str(FIXTURES), configs=configs)
    assert (code, out) == (2, "")
    assert err.startswith(f"c360: CONFIG_INVALID: {configs / f'{name}.yaml'}: {key}: ") and err.count("\n") == 1, err
    # The split (which c360:run writes first), every shard and the event logs are as they were.
    assert in_sharded.snapshot() == before
