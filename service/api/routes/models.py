"""``/v1/models``: the registered models, their SAEs and the methods each supports."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import SettingsDep, TenantDep, registered_models_or_503
from service.api.schemas import ModelList, ModelPublic, SAEPublic
from service.catalog import supported_methods

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, summary="List the registered models")
def list_models(settings: SettingsDep, tenant: TenantDep) -> ModelList:
    """Every registered model with its SAE sites and layers and its supported methods.

    ``featureedit`` is listed only for models with SAEs; ``neurons`` and ``neuronlens`` always.
    """
    entries = registered_models_or_503(settings)
    return ModelList(
        models=[
            ModelPublic(
                model_id=e.model_id,
                dtype=e.dtype,
                demo=e.is_demo,
                saes={site: SAEPublic(layers=list(src.layers)) for site, src in e.saes.items()},
                methods=supported_methods(e),
            )
            for e in entries.values()
        ]
    )
