"""The README's two commands work on a fresh Debian machine only if `dev.sh` (and CI's script) installs every
Debian package the dev stack starts a server from."""

from __future__ import annotations

import re

from linewatch.core.settings import REPO_ROOT


def packages_the_dev_stack_starts() -> set[str]:
    source = (REPO_ROOT / "services/linewatch/tools/devstack.py").read_text()
    return set(re.findall(r'launch_packaged\(\s*"[\w-]+",\s*"([\w-]+)"', source))


def test_dev_sh_and_ci_install_every_package_the_dev_stack_starts() -> None:
    packages = packages_the_dev_stack_starts()
    assert packages >= {"influxdb", "mosquitto"}  # the parse found the servers
    dev_sh = set(re.findall(r"missing\+=\(([\w-]+)\)", (REPO_ROOT / "dev.sh").read_text()))
    ci_line = next(line for line in (REPO_ROOT / ".ci/run").read_text().splitlines() if "apt-get install" in line)
    assert packages <= dev_sh, f"dev.sh does not install {sorted(packages - dev_sh)}"
    assert packages <= set(ci_line.split()), f".ci/run does not install {sorted(packages - set(ci_line.split()))}"
