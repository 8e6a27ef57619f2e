"""Hostile configuration, key files and derived keys (issue #12 finding 8, Build 5 and 6).

Real files throughout: every bad ``node.toml`` value is a clear ConfigError and
the daemon does not start; the host limit is derived from the worst-case
report and a pool at the limit fits a slot; key and secret files are never
readable by others, at any moment of their writing; each purpose has its own
key, so a heartbeat does not open as a slot.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hacluster.core.events import SlotCorrupt
from hacluster.core.pool import PoolError
from hacluster.deploy.init import init_pool
from hacluster.lab.compose import CA_KEY_DIR
from hacluster.lab.docker import DockerLab
from hacluster.lab.local import LocalLab
from hacluster.mgmt.tls import issue_certificate
from hacluster.model.poolfile import load as load_pool
from hacluster.node.config import ConfigError, load
from hacluster.storage.sr import (
    BLOCK,
    SLOT_MAGIC,
    GlobalBlock,
    PoolState,
    SRError,
    decode_slot,
    encode_slot,
    format_sr,
    max_pool_hosts,
)
from hacluster.wire.codec import Sealer, worst_case_report, worst_case_sealed_size
from hacluster.wire.keys import Purpose, derive_key

from .conftest import NODE_KEY, NODE_TOML
from .deploy.conftest import request as pool_request

KEY = NODE_KEY
GOOD = NODE_TOML


def config_with(folder: Path, old: str, new: str) -> Path:
    text = GOOD.replace(old, new)
    assert text != GOOD or old == new
    path = folder / "node.toml"
    path.write_text(text)
    return path


HOSTS = 'hosts = ["127.0.0.1:7000", "127.0.0.2:7000", "[::1]:7001"]'


def hosts_line(count: int) -> str:
    return "hosts = [" + ", ".join(f'"10.0.{i // 250}.{i % 250 + 1}:7000"'
                                   for i in range(count)) + "]"


BAD_VALUES = [
    ("timeout = 5", "timeout = true", "'timeout'.*must be a number, got True"),
    ("timeout = 5", "timeout = 1e300", "'timeout'.*finite"),
    ("timeout = 5", "timeout = 86400", "'timeout'.*0..3600"),
    ("timeout = 5", 'timeout = "10"', "'timeout'.*must be a number"),
    ('"[::1]:7001"', '"[::1]:\u00b2"', "expected host:port"),
    ('"[::1]:7001"', '"[::1]:' + "7" * 5000 + '"', "expected host:port"),
    ('"[::1]:7001"', '"::1:7001"', "IPv6 address in brackets"),
    ('"127.0.0.2:7000"', '"[0:0:0:0:0:0:0:1]:7001"', "twice"),
    ('"127.0.0.2:7000"', '"[::0001]:7001"', "twice"),
    ("timeout = 5", 'mode = ["statefile"]', "'mode' must be a string"),
    ("timeout = 5", "log = 5", "'log' must be a string"),
    ('sr = "sr.img"', 'sr = ""', "'sr' must be a file path"),
    ('key_file = "pool.key"', 'key_file = "pool\\u0000.key"', "'key_file' must be a file path"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_VALUES,
                         ids=[new[:40] for _, new, _ in BAD_VALUES])
def test_every_bad_value_is_a_clear_config_error(folder: Path, old: str, new: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(config_with(folder, old, new))
    assert len(str(caught.value)) < 400  # a 5000-digit port is not echoed whole


def test_pool_file_numbers_are_type_checked(tmp_path: Path) -> None:
    host = "[[host]]\nuuid = 'h'\nname = 'h'\nmemory = 1024\n"
    vm = ("[[vm]]\nuuid = 'v'\nname = 'v'\nmemory = 64\npriority = 'restart'\n"
          "start_delay = {}\n")
    for value, message in [("nan", "finite"), ("inf", "finite"), ("true", "must be a number")]:
        path = tmp_path / "pool.toml"
        path.write_text(host + vm.format(value))
        with pytest.raises(PoolError, match=message):
            load_pool(path)
    path.write_text(host.replace("1024", str(2**60)))
    with pytest.raises(PoolError, match="finite number of at most"):
        load_pool(path)


def test_the_daemon_refuses_bad_values_without_a_traceback(folder: Path) -> None:
    """Nothing starts: the node exits with the reason, no traceback, no status socket."""
    path = folder / "node.toml"
    for old, new, message in [("timeout = 5", "timeout = true", "must be a number"),
                              ('"[::1]:7001"', '"[::1]:\u00b2"', "expected host:port"),
                              ('key_file = "pool.key"', 'key_file = "a\\u0000b"', "file path"),
                              (HOSTS, hosts_line(1100), f"at most {max_pool_hosts()}")]:
        config_with(folder, old, new)
        done = subprocess.run([sys.executable, "-m", "hacluster", "node", "--config",
                               str(path)], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert not (folder / "s.sock").exists()


# ---------------------------------------------------------------- the host limit


def test_the_host_limit_is_what_fits_a_slot() -> None:
    limit = max_pool_hosts()
    sealer = Sealer.for_slots(KEY, limit)
    block = encode_slot(sealer, worst_case_report(limit))  # the largest report at the limit
    assert len(block) == BLOCK and block.startswith(SLOT_MAGIC)
    assert decode_slot(sealer, block, limit - 1) == worst_case_report(limit)
    with pytest.raises(SRError, match="does not fit"):
        encode_slot(Sealer.for_slots(KEY, limit + 1), worst_case_report(limit + 1))
    assert worst_case_sealed_size(limit + 1) + 10 > BLOCK >= worst_case_sealed_size(limit) + 10


def test_a_pool_over_the_limit_is_refused_with_the_number(folder: Path, tmp_path: Path) -> None:
    limit = max_pool_hosts()
    at_limit = config_with(folder, HOSTS, hosts_line(limit))
    assert len(load(at_limit).hosts) == limit
    for count in (limit + 1, 700, 1025, 5000):
        path = config_with(folder, HOSTS, hosts_line(count))
        with pytest.raises(ConfigError, match=f"lists {count} hosts; a pool has at most "
                                              f"{limit} "):
            load(path)
    with pytest.raises(SRError, match=f"1 to {limit} hosts"):
        format_sr(tmp_path / "sr.img", limit + 1, KEY, 1, metadata=0)


# ---------------------------------------------------------------- key files


class ModeWatch:
    """Notes, at every audited file operation, each watched file's mode and any that is
    readable by others: an audit event fires before each open, chmod, rename and unlink,
    so a file written and then chmod'ed is seen between the two."""

    def __init__(self) -> None:
        self.roots: list[Path] = []
        self.seen: dict[str, int] = {}
        self.wide: list[str] = []
        self.busy = False

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        if not self.roots or self.busy or event not in {"open", "os.chmod", "os.rename",
                                                         "os.remove", "os.link"}:
            return
        self.busy = True
        try:
            for root in self.roots:
                for path in (root.rglob("*") if root.exists() else ()):
                    name = path.name
                    if name.endswith((".key", ".secret")) or ".key." in name \
                            or ".secret." in name:
                        try:
                            mode = stat.S_IMODE(path.lstat().st_mode)
                        except FileNotFoundError:
                            continue
                        self.seen[str(path)] = mode
                        if mode & 0o077:
                            self.wide.append(f"{path} was mode {mode:o} (at {event})")
        finally:
            self.busy = False


