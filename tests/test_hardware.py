"""lab.hardware: what the CPU can do."""

import pytest

from lab.hardware import cpu_supports_bfloat16


@pytest.mark.parametrize("flags,expected", [
    ("fpu sse avx2 avx512f amx_bf16 amx_tile", True),
    ("fpu sse avx2 avx512f avx512_bf16", True),
    ("fpu sse avx2 avx512f avx512_fp16", False),
])
def test_bfloat16_support_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_supports_bfloat16(str(cpuinfo)) is expected


def test_no_cpuinfo_means_no_bfloat16(tmp_path):
    assert cpu_supports_bfloat16(str(tmp_path / "missing")) is False
