"""lab.system.hardware: what the CPU can do."""

import pytest

from lab.system.hardware import cpu_supports_bfloat16


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
    from lab.system.hardware import cpu_summary

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 fma avx512f amx_tile amx_bf16 ht\n\n"
                       "processor\t: 1\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2\n")
    summary = cpu_summary(str(cpuinfo))
    assert summary["cpu"] == "Intel Xeon"
    assert summary["cpu_features"] == "avx2 fma avx512f amx_tile amx_bf16"  # the first core's, in a fixed order
    assert int(summary["cpu_cores"]) >= 1
    assert cpu_summary(str(tmp_path / "missing"))["cpu_features"] == "unknown"


# -- mixed_precision="auto" ----------------------------------------------------------------------

@pytest.mark.parametrize("capabilities,expected", [
    ([], False),                  # a CPU: float32, so CPU results do not move
    ([(7, 5)], True),             # Colab's T4: tensor cores
    ([(6, 0)], False),            # a P100: float16 no faster
    ([(8, 0), (6, 1)], False),    # mixed machines: the slowest GPU decides
])
def test_auto_mixed_precision_is_on_only_for_gpus_with_tensor_cores(monkeypatch, capabilities, expected):
    from lab.system import hardware

    monkeypatch.setattr(hardware, "gpu_capabilities", lambda: capabilities)
    monkeypatch.setattr(hardware, "gpus", lambda: ["GPU"] * len(capabilities))
    assert hardware.use_mixed_precision("auto") is expected
    assert hardware.policy_name("auto") == ("mixed_float16" if expected else "float32")
    assert hardware.use_mixed_precision(True) is True and hardware.use_mixed_precision(False) is False


def test_gpu_capabilities_are_read_from_tensorflows_device_details(monkeypatch):
    import tensorflow as tf

    from lab.system import hardware

    monkeypatch.setattr(hardware, "gpus", lambda: ["gpu0", "gpu1"])
    details = {"gpu0": {"compute_capability": (7, 5), "device_name": "Tesla T4"}, "gpu1": {}}
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: details[gpu])
    assert hardware.gpu_capabilities() == [(7, 5), (0, 0)]


def test_a_bad_mixed_precision_value_is_refused_with_the_valid_ones():
    from lab.system import hardware
    from lab.config import RunConfig

    with pytest.raises(ValueError, match=r"mixed_precision must be one of False, True, 'auto', received "
                                         r"mixed_precision='on'"):
        hardware.use_mixed_precision("on")
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match=f"received mixed_precision={bad!r}"):
            RunConfig(dataset="digits", model="cnn", mixed_precision=bad).validate()
    RunConfig(dataset="digits", model="cnn", mixed_precision="auto").validate()


def test_the_record_says_which_precision_auto_meant_on_this_cpu(tmp_path):
    from lab.config import RunConfig
    from lab.data.datasets import load_dataset
    from lab.runs.records import load_run
    from lab.runs.training import train

    config = RunConfig(dataset="digits", model="cnn", depth=1, filters=[4], dense_units=8, epochs=1, batch_size=64,
                       mixed_precision="auto", reports_dir=str(tmp_path), verbose=0, tensorboard=False,
                       save_model=False)
    result = train(config, data=load_dataset("digits", seed=0))
    run = load_run(result.run_dir)
    assert run.config["mixed_precision"] == "auto"
    assert run.config["environment"]["dtype_policy"] == "float32"
