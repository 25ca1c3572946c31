"""The CPU features the server decides reduced precisions by are the host's own flags."""

from pathlib import Path

import pytest

from argonic.server.backends import cpu

CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not CPUINFO.is_file(), reason="needs Linux /proc/cpuinfo")
def test_features_are_the_hosts_flags_not_a_named_microarchitectures():
    """archspec's host() is the best-matching named microarchitecture: on a VM whose
    hypervisor hides one flag of the real one it is an older model, without AMX or
    AVX-512 BF16 although the CPU has them. Every flag /proc/cpuinfo lists must count."""
    line = next(x for x in CPUINFO.read_text().splitlines() if x.startswith("flags"))
    flags = set(line.split(":", 1)[1].split())
    assert flags <= cpu.features()
    assert cpu.native("bf16") == bool(flags & {"avx512_bf16", "amx_bf16"})
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    assert cpu.int8_kernels().startswith("VNNI") == vnni
    for flag in ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"):
        assert (flag in cpu.describe().split(";")[0]) == (flag in flags)
