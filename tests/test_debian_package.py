"""The Debian package, as a Debian user meets it: `make deb`'s build, lintian, then install -> configure -> a
queued invoice -> upgrade -> remove -> purge inside an isolated Debian 12 root (mmdebstrap, minbase).

The root shares the network with the test, so the daemon installed from the package is started in it and
called over HTTP like a POS; the sandbox cloud runs on the host in outage mode so the invoice stays queued.
There is no systemd in the root: the maintainer scripts are first run as they are in any chroot (no
/run/systemd/system: nothing may call systemctl), then, for the upgrade and the removal, with
/run/systemd/system present and a stand-in `systemctl` that records its calls and reports the service
running, to see that an upgrade restarts it exactly once and a removal stops it.

The second version is the first one repacked with another version number and another default configuration
(rebuilding would only spend two more minutes on the same maintainer scripts).

Cost: ~2-4 min on a 2-core machine (package build ~1.5 min, root ~0.5 min, lintian ~1 min in parallel).
Needs root, mmdebstrap, debhelper, dh-virtualenv and lintian (`make test` installs them when run as root);
skipped otherwise, or with POSBRIDGE_SKIP_PACKAGE_TESTS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO
from tests.support.sandbox import free_port, running_sandbox

TOOLS = ("mmdebstrap", "dpkg-buildpackage", "dh_virtualenv", "lintian", "unshare", "chroot")
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
ROOT_PACKAGES = "python3,libzbar0,adduser"  # the package's Depends, so apt installs it without a network
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STUB_SYSTEMCTL = """#!/bin/sh
# test stand-in: records every call; the service is "active" while /run/posbridge-test-active exists
echo "$*" >> /var/log/systemctl-calls
case " $* " in
  *" is-active "*) if [ -e /run/posbridge-test-active ]; then echo active; exit 0; fi; echo inactive; exit 3 ;;
  *" is-enabled "*) echo disabled; exit 1 ;;
