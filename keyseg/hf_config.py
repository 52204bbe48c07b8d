"""`KeySegHFConfig`: the config.json of an exported model folder as transformers sees it.

Registered with `AutoConfig` under model_type "keyseg" when keyseg is imported (see
keyseg/__init__.py), so `AutoConfig.from_pretrained(folder)` reads an exported folder
offline; its attributes are the `KeySegConfig` fields. Building the model is keyseg's job
(`KeySegModel.from_pretrained`), not transformers'. This module imports only transformers'
config code: the registration runs while transformers' auto module is being imported.
"""

from __future__ import annotations

from transformers.configuration_utils import PretrainedConfig

MODEL_TYPE = "keyseg"


class KeySegHFConfig(PretrainedConfig):
    model_type = MODEL_TYPE