WATCH = ModeWatch()
sys.addaudithook(WATCH.hook)  # audit hooks cannot be removed: it is idle unless watching


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    old_umask = os.umask(0)  # the most permissive: only the writer's own mode protects
    WATCH.seen.clear()
    WATCH.wide.clear()
    try:
        yield WATCH.roots.append
    finally:
        WATCH.roots.clear()
        os.umask(old_umask)


def test_lab_keys_and_secrets_are_never_readable_by_others(
        tmp_path: Path, watch: Callable[[Path], None]) -> None:
    lab = LocalLab(tmp_path / "lab")
    watch(lab.root)
    watch(lab.ca_key_dir)
    lab.provision(3, 3.0, ha_off=True)
    lab.configure(3, 3.0, 17000)
    issue_certificate(lab.ca, tmp_path / "lab", "admin", client=True)
    assert WATCH.wide == []
    secret_files = {p for p in WATCH.seen if not p.endswith(".tmp")}
    names = {Path(p).name for p in secret_files}
    assert {"pool.key", "pool.secret", "ca.key", "host.key", "admin.key"} <= names
    for path in secret_files:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600, path
    assert stat.S_IMODE(lab.ca_key_dir.stat().st_mode) == 0o700


def test_pool_init_keys_and_secrets_are_never_readable_by_others(
        tmp_path: Path, watch: Callable[[Path], None]) -> None:
    watch(tmp_path)
    made = init_pool(pool_request(tmp_path))
    assert WATCH.wide == []
    names = {Path(p).name for p in WATCH.seen if not p.endswith(".tmp")}
    assert {"pool.key", "pool.secret", "ca.key", "host.key"} <= names
    assert not [p for p in made.out.rglob("ca.key") if p.parent.name != "ca"]


