"""``/v1/models``: the registered models, their SAEs and the methods each supports."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from service.api.deps import SettingsDep, TenantDep
from service.api.schemas import ModelList, ModelPublic, SAEPublic
from service.catalog import RegistryUnavailable, registered_models, supported_methods

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, summary="List the registered models")
def list_models(settings: SettingsDep, tenant: TenantDep) -> ModelList:
    """Every registered model with its SAE sites and layers and its supported methods.

    ``featureedit`` is listed only for models with SAEs; ``neurons`` and ``neuronlens`` always.
    """
    try:
        entries = registered_models(settings)
    except RegistryUnavailable:
        raise HTTPException(
            status_code=503, detail="The model registry is misconfigured; contact the operator"
        ) from None
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
