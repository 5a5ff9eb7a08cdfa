"""Every block kind and sampled architectures build, run at two sizes and export to ONNX
with outputs matching torch; ``ops()`` describes exactly the built network."""
import random

import numpy as np
import pytest
import torch

from latency_tables.runtime import ort_session
from nas.export import export_onnx
from search_spaces import OpSpec, get_space
from search_spaces.ops import block_kinds, make_op

SIZES = (64, 96)


@pytest.mark.parametrize("kind", block_kinds())
@pytest.mark.parametrize("stride, cin, cout", [(1, 16, 16), (2, 16, 24), (1, 16, 32)])
def test_every_block_kind_runs_and_exports(kind, stride, cin, cout):
    space = get_space("cpu_detector")
    from search_spaces.ops import BLOCK_PARAMS
    params = {"kernel": 5, "expansion": 3, "se": True, "act": "hswish"}
    spec = OpSpec.make(kind, [(1, cin, 20, 20)], cout=cout, stride=stride,
                       **{k: v for k, v in params.items() if k in BLOCK_PARAMS[kind]})
    torch.manual_seed(0)
    module = make_op(spec).eval()
    x = torch.randn(1, cin, 20, 20)
    with torch.no_grad():
        y = module(x)
    assert y.shape == (1, cout, 20 // stride, 20 // stride)
    from latency_tables.runtime import to_onnx_bytes
    got = ort_session(to_onnx_bytes(module, [x])).run(None, {"x0": x.numpy()})[0]
    np.testing.assert_allclose(got, y.numpy(), atol=1e-4, rtol=1e-4)
    assert space  # the space registry imports cleanly alongside


def _architectures(n, seed=0):
    space = get_space("cpu_detector", num_classes=3)
    rng = random.Random(seed)
    return space, list(space.reference_architectures().values()) + [space.sample(rng) for _ in range(n)]


@pytest.mark.slow
def test_sampled_architectures_build_run_and_export():
    space, archs = _architectures(50)
    torch.manual_seed(0)
    for i, arch in enumerate(archs):
        size = SIZES[i % 2]
        model = space.build(arch, (size, size)).eval()
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            scores, boxes = model(x)
        n_points = sum((size // s) ** 2 for s in (8, 16, 32))
        assert scores.shape == (1, n_points, 3) and boxes.shape == (1, n_points, 4)
        # The other size runs too (the decode grid is fixed at build time, so rebuild).
        other = SIZES[(i + 1) % 2]
        with torch.no_grad():
            space.build(arch, (other, other)).eval()(torch.rand(1, 3, other, other))
        data = export_onnx(model, arch, space, input_hw=(size, size))
        got = ort_session(data).run(None, {"images": x.numpy()})
        for ref, out in zip((scores, boxes), got):
            scale = max(1.0, float(ref.abs().max()))
            assert float(np.abs(ref.numpy() - out).max()) / scale < 1e-4, arch.id


def test_ops_match_the_built_network():
    """The input shapes in ops() are the shapes the modules really see."""
    space, archs = _architectures(8, seed=5)
    for arch in archs[:10]:
        model = space.build(arch, (96, 96)).eval()
        specs = {s.role: s for s in space.ops(arch, (96, 96))}
        seen, hooks, role_of = {}, [], {}
        for spec in specs.values():
            role_of[id(_module_for_role(model, spec.role, arch))] = spec.role
        for module in model.modules():
            if id(module) in role_of:
                role = role_of[id(module)]
                def record(m, inp, out, role=role):
                    seen.setdefault(role, tuple(tuple(t.shape) for t in inp))  # returns None: output kept
                hooks.append(module.register_forward_hook(record))
        with torch.no_grad():
            model(torch.rand(1, 3, 96, 96))
        for h in hooks:
            h.remove()
        assert set(seen) == set(specs)
        for role, shapes in seen.items():
            assert shapes == specs[role].input_shapes, role


def _module_for_role(model, role, arch):
    from search_spaces.cpu_detector import STAGES
    if role == "stem":
        return model.stem
    if role == "decode":
        return model.decode
    if role.startswith("neck.lateral"):
        return model.laterals[int(role[-1])]
    if role.startswith("neck.td"):
        return model.top_down[int(role[-1])]
    if role.startswith("neck.bu"):
        return model.bottom_up[int(role[-1]) - 1]
    if role.startswith("neck.out"):
        level, b = role[len("neck.out"):].split(".b")
        return model.neck_out[int(level)][int(b)]
    if role.startswith("head"):
        level, rest = role[4:].split(".", 1)
        head = model.heads[int(level)]
        return head[-1] if rest == "pred" else head[int(rest[1:])]
    stage, b = role.split(".b")
    return model.stages[[s.name for s in STAGES].index(stage)][int(b)]


def test_enumerate_ops_covers_sampled_architectures():
    space = get_space("cpu_detector")
    keys = {op.key for op in space.enumerate_ops()}
    rng = random.Random(11)
    for _ in range(300):
        for op in space.ops(space.sample(rng)):
            assert op.key in keys, op.key
    for arch in space.reference_architectures().values():
        assert all(op.key in keys for op in space.ops(arch))


def test_reference_params_and_flops_in_published_range():
    """mobilenetv2_like at width 1.0, 80 classes, 320x320: MobileNetV2-SSDLite is 4.3 M
    params and 0.8 G multiply-adds; our neck/head is lighter (no 1280-channel conv, no SSD
    extra layers), so we check the same order of magnitude and the width ordering."""
    from search_spaces.stats import count_flops, count_params
    space = get_space("cpu_detector", num_classes=80, input_size=320)
    refs = space.reference_architectures()
    stats = {n: (count_params(space.build(a)), count_flops(space.build(a), (320, 320))) for n, a in refs.items()}
    params, flops = stats["mobilenetv2_like_w1.0"]
    assert 0.8e6 < params < 5e6
    assert 0.4e9 < flops / 2 < 1.6e9  # multiply-adds
    for name in ("mobilenetv2_like", "pp_lcnet_like", "shufflenetv2_like", "ghostnet_like"):
        assert stats[f"{name}_w0.5"][0] < stats[f"{name}_w1.0"][0]
        assert stats[f"{name}_w0.5"][1] < stats[f"{name}_w1.0"][1]


def test_fixed_act_relu_leaves_no_hswish_in_the_graph_and_keeps_default_keys():
    import onnx

    from latency_tables.predictor import table_stem
    from latency_tables.runtime import to_onnx_bytes

    default = get_space("cpu_detector", num_classes=3, input_size=64)
    relu = get_space("cpu_detector", num_classes=3, input_size=64, fixed_act="relu")
    arch = default.from_string(default.to_string(default.reference_architectures()["mobilenetv2_like_w0.5"]))
    assert "fixed_act" not in default.settings() and relu.settings()["fixed_act"] == "relu"
    assert table_stem(get_space("cpu_detector"), 1) == "cpu_detector_256px_6cls_1t"
    assert "fixed_act-relu" in table_stem(relu, 1)
    # Block keys are shared; stem and neck keys differ only where the activation is.
    assert {s.key for s in default.ops(arch) if s.role != "stem" and s.role.startswith("s")} == \
        {s.key for s in relu.ops(arch) if s.role != "stem" and s.role.startswith("s")}
    model = relu.build(arch).eval()
    graph = onnx.load_from_string(to_onnx_bytes(model, [torch.zeros(1, 3, 64, 64)], ["images"], ["scores", "boxes"]))
    assert not [n for n in graph.graph.node if n.op_type in ("HardSwish", "HardSigmoid")]
    with pytest.raises(ValueError, match="fixed_act"):
        get_space("cpu_detector", fixed_act="gelu")
