"""pabee: Patience-based Early Exit (PABEE) for Hugging Face Transformer encoders."""

__version__ = "0.1.0"

__all__ = ["ExitRule", "PabeeConfig", "PabeeForSequenceClassification", "PabeeOutput", "__version__"]

from . import _auto_hook  # noqa: E402  (registers pabee with transformers' Auto classes when they load)

_auto_hook.install()


def __getattr__(name):  # lazy, so `pabee --help` and argument errors do not pay for importing torch
    if name in ("PabeeForSequenceClassification", "PabeeOutput"):
        from . import modeling

        return getattr(modeling, name)
    if name == "ExitRule":
        from .exit_rules import ExitRule

        return ExitRule
    if name == "PabeeConfig":
        from .config import PabeeConfig

        return PabeeConfig
    raise AttributeError(f"module 'pabee' has no attribute {name!r}")
