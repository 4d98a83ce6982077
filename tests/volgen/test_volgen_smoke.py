"""Real GlusterFS from our volfiles: glusterfsd bricks, a FUSE mount, a self-heal daemon.

No glusterd anywhere. The brick preparation and command lines here are the ones documented
in control/volgen/__init__.py, which the node agent uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from volgen_testlib import (
    free_ports,
    pid_alive,
    read_pidfile,
    stop_pid,
)

from control.volgen import (
    BrickSpec,
    VolumeSpec,
    brick_volfile,
    brick_volfile_name,
    client_volfile,
    shd_volfile,
)
from tests.helpers import port_open, wait_until

BRICK_START_TIMEOUT = 20.0
MOUNT_TIMEOUT = 20.0
NODE_UUID = "5f1c0c1e-0000-4000-8000-00000000a9e1"

pytestmark = [
    pytest.mark.skipif(
        any(shutil.which(b) is None for b in ("glusterfsd", "glusterfs")),
        reason="glusterfsd/glusterfs are not installed (Debian glusterfs-server)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="glusterfsd and FUSE mounts need root"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing"),
]


def prepare_brick(path: Path, volume_id: str) -> None:
    """What glusterd's `volume create` does to a brick directory."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".glusterfs").mkdir(mode=0o600, exist_ok=True)
    os.setxattr(path, "trusted.glusterfs.volume-id", uuid.UUID(volume_id).bytes)


def glusterfsd_command(vol: VolumeSpec, index: int, volfile: Path, run: Path, sockdir: Path) -> list[str]:
    """The brick command line; `-S` must stay under 108 bytes (a unix socket path)."""
    brick = vol.bricks[index]
    stem = brick_volfile_name(vol, index).removesuffix(".vol")
    return [
        "glusterfsd",
        "-f", str(volfile),
        "-p", str(run / f"{stem}.pid"),
        "-l", str(run / f"{stem}.log"),
        "-S", str(sockdir / f"b{index}.socket"),
        "--brick-name", brick.path,
        "--brick-port", str(brick.port),
        "--process-name", "brick",
        "--volfile-id", stem,
        "--xlator-option", f"*-posix.glusterd-uuid={NODE_UUID}",
    ]  # fmt: skip


