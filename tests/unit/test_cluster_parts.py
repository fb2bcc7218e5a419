"""Cluster mode's parts that need no database: settings, config, shares, the CLI's
refusal of cluster mode on SQLite, the fence's hand-over of feed positions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from healthmon import ConfigError, HealthCheckResult, HealthStatus
from healthmon.cluster import ClusterSettings
from healthmon.cluster.fence import ClusterFence
from healthmon.cluster.leases import fair_share
from healthmon.config import load_config, monitor_keys

SERVICE = '[[services]]\nname = "api"\nservice_type = "http"\nmodule_path = "m"\n'


def test_settings_are_validated() -> None:
    assert ClusterSettings().lease == 5.0
    assert ClusterSettings(lease=1.5).renew_every == pytest.approx(0.5)
    assert ClusterSettings(lease=2).row_lease == 1.5
    assert ClusterSettings(lease=8).row_lease == 7.0
    assert ClusterSettings(node="a").node_name == "a"
    assert ":" in ClusterSettings().node_name  # host:pid
    with pytest.raises(ValueError, match=r"lease must be between 1 and 300 seconds, got 0\.5"):
        ClusterSettings(lease=0.5)
    with pytest.raises(ValueError, match="node must be a non-empty name"):
        ClusterSettings(node=" ")
    with pytest.raises(TypeError, match="lease must be a number of seconds"):
        ClusterSettings(lease="5")  # type: ignore[arg-type]  # the mistake under test


def test_fair_shares_add_up_and_differ_by_at_most_one() -> None:
    for total in range(0, 70):
        for nodes in range(1, 5):
            alive = tuple(range(10, 10 + nodes))
            shares = [fair_share(total, alive, node) for node in alive]
            assert sum(shares) == total
            assert max(shares) - min(shares) <= 1
    assert fair_share(60, (1, 2), 3) == 20  # not yet seen alive: counted in


def test_the_cluster_table_of_a_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[cluster]\nnode = "a"\nlease = 2\n' + SERVICE)
    assert load_config(path).cluster == ClusterSettings(node="a", lease=2.0)
    path.write_text(SERVICE)
    assert load_config(path).cluster is None
    assert "cluster" not in monitor_keys()
    path.write_text("[cluster]\nlease = 0.2\n" + SERVICE)
    with pytest.raises(ConfigError, match=r"\[cluster\], field 'lease': lease must be between"):
        load_config(path)
    path.write_text("[cluster]\nleese = 2\n" + SERVICE)
    with pytest.raises(ConfigError, match="did you mean 'lease'"):
        load_config(path)


def test_run_refuses_cluster_mode_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(SERVICE)
    done = subprocess.run(
        [sys.executable, "-m", "healthmon.cli", "run", "--config", str(path),
         "--database", str(tmp_path / "h.db"), "--node", "a"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "cluster mode (--node or [cluster]) needs a PostgreSQL database" in done.stderr


class _Rows:
    """What the fence's statements get back from a fake connection."""

    def __init__(self, last_seq: int) -> None:
        self.last_seq = last_seq

    def scalar_one(self) -> int:
        return self.last_seq

    def __iter__(self) -> Any:
        return iter([])


class _Connection:
    def __init__(self) -> None:
        self.last_seq = 0

    async def execute(self, statement: object, params: dict[str, Any] | None = None) -> _Rows:
        if params is not None and "count" in params:
            self.last_seq += params["count"]
        return _Rows(self.last_seq)


@pytest.mark.asyncio
async def test_feed_positions_reach_the_monitor_only_from_committed_flushes() -> None:
    """The writer (on the store's thread) numbers a flush's transitions; the monitor
    takes the positions after the commit, perhaps after the next flush began: a
    rolled-back flush's positions never reach it, a committed one's stay until taken."""
    fence = ClusterFence(node_id=1, lease=5.0)
    conn: Any = _Connection()
    results = [HealthCheckResult(f"s{i}", HealthStatus.HEALTHY, 1.0, 1.0) for i in range(3)]

    async def flush(count: int) -> None:
        await fence.admit(conn, set())
        await fence.number(conn, [(r, None) for r in results[:count]])

    await flush(2)  # rolled back: the next flush begins without a commit
    await flush(1)
    fence.committed()
    await flush(3)  # committed, and the next flush begins before the monitor looks
    fence.committed()
    await flush(1)
    assert fence.numbered == {3: results[0], 4: results[0], 5: results[1], 6: results[2]}
