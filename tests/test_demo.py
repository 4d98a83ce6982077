"""The README's one-minute quickstart, as a newcomer runs it."""

from __future__ import annotations

import subprocess

from tests.helpers import BIN, cleanup_gluster, gluster_pids_under, mounts_under


def test_demo_runs_end_to_end_and_cleans_up(tmp_path):
    try:
        out = subprocess.run(
            [BIN, "demo", "--dir", str(tmp_path), "--exit"], capture_output=True, text=True, timeout=240
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Volume demo started." in out.stdout
        assert out.stdout.count("'hello from glusterctl'") == 3
        assert "3/3 bricks online" in out.stdout
        assert not mounts_under(tmp_path)
        assert not gluster_pids_under(tmp_path)
    finally:
        cleanup_gluster(tmp_path)