def run_command(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def mounted(mountpoint: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(mountpoint) for line in f)


class Cluster:
    """Processes this test started, stopped in `close` whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.run.mkdir()
        # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
        self.sockdir = Path(tempfile.mkdtemp(prefix="vg", dir="/tmp"))
        self.pidfiles: list[Path] = []
        self.mountpoints: list[Path] = []

    def start_bricks(self, vol: VolumeSpec) -> None:
        for i, brick in enumerate(vol.bricks):
            prepare_brick(Path(brick.path), vol.id)
            volfile = self.run / brick_volfile_name(vol, i)
            volfile.write_text(brick_volfile(vol, i))
            command = glusterfsd_command(vol, i, volfile, self.run, self.sockdir)
            self.pidfiles.append(Path(command[command.index("-p") + 1]))
            # glusterfsd daemonises: it returns once the graph is up (or failed).
            result = run_command(command, BRICK_START_TIMEOUT)
            assert result.returncode == 0, f"glusterfsd for brick {i}: {result.stderr}"
        for brick in vol.bricks:
            wait_until(
                lambda: port_open(brick.address, brick.port),
                timeout=BRICK_START_TIMEOUT,
                what=f"brick {brick.path} to listen on {brick.port}",
            )

    def mount(self, vol: VolumeSpec) -> Path:
        mountpoint = self.root / "mnt"
        mountpoint.mkdir()
        volfile = self.run / f"{vol.name}.tcp-fuse.vol"
        volfile.write_text(client_volfile(vol))
        pidfile = self.run / "fuse.pid"
        self.pidfiles.append(pidfile)
        self.mountpoints.append(mountpoint)
        command = [
            "glusterfs",
            "-f", str(volfile),
            "-l", str(self.run / "fuse.log"),
            "-p", str(pidfile),
            "--process-name", "fuse",
            "--volfile-id", vol.name,
            str(mountpoint),
        ]  # fmt: skip
        result = run_command(command, MOUNT_TIMEOUT)
        assert result.returncode == 0, f"glusterfs mount: {result.stderr}"
        wait_until(lambda: mounted(mountpoint), timeout=MOUNT_TIMEOUT, what=f"{mountpoint} to be mounted")
        return mountpoint

    def start_shd(self, vol: VolumeSpec) -> Path:
        volfile = self.run / f"{vol.name}-shd.vol"
        volfile.write_text(shd_volfile(vol, vol.bricks[0].node))
        pidfile, log = self.run / "glustershd.pid", self.run / "glustershd.log"
        self.pidfiles.append(pidfile)
        command = [
            "glusterfs",
            "-f", str(volfile),
            "-p", str(pidfile),
            "-l", str(log),
            "-S", str(self.sockdir / "shd.socket"),
            "--xlator-option", f"*replicate*.node-uuid={NODE_UUID}",
            "--process-name", "glustershd",
            "--client-pid=-6",
        ]  # fmt: skip
        result = run_command(command, BRICK_START_TIMEOUT)
        assert result.returncode == 0, f"glustershd: {result.stderr}"
        return log

    def close(self) -> None:
        for mountpoint in self.mountpoints:
            if mounted(mountpoint) and subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        for pidfile in self.pidfiles:
            pid = read_pidfile(pidfile)
            if pid is not None:
                stop_pid(pid)
        shutil.rmtree(self.sockdir, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def _write_and_read(mountpoint: Path, name: str, payload: bytes) -> None:
    (mountpoint / name).write_bytes(payload)
    assert (mountpoint / name).read_bytes() == payload
    os.sync()


def test_distribute_one_brick_fuse_mount(cluster, tmp_path) -> None:
    (port,) = free_ports(1)
    vol = VolumeSpec(
        name="smoke1",
        id=str(uuid.uuid4()),
        type="distribute",
        bricks=(BrickSpec("local", "127.0.0.1", str(tmp_path / "brick"), port),),
        auth_username=str(uuid.uuid4()),
        auth_password=str(uuid.uuid4()),
    )
    cluster.start_bricks(vol)
    mountpoint = cluster.mount(vol)
    _write_and_read(mountpoint, "hello.txt", b"hello from volgen\n")
    assert (tmp_path / "brick" / "hello.txt").read_bytes() == b"hello from volgen\n"
    # The brick tracks the file by gfid under .glusterfs, as with glusterd.
    gfid = os.getxattr(tmp_path / "brick" / "hello.txt", "trusted.gfid")
    assert len(gfid) == 16


def test_replica3_three_bricks_fuse_mount_and_shd(cluster, tmp_path) -> None:
    ports = free_ports(3)
    vol = VolumeSpec(
        name="smoke3",
        id=str(uuid.uuid4()),
        type="replicate",
        replica=3,
        bricks=tuple(BrickSpec("local", "127.0.0.1", str(tmp_path / f"brick{i}"), ports[i]) for i in range(3)),
        auth_username=str(uuid.uuid4()),
        auth_password=str(uuid.uuid4()),
    )
    cluster.start_bricks(vol)
    mountpoint = cluster.mount(vol)
    payload = os.urandom(256 * 1024)
    _write_and_read(mountpoint, "data.bin", payload)

    def on_every_brick() -> bool:
        return all(
            (tmp_path / f"brick{i}" / "data.bin").exists()
            and (tmp_path / f"brick{i}" / "data.bin").read_bytes() == payload
            for i in range(3)
        )

    wait_until(on_every_brick, timeout=10, what="data.bin on all three bricks")

    # The self-heal daemon starts from our shd volfile and connects to all three bricks
    # (with the volume's credentials, so the bricks see it as a trusted client).
    log = cluster.start_shd(vol)
    wait_until(
        lambda: log.exists() and log.read_text().count("Connected, attached to remote volume") >= 3,
        timeout=BRICK_START_TIMEOUT,
        what="glustershd to connect to the three bricks",
        interval=0.1,
    )
    pid = read_pidfile(cluster.run / "glustershd.pid")
    assert pid is not None and pid_alive(pid)
