"""Networks and the log-mel front end: `build_model` and `rebuild` are the entry points.

The package imports torch only when a network is built or a class is used (PEP 562 lazy names), so
the model registry (`MODEL_NAMES`) is cheap to read: the CLI lists it in --help.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgecl.errors import EdgeclError

DEFAULT_WIDTH = 40
# BC-ResNet's log-mel bins must split evenly into SubSpectralNorm's 4 bands after the stem's and two
# max-pools' halvings (models.bcresnet checks it too); here so that option checks need no torch.
BC_RESNET_N_MELS_MULTIPLE = 32


def _bc_resnet(frontend, width: int):
    from models.bcresnet import BCResNetMod
    return BCResNetMod(width=width, n_mels=frontend.n_mels)


def _baseline(frontend, width: int):
    from models.baseline import BaselineCNN
    return BaselineCNN()  # fixed widths: `width` scales bc-resnet only


#: Backbone builders by model name: `builder(frontend_config, width) -> nn.Module`.
_BACKBONES = {"bc-resnet": _bc_resnet, "baseline": _baseline}
MODEL_NAMES = tuple(_BACKBONES)

_LAZY = {"BaselineCNN": "models.baseline", "BCResNetMod": "models.bcresnet",
         "LogitsOnly": "models.classifier", "SoundClassifier": "models.classifier",
         "FrontEndConfig": "models.frontend", "LogMelFrontEnd": "models.frontend",
         "ClassifierHead": "models.head"}

__all__ = ["MODEL_NAMES", "ClassifierHead", "FrontEndConfig", "LogMelFrontEnd", "LogitsOnly",
           "SoundClassifier", "build_model", "rebuild"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def build_model(name: str, n_classes: int, frontend, width: int = DEFAULT_WIDTH):
    """A freshly initialised SoundClassifier for `frontend` (a FrontEndConfig)."""
    from models.classifier import SoundClassifier
    from models.frontend import LogMelFrontEnd
    from models.head import ClassifierHead

    if name not in _BACKBONES:
        raise EdgeclError(f"--model: expected one of {', '.join(MODEL_NAMES)}, got {name!r}")
    backbone = _BACKBONES[name](frontend, width)
    return SoundClassifier(LogMelFrontEnd(frontend), backbone,
                           ClassifierHead(backbone.embedding_dim, n_classes))


def rebuild(config: dict[str, Any]):
    """Recreate the architecture described by SoundClassifier.model_config() (weights not loaded)."""
    from models.frontend import FrontEndConfig

    try:
        name, n_classes, frontend = config["name"], int(config["n_classes"]), config["frontend"]
    except (KeyError, TypeError, ValueError) as error:
        raise EdgeclError(f"model config: expected keys name, n_classes, frontend ({error})") from None
    return build_model(name, n_classes, FrontEndConfig.from_dict(frontend),
                       width=int(config.get("width") or DEFAULT_WIDTH))
