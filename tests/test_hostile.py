"""Hostile inputs and faults (issue 14 points 5, 6, 8, 9): each weakness fails a test here.

docs/governance.md "Hostile inputs and faults" lists which test proves which guarantee.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import replace_in, untraced
from forked import Ended, ForkServer

from c360_dagster.console import main
from c360_dagster.domain.core.config import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH
from c360_dagster.domain.core.errors import ConfigError, InputError, os_fault
from c360_dagster.domain.core.text import _environment, md_escape, visible_text
from c360_dagster.domain.ingest import loader
from c360_dagster.domain.renewals.playbooks import build_playbook, load_playbook_library, render_playbook_markdown
from c360_dagster.domain.scoring import health

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs" / "customer"
FIXTURES = REPO_ROOT / "fixtures" / "customer"


class LoadedProject:
    """One scratch project, loaded and scored once for the module; tests must not change it."""

    def __init__(self, root: Path, forks: ForkServer) -> None:
        self.root = root
        self.forks = forks
        self.artifacts = root / "artifacts"
        self.dagster_home = root / "dagster_home"
        self.args = ["--artifacts", str(self.artifacts), "--configs", str(CONFIGS)]

    def c360(self, capsys, *argv: str) -> tuple[int, str, str]:
        """The real `c360` entry point in-process: (exit code, stdout, stderr)."""
        code = main([argv[0], *self.args, *argv[1:]])  # the test's own options come last and win
        out, err = capsys.readouterr()
        return code, out, err

    def subprocess(self, *argv: str) -> Ended:
        """The `c360` program as a user runs it, in a process of its own (forked: tests/forked.py)."""
        env = {**os.environ, "DAGSTER_HOME": str(self.dagster_home)}
        return self.forks.run(["c360", argv[0], *self.args, *argv[1:]], cwd=REPO_ROOT, env=env)

    def snapshot(self) -> dict[str, bytes]:
        """Every file under artifacts/ and its bytes: "nothing changed" compares two of these."""
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.artifacts.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def loaded(forks, tmp_path_factory, pytestconfig):
    """The fixtures loaded, scored, signalled and forecast (untraced: the chain's tests run it all)."""
    project = LoadedProject(tmp_path_factory.mktemp("hostile"), forks)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO_ROOT)
        patch.setenv("DAGSTER_HOME", str(project.dagster_home))
        with untraced(pytestconfig):
            for argv in (["c360:load", "--dir", str(FIXTURES)], ["c360:health"], ["c360:signals"], ["c360:renewals"]):
                assert main([*argv, "--quiet", *project.args]) == 0, argv
        yield project


