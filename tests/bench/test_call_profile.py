"""bench/call_profile.py: its reading of callgrind's dumps (own instructions by shared object,
a call's inclusive cost not counted again), and a tiny run of the three servers end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import call_profile  # bench/: tests/bench/conftest.py puts it on sys.path
import pytest

from tests.bench.conftest import BENCH

RUN_TIMEOUT_S = 600

DUMP = """\
version: 1
creator: callgrind-3.19.0
events: Ir
ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 700
11 300
cob=(2) /venv/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so
cfi=(2) server.pyx
cfn=(2) handle
calls=2 40
12 5000
ob=(2)
fl=(2)
fn=(2)
40 1200
ob=(3) /venv/google/_upb/_message.abi3.so
fl=(3) message.c
fn=(3) PyUpb_Message_GetAttr
+2 55
totals: 2255
"""


def test_own_instructions_by_shared_object_without_the_calls_inclusive_costs(tmp_path):
    dump = tmp_path / "callgrind.out.1.1-01"
    dump.write_text(DUMP)
    assert call_profile.by_object(dump) == {"libpython3.11.so.1.0": 1000, "cygrpc": 1200,
                                            "_message": 55}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("callgrind_control") is None, reason="valgrind not installed")
def test_tiny_run_counts_each_server_and_the_gateway_costs_more(tmp_path):
    out = tmp_path / "call_profile.json"
    run = subprocess.run(
        [sys.executable, str(BENCH / "call_profile.py"), "--calls", "20", "--warmup", "5",
         "--customers", "10", "--idle", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=BENCH)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out.read_text())
    noop, floor, gateway = (figures[name] for name in ("noop", "floor", "gateway"))
    assert 50_000 < noop["main_thread_per_call"] < floor["main_thread_per_call"] \
        < gateway["main_thread_per_call"]
    assert "hiredis" in floor["main_thread_by_object_per_call"]
    # The gateway's own Python runs beside the floor's: more instructions in libpython.
    python = "libpython3.11.so.1.0"
    assert gateway["main_thread_by_object_per_call"][python] > \
        floor["main_thread_by_object_per_call"][python]
    assert "every thread" in run.stdout
