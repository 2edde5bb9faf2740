"""``featureedit drill``: every drill on a real private stack (slow), and its helpers (fast).

The slow test starts what the command starts (its own redis-server, the API over HTTP, real
worker processes, a store on its own tmpfs) on the session's small demo world and asserts that
every drill keeps its promise.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ops.drills import DRILLS, DrillContext, run_drills
from ops.drills.base import DrillResult, Observations, drill
from ops.drills.hostile import HOSTILE_SECRET, hostile_cases
from ops.stack import leftover_temp_files, link_worlds, partial_checkpoints
from workers.jobs import out_of_space

EXPECTED = [
    "worker-kill",
    "redis-restart",
    "disk-full",
    "corrupt-checkpoint",
    "hostile-requests",
    "hostile-limits",
    "schemathesis",
]


def _run(fe_home: Path, names: list[str] | None = None) -> list[DrillResult]:
    ctx = DrillContext(source_home=fe_home, fuzz_examples=5)
    try:
        ctx.start()
        return run_drills(ctx, names)
    finally:
        ctx.close()


def _failed(results: list[DrillResult]) -> dict[str, str]:
    failed = {r.name: r.observed for r in results if not r.passed}
    if os.geteuid() != 0:  # the disk-full drill mounts a tmpfs: it needs root
        failed.pop("disk-full", None)
    return failed


@pytest.mark.slow
def test_every_drill_keeps_its_promise(fe_home: Path, small_world: object) -> None:
    results = _run(fe_home)
    assert [r.name for r in results] == EXPECTED
    for r in results:
        assert r.promise and r.observed and r.seconds > 0
    assert not _failed(results), _failed(results)


def test_the_drills_are_registered_in_run_order_with_promises() -> None:
    assert list(DRILLS) == EXPECTED
    assert all(len(d.promise) > 40 and "  " not in d.promise for d in DRILLS.values())


def test_a_drill_name_can_be_registered_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        drill("worker-kill", "again")(lambda ctx, obs: None)


def test_observations_fail_on_a_failed_check_and_keep_order() -> None:
    obs = Observations()
    obs.note("a")
    assert obs.check(True, "b")
    assert obs.passed
    assert not obs.check(False, "c")
    assert not obs.passed and obs.text() == "a; b; FAILED: c"


def test_result_json_has_the_documented_keys() -> None:
    doc = DrillResult("x", "p", "o", True, 1.234).to_dict()
    assert doc == {"name": "x", "promise": "p", "observed": "o", "pass": True, "seconds": 1.2}


def test_a_drill_that_raises_fails_with_a_redacted_message(tmp_path: Path) -> None:
    def boom(ctx: DrillContext, obs: Observations) -> None:
        raise RuntimeError("leaked 555-0000-1111")

    DRILLS["test-boom"] = DRILLS["worker-kill"].__class__("test-boom", "p", boom)
    try:
        ctx = DrillContext(source_home=tmp_path)
        ctx.secrets.append("555-0000-1111")
        [result] = run_drills(ctx, ["test-boom"])
    finally:
        del DRILLS["test-boom"]
    assert not result.passed
    assert "RuntimeError" in result.observed and "555-0000-1111" not in result.observed


def test_out_of_space_recognises_enospc_and_wrapped_messages() -> None:
    assert out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    wrapped = RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    assert out_of_space(wrapped)
    try:
        try:
            raise OSError(errno.ENOSPC, "full")
        except OSError as exc:
            raise ValueError("save failed") from exc
    except ValueError as outer:
        assert out_of_space(outer)
    assert not out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not out_of_space(ValueError("bad value"))


def test_store_scans_find_partial_checkpoints_and_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    (root / "good").mkdir(parents=True)
    (root / "good" / "manifest.json").write_text("{}")
    (root / "half").mkdir()
    (root / ".publish-abc").mkdir()
    (tmp_path / "erasures").mkdir()
    (tmp_path / "erasures" / ".er_1.json.12.ab.tmp").write_text("x")
    assert partial_checkpoints(tmp_path) == ["half"]
    assert leftover_temp_files(tmp_path) == [
        "checkpoints/.publish-abc",
        "erasures/.er_1.json.12.ab.tmp",
    ]


def test_link_worlds_shares_built_worlds_only(tmp_path: Path) -> None:
    src = tmp_path / "src" / "worlds"
    (src / "small-1").mkdir(parents=True)
    (src / "small-1" / "MANIFEST.json").write_text("{}")
    (src / "small-2-building").mkdir()
    home = tmp_path / "home"
    assert link_worlds(home, tmp_path / "src") == ["small-1"]
    assert (home / "worlds" / "small-1").is_symlink()
    assert link_worlds(home, tmp_path / "src") == []  # already there


def test_hostile_cases_are_distinct_and_carry_the_secret_somewhere() -> None:
    cases = hostile_cases("fe_" + "k" * 40)
    labels = [c[0] for c in cases]
    assert len(labels) == len(set(labels)) and len(cases) >= 30
    assert any(HOSTILE_SECRET in path for _, _, path, _ in cases)


def test_the_command_refuses_an_unknown_drill_naming_the_valid_ones(capsys) -> None:
    from editing.cli import main

    assert main(["drill", "--only", "worker-kill", "no-such-drill"]) == 2
    err = capsys.readouterr().err
    assert "no-such-drill" in err and "worker-kill" in err and "schemathesis" in err


def test_the_text_table_shows_pass_promise_and_observed() -> None:
    from ops.drills.cli import _table

    text = _table([DrillResult("disk-full", "A promise.", "FAILED: x", False, 3.0)])
    assert "disk-full" in text and "NO" in text and "promise: A promise." in text


def test_drill_groups_name_registered_drills() -> None:
    from ops.drills import DRILLS, GROUPS

    assert set(GROUPS["hostile"]) == {n for n in DRILLS if n.startswith("hostile")} | {
        "schemathesis"
    }
    assert all(name in DRILLS for names in GROUPS.values() for name in names)
