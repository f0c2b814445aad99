"""Planted autodiff bugs, written once: torch's square w * w with a backward of the test's choosing."""


def torch_square(backward):
    """A torch.autograd.Function computing w * w whose backward is ``backward(w, grad)``."""
    import torch

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            ctx.save_for_backward(w)
            return w * w

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            return backward(w, grad)

    return Square


def wrong_at(index, factor):
    """The right gradient 2 w grad, except element ``index`` multiplied by ``factor``."""
    def backward(w, grad):
        g = 2 * w * grad
        g[index] *= factor
        return g
    return backward
