"""Networks and the log-mel front end: `build_model` and `rebuild` are the entry points."""

from __future__ import annotations

from typing import Any

from edgecl.errors import EdgeclError
from models.baseline import BaselineCNN
from models.bcresnet import BCResNetMod
from models.classifier import LogitsOnly, SoundClassifier
from models.frontend import FrontEndConfig, LogMelFrontEnd
from models.head import ClassifierHead

MODEL_NAMES = ("bc-resnet", "baseline")
DEFAULT_WIDTH = 40

__all__ = ["MODEL_NAMES", "ClassifierHead", "FrontEndConfig", "LogMelFrontEnd", "LogitsOnly",
           "SoundClassifier", "build_model", "rebuild"]


def build_model(name: str, n_classes: int, frontend: FrontEndConfig,
                width: int = DEFAULT_WIDTH) -> SoundClassifier:
    """A freshly initialised model; `width` scales bc-resnet only (the baseline has fixed widths)."""
    if name == "bc-resnet":
        backbone = BCResNetMod(width=width, n_mels=frontend.n_mels)
    elif name == "baseline":
        backbone = BaselineCNN()
    else:
        raise EdgeclError(f"--model: expected one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return SoundClassifier(LogMelFrontEnd(frontend), backbone,
                           ClassifierHead(backbone.embedding_dim, n_classes))


def rebuild(config: dict[str, Any]) -> SoundClassifier:
    """Recreate the architecture described by SoundClassifier.model_config() (weights not loaded)."""
    try:
        name, n_classes, frontend = config["name"], int(config["n_classes"]), config["frontend"]
    except (KeyError, TypeError, ValueError) as error:
        raise EdgeclError(f"model config: expected keys name, n_classes, frontend ({error})") from None
    return build_model(name, n_classes, FrontEndConfig.from_dict(frontend),
                       width=int(config.get("width") or DEFAULT_WIDTH))
