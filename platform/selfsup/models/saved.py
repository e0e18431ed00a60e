"""A pretrained backbone on disk, independent of selfsup's training state: ``backbone.safetensors``
(the weights) and ``backbone.json`` (how to rebuild the module: the ``model`` section of the run's
config, the input shape, a table's column widths, the module that registers its builder, and where it
came from).

    from selfsup.models.saved import load_backbone
    net = load_backbone("exported/")          # an nn.Module in eval mode
    features = net(x)                          # (B, embed_dim)
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from torch import nn

from selfsup.models.backbones import BUILDERS, build_backbone

WEIGHTS, META = "backbone.safetensors", "backbone.json"


SHARED = ("backbone", "embed_dim", "width", "depth", "timm_name", "patch_size", "small_stem", "timm_kwargs", "heads", "registers",
          "patch_stride")


def backbone_kwargs(model: dict, in_shape, groups=None) -> dict:
    """``build_backbone`` arguments from a config's ``model`` section (as a dict): its shared keys
    and, as they are, the keys of a modality's own (``Modality.model_fields``)."""
    return dict(
        **{key: value for key, value in model.items() if key not in SHARED},
        name=model["backbone"], in_shape=tuple(in_shape), embed_dim=model["embed_dim"], width=model["width"], depth=model["depth"],
        timm_name=model.get("timm_name"), patch_size=model.get("patch_size"), small_stem=model.get("small_stem", False),
        timm_kwargs=model.get("timm_kwargs") or {}, heads=model.get("heads", 4), registers=model.get("registers", 1),
        groups=tuple(groups) if groups else None, patch_stride=model.get("patch_stride"),
    )


def save_backbone(backbone: nn.Module, directory: str | Path, model: dict, in_shape, groups=None, source: dict | None = None) -> Path:
    """Write ``backbone``'s weights and what rebuilds it into ``directory``; returns the directory."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    meta = {"model": model, "in_shape": list(in_shape), "groups": list(groups) if groups else None, "source": source or {},
            "builder": BUILDERS[model["backbone"]].__module__}
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


def load_backbone(directory: str | Path) -> nn.Module:
    """Rebuild the backbone saved in ``directory`` and load its weights (strictly); eval mode."""
    from safetensors.torch import load_file

    where = Path(directory)
    for name in (WEIGHTS, META):
        if not (where / name).is_file():
            raise FileNotFoundError(f"{where / name}: not found (a directory written by `selfsup export`)")
    meta = json.loads((where / META).read_text())
    if meta["model"]["backbone"] not in BUILDERS and meta.get("builder"):
        importlib.import_module(meta["builder"])  # a modality's own backbone registers itself there
    net = build_backbone(**backbone_kwargs(meta["model"], meta["in_shape"], meta.get("groups")))
    net.load_state_dict(load_file(str(where / WEIGHTS)))
    return net.eval()
