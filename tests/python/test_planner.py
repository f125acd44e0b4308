"""test_planner.py - clusters from code, files and probing; plans searched and pinned, explained,
dumped as text and DOT, saved and loaded, simulated."""
import pytest

import whale
from conftest import mlp


def test_cluster_from_code_and_file(ctx, tmp_path):
    c = whale.Cluster(ctx).add("V100-32GB", node=0, count=2).add("P100-16GB", node=1, count=2)
    c.set_links(0, 5e-6, 50e9 / 8, 30e-6)
    c.add_custom(whale.DeviceDesc("mine", flops_f32=1e12, mem_bw=1e11, mem_bytes=8e9), node=2)
    c.add_custom(kind="kw", flops_f32=2e12, mem_bw=2e11, mem_bytes=4e9, node=2, count=1)
    assert len(c) == 6
    d = c.device(4)
    assert d.kind == "mine" and d.flops_f32 == 1e12 and d.mem_bytes == 8e9
    assert [x.kind for x in c.devices][:2] == ["V100-32GB"] * 2
    assert "V100-32GB" in c.describe() and str(c) == c.describe()
    path = tmp_path / "c.json"
    c.save(path)
    c2 = whale.Cluster.load(path, ctx)
    assert c2.describe() == c.describe()


def test_cluster_probe(ctx):
    c = whale.Cluster.probe(ctx)
    assert len(c) >= 1 and c.device(0).flops_f32 > 0 and c.device(0).mem_bw > 0


def test_plan_search_explain_dot_simulate_files(ctx, tmp_path):
    m = mlp(ctx, hidden=64)
    c = whale.Cluster(ctx).add("V100-32GB", 0, 2).add("P100-16GB", 0, 2)
    p = whale.Plan(m.g, c, global_batch=64)
    assert p.num_stages >= 1 and p.micro_batches >= 1 and p.step_time > 0
    assert isinstance(p.schedule, whale.Schedule) and p.num_segments >= 1
    shares = p.shares()
    assert len(shares) == 4 and sum(shares) * p.micro_batches >= 64 // p.num_stages
    text = p.explain()
    assert "stage" in text.lower() and str(p) == text
    assert "digraph" in p.dot() and p.dump()
    r = p.simulate()
    assert r.step_time > 0 and r.num_devices == 4 and len(r.util) == 4 and 0 <= r.bubble_fraction < 1
    path = tmp_path / "plan.pb"
    p.save(path)
    q = whale.Plan.load(path, ctx)
    assert q.explain() == text and q.shares(4) == shares
    assert q.simulate(c).step_time == r.step_time
    with pytest.raises(whale.InvalidArgumentError):
        q.simulate()


def test_pinned_plans(ctx):
    from gpt_model import build_gpt
    g = whale.Graph(ctx)
    m = build_gpt(g, vocab=64, context=16, width=32, layers=4, heads=2, stage_per_block=True)
    g.backward(m.loss)
    g.optimizer(whale.AdamW())
    c = whale.Cluster(ctx).add("A100-80GB", 0, 4)
    pp = whale.Plan.pinned(g, c, 32, stages=2, micro_batches=4, schedule="gpipe")
    assert pp.num_stages == 2 and pp.micro_batches == 4 and pp.schedule == whale.Schedule.GPIPE
    assert pp.tp == 1 and not pp.zero1 and pp.mixed is whale.f32
    tp = whale.Plan.pinned(g, c, 32, stages=1, tp=2, micro_batches=1, mixed=whale.bf16)
    assert tp.tp == 2 and tp.mixed is whale.bf16
    assert whale.Plan(g, c, 32, stages=1, mixed="bf16").mixed is whale.bf16
    dp = whale.Plan.pinned(g, c, 32, stages=1, shares=[2, 2, 2, 2], micro_batches=4, zero1=True)
    assert dp.shares() == [2, 2, 2, 2] and dp.zero1
    searched = whale.Plan(g, c, 32, stages=0, schedule="1f1b", zero1="search")
    assert searched.step_time > 0 and searched.num_stages in (1, 2, 4)
    with pytest.raises(whale.InvalidArgumentError):
        whale.Plan(g, c, 32, schedule="zigzag")


def test_measured_profile_into_the_cluster(ctx):
    from conftest import batch_data
    m = mlp(ctx, hidden=64)
    s = m.g.session(batch=8)
    xb, yb = batch_data()
    s.feed(m.x, xb)
    s.feed(m.y, yb)
    s.profile(True)
    for _ in range(3):
        s.step()
    report = s.profile_report()
    c = whale.Cluster(ctx).add("CPU", 0, 2)
    before = whale.Plan.pinned(m.g, c, 16, shares=[8, 8]).step_time
    c.set_profile(0, m.g, 8, report)
    after = whale.Plan.pinned(m.g, c, 16, shares=[8, 8]).step_time
    assert after > 0 and after != before  # the cost model now uses the measured op times
