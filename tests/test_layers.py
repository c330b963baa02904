"""Layers point down: each package imports only the packages below it (parsed from the code with ``ast``).

The allowed graph (also in docs/architecture.md)::

    dcm, bench          application: CLIs, demo, car rig, service runner / benchmarks (may import anything)
      │
    fleet_api           the API and dashboard: reads the value layer (speed_layer, batch_layer) and the wire package
      │
    gateway   cloud_sink   simulator   speed_layer   batch_layer     libraries: never each other,
      │           │            │            │             │          never dcm or bench
    minute_packet (wire format)   dbc (DBC files and loader)
      │
    dcm_base                      shared plumbing: broker URLs, errors, rate-limited logging, backoff

    faultpoints                   deterministic fault points (standard library only): anyone may call it

Every import counts, also one inside a function or under ``TYPE_CHECKING``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ALLOWED: dict[str, set[str]] = {
    "faultpoints": set(),
    "dcm_base": set(),
    "dbc": {"dcm_base"},
    "minute_packet": {"dcm_base"},
    "gateway": {"dcm_base", "dbc", "minute_packet"},
    "cloud_sink": {"dcm_base", "dbc", "minute_packet"},
    "simulator": {"dcm_base", "dbc", "minute_packet"},
    "speed_layer": {"dcm_base", "dbc", "minute_packet"},
    "batch_layer": {"dcm_base", "dbc", "minute_packet"},
    "fleet_api": {"dcm_base", "minute_packet", "speed_layer", "batch_layer"},
    "dcm": {"dcm_base", "dbc", "minute_packet", "gateway", "cloud_sink", "simulator", "speed_layer", "batch_layer",
            "fleet_api", "bench"},
    "bench": {"dcm_base", "dbc", "minute_packet", "gateway", "cloud_sink", "simulator", "speed_layer", "batch_layer",
              "fleet_api", "dcm"},
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level name) of every absolute import in a file; a relative import that climbs out
    of its package is reported as ``..``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add((node.lineno, node.module.split(".")[0]))
            elif node.level > 1 and path.parent.name in ALLOWED:
                found.add((node.lineno, ".."))
    return found


for _package, _may in ALLOWED.items():  # the fault points are below everything
    if _package != "faultpoints":
        _may.add("faultpoints")


def violations(root: Path, allowed: dict[str, set[str]]) -> list[str]:
    """``file:line imports X`` for every import of a first-party package the graph does not allow."""
    out = []
    for package, may in allowed.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, name in sorted(imported_packages(path)):
                if name == "..":
                    out.append(f"{path.relative_to(root)}:{line} imports out of its package with '..'")
                elif name in allowed and name != package and name not in may:
                    out.append(f"{path.relative_to(root)}:{line} imports {name}")
    return sorted(out)


def test_the_packages_import_only_what_the_graph_allows():
    assert violations(ROOT, ALLOWED) == []


def test_every_package_is_in_the_graph():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "hil"}
    assert packages == set(ALLOWED)


def test_a_library_importing_the_application_or_a_sibling_is_caught(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "gateway" / "x.py").write_text("def f():\n    from dcm.cli import main\n")
    (tmp_path / "simulator" / "y.py").write_text("import os\nimport gateway.service\nfrom . import z\n")
    (tmp_path / "cloud_sink" / "z.py").write_text("from ..dcm import broker\n")
    (tmp_path / "minute_packet" / "w.py").write_text("from dcm_base.errors import InputError\n")
    assert violations(tmp_path, ALLOWED) == [
        "cloud_sink/z.py:1 imports out of its package with '..'",
        "gateway/x.py:2 imports dcm",
        "simulator/y.py:2 imports gateway",
    ]


def test_dcm_gateway_does_not_load_pyarrow(tmp_path):
    """The gateway side stays light for a Pi: ``dcm gateway --check-config`` imports the gateway
    service, its config and the CLI, and never pyarrow."""
    config = tmp_path / "gateway.toml"
    config.write_text(f'vehicle_id = "V1"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n[outbox]\npath = "{tmp_path}/o.sqlite"\n')
    code = ("import sys\nfrom dcm.cli import main\n"
            f"rc = main(['gateway', '--config', {str(config)!r}, '--check-config'])\n"
            "import gateway.service\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'duckdb', 'aiohttp'))\n"
            "print(rc, heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.splitlines()[-1] == "0 []"


@pytest.mark.parametrize("package", ["gateway", "cloud_sink", "simulator", "speed_layer", "batch_layer",
                                     "minute_packet", "dcm_base", "dbc"])
def test_library_packages_have_no_cli_module(package):
    assert not (ROOT / package / "cli.py").exists(), "CLIs live in dcm/"
