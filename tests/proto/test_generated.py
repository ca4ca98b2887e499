"""gateway/pb is generated from proto/ and never edited by hand: regenerating changes nothing
but the tool versions stamped into the files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from creditgate.gateway.pb import creditgate_pb2 as pb
from creditgate.limits.reasons import DeclineReason

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "gateway" / "pb"
VERSION = re.compile(r"\d+(?:\.\d+)+")


def _generator():
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normalised(text: str) -> list[str]:
    """The file's lines with the generating tools' versions blanked out: the comment naming the
    protobuf version, the arguments of ValidateProtobufRuntimeVersion (major, minor, patch,
    suffix) and GRPC_GENERATED_VERSION. Everything else must match exactly."""
    lines = text.splitlines()
    out = []
    in_validate = False
    validate_args = 0
    for line in lines:
        if line.startswith("# Protobuf Python Version:"):
            line = "# Protobuf Python Version: <version>"
        elif line.startswith("GRPC_GENERATED_VERSION = "):
            line = VERSION.sub("<version>", line)
        elif "_runtime_version.ValidateProtobufRuntimeVersion(" in line:
            in_validate, validate_args = True, 0
        elif in_validate:
            stripped = line.strip()
            if stripped == ")":
                in_validate = False
            elif not stripped.startswith("_runtime_version.Domain"):
                validate_args += 1
                if validate_args <= 4:  # major, minor, patch, suffix; then the file name
                    line = "    <version>,"
        out.append(line)
    return out


def test_normalised_ignores_only_versions():
    one = "# Protobuf Python Version: 7.35.1\nGRPC_GENERATED_VERSION = '1.85.1'\nx = 1\n"
    two = "# Protobuf Python Version: 6.31.0\nGRPC_GENERATED_VERSION = '1.86.0'\nx = 1\n"
    assert normalised(one) == normalised(two)
    assert normalised(one) != normalised(one.replace("x = 1", "x = 2"))
    call = ("_runtime_version.ValidateProtobufRuntimeVersion(\n"
            "    _runtime_version.Domain.PUBLIC,\n    {0},\n    35,\n    1,\n    '',\n"
            "    'creditgate/v1/creditgate.proto'\n)\n")
    assert normalised(call.format(7)) == normalised(call.format(6))
    assert normalised(call.format(7)) != normalised(call.format(7).replace("creditgate.proto",
                                                                           "other.proto"))


def test_regenerating_changes_nothing(tmp_path):
    written = _generator().generate(tmp_path)
    names = sorted(path.name for path in written)
    assert names == ["creditgate_pb2.py", "creditgate_pb2.pyi", "creditgate_pb2_grpc.py"]
    committed = sorted(p.name for p in COMMITTED.iterdir()
                       if p.is_file() and p.name != "__init__.py" and p.suffix in (".py", ".pyi"))
    assert committed == names
    for path in written:
        fresh = normalised(path.read_text())
        stored = normalised((COMMITTED / path.name).read_text())
        assert fresh == stored, f"gateway/pb/{path.name} differs from what proto/ generates"


@pytest.mark.parametrize("reason", list(DeclineReason), ids=lambda r: r.name)
def test_decline_reason_numbers_match_the_contract(reason):
    name = "DECLINE_REASON_" + ("UNSPECIFIED" if reason == DeclineReason.NONE else reason.name)
    assert pb.DeclineReason.Value(name) == int(reason)


def test_contract_has_no_decline_reason_the_code_lacks():
    names = {("NONE" if n == "UNSPECIFIED" else n) for n in
             (v.name.removeprefix("DECLINE_REASON_") for v in pb.DeclineReason.DESCRIPTOR.values)}
    assert names == {reason.name for reason in DeclineReason}
