"""The networks: the WAE (encoder, decoder, DWT, losses), VGG and ResNet backbones, their assembly by
architecture name (assemble: where a new network goes), and multiply-add counts (flops).

May import: torch, core, runtime (preprocessing specs).
"""

from wae_deploy.training.models.assemble import (
    FAMILIES,
    Decomposed,
    create_model,
    default_preprocessing,
    list_archs,
    parse_arch,
)

__all__ = ["FAMILIES", "Decomposed", "create_model", "default_preprocessing", "list_archs", "parse_arch"]