esac
exit 0
"""
INVOICE = b'{"Serie":"PK","Number":7,"Loyalty":{"MemberId":"OW7K2M9Q"},"Totals":{"GrossAmount":9.5}}'


def _missing() -> str | None:
    if os.environ.get("POSBRIDGE_SKIP_PACKAGE_TESTS") == "1":
        return "POSBRIDGE_SKIP_PACKAGE_TESTS=1"
    if os.geteuid() != 0:
        return "building and installing a Debian package in a chroot needs root"
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"missing {', '.join(absent)} (`make test` installs them when run as root on Debian)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(_missing() is not None, reason=f"package tests skipped: {_missing()}")]


@dataclass
class Debs:
    v1: Path
    v2: Path
    version: str
    lintian: subprocess.Popen[str]
    lintian_log: Path


@dataclass
class Snapshot:
    """What one step printed and left behind."""

    output: str
    systemctl: list[str] = field(default_factory=list)


class DebianRoot:
    """A Debian 12 minbase root; commands run in it through chroot, with /proc mounted in a private namespace."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file(self, absolute: str) -> Path:
        return self.path / absolute.lstrip("/")

    def run(self, *command: str, input: bytes | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        wrapped = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', str(self.path), *command]
        env = {"PATH": PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        result = subprocess.run(wrapped, input=input, capture_output=True, env=env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n"
                                 f"{result.stdout.decode(errors='replace')}\n{result.stderr.decode(errors='replace')}")
        return result

    def text(self, *command: str, **kwargs: object) -> str:
        result = self.run(*command, **kwargs)  # type: ignore[arg-type]
        return (result.stdout + result.stderr).decode(errors="replace")

    def popen(self, *command: str) -> subprocess.Popen[bytes]:
        wrapped = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', str(self.path), *command]
        env = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        return subprocess.Popen(wrapped, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def systemctl_calls(self) -> list[str]:
        log = self.file("/var/log/systemctl-calls")
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return calls

    def apt(self, *args: str) -> Snapshot:
        output = self.text("apt-get", "-y", "-o", "Dpkg::Options::=--force-confold", *args)
        return Snapshot(output, self.systemctl_calls())


def _repack(deb: Path, out: Path, version: str, workdir: Path) -> Path:
    """The same package as version ``version``, with one more line in its default configuration."""
    tree = workdir / "repack"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text("".join(f"Version: {version}\n" if line.startswith("Version:") else line
                               for line in control.read_text().splitlines(keepends=True)))
    config = tree / "etc" / "posbridge" / "posbridge.toml"
    config.write_text(config.read_text() + "\n# default changed in version " + version + "\n")
    md5sums = tree / "DEBIAN" / "md5sums"
    lines = [line for line in md5sums.read_text().splitlines() if not line.endswith(" etc/posbridge/posbridge.toml")]
    md5sums.write_text("\n".join(lines) + "\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(out)], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return out


@pytest.fixture(scope="module")
def debs_and_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Debs, DebianRoot]]:
    """Build the package while mmdebstrap makes the root; lintian then runs while the tests use the root."""
    work = tmp_path_factory.mktemp("debian-package")
    root_dir = work / "root"
    debstrap = subprocess.Popen(
        ["mmdebstrap", "--variant=minbase", f"--include={ROOT_PACKAGES}", "bookworm", str(root_dir), *MIRRORS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    env = dict(os.environ, POSBRIDGE_DEB_OUTPUT=str(work / "dist"), POSBRIDGE_DEB_BUILD=str(work / "build"),
               POSBRIDGE_DEB_COMPRESSION="gzip", POSBRIDGE_DEB_COMPRESSION_LEVEL="1")
    build = subprocess.run(["bash", str(REPO / "scripts" / "build-deb.sh")], env=env, capture_output=True,
                           text=True, timeout=900)
    assert build.returncode == 0, f"make deb failed:\n{build.stdout}\n{build.stderr}"
    built = sorted((work / "dist").glob("posbridge_*.deb"))
    assert len(built) == 1, built
    version = built[0].name.split("_")[1]
    lintian_log = work / "lintian.txt"
    with lintian_log.open("w") as handle:
        lintian = subprocess.Popen(["lintian", "--tag-display-limit", "0", str(built[0])], stdout=handle,
                                   stderr=subprocess.STDOUT, text=True)
    v2 = _repack(built[0], work / "dist" / f"posbridge_{version}+test2_amd64.deb", f"{version}+test2", work)
    output, _ = debstrap.communicate(timeout=900)
    assert debstrap.returncode == 0, f"mmdebstrap failed:\n{output}"
    root = DebianRoot(root_dir)
    for deb in (built[0], v2):
        shutil.copy(deb, root.file("/tmp") / deb.name)
    stub = root.file("/usr/bin/systemctl")
    stub.write_text(STUB_SYSTEMCTL)
    stub.chmod(0o755)
    try:
        yield Debs(built[0], v2, version, lintian, lintian_log), root
    finally:
        if lintian.poll() is None:
            lintian.kill()
            lintian.wait()


@dataclass
class Lifecycle:
    root: DebianRoot
    version: str
    install: Snapshot
    first_daemon_answer: dict[str, object]
    queue_before_upgrade: dict[str, object]
    config_before_upgrade: str
    upgrade: Snapshot
    after_upgrade: dict[str, object]
    remove: Snapshot
    after_remove: dict[str, object]
    purge: Snapshot
    after_purge: dict[str, object]


def _tree_facts(root: DebianRoot) -> dict[str, object]:
    def exists(path: str) -> bool:
        return root.file(path).exists() or root.file(path).is_symlink()

    state = root.file("/var/lib/posbridge")
    return {
        "venv": exists("/opt/posbridge"),
        "command": exists("/usr/bin/posbridge"),
        "config": exists("/etc/posbridge/posbridge.toml"),
        "credentials": exists("/etc/posbridge/credentials/cloud-token"),
        "database": exists("/var/lib/posbridge/posbridge.db"),
        "state_dir": state.is_dir(),
        "dpkg_status": root.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "posbridge",
                                check=False).stdout.decode().strip(),
        "passwd": root.run("getent", "passwd", "posbridge", check=False).stdout.decode().strip(),
        "shadow": root.run("getent", "shadow", "posbridge", check=False).stdout.decode().strip(),
    }


def _queue(root: DebianRoot) -> dict[str, object]:
    def out(*command: str) -> str:
        return root.run(*command).stdout.decode()

    status = json.loads(out("posbridge", "queue", "status", "--json"))
    invoices = [json.loads(line) for line in out("posbridge", "queue", "list", "--json").splitlines() if line]
    shown = json.loads(out("posbridge", "queue", "show", "doc:Serie=PK;Number=7"))
    return {"status": status, "invoices": invoices, "body": shown.get("body")}


def _set_up_run_and_queue_an_invoice(root: DebianRoot) -> dict[str, object]:
    """The technician's `posbridge setup` (no systemd here, so it cannot start the service: it says so), then the
    installed daemon started by hand against a cloud that drops every call: the POS's invoice is queued."""
    with running_sandbox() as cloud:
        port = free_port()
        setup = root.run("posbridge", "setup", "--non-interactive", "--account", cloud.account, "--api-token-file",
                         "-", "--cloud-url", cloud.url, "--listen", f"127.0.0.1:{port}", "--scanner", "none",
                         input=cloud.token.encode() + b"\n")
        local_token = root.file("/etc/posbridge/credentials/local-token").read_text().strip()
        cloud.faults(outage=True)
        daemon = root.popen("posbridge", "run", "--log-format", "text")
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert daemon.poll() is None, daemon.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the installed daemon did not become ready in 60 s"
                time.sleep(0.2)
            answer = httpx.post(f"{base}/agora/invoices", params={"_token": local_token}, content=INVOICE,
                                headers={"Content-Type": "application/json"}, timeout=30)
            status = root.run("posbridge", "status", check=False)
            result = {"status": answer.status_code, "body": answer.json(), "setup": setup.stdout.decode(),
                      "status_screen": status.stdout.decode(), "status_code": status.returncode}
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    return result


@pytest.fixture(scope="module")
def lifecycle(debs_and_root: tuple[Debs, DebianRoot]) -> Lifecycle:
    debs, root = debs_and_root
    install = root.apt("install", f"/tmp/{debs.v1.name}")
    install_facts = _tree_facts(root)
    answer = _set_up_run_and_queue_an_invoice(root)
    queue = _queue(root)
    config = root.file("/etc/posbridge/posbridge.toml").read_text()
    # from here on, pretend systemd runs and the service is active
    root.file("/run/systemd/system").mkdir(parents=True, exist_ok=True)
    root.file("/run/posbridge-test-active").touch()
    upgrade = root.apt("install", f"/tmp/{debs.v2.name}")
    after_upgrade = {**_tree_facts(root), **_queue(root),
                     "config": root.file("/etc/posbridge/posbridge.toml").read_text(),
                     "dpkg_dist": root.file("/etc/posbridge/posbridge.toml.dpkg-dist").exists(),
                     "version": root.run("dpkg-query", "-W", "-f=${Version}", "posbridge").stdout.decode()}
    remove = root.apt("remove", "posbridge")
    after_remove = _tree_facts(root)
    root.file("/run/posbridge-test-active").unlink()
    purge = root.apt("purge", "posbridge")
    after_purge = {**_tree_facts(root), "etc": root.file("/etc/posbridge").exists()}
    return Lifecycle(root, debs.version, install, answer, queue, config, upgrade, after_upgrade, remove,
                     after_remove, purge, {**after_purge, "install_facts": install_facts})


# --- the build ------------------------------------------------------------------------------------------------

def test_make_deb_names_the_package_by_version_and_architecture(debs_and_root: tuple[Debs, DebianRoot]) -> None:
    debs, _ = debs_and_root
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert debs.v1.name == f"posbridge_{debs.version}_{arch}.deb"
    import tomllib
    assert debs.version == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_package_declares_its_debian_dependencies(debs_and_root: tuple[Debs, DebianRoot]) -> None:
    debs, _ = debs_and_root
    depends = subprocess.run(["dpkg-deb", "-f", str(debs.v1), "Depends"], capture_output=True, text=True).stdout
    for needed in ("libzbar0", "python3 (>= 3.11~)", "python3 (<< 3.12~)", "adduser", "libc6"):
        assert needed in depends


def test_package_holds_the_virtualenv_unit_rules_and_conffile_but_no_byte_code(
        debs_and_root: tuple[Debs, DebianRoot]) -> None:
    debs, _ = debs_and_root
    listing = subprocess.run(["dpkg-deb", "-c", str(debs.v1)], capture_output=True, text=True).stdout
    for path in ("./opt/posbridge/venv/bin/posbridge", "./usr/bin/posbridge -> /opt/posbridge/venv/bin/posbridge",
                 "./lib/systemd/system/posbridge.service", "./usr/lib/udev/rules.d/99-posbridge-scanners.rules",
                 "site-packages/fastapi/", "site-packages/cv2/", "site-packages/zxingcpp"):
        assert path in listing
    assert ".pyc" not in listing and "direct_url.json" not in listing
    conffiles = subprocess.run(["dpkg-deb", "-I", str(debs.v1), "conffiles"], capture_output=True, text=True).stdout
    assert conffiles.split() == ["/etc/posbridge/posbridge.toml"]
    unit = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs.v1)], capture_output=True).stdout
    assert b"ExecStart=/opt/posbridge/venv/bin/posbridge run --config /etc/posbridge/posbridge.toml" in unit


