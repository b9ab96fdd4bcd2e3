"""The UDF's default thread count: the CPUs the worker may really use, not the node's."""

import os

import pytest

from s2sr import engine
from s2sr_testing import patch_engine
import torch


@pytest.fixture
def cpus(udf_module, monkeypatch, tmp_path):
    """``_available_cpus`` with a fake affinity, cgroup files under tmp_path and no OMP_NUM_THREADS."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    v2, quota, period = tmp_path / "cpu.max", tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    patch_engine(monkeypatch, "CGROUP_CPU_MAX", v2)
    patch_engine(monkeypatch, "CGROUP_V1_QUOTA", (quota, period))

    def available(v2_text=None, v1=None, omp=None):
        for path in (v2, quota, period):
            path.unlink(missing_ok=True)
        if v2_text is not None:
            v2.write_text(v2_text)
        if v1 is not None:
            quota.write_text(f"{v1[0]}\n")
            period.write_text(f"{v1[1]}\n")
        if omp is not None:
            monkeypatch.setenv("OMP_NUM_THREADS", omp)
        return engine.threads.available_cpus()
    return available


def test_affinity_alone(cpus):
    assert cpus() == 32
    assert cpus(v2_text="max 100000\n") == 32  # no quota
    assert cpus(v1=(-1, 100000)) == 32


def test_cgroup_quotas_cap_the_threads(cpus):
    assert cpus(v2_text="250000 100000\n") == 2  # 2.5 CPUs: 2 whole threads
    assert cpus(v2_text="50000 100000\n") == 1  # half a CPU: still one thread
    assert cpus(v1=(400000, 100000)) == 4  # cgroup v1
    assert cpus(v2_text="300000 100000\n", v1=(800000, 100000)) == 3  # v2 read first


def test_spark_s_omp_num_threads_caps_the_threads(cpus):
    """Spark sets OMP_NUM_THREADS to the task's cores where the affinity is the whole node's."""
    assert cpus(omp="2") == 2
    assert cpus(omp="4,2") == 4  # nested levels: the outer one
    assert cpus(v2_text="100000 100000\n", omp="8") == 1  # the smaller limit wins
    assert cpus(omp="64") == 32  # never more than the affinity
    for junk in ("", "0", "-3", "many"):
        assert cpus(omp=junk) == 32  # not a positive count: ignored


def test_the_context_s_threads_win_up_to_the_cpus_available(udf_module, cpus):
    cpus(omp="4")
    before = torch.get_num_threads()
    try:
        assert engine.threads.set_threads({"threads": 2}) == 2 and torch.get_num_threads() == 2
        assert engine.threads.set_threads({}) == 4 and torch.get_num_threads() == 4
        assert engine.threads.set_threads({"threads": 10_000}) == 4  # capped: more would fight for the CPUs
        with pytest.raises(ValueError, match="threads' must be an integer >= 1"):
            engine.threads.set_threads({"threads": 0})
    finally:
        torch.set_num_threads(before)
