"""The hardware fingerprint a table is stored with, and the check against this machine."""
from __future__ import annotations

import datetime
import os
import platform
import re

# ISA extensions that change which kernels onnxruntime picks (and so op latency).
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
# Fields that must agree for a table to describe this machine.
MATCH_FIELDS = ("cpu_model", "isa", "logical_cores", "runtime", "runtime_version")


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: the model from platform, no flags
        pass
    return model, [f for f in ISA_FLAGS if f in flags]


def machine_fingerprint(threads: int) -> dict:
    """What a latency measurement depends on: CPU, ISA, cores, threads, runtime."""
    import onnxruntime

    model, isa = _cpu_model_and_flags()
    return {
        "cpu_model": model,
        "isa": isa,
        "logical_cores": os.cpu_count(),
        "threads": int(threads),
        "runtime": "onnxruntime",
        "runtime_version": onnxruntime.__version__,
        "date": datetime.date.today().isoformat(),
    }


def machine_tag() -> str:
    """This machine's CPU model as a file-name tag: ``AMD EPYC`` -> ``amd-epyc``,
    ``Intel(R) Xeon(R) Processor`` -> ``intel-xeon-processor``."""
    model = re.sub(r"\((r|tm)\)", "", _cpu_model_and_flags()[0].lower())
    return re.sub(r"[^a-z0-9]+", "-", model).strip("-") or "unknown-cpu"


def mismatches(table_fp: dict, threads: int | None = None) -> list[str]:
    """Fields where a table's fingerprint differs from this machine (empty: it matches)."""
    here = machine_fingerprint(threads if threads is not None else table_fp.get("threads", 1))
    out = [f"{k}: table {table_fp.get(k)!r}, here {here[k]!r}" for k in MATCH_FIELDS if table_fp.get(k) != here[k]]
    if threads is not None and table_fp.get("threads") != threads:
        out.append(f"threads: table {table_fp.get('threads')}, requested {threads}")
    return out