def test_lintian_finds_no_errors(debs_and_root: tuple[Debs, DebianRoot]) -> None:
    debs, _ = debs_and_root
    debs.lintian.wait(600)
    report = debs.lintian_log.read_text()
    errors = [line for line in report.splitlines() if line.startswith("E:")]
    assert not errors, "lintian errors:\n" + "\n".join(errors)


# --- install ---------------------------------------------------------------------------------------------------

def test_install_creates_the_system_user_in_the_device_groups(lifecycle: Lifecycle) -> None:
    passwd = lifecycle.after_purge["install_facts"]["passwd"]  # type: ignore[index]
    assert passwd.startswith("posbridge:") and passwd.endswith(":/var/lib/posbridge:/usr/sbin/nologin")
    groups = lifecycle.root.text("id", "-nG", "posbridge").split()
    assert {"posbridge", "dialout", "plugdev", "video", "input"} <= set(groups)


def test_install_puts_files_in_place_with_private_state_and_credentials(lifecycle: Lifecycle) -> None:
    facts = lifecycle.after_purge["install_facts"]  # type: ignore[index]
    assert facts["venv"] and facts["command"] and facts["config"] and facts["state_dir"]  # type: ignore[index]
    assert "posbridge setup" in lifecycle.install.output  # the next step is named


