"""Parts of a step left out of ``torch.compile``'s graph."""

import functools

import torch


def eager(fn):
    """``torch.compiler.disable(fn)``, made at the first call rather than at import: the decorator
    imports Dynamo (1.2 s of CPU), which every process that imports the methods (each Ray Train
    worker, each ``selfsup`` command) would otherwise pay whether it compiles or not."""
    disabled = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not disabled:
            disabled.append(torch.compiler.disable(fn))
        return disabled[0](*args, **kwargs)

    return call
