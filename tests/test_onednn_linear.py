"""diffcore.onednn_linear: F.linear's numbers on oneDNN's matmul in float32 CPU inference (the
widened bf16 linears and accelerate's attention projections), F.linear itself otherwise."""
import pytest
import torch
import torch.nn.functional as F

from diffcore import onednn_linear



@pytest.mark.parametrize("shape", [(7,), (3, 7), (2, 5, 7), (2, 3, 4, 7), (0, 7), "strided"])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_f_linear_on_odd_shapes(shape, bias):
    if not onednn_linear.AVAILABLE:
        pytest.skip("this torch has no oneDNN linear")
    g = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    x = torch.randn(3, 14, generator=g)[:, ::2] if shape == "strided" else torch.randn(*shape, generator=g)
    w, b = torch.randn(9, 7, generator=g), (torch.randn(9, generator=g) if bias else None)
    assert onednn_linear.usable(x, w, b)
    y = onednn_linear.linear(x, w, b)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert y.dtype == torch.float32 and y.shape == ref.shape
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-5)


def test_other_dtypes_and_gradients_take_f_linear():
    x, w = torch.randn(4, 6), torch.randn(5, 6)
    assert not onednn_linear.usable(x.double(), w.double())
    assert torch.equal(onednn_linear.linear(x.double(), w.double()), F.linear(x.double(), w.double()))
    assert not onednn_linear.usable(x.bfloat16(), w.bfloat16())
    wg = w.clone().requires_grad_()
    assert not onednn_linear.usable(x, wg)
    onednn_linear.linear(x, wg).sum().backward()           # F.linear: differentiable
    torch.testing.assert_close(wg.grad, x.sum(0).expand(5, 6))
    with torch.no_grad():
        assert onednn_linear.usable(x, wg) == onednn_linear.AVAILABLE


def test_shapes_the_op_does_not_take_and_autocast_take_f_linear():
    x, w = torch.randn(4, 6), torch.randn(5, 6)
    for args in [(x, torch.randn(6)),                       # 1-D weight
                 (x, w, torch.randn(1)),                     # a broadcast bias
                 (x, w, torch.tensor(0.5)),                  # a 0-d bias
                 (torch.randn(4, 0), torch.randn(5, 0))]:    # no input features
        assert not onednn_linear.usable(*args)
        torch.testing.assert_close(onednn_linear.linear(*args), F.linear(*args), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):       # autocast decides F.linear's dtype
        assert not onednn_linear.usable(x, w)
        assert onednn_linear.linear(x, w).dtype == torch.bfloat16
    with torch.backends.mkldnn.flags(enabled=False):
        assert not onednn_linear.usable(x, w)
