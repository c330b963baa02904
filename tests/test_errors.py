"""One exception tree: every error the project defines sits under DcmError, the docstring draws all of
them, and one function maps them to exit codes."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import dcm_base.errors as errors
from dcm.cli import main as dcm_main
from dcm_base.errors import DcmError, InputError, ServiceError, exit_code

PACKAGES = ("dcm_base", "dbc", "minute_packet", "gateway", "cloud_sink", "simulator", "speed_layer", "batch_layer",
            "fleet_api", "dcm")


def project_errors() -> list[tuple[str, type]]:
    """(name, class) of every exception class the project's packages define."""
    found = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names = [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
        for name in names:
            module = importlib.import_module(name)
            for attr, obj in vars(module).items():
                if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name
                        and not attr.startswith("_")):
                    found.append((attr, obj))
    return found


def package_bases() -> set[type]:
    from batch_layer.errors import BatchLayerError
    from fleet_api.errors import ApiError
    from speed_layer.errors import SpeedLayerError

    return {DcmError, SpeedLayerError, BatchLayerError, ApiError}


def test_every_project_error_is_in_the_tree():
    outside = sorted(name for name, cls in project_errors() if not issubclass(cls, DcmError))
    assert outside == []


def test_the_docstring_draws_every_error_and_only_those():
    drawn = set(re.findall(r"[├└]── (\w+)", errors.__doc__)) | {"DcmError"}
    assert drawn == {name for name, _ in project_errors()}


def test_each_error_is_input_or_failure_and_maps_to_one_exit_code():
    for name, cls in project_errors():
        if cls in package_bases():
            continue
        assert issubclass(cls, InputError) != issubclass(cls, ServiceError), name
        assert exit_code(cls.__new__(cls)) == (2 if issubclass(cls, InputError) else 1), name
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(ValueError("a bug")) is None


def test_the_two_configs_share_one_config_error():
    from cloud_sink.config import ConfigError as SinkConfigError
    from gateway.config import ConfigError as GatewayConfigError

    assert SinkConfigError is GatewayConfigError is errors.ConfigError


def test_a_bad_broker_url_is_input_and_a_failed_staging_database_is_a_failure(tmp_path, capsys):
    assert dcm_main(["sink", "--broker", "http://nope", "--check-config"]) == 2
    assert capsys.readouterr().err.startswith("dcm sink: command line: mqtt.url: broker URL must look like")
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"not a database" * 100)
    assert dcm_main(["sink", "gaps", "--state", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dcm sink: {state}") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["gateway", "--broker", "mqtt://h", "--vehicle-id", "V1"],
                                  ["simulate", "fleet", "--vehicles", "0"]])
def test_input_errors_of_every_cli_exit_2_in_one_line(argv, capsys):
    assert dcm_main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
