"""keyseg: reasoning and referring segmentation with keywords (LLaVA + SAM, [SEG] and [KEY]).

Importing keyseg registers model_type "keyseg" with transformers' `AutoConfig`, so that
`AutoConfig.from_pretrained(export_dir)` reads an exported model folder. transformers
takes seconds to import and most of keyseg (the CLI, data workers) never needs it, so the
registration waits for transformers' auto-config module to be imported, or runs now if it
already is.
"""

from __future__ import annotations

import sys

_AUTO_CONFIG_MODULE = "transformers.models.auto.configuration_auto"


def register_auto_config() -> None:
    """`AutoConfig.register("keyseg", KeySegHFConfig)`; imports transformers."""
    from transformers.models.auto.configuration_auto import AutoConfig

    from keyseg.hf_config import MODEL_TYPE, KeySegHFConfig

    AutoConfig.register(MODEL_TYPE, KeySegHFConfig, exist_ok=True)


class _RegisterAfterImport:
    """A one-shot import hook: runs `register_auto_config` right after transformers'
    auto-config module has executed, then leaves sys.meta_path."""

    def find_spec(self, name, path, target=None):
        if name != _AUTO_CONFIG_MODULE:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            register_auto_config()

        spec.loader.exec_module = exec_then_register
        return spec


if _AUTO_CONFIG_MODULE in sys.modules:
    register_auto_config()
elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterImport())
