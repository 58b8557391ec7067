from wae_deploy.training.models.assemble import (
    FAMILIES,
    Decomposed,
    create_model,
    default_preprocessing,
    list_archs,
    parse_arch,
)

__all__ = ["FAMILIES", "Decomposed", "create_model", "default_preprocessing", "list_archs", "parse_arch"]
