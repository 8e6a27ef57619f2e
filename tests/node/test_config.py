"""Node configuration: every mistake is named, nothing starts on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.lab.workloads import write_pool
from hacluster.node.config import ConfigError, load
from hacluster.node.master import Guests

from ..conftest import NODE_TOML

GOOD = NODE_TOML


def write(folder: Path, text: str) -> Path:
    path = folder / "node.toml"
    path.write_text(text)
    return path


def test_good_config_loads(folder: Path) -> None:
    config = load(write(folder, GOOD))
    assert config.index == 1 and str(config.address) == "127.0.0.2:7000"
    assert [str(a) for a in config.hosts[2]] == ["[::1]:7001"]
    assert config.key == bytes.fromhex("ab" * 32)
    assert config.timing.T == 5 and config.sr == folder / "sr.img"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("index = 1", "index = 9"), "index 9 outside"),
        (("index = 1", 'index = "one"'), "must be a whole number"),
        (('"[::1]:7001"', '"[::1]:99999"'), "expected host:port"),
        (('"[::1]:7001"', '"example.com:80"'), "not an IPv4 or IPv6"),
        (('"[::1]:7001"', '"127.0.0.1:7000"'), "twice"),
        (("timeout = 5", "timeout = 0.2"), "timeout-floor"),
        (('sr = "sr.img"', ""), "missing field 'sr'"),
        (("timeout = 5", "colour = 5"), "unknown field"),
        (("timeout = 5", 'mode = "quorum"'), "mode must be"),
        (("index = 1", "index = = 1"), "not valid TOML"),
        (("timeout = 5", "timeout = 5\nunsafe_watchdog_delay = -1"), "unsafe_watchdog_delay"),
        (("timeout = 5", 'timeout = 5\nunsafe_watchdog_delay = "0"'), "unsafe_watchdog_delay"),
        (("timeout = 5", "timeout = 5\nunsafe_watchdog_delay = true"), "unsafe_watchdog_delay"),
        (("timeout = 5", "timeout = 5\nunsafe_watchdog_delay = nan"), "unsafe_watchdog_delay"),
    ],
)
def test_bad_configs_are_named(folder: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(folder, GOOD.replace(*change)))


def test_unsafe_watchdog_delay_leaves_the_pool_timing_alone(folder: Path) -> None:
    safe = load(write(folder, GOOD))
    assert safe.unsafe_watchdog_delay == 0.0
    unsafe = load(write(folder, GOOD + "unsafe_watchdog_delay = 30\n"))
    assert unsafe.unsafe_watchdog_delay == 30.0
    assert unsafe.timing == safe.timing


def test_two_heartbeat_networks(folder: Path) -> None:
    text = GOOD.replace(
        'hosts = ["127.0.0.1:7000", "127.0.0.2:7000", "[::1]:7001"]',
        'hosts = [["127.0.0.1:7000", "[::1]:8000"], ["127.0.0.2:7000", "[::1]:8001"]]')
    config = load(write(folder, text))
    assert [str(a) for a in config.addresses] == ["127.0.0.2:7000", "[::1]:8001"]
    uneven = text.replace(', "[::1]:8001"]', "]")
    with pytest.raises(ConfigError, match="each heartbeat network"):
        load(write(folder, uneven))
    with pytest.raises(ConfigError, match=r"hosts\[1\] \(this host\) lists no address"):
        load(write(folder, text.replace('["127.0.0.2:7000", "[::1]:8001"]', "[]")))
    with pytest.raises(ConfigError, match="list of them"):
        load(write(folder, text.replace('["127.0.0.2:7000", "[::1]:8001"]', "7")))


def test_bad_key_file(folder: Path) -> None:
    (folder / "pool.key").write_text("too short")
    with pytest.raises(ConfigError, match="32 bytes"):
        load(write(folder, GOOD))
    (folder / "pool.key").unlink()
    with pytest.raises(ConfigError, match="pool key file"):
        load(write(folder, GOOD))


def test_missing_file(folder: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load(folder / "absent.toml")


def test_guest_lock_defaults_on_and_is_checked(folder: Path) -> None:
    write_pool(folder, 3, None)
    pooled = GOOD + 'pool = "pool.toml"\nagent_port = 7100\nvm_dir = "vm-sr"\n'
    locked = load(write(folder, pooled))
    assert locked.guest_lock is True
    assert "--no-refuse" not in Guests(folder, locked.guest_lock).command("vm-a", "host1")
    unlocked = load(write(folder, pooled + "guest_lock = false\n"))
    assert unlocked.guest_lock is False
    assert Guests(folder, unlocked.guest_lock).command("vm-a", "host1")[-1] == "--no-refuse"
    with pytest.raises(ConfigError, match="'guest_lock' must be a bool"):
        load(write(folder, pooled + 'guest_lock = "no"\n'))


def test_other_heartbeat_srs_are_mapped_by_uuid(folder: Path) -> None:
    plain = load(write(folder, GOOD))
    assert plain.sr_uuids == ("heartbeat-sr",) and plain.sr_path("") == folder / "sr.img"
    config = load(write(folder, GOOD + 'heartbeat_srs = { sr-b = "b.img", "sr c" = '
                                       '"/dev/sdc" }\n'))
    assert config.sr_uuids == ("heartbeat-sr", "sr-b", "sr c")
    assert config.sr_path("heartbeat-sr") == folder / "sr.img"
    assert config.sr_path("sr-b") == folder / "b.img"
    assert config.sr_path("sr c") == Path("/dev/sdc") and config.sr_path("sr-d") is None


@pytest.mark.parametrize(("table", "message"), [
    ('heartbeat_srs = "b.img"', "'heartbeat_srs' must be a table"),
    ('heartbeat_srs = { heartbeat-sr = "b.img" }', "is the SR 'sr' names"),
    ('heartbeat_srs = { sr-b = "" }', "must be a file path"),
    ('heartbeat_srs = { sr-b = 3 }', "must be a str"),
    ('heartbeat_srs = { sr-b = "sr.img" }', "two SRs at one path"),
    ('heartbeat_srs = { sr-b = "b.img", sr-c = "b.img" }', "two SRs at one path"),
    ('heartbeat_srs = { "" = "b.img" }', "1 to 128 printable"),
    (f'heartbeat_srs = {{ {"x" * 129} = "b.img" }}', "1 to 128 printable"),
    ('heartbeat_srs = { "a\\u0007" = "b.img" }', "1 to 128 printable"),
    ("heartbeat_srs = { " + ", ".join(f's{i} = "{i}.img"' for i in range(17)) + " }",
     "at most 16"),
])
def test_bad_heartbeat_srs_are_named(folder: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(folder, GOOD + table + "\n"))


def test_free_indices_slots_and_a_joined_hosts_uuid(folder: Path) -> None:
    text = GOOD.replace('"[::1]:7001"]', '[]]') + 'slots = 8\nuuid = "host-new"\nname = "new"\n'
    config = load(write(folder, text))
    assert config.capacity == 8 and config.my_uuid == "host-new"
    roster = config.seed_roster()
    assert roster.members == {0, 1} and roster.uuids[1] == "host-new" and roster.slots == 8
    with pytest.raises(ConfigError, match="'slots'"):
        load(write(folder, GOOD + "slots = 2\n"))  # fewer than the hosts listed
    with pytest.raises(ConfigError, match="'slots'"):
        load(write(folder, GOOD + "slots = 100000\n"))


def test_watchdog_device_is_optional_and_checked(folder: Path) -> None:
    assert load(write(folder, GOOD)).watchdog_device is None
    device = folder / "watchdog"
    device.write_bytes(b"")
    config = load(write(folder, GOOD + f'watchdog_device = "{device}"\n'))
    assert config.watchdog_device == device
    assert load(write(folder, GOOD + 'watchdog_device = "watchdog"\n')).watchdog_device == device
    for value, message in ((f'"{folder}/none"', "does not exist.*modprobe softdog"),
                           (f'"{folder}"', "is a directory"),
                           ('""', "must be a file path"),
                           ("1", "watchdog_device")):
        with pytest.raises(ConfigError, match=message):
            load(write(folder, GOOD + f"watchdog_device = {value}\n"))


def test_the_http_face_is_off_unless_asked_and_plain_only_on_loopback(folder: Path) -> None:
    assert load(write(folder, GOOD)).http is None
    face = load(write(folder, GOOD + "http_port = 9480\n")).http
    assert face is not None and (face.address, face.port, face.loopback) == \
        ("127.0.0.1", 9480, True)
    local = load(write(folder, GOOD + 'http_port = 9480\nhttp_address = "::1"\n')).http
    assert local is not None and local.loopback
    for extra, message in (
            ('http_port = 9480\nhttp_address = "10.0.0.5"\n', "not a loopback address"),
            ('http_port = 9480\nhttp_address = "example.com"\n', "must be an IP address"),
            ('http_address = "127.0.0.1"\n', "http_address needs http_port"),
            ("http_port = 0\n", "http_port"),
            ('http_port = "9480"\n', "http_port")):
        with pytest.raises(ConfigError, match=message):
            load(write(folder, GOOD + extra))
