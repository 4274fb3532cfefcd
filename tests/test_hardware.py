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


def test_the_cpu_summary_names_the_kernel_instruction_sets(tmp_path):
    """Two records that disagree in their last digits say why: the CPUs' instruction sets differ."""
    from lab.hardware import cpu_summary

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 fma avx512f amx_tile amx_bf16 ht\n\n"
                       "processor\t: 1\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2\n")
    summary = cpu_summary(str(cpuinfo))
    assert summary["cpu"] == "Intel Xeon"
    assert summary["cpu_features"] == "avx2 fma avx512f amx_tile amx_bf16"  # the first core's, in a fixed order
    assert int(summary["cpu_cores"]) >= 1
    assert cpu_summary(str(tmp_path / "missing"))["cpu_features"] == "unknown"