def test_the_ca_key_is_never_in_what_containers_mount(tmp_path: Path) -> None:
    lab = DockerLab(tmp_path / "lab")  # provisioning needs no docker engine
    lab.provision(3, 3.0, ha_off=True)
    lab.configure(3, 3.0, 17000)  # host certificates still issued by the CA
    mounted = [p.name for p in lab.root.rglob("*")]
    assert "ca.key" not in mounted and "ca.pem" in mounted
    assert (lab.ca_key_dir / "ca.key").exists() and lab.root not in lab.ca_key_dir.parents
    assert str(DockerLab(Path("/pool")).ca_key_dir) == CA_KEY_DIR  # compose: its own volume


# ---------------------------------------------------------------- derived keys


def test_every_purpose_has_its_own_key() -> None:
    keys = {purpose: derive_key(KEY, purpose) for purpose in Purpose}
    assert len(set(keys.values())) == len(Purpose) and KEY not in keys.values()
    assert all(len(key) == 32 for key in keys.values())


def test_a_heartbeat_does_not_open_as_a_slot() -> None:
    report = worst_case_report(3)
    packet = Sealer.for_heartbeats(KEY, 3).seal(report)
    body = SLOT_MAGIC + len(packet).to_bytes(2, "big") + packet
    planted = (body + zlib.crc32(body).to_bytes(4, "big")).ljust(BLOCK, b"\0")
    seen = decode_slot(Sealer.for_slots(KEY, 3), planted, 2)  # CRC right, seal of a packet
    assert isinstance(seen, SlotCorrupt) and "authentication failed" in seen.reason
    slot = encode_slot(Sealer.for_slots(KEY, 3), report)
    with pytest.raises(ValueError, match="authentication failed"):
        Sealer.for_heartbeats(KEY, 3).open(slot[6 : 6 + int.from_bytes(slot[4:6], "big")])
    with pytest.raises(ValueError, match=r"Purpose\.SLOT"):
        encode_slot(Sealer.for_heartbeats(KEY, 3), report)


def test_the_sr_header_is_not_maced_with_the_raw_pool_key() -> None:
    block = GlobalBlock(7, PoolState.ACTIVE, 1, 3).encode(KEY)
    length = int.from_bytes(block[5:7], "big")
    head, mac = block[: 7 + length], block[7 + length : 7 + length + 32]
    assert mac != hmac.new(KEY, head, hashlib.sha256).digest()
    assert mac == hmac.new(derive_key(KEY, Purpose.SR_HEADER), head, hashlib.sha256).digest()
    assert GlobalBlock.decode(block, KEY).generation == 7