@pytest.fixture
def in_loaded(loaded, monkeypatch):
    """`loaded`, with this test's working folder and DAGSTER_HOME pointing at it."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("DAGSTER_HOME", str(loaded.dagster_home))
    return loaded


# --- 5. Configs as an attack surface -----------------------------------------------------------
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        health.load_health_config(path)
    return caught.value.describe()


def with_weight(tmp_path: Path, value: str) -> Path:
    text = (CONFIGS / "health.yaml").read_text(encoding="utf-8")
    assert "  adoption: 30\n" in text
    path = tmp_path / "candidate.yaml"
    path.write_text(text.replace("  adoption: 30\n", f"  adoption: {value}\n", 1), encoding="utf-8")
    return path


def test_billion_laughs_is_refused_at_once(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")
    started = time.perf_counter()
    message = config_error(path)
    assert time.perf_counter() - started < 1.0  # expanded, 9**9 items would take minutes
    assert (
        message
        == f"CONFIG_INVALID: {path}: line 1: anchors and aliases (&name, *name) are not allowed in a config; write each value out"
    )


def test_an_oversized_config_is_refused_without_being_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:  # 50 MB, mostly a hole: cheap to make, slow to parse
        handle.write(b"weights:\n  adoption: 30\n# ")
        handle.truncate(50 * 1024 * 1024)
    read_sizes: list[int] = []
    real_open = Path.open

    def measured_open(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        if self == path:
            real_read = handle.read
            handle.read = lambda size=-1: read_sizes.append(size) or real_read(size)
        return handle

    monkeypatch.setattr(Path, "open", measured_open)
    assert (
        config_error(path)
        == f"CONFIG_INVALID: {path}: larger than {MAX_CONFIG_BYTES} bytes; a config is a short YAML file"
    )
    assert read_sizes == [MAX_CONFIG_BYTES + 1]


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("weights: " + "[" * (MAX_CONFIG_DEPTH + 1) + "]" * (MAX_CONFIG_DEPTH + 1) + "\n", encoding="utf-8")
    assert config_error(path) == f"CONFIG_INVALID: {path}: line 1: nested more than {MAX_CONFIG_DEPTH} levels deep"


@pytest.mark.parametrize(("value", "shown"), [(".nan", "nan"), (".inf", "inf"), ("-.Inf", "-inf")])
def test_weights_must_be_finite(tmp_path, value, shown):
    path = with_weight(tmp_path, value)
    assert config_error(path) == f"CONFIG_INVALID: {path}: weights.adoption: must be a finite number, got {shown}"


def test_finite_numbers_are_required_of_parsed_configs_too():
    # health_config_from_dict (a config that arrives already parsed) goes through the same check.
    data = {"weights": {"adoption": float("nan")}}
    with pytest.raises(ConfigError, match=r"^given: weights.adoption: must be a finite number, got nan$"):
        health.health_config_from_dict(data, "given")


def test_a_config_read_again_is_parsed_once_yet_each_reader_gets_its_own_copy_of_the_files_text_now(tmp_path):
    from c360_dagster.domain.core import config

    path = with_weight(tmp_path, "30")
    first = config.load_yaml_config(path, health.HEALTH_SCHEMA)
    first["weights"]["adoption"] = 99  # one reader's change reaches no other
    parsed = config._validated_yaml.cache_info().misses
    assert config.load_yaml_config(path, health.HEALTH_SCHEMA)["weights"]["adoption"] == 30
    assert config._validated_yaml.cache_info().misses == parsed  # not parsed again
    with_weight(tmp_path, "31")  # the file changed: read as it is now
    assert config.load_yaml_config(path, health.HEALTH_SCHEMA)["weights"]["adoption"] == 31
    with_weight(tmp_path, ".nan")  # and an error is an error every time
    for _ in range(2):
        assert config_error(path).endswith("weights.adoption: must be a finite number, got nan")


def test_binary_file_folder_and_unreadable_config_are_config_errors(tmp_path):
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert config_error(binary) == f"CONFIG_INVALID: {binary}: not UTF-8 text (byte 0); a config is a YAML file"
    assert config_error(tmp_path) == f"CONFIG_INVALID: {tmp_path}: is a folder; give the path of a YAML config file"
    control = tmp_path / "control.yaml"
    control.write_bytes(b"weights: \x01\n")
    assert config_error(control) == f"CONFIG_INVALID: {control}: not valid YAML: control characters are not allowed"


def test_a_config_error_never_echoes_the_file(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text(
        "root:x:0:0:root:/root:/bin/bash\nsvc:x:999:999:SECRET-TOKEN-123:/srv:/bin/sh\n", encoding="utf-8"
    )
    # YAML folds the two lines into one 31 + 1 + 43 = 75 character text.
    assert (
        config_error(secret)
        == f"CONFIG_INVALID: {secret}: (top level): the file holds a text of 75 characters, not a mapping of settings"
    )
    message = config_error(with_weight(tmp_path, "SECRET" * 20))
    assert message.endswith(": weights.adoption: a text of 120 characters is not of type 'number'")
    assert config_error(with_weight(tmp_path, "short")).endswith(": weights.adoption: 'short' is not of type 'number'")
    broken = tmp_path / "broken.yaml"
    broken.write_text("weights: [SECRET-TOKEN\nnext: 1\n", encoding="utf-8")
    assert "SECRET" not in config_error(broken)


@pytest.mark.untraced
def test_hostile_configs_on_the_command_line_are_one_clean_line(in_loaded, capsys, tmp_path):
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(BILLION_LAUGHS, encoding="utf-8")
    before = in_loaded.snapshot()
    for config in (laughs, with_weight(tmp_path, ".nan"), tmp_path, Path("/etc/passwd")):
        code, out, err = in_loaded.c360(capsys, "c360:health", "--quiet", "--config", str(config))
        assert (code, out) == (2, "")
        assert err.startswith(f"c360: CONFIG_INVALID: {config}: ") and err.count("\n") == 1, err
        assert "root:" not in err
    assert in_loaded.snapshot() == before


# --- 9. Text that spoofs -------------------------------------------------------------------
RLO, PDI, ZWSP, ZWJ, BOM = "\u202e", "\u2069", "\u200b", "\u200d", "\ufeff"
SPOOF = f"Acme{ZWSP} Corp {RLO}gpj.exe{PDI}"


def test_visible_text_shows_bidi_controls_and_zero_width_characters():
    assert visible_text(SPOOF) == "Acme<U+200B> Corp <U+202E>gpj.exe<U+2069>"
    assert visible_text(f"a{ZWJ}b{BOM}c\u2066d\u200fe") == "a<U+200D>b<U+FEFF>c<U+2066>d<U+200F>e"
    # Letters, accents and other scripts are untouched; ASCII passes as is.
    assert visible_text("Zoë Müller · 日本 · עברית") == "Zoë Müller · 日本 · עברית"
    assert visible_text("plain") == "plain" and visible_text(None) == "" and visible_text(7) == "7"


def test_markdown_escaping_neutralises_spoofing_characters():
    assert md_escape(SPOOF) == "Acme&lt;U+200B&gt; Corp &lt;U+202E&gt;gpj.exe&lt;U+2069&gt;"
    assert RLO not in md_escape(f"={RLO}x") and md_escape(f"={RLO}x").startswith("'=")


def test_every_template_value_is_escaped_without_a_filter():
    # The one Jinja environment of the Markdown reports finalizes every printed value: escaped
    # once for Markdown, spoofing characters shown; only what a template marks `| safe` passes.
    template = _environment().from_string("{{ name }}|{{ n }}|{{ none }}|{{ cell }}|{{ built | safe }}")
    rendered = template.render(name=SPOOF, n=3, none=None, cell="=1+1 | *x*", built="**bold** | cell")
    assert rendered == (
        "Acme&lt;U+200B&gt; Corp &lt;U+202E&gt;gpj.exe&lt;U+2069&gt;|3||'=1+1 \\| \\*x\\*|**bold** | cell"
    )
    # SVG templates escape for XML instead, with spoofing characters shown.
    svg = _environment(markdown=False).from_string("<t>{{ name }}</t>").render(name=f"<b>&{RLO}")
    assert svg == "<t>&lt;b&gt;&amp;&lt;U+202E&gt;</t>"


def test_the_terminal_shows_spoofing_characters_too(monkeypatch, capsys):
    from c360_dagster import registry

    def spoofing(args):
        if args.quiet:
            raise ConfigError(f"x.yaml: key {SPOOF}: bad")
        return {"ok": True, "name": SPOOF}

    monkeypatch.setitem(
        registry.COMMANDS,
        "c360:spoof",
        registry.Command("c360:spoof", "test", lambda p: None, spoofing, lambda r: r["name"] + "\n"),
    )
    assert main(["c360:spoof"]) == 0
    assert capsys.readouterr().out == "Acme<U+200B> Corp <U+202E>gpj.exe<U+2069>\n"
    assert main(["c360:spoof", "--json"]) == 0
    assert '"name": "Acme<U+200B> Corp <U+202E>gpj.exe<U+2069>"' in capsys.readouterr().out
    assert main(["c360:spoof", "--quiet"]) == 2
    assert (
        capsys.readouterr().err == "c360: CONFIG_INVALID: x.yaml: key Acme<U+200B> Corp <U+202E>gpj.exe<U+2069>: bad\n"
    )


def test_a_spoofing_account_name_is_visible_in_the_playbook_markdown():
    library = load_playbook_library(CONFIGS / "playbooks.yaml")
    health = {"score": 90, "tier": "green", "status": "scored", "components": {}}
    plan = build_playbook({"account_id": "A1", "name": SPOOF}, health, [], [], library, dt.date(2024, 1, 1))
    text = render_playbook_markdown(plan)
    assert not {RLO, PDI, ZWSP} & set(text)
    assert "&lt;U+202E&gt;gpj.exe" in text


# --- 8. Operating-system faults and clean errors ------------------------------------------------


def test_a_blocked_qbr_prints_the_same_clean_error_under_quiet_and_json(loaded):
    gate = (
        "c360: DUTY_PLAYBOOK_MISSING: account STARK-008 is red and has no playbook; "
        "run `c360 c360:playbook --account STARK-008` first\n"
    )
    plain = loaded.subprocess("c360:qbr", "--account", "STARK-008")
    assert plain.returncode == 2 and plain.stderr.endswith(gate) and "Traceback" not in plain.stderr
    for flag in ("--quiet", "--json"):
        completed = loaded.subprocess("c360:qbr", "--account", "STARK-008", flag)
        assert (completed.returncode, completed.stdout, completed.stderr) == (2, "", gate), flag


# --- 9. An unknown account is refused before anything runs ------------------------------------


def _runs(dagster_home: Path) -> int:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == dagster_home
        return instance.get_runs_count()


@pytest.mark.untraced
@pytest.mark.parametrize("command", ["c360:health", "c360:playbook", "c360:qbr"])
def test_an_unknown_account_changes_nothing(in_loaded, capsys, command):
    before, runs = in_loaded.snapshot(), _runs(in_loaded.dagster_home)
    code, out, err = in_loaded.c360(capsys, command, "--account", "ACME-01")
    assert (code, out) == (2, "")
    assert err == "c360: UNKNOWN_ACCOUNT: unknown account id 'ACME-01'; did you mean ACME-001?\n"
    # No run started: the lake, the event log, the metrics and every output are as they were.
    assert _runs(in_loaded.dagster_home) == runs
    assert in_loaded.snapshot() == before


@contextlib.contextmanager
def mounted(target: Path, *options: str):
    """`mount *options target` for the block (the suite runs as root, as CI does), then unmount."""
    subprocess.run(["mount", *options, str(target)], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@contextlib.contextmanager
def read_only(folder: Path):
    with mounted(folder, "--bind", str(folder)):
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield folder


def test_os_faults_name_the_path_and_what_to_do():
    import errno

    full = os_fault(OSError(errno.ENOSPC, "No space left on device"), "artifacts")
    assert (
        full.describe()
        == "DISK_FULL: writing under artifacts: No space left on device; free some space and run the command again"
    )
    denied = os_fault(PermissionError(errno.EACCES, "Permission denied", "artifacts/lake/c360.duckdb"), "artifacts")
    assert denied.describe() == (
        "PERMISSION_DENIED: artifacts/lake/c360.duckdb: Permission denied; "
        "make it writable for this user or point --artifacts (or DAGSTER_HOME) elsewhere"
    )


def test_a_read_only_artifacts_folder_is_one_clean_line(in_loaded, capsys):
    before = in_loaded.snapshot()
    with read_only(in_loaded.artifacts):
        code, out, err = in_loaded.c360(capsys, "c360:health", "--quiet")
    assert (code, out) == (2, "")
    assert err == (
        f"c360: READ_ONLY: {in_loaded.artifacts}/.c360-shards/0.lock: Read-only file system; "
        "remount it read-write or point --artifacts (or DAGSTER_HOME) at a writable folder\n"
    )
    assert in_loaded.snapshot() == before


def test_an_unwritable_dagster_home_is_one_clean_line(in_loaded, capsys):
    before = in_loaded.snapshot()
    with read_only(in_loaded.dagster_home):
        code, out, err = in_loaded.c360(capsys, "c360:health", "--quiet")
    assert (code, out) == (2, "")
    assert err == (
        f"c360: READ_ONLY: DAGSTER_HOME {in_loaded.dagster_home} is not writable; "
        "make it writable for this user or set DAGSTER_HOME to a writable folder\n"
    )
    assert in_loaded.snapshot() == before


def test_a_full_disk_is_one_clean_line_and_the_rerun_after_freeing_space_is_identical(loaded, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    as_of = ("--as-of", "2026-09-27")  # the fixtures' own as_of, as in the module's project
    with mounted(disk, "-t", "tmpfs", "-o", "size=1m", "tmpfs"):
        out = ["--artifacts", str(disk)]
        failed = loaded.subprocess("c360:run", "--quiet", *as_of, *out)
        assert failed.returncode == 2 and failed.stdout == ""
        assert failed.stderr == (
            f"c360: DISK_FULL: writing under {disk}: No space left on device; free some space and run the command again\n"
        )
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        assert loaded.subprocess("c360:verify", *out).returncode == 0
        assert loaded.subprocess("c360:run", "--quiet", *as_of, *out).returncode == 0
        assert loaded.subprocess("c360:verify", *out).returncode == 0
        # The stages the module's clean project ran wrote the same bytes on the once-full disk.
        clean = loaded.artifacts / "customer"
        for path in sorted(clean.rglob("*")):
            if path.is_file():
                assert (disk / "customer" / path.relative_to(clean)).read_bytes() == path.read_bytes(), path


@pytest.mark.parametrize("backend", ["duckdb", "delta"])
def test_a_full_disk_under_the_lake_is_a_clean_error_and_the_snapshot_is_kept(tmp_path, backend):
    import polars as pl

    from c360_dagster.domain.core.errors import C360Error
    from c360_dagster.domain.governance.lake import DeltaLake, DuckDBLake

    def opps(count: int, name: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "opp_id": [f"O-{i}" for i in range(count)],
                "account_id": ["A1"] * count,
                "name": [name] * count,
                "type": ["renewal"] * count,
                "stage": ["open"] * count,
                "amount": [1.0] * count,
                "currency": ["USD"] * count,
                "close_date": [dt.date(2024, 1, 1)] * count,
            }
        )

    disk = tmp_path / "disk"
    disk.mkdir()
    contracts = REPO_ROOT / "contracts" / "schemas"
    with mounted(disk, "-t", "tmpfs", "-o", "size=512k", "tmpfs"):
        db = (DuckDBLake if backend == "duckdb" else DeltaLake)(str(disk), contracts)
        where = db.where if backend == "duckdb" else f"{disk}/crm_opps"
        as_of = dt.date(2024, 1, 1)
        assert db.write_snapshot("crm_opps", opps(2, "small"), as_of) == 2
        # 20,000 distinct 128-byte names no compression can shrink: megabytes.
        names = [hashlib.sha512(str(i).encode()).hexdigest() for i in range(20_000)]
        with pytest.raises(C360Error) as caught:
            db.write_snapshot("crm_opps", opps(20_000, "").with_columns(name=pl.Series(names)), as_of)
        assert caught.value.code == "LAKE_WRITE_FAILED"
        assert str(caught.value).startswith(f"cannot write the lake {where}, nothing written: ")
        assert "No space left on device" in str(caught.value)
        assert db.read_snapshot("crm_opps", as_of)["name"].to_list() == ["small", "small"]


def test_a_window_of_99999999_days_is_a_clean_error(in_loaded, capsys):
    before = in_loaded.snapshot()
    code, out, err = in_loaded.c360(capsys, "c360:renewals", "--quiet", "--window-days", "99999999")
    assert (code, out) == (2, "")
    assert err == (
        "c360: C360_ERROR: window_days must be between 0 and 36500 (days), got 99999999; give a shorter --window-days\n"
    )
    assert in_loaded.snapshot() == before


# --- 6. Inputs that exhaust memory, and text docs/inputs.md refuses ---------------------------------


def input_error(folder: Path) -> str:
    with pytest.raises(InputError) as caught:
        loader.read_customer_360(folder)
    return caught.value.describe()


def test_a_3_mb_line_is_refused_reading_at_most_1_mib_at_a_time(small_dir, monkeypatch):
    replace_in(small_dir / "accounts.csv", "Beta LLC", "B" * 3_000_000)
    reads: list[int] = []

    class MeasuredFile:
        def __init__(self, handle):
            self._handle = handle

        def read(self, size=-1):
            data = self._handle.read(size)
            reads.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    # Every open() of the loader (the line scan and the header) goes through the wrapper.
    monkeypatch.setattr(loader, "open", lambda *a, **k: MeasuredFile(open(*a, **k)), raising=False)  # noqa: SIM115 - closed by the wrapper
    assert input_error(small_dir) == (
        "INPUT_INVALID: file accounts.csv, row 2, column name: expected a value of at most 65536 bytes (64 KiB), got a longer one"
    )
    assert reads and max(reads) <= loader.MAX_LINE_BYTES


def test_a_2_gb_line_costs_no_memory(small_dir):
    import resource
    import tracemalloc

    path = small_dir / "accounts.csv"
    with path.open("ab") as handle:  # a sparse 2 GB last line: NUL bytes the disk does not store
        handle.write(b"HUGE-1,")
        handle.truncate(2 * 1024**3)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        message = input_error(small_dir)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (
        "INPUT_INVALID: file accounts.csv, row 3, column name: expected a value of at most 65536 bytes (64 KiB), got a longer one"
    )
    assert peak < 8 * loader.MAX_LINE_BYTES  # a few chunks, not 2 GB (the old reader peaked at 5 GiB RSS)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 * 1024  # KiB


def test_a_field_over_64_kib_in_a_short_line_names_row_and_column(small_dir):
    replace_in(small_dir / "accounts.csv", "Acme Corp", "A" * 70_000)
    assert input_error(small_dir).startswith(
        "INPUT_INVALID: file accounts.csv, row 1, column name: expected a value of at most 65536 bytes (64 KiB), got AAAA"
    )


def test_a_long_csv_line_names_the_first_over_long_field(small_dir):
    replace_in(
        small_dir / "accounts.csv",
        "BETA-002,Beta LLC,smb,",
        "BETA-002,Beta LLC,smb," + '"' + "x," * 40_000 + '"' + "y" * 1_100_000,
    )
    assert input_error(small_dir) == (
        "INPUT_INVALID: file accounts.csv, row 2, column industry: expected a value of at most 65536 bytes (64 KiB), got a longer one"
    )


def test_long_json_lines_name_the_key(small_dir):
    (small_dir / "nps.csv").unlink()
    record = '{"response_id":"N-1","account_id":"ACME-001","responded_on":"2024-05-20","score":"9","comment":"%s"}\n'
    (small_dir / "nps.jsonl").write_text(record % "ok" + record % ("x" * 2_000_000), encoding="utf-8")
    assert input_error(small_dir) == (
        "INPUT_INVALID: file nps.jsonl, row 2, column comment: expected a line of at most 1048576 bytes (1 MiB), got a longer one"
    )


@pytest.mark.parametrize(
    ("file", "old", "new", "column", "shown"),
    [
        ("accounts.csv", "Acme Corp", "Acme\x00Corp", "name", '"Acme\\u0000Corp"'),
        ("accounts.csv", "Acme Corp", "Acme\x1b[2JCorp", "name", '"Acme\\u001b[2JCorp"'),
        ("subs.csv", "S-1,ACME-001,Core", "S-1,ACME-001,Co\x7fre", "product", '"Co\\u007fre"'),
        ("accounts.csv", "Acme Corp", "Acme\x85Corp", "name", '"Acme\\u0085Corp"'),  # C1: NEL
    ],
)
def test_control_characters_are_refused_in_every_text_field(small_dir, file, old, new, column, shown):
    replace_in(small_dir / file, old, new)
    assert input_error(small_dir) == (
        f"INPUT_INVALID: file {file}, row 1, column {column}: expected text without control characters (NUL, ESC, ...), got {shown}"
    )


def test_the_byte_scan_finds_control_characters_wherever_they_lie(tmp_path):
    # A CSV file without control characters' bytes skips their per-value check, so the scan must
    # see every one: C0, DEL, and a C1 character (two bytes) split across the scan's chunks.
    lines = b"x,y\n" * (loader.MAX_LINE_BYTES // 4 - 1) + b"x,y"  # MAX_LINE_BYTES - 1 bytes
    cases = {
        b"plain \xc2\xa0 text\ttab\r\n": False,  # a no-break space (\xc2\xa0) is text
        b"a\x00b\n": True,
        b"a\x7fb\n": True,
        b"a\xc2\x9bb\n": True,
        lines + b"\xc2\x85\n": True,
        lines + b"\xc2\xa0\n": False,
    }
    for content, controls in cases.items():
        (tmp_path / "f.csv").write_bytes(content)
        assert loader._scan_lines_and_hash(tmp_path / "f.csv", "csv")[1] is controls, content[-8:]
    assert loader._scan_lines_and_hash(tmp_path / "f.csv", "jsonl")[1] is True  # JSON may escape one


def test_a_nul_escaped_in_a_json_string_is_refused_too(small_dir):
    (small_dir / "nps.csv").unlink()
    (small_dir / "nps.jsonl").write_text(
        '{"response_id":"N-1","account_id":"ACME-001","responded_on":"2024-05-20","score":"9","comment":"a\\u0000b"}\n',
        encoding="utf-8",
    )
    assert input_error(small_dir) == (
        'INPUT_INVALID: file nps.jsonl, row 1, column comment: expected text without control characters (NUL, ESC, ...), got "a\\u0000b"'
    )


def test_tab_and_a_line_break_inside_quotes_are_text(small_dir):
    replace_in(small_dir / "accounts.csv", "Acme Corp", '"Acme\tCorp\r\nInc"')
    view = loader.read_customer_360(small_dir)
    assert view.accounts["name"].to_list() == ["Acme\tCorp\r\nInc", "Beta LLC"]


@pytest.mark.untraced
def test_a_long_line_of_short_fields_is_refused_as_a_line(small_dir):
    replace_in(small_dir / "accounts.csv", "BETA-002,Beta LLC,smb,,EMEA,,2023-03-01", "BETA-002" + ",x" * 600_000)
    # The first MiB holds "BETA-002" (8 bytes) and (1048576 - 8) / 2 = 524284 ",x": it ends in field 524285.
    assert input_error(small_dir) == (
        "INPUT_INVALID: file accounts.csv, row 2, column field 524285: expected a line of at most 1048576 bytes (1 MiB), got a longer one"
    )


def test_release_features_may_not_exceed_features_used(small_dir):
    replace_in(small_dir / "usage.csv", "82,1300,12,4", "82,1300,12,13")
    assert input_error(small_dir) == (
        "INPUT_INVALID: file usage.csv, row 2, column release_features_used: expected at most features_used (12), got 13"
    )


def test_dir_pointing_at_a_file_says_so(tmp_path):
    file = tmp_path / "accounts.csv"
    file.write_text("account_id\n", encoding="utf-8")
    assert (
        input_error(file)
        == f"INPUT_INVALID: input folder {file} is a file; give the folder that holds accounts and subs"
    )


def test_zero_byte_files_bom_and_whitespace_follow_inputs_md(small_dir):
    (small_dir / "cases.csv").write_bytes(b"")  # optional: no rows
    (small_dir / "nps.csv").unlink()
    (small_dir / "nps.jsonl").write_bytes(b"")
    accounts = small_dir / "accounts.csv"
    accounts.write_bytes(b"\xef\xbb\xbf" + accounts.read_bytes())  # a leading BOM is allowed
    view = loader.read_customer_360(small_dir)
    assert view.cases.is_empty() and view.nps.is_empty() and view.accounts.height == 2
    replace_in(small_dir / "subs.csv", ",100,120000.50,", ", 100,120000.50,")  # not trimmed
    assert (
        input_error(small_dir) == 'INPUT_INVALID: file subs.csv, row 1, column seats: expected an integer, got " 100"'
    )
    (small_dir / "subs.csv").write_bytes(b"")  # required: an error
    assert (
        input_error(small_dir)
        == "INPUT_INVALID: file subs.csv: the file is empty: expected a header row naming the columns"
    )