def test_install_runs_no_systemctl_without_systemd_and_does_not_enable_the_service(lifecycle: Lifecycle) -> None:
    assert lifecycle.install.systemctl == []


def test_setup_from_the_package_configures_the_till_and_says_it_cannot_start_without_systemd(
        lifecycle: Lifecycle) -> None:
    setup = str(lifecycle.first_daemon_answer["setup"])
    assert "API token: new token checked" in setup and "configuration: written" in setup
    assert "service: not started: systemd is not running here" in setup


def test_status_from_the_package_shows_the_running_daemon_and_the_queued_invoice(lifecycle: Lifecycle) -> None:
    screen = str(lifecycle.first_daemon_answer["status_screen"])
    assert "daemon running for" in screen and "1 pending" in screen, screen


def test_installed_daemon_runs_from_the_package_and_queues_an_invoice(lifecycle: Lifecycle) -> None:
    assert lifecycle.first_daemon_answer["status"] == 202
    assert lifecycle.first_daemon_answer["body"]["status"] == "queued"  # type: ignore[index]
    assert lifecycle.queue_before_upgrade["status"]["depth"]["pending"] == 1  # type: ignore[index]


# --- upgrade ---------------------------------------------------------------------------------------------------

def test_upgrade_keeps_every_queued_invoice_byte_for_byte(lifecycle: Lifecycle) -> None:
    after = lifecycle.after_upgrade
    assert after["version"] == f"{lifecycle.version}+test2"
    assert after["status"]["depth"]["pending"] == 1  # type: ignore[index]
    assert [i["key"] for i in after["invoices"]] == ["doc:Serie=PK;Number=7"]  # type: ignore[union-attr]
    assert after["body"] == INVOICE.decode()


def test_upgrade_never_overwrites_an_edited_configuration(lifecycle: Lifecycle) -> None:
    assert lifecycle.after_upgrade["config"] == lifecycle.config_before_upgrade
    assert lifecycle.after_upgrade["dpkg_dist"]  # the new default is put beside it for the technician


def test_upgrade_restarts_a_running_service_exactly_once_without_stopping_it_first(lifecycle: Lifecycle) -> None:
    calls = lifecycle.upgrade.systemctl
    restarts = [c for c in calls if "restart" in c]
    assert restarts == ["try-restart posbridge.service"], calls
    assert not [c for c in calls if c.startswith("stop")]


# --- remove and purge ------------------------------------------------------------------------------------------

def test_remove_stops_the_service_and_keeps_configuration_tokens_and_database(lifecycle: Lifecycle) -> None:
    assert "stop posbridge.service" in lifecycle.remove.systemctl
    facts = lifecycle.after_remove
    assert not facts["venv"] and not facts["command"]  # /opt/posbridge is gone entirely (byte code too)
    assert facts["config"] and facts["credentials"] and facts["database"]
    assert facts["dpkg_status"] == "rc"


def test_remove_says_that_undelivered_invoices_are_kept(lifecycle: Lifecycle) -> None:
    assert "1 invoice(s) are still waiting for delivery" in lifecycle.remove.output


def test_purge_says_what_it_deletes_then_deletes_state(lifecycle: Lifecycle) -> None:
    output = lifecycle.purge.output
    assert "purge: deleting /var/lib/posbridge" in output
    facts = lifecycle.after_purge
    assert not facts["etc"] and not facts["state_dir"] and not facts["database"]
    assert facts["dpkg_status"] == ""


def test_purge_keeps_the_user_account_but_expires_it(lifecycle: Lifecycle) -> None:
    shadow = str(lifecycle.after_purge["shadow"]).split(":")
    assert shadow[0] == "posbridge" and shadow[7] == "1"
