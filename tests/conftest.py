import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported, and diffusers imports it during
# collection: without a GPU, the kernels run under the interpreter, so set it before anything.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # float32 tests compare against float32/float64 references at float32 tolerances; cuDNN's
    # default TF32 convolutions round inputs to 10 mantissa bits (about 1e-3 apart on a U-Net)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

import diffcore  # noqa: E402

# Under pytest-xdist each worker gets one thread: two workers on two cores, no oversubscription
# (OpenMP threads of oversubscribed processes wait on each other at every barrier). The same
# for the subprocesses tests start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture
def gm2():
    """The issue's mixture: weights 0.8 / 0.2, means (+-4, 0), std 0.5."""
    return diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])


@pytest.fixture
def gm3():
    """An asymmetric 3-component mixture with diagonal covariances."""
    return diffcore.GaussianMixture([[3.0, 1.0], [-2.0, 3.0], [0.0, -3.0]],
                                    [[0.6, 0.3], [0.4, 0.5], [0.5, 0.5]], [0.5, 0.3, 0.2])


def mixture_stats(gm, x):
    """(weights, component means, component stds) of samples assigned to their likeliest component."""
    x = x.double().reshape(x.shape[0], -1)
    comp = gm.assign(x)
    weights = torch.stack([(comp == k).double().mean() for k in range(gm.K)])
    means = torch.stack([x[comp == k].mean(0) for k in range(gm.K)])
    stds = torch.stack([x[comp == k].std(0) for k in range(gm.K)])
    return weights, means, stds
